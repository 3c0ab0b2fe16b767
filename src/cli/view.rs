//! How values of the `jaco.v1` API are spelled in CLI output: closed-set enums by their short
//! lowercase names, points in time as RFC 3339 UTC, flat maps as `key=value` words.
//!
//! Role: one spelling for every command, so that `node list`, `cluster status` and `audit`
//! never disagree (docs/cli.md "Output formats": enums lowercase snake_case without the proto
//! prefix, `REPLICA_STATE_RUNNING` → `running`; times RFC 3339 UTC, `0` = unset). The names
//! come from the generated code (`as_str_name`/`from_str_name`), so the proto stays the only
//! owner of every closed set. This module must not decide what a command prints, and must not
//! hold its own copy of any enum's values.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::proto::v1::{
    AuditEventType, BlobKind, CertificateState, DependencyCondition, DeploymentStatus, DiffKind,
    FailureAction, NodeStatus, PlacementMode, RaftRole, Reachability, ReplicaState, RevisionOrigin,
    RolloutState, TlsMode, UpdateOrder,
};

/// A proto enum of a closed set, spelled in output by its short lowercase name.
pub trait ClosedSet: TryFrom<i32> + Copy {
    /// The proto prefix every value name carries, e.g. `NODE_STATUS_`.
    const PREFIX: &'static str;
    /// The full proto name of a value, e.g. `NODE_STATUS_READY`.
    fn proto_name(self) -> &'static str;
    /// The value with this full proto name.
    fn from_proto_name(name: &str) -> Option<Self>;
}

macro_rules! closed_set {
    ($($enum:ty => $prefix:literal,)+) => {$(
        impl ClosedSet for $enum {
            const PREFIX: &'static str = $prefix;
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
        }
    )+};
}

closed_set! {
    NodeStatus => "NODE_STATUS_",
    RaftRole => "RAFT_ROLE_",
    Reachability => "REACHABILITY_",
    AuditEventType => "AUDIT_EVENT_TYPE_",
    ReplicaState => "REPLICA_STATE_",
    DeploymentStatus => "DEPLOYMENT_STATUS_",
    RolloutState => "ROLLOUT_STATE_",
    PlacementMode => "PLACEMENT_MODE_",
    UpdateOrder => "UPDATE_ORDER_",
    FailureAction => "FAILURE_ACTION_",
    DependencyCondition => "DEPENDENCY_CONDITION_",
    TlsMode => "TLS_MODE_",
    CertificateState => "CERTIFICATE_STATE_",
    BlobKind => "BLOB_KIND_",
    DiffKind => "DIFF_KIND_",
    RevisionOrigin => "REVISION_ORIGIN_",
}

/// The short name of a value (`NODE_STATUS_READY` → `ready`).
pub fn short_name<T: ClosedSet>(value: T) -> String {
    let full = value.proto_name();
    full.strip_prefix(T::PREFIX)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// The short name of a raw enum field as it came over the wire; a tag this build does not know
/// (a newer daemon) is spelled `unknown_<tag>` rather than hidden.
pub fn enum_name<T: ClosedSet>(raw: i32) -> String {
    match T::try_from(raw) {
        Ok(value) => short_name(value),
        Err(_) => format!("unknown_{raw}"),
    }
}

/// The value whose short name is `short` (`ready` → `NODE_STATUS_READY`). `unspecified` is not
/// a name anybody may ask for.
pub fn parse_short_name<T: ClosedSet>(short: &str) -> Option<T> {
    if short.is_empty() || short.eq_ignore_ascii_case("unspecified") {
        return None;
    }
    T::from_proto_name(&format!("{}{}", T::PREFIX, short.to_ascii_uppercase()))
}

/// Every short name of a closed set except `unspecified`, in tag order.
pub fn short_names<T: ClosedSet>() -> Vec<String> {
    (1..=255)
        .filter_map(|tag| T::try_from(tag).ok())
        .map(short_name)
        .collect()
}

/// A `*_unix_ms` time as RFC 3339 UTC (`2026-11-26T09:30:00.250Z`); `None` for `0` (unset).
pub fn time(unix_ms: i64) -> Option<String> {
    if unix_ms == 0 {
        return None;
    }
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).ok()?;
    at.format(&Rfc3339).ok()
}

/// [`time`] for a table cell: `-` when unset.
pub fn time_cell(unix_ms: i64) -> String {
    time(unix_ms).unwrap_or_else(|| "-".to_owned())
}

/// A flat map as `key=value` words in key order; a value that is empty or holds white space
/// is quoted so that the words stay separable.
pub fn key_values(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(key, value)| {
            if value.is_empty() || value.chars().any(char::is_whitespace) {
                format!("{key}={value:?}")
            } else {
                format!("{key}={value}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_are_spelled_by_their_short_lowercase_names() {
        assert_eq!(
            short_name(NodeStatus::IsolationUnavailable),
            "isolation_unavailable"
        );
        assert_eq!(enum_name::<RaftRole>(RaftRole::Learner as i32), "learner");
        assert_eq!(enum_name::<Reachability>(1), "reachable");
        assert_eq!(enum_name::<NodeStatus>(99), "unknown_99");
    }

    #[test]
    fn short_names_parse_back_and_unspecified_is_refused() {
        assert_eq!(
            parse_short_name::<AuditEventType>("node_join"),
            Some(AuditEventType::NodeJoin)
        );
        assert_eq!(
            parse_short_name::<AuditEventType>("Token_Revoke"),
            Some(AuditEventType::TokenRevoke)
        );
        for bad in [
            "",
            "unspecified",
            "rebalance_dry_run",
            "AUDIT_EVENT_TYPE_APPLY",
        ] {
            assert_eq!(parse_short_name::<AuditEventType>(bad), None, "{bad}");
        }
        let names = short_names::<AuditEventType>();
        assert_eq!(names.first().map(String::as_str), Some("apply"));
        assert_eq!(names.last().map(String::as_str), Some("rebalance_skipped"));
        assert!(!names.iter().any(|n| n == "unspecified"));
    }

    #[test]
    fn times_are_rfc3339_utc_and_zero_is_unset() {
        assert_eq!(time(0), None);
        assert_eq!(
            time(1_700_000_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            time(1_700_000_000_250).as_deref(),
            Some("2023-11-14T22:13:20.25Z")
        );
        assert_eq!(time_cell(0), "-");
    }

    #[test]
    fn maps_are_sorted_key_value_words() {
        let map: BTreeMap<String, String> = [
            ("node", "node-b"),
            ("deployment", "shop"),
            ("message", "two words"),
            ("empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            key_values(&map),
            r#"deployment=shop empty="" message="two words" node=node-b"#
        );
    }
}
