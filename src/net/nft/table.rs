//! The value model of one nftables table as jaco compares it: its sets (type, flags,
//! elements), its chains (base-chain hook and policy, rules as canonical nft text) and any
//! other object found in it.
//!
//! Two producers build it: [`super::render::expected`] from a spec (what a correct apply must
//! read back as) and [`ObservedTable::from_json`] from `nft -j list table` output, parsed with
//! the `nftables` crate's schema types (ADR 0019). [`super::check`] compares the two, and
//! [`super::render::render`] writes the expected one as nft text, so the text that is applied
//! and the text that is compared come from the same rule strings. Pure: this module runs
//! nothing and knows nothing about how a table is applied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nftables::expr::{Expression, NamedExpression, Payload};
use nftables::schema::{NfListObject, NfObject, Nftables};
use nftables::stmt::{Operator, Statement};
use serde::Serialize;

/// One table, as rendered from a spec or as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedTable {
    /// The table's name (family `inet`).
    pub name: String,
    /// Named sets by name.
    pub sets: BTreeMap<String, ObservedSet>,
    /// Chains by name.
    pub chains: BTreeMap<String, ObservedChain>,
    /// Any other object in the table (maps, counters, flowtables, …) as `kind name`; jaco
    /// creates none, so a non-empty list is drift.
    pub others: BTreeSet<String>,
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedSet {
    /// The element type as nft spells it, e.g. `ipv4_addr`.
    pub set_type: String,
    /// The set's flags as nft spells them, e.g. `interval`.
    pub flags: BTreeSet<String>,
    /// The elements.
    pub elements: BTreeSet<Element>,
}

/// One set element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// An IPv4 prefix; a single address is a /32.
    Net(Ipv4Net),
    /// Anything else (a range, an element with a timeout or comment, …), as nft's JSON.
    Other(String),
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Net(net) => net.fmt(f),
            Element::Other(json) => f.write_str(json),
        }
    }
}

/// A chain and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedChain {
    /// The hook a base chain is attached to; `None` for a regular chain.
    pub base: Option<BaseChain>,
    /// The rules in evaluation order, each as canonical nft text, e.g.
    /// `ip saddr @jaco_pool ip daddr @jaco_pool drop`. A statement this model does not
    /// know is kept as its JSON, so that it still shows up in a comparison.
    pub rules: Vec<String>,
}

/// The hook of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// The chain type, e.g. `filter`.
    pub chain_type: String,
    /// The hook, e.g. `forward`.
    pub hook: String,
    /// The priority.
    pub priority: i32,
    /// The policy, e.g. `accept`.
    pub policy: String,
}

impl fmt::Display for BaseChain {
    /// The chain header as nft text: `type filter hook forward priority 0; policy accept;`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type {} hook {} priority {}; policy {};",
            self.chain_type, self.hook, self.priority, self.policy
        )
    }
}

impl ObservedTable {
    /// Parses the output of `nft -j list table inet <name>`: the first `inet` table in it and
    /// everything that belongs to that table. Errors name what could not be understood.
    pub fn from_json(json: &str) -> Result<ObservedTable, String> {
        let document: Nftables<'_> = serde_json::from_str(json)
            .map_err(|e| format!("nft printed JSON that does not follow its schema: {e}"))?;
        let list = || {
            document.objects.iter().filter_map(|object| match object {
                NfObject::ListObject(object) => Some(object),
                NfObject::CmdObject(_) => None,
            })
        };
        let name = list()
            .find_map(|object| match object {
                NfListObject::Table(table) if is_inet(&table.family) => {
                    Some(table.name.to_string())
                }
                _ => None,
            })
            .ok_or("nft's output holds no inet table")?;
        let mut table = ObservedTable {
            name,
            ..ObservedTable::default()
        };
        for object in list() {
            match object {
                NfListObject::Set(set) if is_ours(&table.name, &set.family, &set.table) => {
                    let observed = ObservedSet {
                        set_type: wire(&set.set_type),
                        flags: set.flags.iter().flatten().map(wire).collect(),
                        elements: set
                            .elem
                            .iter()
                            .flat_map(|e| e.iter())
                            .map(element)
                            .collect(),
                    };
                    table.sets.insert(set.name.to_string(), observed);
                }
                NfListObject::Chain(chain) if is_ours(&table.name, &chain.family, &chain.table) => {
                    let base = match (&chain._type, &chain.hook) {
                        (Some(chain_type), Some(hook)) => Some(BaseChain {
                            chain_type: wire(chain_type),
                            hook: wire(hook),
                            priority: chain.prio.unwrap_or_default(),
                            policy: chain.policy.as_ref().map(wire).unwrap_or_default(),
                        }),
                        _ => None,
                    };
                    table.chains.entry(chain.name.to_string()).or_default().base = base;
                }
                NfListObject::Rule(rule) if is_ours(&table.name, &rule.family, &rule.table) => {
                    let text = rule_text(&rule.expr);
                    table
                        .chains
                        .entry(rule.chain.to_string())
                        .or_default()
                        .rules
                        .push(text);
                }
                NfListObject::Table(_) | NfListObject::MetainfoObject(_) => {}
                other => {
                    // jaco creates nothing else; name what is there so a diff can show it.
                    let json = serde_json::to_value(other).unwrap_or_default();
                    if let Some((kind, body)) = json.as_object().and_then(|o| o.iter().next())
                        && body.get("table").and_then(|t| t.as_str()) == Some(&table.name)
                    {
                        let name = body.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                        table.others.insert(format!("{kind} {name}"));
                    }
                }
            }
        }
        Ok(table)
    }
}

fn is_inet(family: &nftables::types::NfFamily) -> bool {
    wire(family) == "inet"
}

fn is_ours(name: &str, family: &nftables::types::NfFamily, table: &str) -> bool {
    is_inet(family) && table == name
}

/// A schema value as nft spells it: the JSON string for enums (`"forward"`), else compact JSON.
fn wire<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(e) => format!("<unserialisable: {e}>"),
    }
}

fn element(expression: &Expression<'_>) -> Element {
    let net = match expression {
        Expression::String(addr) => addr.parse::<Ipv4Addr>().ok().map(Ipv4Net::from),
        Expression::Named(NamedExpression::Prefix(prefix)) => match prefix.addr.as_ref() {
            Expression::String(addr) => format!("{addr}/{}", prefix.len).parse().ok(),
            _ => None,
        },
        _ => None,
    };
    match net {
        Some(net) => Element::Net(Ipv4Net::trunc(&net)),
        None => Element::Other(wire(expression)),
    }
}

/// A rule's statements as nft text, for the statements jaco writes; others stay JSON.
fn rule_text(statements: &[Statement<'_>]) -> String {
    let words: Vec<String> = statements
        .iter()
        .map(|statement| match statement {
            Statement::Accept(None) => "accept".to_owned(),
            Statement::Drop(None) => "drop".to_owned(),
            Statement::Match(m) => match (operand(&m.left), operand(&m.right), &m.op) {
                (Some(left), Some(right), Operator::EQ | Operator::IN) => {
                    format!("{left} {right}")
                }
                (Some(left), Some(right), Operator::NEQ) => format!("{left} != {right}"),
                _ => wire(statement),
            },
            other => wire(other),
        })
        .collect();
    words.join(" ")
}

/// The nft text of the match operands jaco uses: `ip saddr`, `ct state`, `@set`,
/// `established,related`.
fn operand(expression: &Expression<'_>) -> Option<String> {
    match expression {
        Expression::String(text) => Some(text.to_string()),
        Expression::Number(n) => Some(n.to_string()),
        Expression::List(items) => {
            let items: Option<Vec<String>> = items.iter().map(operand).collect();
            Some(items?.join(","))
        }
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(field))) => {
            Some(format!("{} {}", field.protocol, field.field))
        }
        Expression::Named(NamedExpression::CT(ct)) if ct.family.is_none() && ct.dir.is_none() => {
            Some(format!("ct {}", ct.key))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft -j list table inet t1` from nft 1.0.6 (Debian bookworm), trimmed to one scope,
    /// plus an out-of-band range element and a counter rule.
    const LISTED: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "t1", "handle": 2}},
      {"set": {"family": "inet", "name": "dep_net_a_x", "table": "t1", "type": "ipv4_addr",
               "handle": 4, "flags": ["interval"],
               "elem": [{"prefix": {"addr": "10.244.1.0", "len": 24}}, "10.9.9.9",
                        {"range": ["10.1.0.1", "10.1.0.5"]}]}},
      {"set": {"family": "inet", "name": "empty", "table": "t1", "type": "ipv4_addr",
               "handle": 6, "flags": ["interval"]}},
      {"chain": {"family": "inet", "table": "t1", "name": "forward", "handle": 1,
                 "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"chain": {"family": "inet", "table": "t1", "name": "mine", "handle": 3}},
      {"rule": {"family": "inet", "table": "t1", "chain": "forward", "handle": 7, "expr": [
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
        {"accept": null}]}},
      {"rule": {"family": "inet", "table": "t1", "chain": "forward", "handle": 8, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@dep_net_a_x"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@dep_net_a_x"}},
        {"counter": {"packets": 0, "bytes": 0}},
        {"drop": null}]}}
    ]}"#;

    #[test]
    fn test_parses_nft_1_0_6_listing() {
        let table = ObservedTable::from_json(LISTED).unwrap();
        assert_eq!(table.name, "t1");
        let set = &table.sets["dep_net_a_x"];
        assert_eq!(set.set_type, "ipv4_addr");
        assert_eq!(set.flags, BTreeSet::from(["interval".to_owned()]));
        let elements: Vec<String> = set.elements.iter().map(ToString::to_string).collect();
        assert_eq!(
            elements,
            [
                "10.9.9.9/32",
                "10.244.1.0/24",
                r#"{"range":["10.1.0.1","10.1.0.5"]}"#
            ]
        );
        assert!(table.sets["empty"].elements.is_empty());
        let forward = &table.chains["forward"];
        assert_eq!(
            forward.base.as_ref().unwrap().to_string(),
            "type filter hook forward priority 0; policy accept;"
        );
        assert_eq!(
            forward.rules,
            [
                "ct state established,related accept",
                r#"ip saddr @dep_net_a_x ip daddr @dep_net_a_x {"counter":{"packets":0,"bytes":0}} drop"#,
            ]
        );
        assert_eq!(table.chains["mine"].base, None);
    }

    #[test]
    fn test_rejects_output_without_a_table() {
        let error = ObservedTable::from_json(r#"{"nftables": []}"#).unwrap_err();
        assert!(error.contains("no inet table"), "{error}");
        let error = ObservedTable::from_json("not json").unwrap_err();
        assert!(error.contains("schema"), "{error}");
    }
}
