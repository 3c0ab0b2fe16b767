//! Compares a read-back table with what a spec renders to: the startup self-test
//! ([`self_test`]) and the periodic drift check ([`drift`]) of SPEC §7.
//!
//! Both compare everything [`super::render::expected`] describes (the three base chains with
//! their hooks, priority and policy; one set per scope holding exactly its subnets; the pool
//! set if and only if there are subnets; the forward rules in order) and report anything
//! extra (sets, chains, rules, elements, other objects). The report is short and readable
//! enough for an audit event: at most a few items of each kind, then a count. Pure: reading
//! the table and re-applying it belong to the caller.

use std::collections::BTreeSet;
use std::fmt::Display;

use super::render::{RulesetSpec, expected};
use super::table::{ObservedChain, ObservedSet, ObservedTable};

/// Items of one kind named in a report before the rest is only counted.
const SHOWN: usize = 3;

/// Checks a table read back right after applying `spec`: `Err` carries every difference,
/// e.g. `chain forward: missing rule ip saddr @dep_net_a_x ip daddr @dep_net_a_x accept`.
pub fn self_test(spec: &RulesetSpec, observed: &ObservedTable) -> Result<(), String> {
    let differences = differences(&expected(spec), observed);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(differences.join("; "))
    }
}

/// What changed between the table `spec` renders to and the one read back (`None` when the
/// table does not exist), or `None` when they agree. Same comparison as [`self_test`].
pub fn drift(spec: &RulesetSpec, observed: Option<&ObservedTable>) -> Option<String> {
    match observed {
        None => Some(format!("table inet {} is missing", spec.table)),
        Some(observed) => self_test(spec, observed).err(),
    }
}

fn differences(expected: &ObservedTable, observed: &ObservedTable) -> Vec<String> {
    let mut out = Vec::new();
    if expected.name != observed.name {
        out.push(format!(
            "read back table {}, expected {}",
            observed.name, expected.name
        ));
    }
    for (name, want) in &expected.sets {
        match observed.sets.get(name) {
            None => out.push(format!("set {name} missing")),
            Some(found) => set_differences(name, want, found, &mut out),
        }
    }
    let extra = observed
        .sets
        .keys()
        .filter(|k| !expected.sets.contains_key(*k));
    push_listed(&mut out, "unexpected sets", extra);
    for (name, want) in &expected.chains {
        match observed.chains.get(name) {
            None => out.push(format!("chain {name} missing")),
            Some(found) => chain_differences(name, want, found, &mut out),
        }
    }
    let extra = observed
        .chains
        .keys()
        .filter(|k| !expected.chains.contains_key(*k));
    push_listed(&mut out, "unexpected chains", extra);
    let extra = observed.others.difference(&expected.others);
    push_listed(&mut out, "unexpected objects", extra);
    out
}

fn set_differences(name: &str, want: &ObservedSet, found: &ObservedSet, out: &mut Vec<String>) {
    if (&want.set_type, &want.flags) != (&found.set_type, &found.flags) {
        out.push(format!(
            "set {name}: type {} flags {:?}, expected type {} flags {:?}",
            found.set_type, found.flags, want.set_type, want.flags
        ));
    }
    let missing = want.elements.difference(&found.elements);
    push_listed(out, &format!("set {name}: missing elements"), missing);
    let extra = found.elements.difference(&want.elements);
    push_listed(out, &format!("set {name}: unexpected elements"), extra);
}

fn chain_differences(
    name: &str,
    want: &ObservedChain,
    found: &ObservedChain,
    out: &mut Vec<String>,
) {
    if want.base != found.base {
        let header = |chain: &ObservedChain| match &chain.base {
            Some(base) => format!("`{base}`"),
            None => "no hook".to_owned(),
        };
        out.push(format!(
            "chain {name}: {}, expected {}",
            header(found),
            header(want)
        ));
    }
    if want.rules == found.rules {
        return;
    }
    let wanted: BTreeSet<&String> = want.rules.iter().collect();
    let present: BTreeSet<&String> = found.rules.iter().collect();
    let before = out.len();
    push_listed(
        out,
        &format!("chain {name}: missing rules"),
        wanted.difference(&present),
    );
    push_listed(
        out,
        &format!("chain {name}: unexpected rules"),
        present.difference(&wanted),
    );
    if out.len() == before {
        out.push(format!("chain {name}: rules out of order or duplicated"));
    }
}

/// Appends `label: a, b, c and N more` when `items` is not empty.
fn push_listed<T: Display>(out: &mut Vec<String>, label: &str, items: impl Iterator<Item = T>) {
    let items: Vec<String> = items.map(|item| item.to_string()).collect();
    if items.is_empty() {
        return;
    }
    let mut text = format!("{label}: {}", items[..items.len().min(SHOWN)].join(", "));
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out.push(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::nft::render::{POOL_SET, Scope};
    use crate::net::nft::table::Element;

    fn spec() -> RulesetSpec {
        let scope = |deployment: &str, subnets: &[&str]| Scope {
            deployment: deployment.to_owned(),
            network: "n".to_owned(),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        };
        RulesetSpec {
            table: "t".to_owned(),
            scopes: vec![
                scope("a", &["10.244.1.0/24", "10.244.3.0/24"]),
                scope("b", &["10.244.5.0/24"]),
            ],
        }
    }

    #[test]
    fn test_expected_table_passes() {
        let spec = spec();
        assert_eq!(self_test(&spec, &expected(&spec)), Ok(()));
        assert_eq!(drift(&spec, Some(&expected(&spec))), None);
    }

    #[test]
    fn test_missing_table_is_drift() {
        assert_eq!(drift(&spec(), None).unwrap(), "table inet t is missing");
    }

    #[test]
    fn test_reports_set_changes() {
        let spec = spec();
        let mut table = expected(&spec);
        table.sets.remove(POOL_SET);
        let set = table.sets.get_mut("dep_net_a_n").unwrap();
        set.elements
            .remove(&Element::Net("10.244.3.0/24".parse().unwrap()));
        set.elements
            .insert(Element::Net("10.244.9.0/24".parse().unwrap()));
        table
            .sets
            .insert("intruder".to_owned(), ObservedSet::default());
        assert_eq!(
            self_test(&spec, &table).unwrap_err(),
            "set dep_net_a_n: missing elements: 10.244.3.0/24; \
             set dep_net_a_n: unexpected elements: 10.244.9.0/24; \
             set jaco_pool missing; unexpected sets: intruder"
        );
    }

    #[test]
    fn test_reports_chain_changes() {
        let spec = spec();
        let mut table = expected(&spec);
        table
            .chains
            .get_mut("input")
            .unwrap()
            .base
            .as_mut()
            .unwrap()
            .policy = "drop".to_owned();
        let forward = table.chains.get_mut("forward").unwrap();
        forward.rules.remove(1);
        table.chains.remove("output");
        let reason = drift(&spec, Some(&table)).unwrap();
        assert_eq!(
            reason,
            "chain forward: missing rules: ip saddr @dep_net_a_n ip daddr @dep_net_a_n accept; \
             chain input: `type filter hook input priority 0; policy drop;`, \
             expected `type filter hook input priority 0; policy accept;`; \
             chain output missing"
        );
    }

    #[test]
    fn test_reports_reordered_rules() {
        let spec = spec();
        let mut table = expected(&spec);
        table.chains.get_mut("forward").unwrap().rules.reverse();
        assert_eq!(
            self_test(&spec, &table).unwrap_err(),
            "chain forward: rules out of order or duplicated"
        );
    }

    #[test]
    fn test_long_reports_are_capped() {
        let spec = spec();
        let mut table = expected(&spec);
        let forward = table.chains.get_mut("forward").unwrap();
        forward
            .rules
            .extend((0..10).map(|i| format!("ip saddr 10.0.0.{i} drop")));
        assert_eq!(
            self_test(&spec, &table).unwrap_err(),
            "chain forward: unexpected rules: ip saddr 10.0.0.0 drop, ip saddr 10.0.0.1 drop, \
             ip saddr 10.0.0.2 drop and 7 more"
        );
    }
}
