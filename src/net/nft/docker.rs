//! Coexistence with Docker's own iptables rules (iptables-nft): the exemptions without which
//! traffic between two nodes' containers never arrives, re-asserted idempotently by the
//! network supervisor.
//!
//! For traffic whose source and destination both lie in the IPAM pool (which also holds the
//! nodes' mesh addresses):
//! - `nat POSTROUTING -j RETURN`, first: otherwise Docker's per-bridge
//!   `-s <subnet> ! -o <bridge> -j MASQUERADE` rewrites a container's address when its packet
//!   leaves through the mesh, and the peer's AllowedIPs check and the isolation sets no longer
//!   see who sent it. Docker inserts that rule at the top when it creates a network, so
//!   "first" is checked by position, not by existence.
//! - `filter DOCKER-USER -j ACCEPT`, first (the chain and its `FORWARD` jump are created when
//!   Docker has not yet done so): otherwise Docker's `FORWARD` policy drop discards packets
//!   arriving from the mesh for a container.
//! - `raw PREROUTING -j ACCEPT`, first: Docker ≥ 28 drops packets for a container address that
//!   do not arrive from its bridge.
//!
//! Accepting here does not weaken isolation: the `inet` table of [`super::render`] still sees
//! every forwarded packet, and a drop in any base chain is final. This module must not touch
//! any other rule Docker owns.

use ipnet::Ipv4Net;

use super::FAILURE;
use crate::error::Error;
use crate::net::command;

/// Makes sure the three exemptions for `pool` are in place, each as the first rule of its
/// chain; `iptables` is the argv prefix that runs iptables (e.g. `["iptables"]`). Returns
/// whether anything had to change.
pub async fn ensure_docker_exemptions(iptables: &[String], pool: Ipv4Net) -> Result<bool, Error> {
    let pool = pool.trunc().to_string();
    let within = ["-s", pool.as_str(), "-d", pool.as_str(), "-j"];
    let mut changed = ensure_first(
        iptables,
        "nat",
        "POSTROUTING",
        &[&within[..], &["RETURN"]].concat(),
    )
    .await?;
    changed |= ensure_docker_user(iptables).await?;
    changed |= ensure_first(
        iptables,
        "filter",
        "DOCKER-USER",
        &[&within[..], &["ACCEPT"]].concat(),
    )
    .await?;
    changed |= ensure_first(
        iptables,
        "raw",
        "PREROUTING",
        &[&within[..], &["ACCEPT"]].concat(),
    )
    .await?;
    Ok(changed)
}

/// Creates `DOCKER-USER` and the `FORWARD` jump to it when missing (Docker creates both when
/// it starts; jaco may be first).
async fn ensure_docker_user(iptables: &[String]) -> Result<bool, Error> {
    let mut changed = false;
    let listed = command::run(
        iptables,
        &["-w", "-t", "filter", "-S", "DOCKER-USER"],
        None,
        FAILURE,
    )
    .await?;
    if !listed.status.success() {
        command::checked(
            iptables,
            &["-w", "-t", "filter", "-N", "DOCKER-USER"],
            None,
            FAILURE,
        )
        .await?;
        changed = true;
    }
    let jump = ["-w", "-t", "filter", "-C", "FORWARD", "-j", "DOCKER-USER"];
    if !command::run(iptables, &jump, None, FAILURE)
        .await?
        .status
        .success()
    {
        let insert = [
            "-w",
            "-t",
            "filter",
            "-I",
            "FORWARD",
            "1",
            "-j",
            "DOCKER-USER",
        ];
        command::checked(iptables, &insert, None, FAILURE).await?;
        changed = true;
    }
    Ok(changed)
}

/// Makes `rule` the first rule of `table`/`chain`, exactly once: unchanged when it already is,
/// otherwise every copy is deleted and one inserted at position 1.
async fn ensure_first(
    iptables: &[String],
    table: &str,
    chain: &str,
    rule: &[&str],
) -> Result<bool, Error> {
    let listing =
        command::checked(iptables, &["-w", "-t", table, "-S", chain], None, FAILURE).await?;
    let wanted = format!("-A {chain} {}", rule.join(" "));
    let appended: Vec<&str> = listing
        .lines()
        .filter(|line| line.starts_with("-A "))
        .collect();
    let copies = appended.iter().filter(|line| **line == wanted).count();
    if copies == 1 && appended.first() == Some(&wanted.as_str()) {
        return Ok(false);
    }
    for _ in 0..copies {
        let delete = [&["-w", "-t", table, "-D", chain][..], rule].concat();
        command::checked(iptables, &delete, None, FAILURE).await?;
    }
    let insert = [&["-w", "-t", table, "-I", chain, "1"][..], rule].concat();
    command::checked(iptables, &insert, None, FAILURE).await?;
    Ok(true)
}
