//! Isolation table benchmark: the ruleset of D deployments × N networks, each scope on S
//! nodes' /24s (default 100 × 2 × 3: 200 sets, 600 subnets), rendered and applied with the
//! real `nft` in a fresh network namespace per run, then re-applied over itself (a drift
//! repair or a placement change replaces the previous generation), then read back and
//! self-tested.
//!
//! Run: `cargo bench --bench net_nft` with `NFT_BENCH_DEPLOYMENTS` (100),
//! `NFT_BENCH_NETWORKS` (2), `NFT_BENCH_NODES` (3) and `NFT_BENCH_RUNS` (25). Needs root,
//! iproute2 and nft. Prints median and p90 per step; results go to docs/benchmarks.md by
//! hand. Not a test: `--list` prints nothing, so the test runner skips it.

#[path = "../tests/support/nft.rs"]
mod lab;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use jaco::net::nft::{self, Nft, RulesetSpec, Scope};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// D × N scopes on S /24s each, all distinct, from 10.100.0.0 upwards.
fn spec(deployments: usize, networks: usize, nodes: usize) -> RulesetSpec {
    let mut next = 0u32;
    let mut subnet = || {
        let base = u32::from(Ipv4Addr::new(10, 100, 0, 0)) + (next << 8);
        next += 1;
        Ipv4Net::new(Ipv4Addr::from(base), 24).expect("valid /24")
    };
    let mut scopes = Vec::new();
    for d in 0..deployments {
        for n in 0..networks {
            scopes.push(Scope {
                deployment: format!("deployment-{d}"),
                network: format!("net{n}"),
                subnets: (0..nodes).map(|_| subnet()).collect(),
            });
        }
    }
    RulesetSpec {
        table: "jaco".to_owned(),
        scopes,
    }
}

/// Nearest-rank percentile of `values` (sorted in place), in milliseconds.
fn percentile(values: &mut [Duration], p: f64) -> f64 {
    values.sort();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1].as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (deployments, networks, nodes) = (
        env("NFT_BENCH_DEPLOYMENTS", 100),
        env("NFT_BENCH_NETWORKS", 2),
        env("NFT_BENCH_NODES", 3),
    );
    let runs = env("NFT_BENCH_RUNS", 25).max(1);
    let spec = spec(deployments, networks, nodes);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let steps = ["render", "first apply", "re-apply", "read back + self-test"];
    let mut timings: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); steps.len()];
    let mut text_len = 0;
    for _ in 0..runs {
        let mut namespaces = lab::Namespaces::default();
        let namespace = namespaces.add("jnfb");
        let nft = Nft::new(
            ["ip", "netns", "exec", &namespace, "nft"]
                .map(String::from)
                .to_vec(),
        );
        let started = Instant::now();
        text_len = nft::render(&spec).len();
        timings[0].push(started.elapsed());
        runtime.block_on(async {
            for step in [1, 2] {
                let started = Instant::now();
                nft.apply(&spec).await.expect("apply");
                timings[step].push(started.elapsed());
            }
            let started = Instant::now();
            let observed = nft.read_back(&spec.table).await.expect("read back");
            let verdict = nft::self_test(&spec, &observed.expect("table exists"));
            timings[3].push(started.elapsed());
            verdict.expect("self-test");
        });
    }

    println!(
        "{deployments} deployments × {networks} networks × {nodes} /24s: {} sets, {} subnets, \
         {text_len} bytes of nft text; {runs} runs, each in a fresh namespace",
        deployments * networks + 1,
        deployments * networks * nodes
    );
    println!("| step | median ms | p90 ms |\n|---|---|---|");
    for (step, values) in steps.iter().zip(&mut timings) {
        let median = percentile(values, 0.5);
        let p90 = percentile(values, 0.9);
        println!("| {step} | {median:.2} | {p90:.2} |");
    }
}
