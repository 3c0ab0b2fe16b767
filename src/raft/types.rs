//! The openraft type configuration of jaco: what a log entry carries, what a node is, and how a
//! node's raft id is derived from its name.
//!
//! Entries carry opaque bytes (a prost-encoded `Command` in, a prost-encoded `CommandResult` out);
//! this module must not know what is inside them. Everything here is serialized into the raft
//! log on disk and onto the wire, so a change to a serde shape is a storage-format change.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The raft id of a node.
///
/// Derived from the node name with [`node_id_from_name`], so every node computes the same id for
/// a name without coordination.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// jaco's openraft type configuration: opaque byte commands, [`NodeAddr`] nodes, tokio.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The raft handle of a jaco node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (leader term and node, index).
pub type LogId = openraft::LogId<NodeId>;
/// A vote (term, candidate, committed).
pub type Vote = openraft::Vote<NodeId>;
/// Metadata of a snapshot: the last log id and membership it contains.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
/// Membership as stored with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
/// The error type of every storage operation.
pub type StorageError = openraft::StorageError<NodeId>;
/// A snapshot handed to openraft.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// Raft metrics of a node (role, term, leader, indexes, membership).
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeAddr>;

/// A command proposed to raft: the prost-encoded `jaco.v1.Command`, opaque to this layer.
///
/// Serialized as a base64 string, so the JSON log and wire encodings stay compact. `Debug` prints
/// the length only: commands can carry secrets, which must never reach a log line.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(#[serde(with = "base64_bytes")] pub Vec<u8>);

/// The result of applying a [`Request`]: the prost-encoded `jaco.v1.CommandResult`.
///
/// Blank and membership entries produce an empty response. Serialized and printed like
/// [`Request`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(#[serde(with = "base64_bytes")] pub Vec<u8>);

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Request({} bytes)", self.0.len())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Response({} bytes)", self.0.len())
    }
}

/// serde `with` module: bytes as one standard base64 string (JSON arrays of numbers are about
/// three times larger).
pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `bytes` as base64.
    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    /// Deserializes base64 into bytes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// A cluster member as raft knows it: its name and where its gRPC API listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// Node name (unique in the cluster; the raft id is derived from it).
    pub name: String,
    /// `host:port` of the node's gRPC API, which also serves the internal raft RPCs.
    pub addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// The current leader's member entry as `metrics` know it, if a leader is known.
pub fn leader_of(metrics: &RaftMetrics) -> Option<NodeAddr> {
    let leader = metrics.current_leader?;
    metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .cloned()
}

/// The raft id of the node called `name`: the first 8 bytes of SHA-256(`name`), big-endian.
///
/// Two names map to the same id with probability about 2^-64 per pair. Because raft would treat
/// the second node as the first, a join must refuse a name whose id is already taken by another
/// name; [`id_collision`] performs that check against the current membership.
pub fn node_id_from_name(name: &str) -> NodeId {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The name of the member that already holds the raft id of `name`, if that member has another
/// name. `members` are the nodes of the current membership (voters and learners).
///
/// A joining node whose id collides must be refused (`node_already_member` with the colliding
/// name in the details); the operator renames it.
pub fn id_collision<'a>(
    members: impl IntoIterator<Item = (&'a NodeId, &'a NodeAddr)>,
    name: &str,
) -> Option<String> {
    let id = node_id_from_name(name);
    members
        .into_iter()
        .find(|(member_id, node)| **member_id == id && node.name != name)
        .map(|(_, node)| node.name.clone())
}

/// Builds the `BTreeMap` of members that [`openraft::Raft::initialize`] and
/// [`openraft::Raft::change_membership`] accept, keyed by the derived ids.
pub fn members_by_id(nodes: impl IntoIterator<Item = NodeAddr>) -> BTreeMap<NodeId, NodeAddr> {
    nodes
        .into_iter()
        .map(|node| (node_id_from_name(&node.name), node))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        // The id of a name must never change: it is stored in every node's log and membership.
        assert_eq!(node_id_from_name("node-a"), node_id_from_name("node-a"));
        assert_ne!(node_id_from_name("node-a"), node_id_from_name("node-b"));
        let digest = Sha256::digest(b"node-a");
        assert_eq!(
            node_id_from_name("node-a").to_be_bytes(),
            digest[..8],
            "first 8 bytes of SHA-256, big-endian"
        );
    }

    #[test]
    fn a_colliding_id_with_another_name_is_reported() {
        let a = NodeAddr {
            name: "node-a".into(),
            addr: "10.0.0.1:7000".into(),
        };
        let members = members_by_id([a.clone()]);
        // The same name is a re-join, not a collision.
        assert_eq!(id_collision(&members, "node-a"), None);
        assert_eq!(id_collision(&members, "node-b"), None);
        // Forge a member that holds node-b's id under another name.
        let forged = BTreeMap::from([(node_id_from_name("node-b"), a)]);
        assert_eq!(id_collision(&forged, "node-b"), Some("node-a".to_owned()));
    }

    #[test]
    fn opaque_bytes_are_base64_in_json_and_hidden_in_debug() {
        let request = Request(vec![0, 1, 2, 250, 255]);
        let json = serde_json::to_string(&request).expect("serializes");
        assert_eq!(json, "\"AAEC+v8=\"");
        let back: Request = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, request);
        assert_eq!(format!("{request:?}"), "Request(5 bytes)");
        assert_eq!(
            format!("{:?}", Response(b"secret".to_vec())),
            "Response(6 bytes)"
        );
        assert!(serde_json::from_str::<Response>("\"not base64!\"").is_err());
    }
}
