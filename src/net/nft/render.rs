//! Renders the isolation table (SPEC §7) from plain scopes: the table a spec stands for
//! ([`expected`]) and its text for one atomic `nft -f -` transaction ([`render`]).
//!
//! The table, for every (deployment, network) scope: a named interval set of all its /24s
//! on every node; a pool set, the union of all scopes' subnets (only when there is one); base
//! chains `forward`, `input` and `output` (filter hooks, priority 0, policy accept). The
//! forward chain accepts established traffic, then traffic within each scope, then drops
//! traffic between two pool addresses: so two containers of one scope talk, two containers of
//! different jaco scopes do not, and every other packet (host traffic, traffic to or from
//! outside the pool) is left alone. Input and output carry no rules.
//!
//! The text starts with `add table` + `delete table`, so a transaction replaces the previous
//! generation instead of appending to it (prior-art bug #89: a stacked `drop` of an old
//! generation shadowed the accepts of the new one).
//!
//! Pure: no I/O. Output is deterministic (sets, elements and rules sorted), so the same spec
//! always renders the same bytes. Tests compare with golden files in `golden/`; after an
//! intended change regenerate them with
//! `UPDATE_GOLDEN=1 cargo test --lib net::nft::render` and review the diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ipnet::Ipv4Net;
use sha2::{Digest as _, Sha256};

use super::table::{BaseChain, Element, ObservedChain, ObservedSet, ObservedTable};

/// The name of the set holding every subnet of every scope.
pub const POOL_SET: &str = "jaco_pool";

/// Longest set name jaco writes. nft and current kernels allow more (`NFT_NAME_MAXLEN`, 256);
/// 63 keeps names readable in listings and safe on older kernels.
pub const MAX_NAME_LEN: usize = 63;

/// Hex digits of SHA-256 kept in a hashed set name (80 bits).
const HASH_HEX: usize = 20;

/// One (deployment, network) scope: containers on these subnets may talk to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The deployment's name.
    pub deployment: String,
    /// The compose network's name within the deployment.
    pub network: String,
    /// The scope's /24 on every node that hosts it.
    pub subnets: Vec<Ipv4Net>,
}

/// Everything the isolation table is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetSpec {
    /// The table's name in family `inet`: `jaco` in production; tests use unique names. It
    /// must be an nft identifier (letters, digits, `_`), or `nft` rejects the transaction.
    pub table: String,
    /// The scopes, in any order; a scope listed twice gets the union of its subnets.
    pub scopes: Vec<Scope>,
}

/// The set name of a scope: `dep_net_<deployment>_<network>` when both names are non-empty
/// ASCII letters and digits and the result fits [`MAX_NAME_LEN`]; otherwise a readable prefix
/// (every other character becomes `_`) followed by `__` and 80 bits of a SHA-256 of the exact
/// pair. Plain names hold exactly three `_` and hashed ones hold `__`, so the two kinds never
/// meet, and two different pairs share a name only if their hashes collide.
pub fn set_name(deployment: &str, network: &str) -> String {
    let plain = |name: &str| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric());
    let sanitise = |name: &str| -> String {
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let readable = format!("dep_net_{}_{}", sanitise(deployment), sanitise(network));
    if plain(deployment) && plain(network) && readable.len() <= MAX_NAME_LEN {
        return readable;
    }
    // Length-prefixed, so ("ab", "c") and ("a", "bc") hash differently.
    let digest = Sha256::digest(format!("{}:{deployment}{network}", deployment.len()));
    let mut hash = String::with_capacity(HASH_HEX);
    for byte in &digest[..HASH_HEX / 2] {
        let _ = write!(hash, "{byte:02x}");
    }
    // `readable` is ASCII, so any byte index is a char boundary.
    let keep = readable.len().min(MAX_NAME_LEN - 2 - HASH_HEX);
    format!("{}__{hash}", &readable[..keep])
}

/// The table a correct apply of `spec` reads back as.
pub fn expected(spec: &RulesetSpec) -> ObservedTable {
    let mut scopes: BTreeMap<String, Vec<Ipv4Net>> = BTreeMap::new();
    for scope in &spec.scopes {
        scopes
            .entry(set_name(&scope.deployment, &scope.network))
            .or_default()
            .extend(&scope.subnets);
    }
    let pool: Vec<Ipv4Net> = scopes.values().flatten().copied().collect();

    let mut forward = vec!["ct state established,related accept".to_owned()];
    forward.extend(scopes.keys().map(|set| pair_rule(set, "accept")));
    let mut sets: BTreeMap<String, ObservedSet> = scopes
        .into_iter()
        .map(|(name, subnets)| (name, address_set(&subnets)))
        .collect();
    if !pool.is_empty() {
        forward.push(pair_rule(POOL_SET, "drop"));
        sets.insert(POOL_SET.to_owned(), address_set(&pool));
    }

    let chain = |hook: &str, rules: Vec<String>| {
        let base = BaseChain {
            chain_type: "filter".to_owned(),
            hook: hook.to_owned(),
            priority: 0,
            policy: "accept".to_owned(),
        };
        let chain = ObservedChain {
            base: Some(base),
            rules,
        };
        (hook.to_owned(), chain)
    };
    ObservedTable {
        name: spec.table.clone(),
        sets,
        chains: BTreeMap::from([
            chain("forward", forward),
            chain("input", Vec::new()),
            chain("output", Vec::new()),
        ]),
        others: BTreeSet::new(),
    }
}

/// The complete text of one `nft -f -` transaction that replaces table `spec.table` with
/// [`expected`]`(spec)`.
pub fn render(spec: &RulesetSpec) -> String {
    let table = expected(spec);
    let name = &table.name;
    let mut out =
        format!("add table inet {name}\ndelete table inet {name}\ntable inet {name} {{\n");
    for (set_name, set) in &table.sets {
        let _ = writeln!(out, "\tset {set_name} {{");
        let _ = writeln!(out, "\t\ttype {}", set.set_type);
        let flags: Vec<&str> = set.flags.iter().map(String::as_str).collect();
        let _ = writeln!(out, "\t\tflags {}", flags.join(", "));
        if !set.elements.is_empty() {
            let elements: Vec<String> = set.elements.iter().map(Element::to_string).collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
        }
        out.push_str("\t}\n");
    }
    for (chain_name, chain) in &table.chains {
        let _ = writeln!(out, "\tchain {chain_name} {{");
        if let Some(base) = &chain.base {
            let _ = writeln!(out, "\t\t{base}");
        }
        for rule in &chain.rules {
            let _ = writeln!(out, "\t\t{rule}");
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// `ip saddr @set ip daddr @set <verdict>`: both ends of the packet in one set.
fn pair_rule(set: &str, verdict: &str) -> String {
    format!("ip saddr @{set} ip daddr @{set} {verdict}")
}

/// An `ipv4_addr` interval set holding `subnets`, merged into the fewest prefixes (duplicates
/// and overlaps would make nft reject the set; adjacent /24s read back as one prefix).
fn address_set(subnets: &[Ipv4Net]) -> ObservedSet {
    ObservedSet {
        set_type: "ipv4_addr".to_owned(),
        flags: BTreeSet::from(["interval".to_owned()]),
        elements: Ipv4Net::aggregate(&subnets.to_vec())
            .into_iter()
            .map(Element::Net)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn scope(deployment: &str, network: &str, subnets: &[&str]) -> Scope {
        Scope {
            deployment: deployment.to_owned(),
            network: network.to_owned(),
            subnets: subnets.iter().map(|s| net(s)).collect(),
        }
    }

    fn spec(scopes: Vec<Scope>) -> RulesetSpec {
        RulesetSpec {
            table: "jaco".to_owned(),
            scopes,
        }
    }

    /// Compares with a golden file, or rewrites it when `UPDATE_GOLDEN` is set.
    fn golden(file: &str, golden: &str, actual: &str) {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let path = format!("{}/src/net/nft/golden/{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(&path, actual).unwrap();
            return;
        }
        assert_eq!(
            actual, golden,
            "{file} differs; if intended, regenerate with UPDATE_GOLDEN=1"
        );
    }

    #[test]
    fn test_golden_empty() {
        golden(
            "empty.nft",
            include_str!("golden/empty.nft"),
            &render(&spec(vec![])),
        );
    }

    #[test]
    fn test_golden_one_scope() {
        let one = spec(vec![scope(
            "shop",
            "backend",
            &["10.244.3.0/24", "10.244.1.0/24", "10.244.7.0/24"],
        )]);
        golden(
            "one_scope.nft",
            include_str!("golden/one_scope.nft"),
            &render(&one),
        );
    }

    #[test]
    fn test_golden_several_scopes() {
        let several = spec(vec![
            scope("shop", "frontend", &["10.244.4.0/24", "10.244.9.0/24"]),
            scope("blog", "default", &["10.244.2.0/24"]),
            scope("shop", "backend", &["10.244.1.0/24", "10.244.3.0/24"]),
            scope("idle", "default", &[]),
        ]);
        golden(
            "several_scopes.nft",
            include_str!("golden/several_scopes.nft"),
            &render(&several),
        );
    }

    #[test]
    fn test_golden_long_names() {
        let long = spec(vec![
            scope(
                "a-deployment-with-a-rather-long-name-that-goes-on",
                "and_a_network_name_that_is_longer_still",
                &["10.244.5.0/24"],
            ),
            scope("web.shop", "my-net", &["10.244.6.0/24"]),
            scope("a", "b_c", &["10.244.10.0/24"]),
            scope("a_b", "c", &["10.244.11.0/24"]),
        ]);
        golden(
            "long_names.nft",
            include_str!("golden/long_names.nft"),
            &render(&long),
        );
    }

    #[test]
    fn test_output_ignores_scope_and_subnet_order() {
        let a = spec(vec![
            scope("x", "n", &["10.244.2.0/24", "10.244.1.0/24"]),
            scope("y", "n", &["10.244.3.0/24"]),
        ]);
        let b = spec(vec![
            scope("y", "n", &["10.244.3.0/24"]),
            scope("x", "n", &["10.244.1.0/24", "10.244.2.0/24"]),
        ]);
        assert_eq!(render(&a), render(&b));
    }

    #[test]
    fn test_duplicate_scopes_and_subnets_merge() {
        let twice = spec(vec![
            scope("x", "n", &["10.244.1.0/24", "10.244.1.0/24"]),
            scope("x", "n", &["10.244.5.0/24"]),
        ]);
        let table = expected(&twice);
        let elements: Vec<String> = table.sets["dep_net_x_n"]
            .elements
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(elements, ["10.244.1.0/24", "10.244.5.0/24"]);
        assert_eq!(table.chains["forward"].rules.len(), 3);
    }

    #[test]
    fn test_set_names_are_valid_and_distinct() {
        let pairs = [
            ("shop", "backend"),
            ("a", "b_c"),
            ("a_b", "c"),
            ("ab", "c"),
            ("a", "bc"),
            ("a-b", "c"),
            ("a.b", "c"),
            ("x", ""),
            ("", "x"),
            (&"d".repeat(80), "n"),
            (&"d".repeat(81), "n"),
            ("ünïcode", "net"),
        ];
        let names: BTreeSet<String> = pairs.iter().map(|(d, n)| set_name(d, n)).collect();
        assert_eq!(names.len(), pairs.len(), "{names:?}");
        for name in &names {
            assert!(name.len() <= MAX_NAME_LEN, "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{name}"
            );
            assert_ne!(name, POOL_SET);
        }
        assert_eq!(set_name("shop", "backend"), "dep_net_shop_backend");
        assert!(set_name("a", "b_c").starts_with("dep_net_a_b_c__"));
    }

    #[test]
    fn test_no_pool_and_no_drop_without_subnets() {
        let table = expected(&spec(vec![scope("idle", "n", &[])]));
        assert!(!table.sets.contains_key(POOL_SET));
        assert!(
            table.chains["forward"]
                .rules
                .iter()
                .all(|r| !r.contains("drop"))
        );
    }
}
