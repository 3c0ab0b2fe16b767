//! Cluster identity and membership records: `InitCluster`, nodes joining and leaving, what
//! nodes report about themselves, and what the leader records about them (status, raft role,
//! heartbeats, reachability, drains).
//!
//! These records describe membership; they do not change it. Raft membership is the raft
//! layer's job, driven by the leader's reconciler from these records. Nothing here reads a
//! clock: heartbeat times are the leader's receive times carried in the command.
//!
//! It must not read clocks, randomness or disks, nor change raft membership itself.

use crate::error::{Code, Error};
use crate::proto::v1::{
    AddNode, AuditEventType, ClusterMeta, InitCluster, Node, NodeStatus, RaftRole, Reachability,
    RecordHeartbeats, RemoveNode, SetNodeDrain, SetNodeReachability, SetNodeStatus, SetRaftRoles,
    UpdateNodeInfo, command_result::Outcome,
};

use super::audit::DEFAULT_AUDIT_RETENTION;
use super::change::{Tx, modify, put, take, take_where};
use super::ipam::{DEFAULT_IPAM_POOL, Pool};
use super::{State, ack, invalid, missing, named, optional, payload, required};

impl State {
    // ---- queries ---------------------------------------------------------------------------

    /// The cluster identity (CA key included: not for RPC answers); None before init.
    pub fn cluster_meta(&self) -> Option<&ClusterMeta> {
        self.cluster.as_ref()
    }

    /// Whether `InitCluster` has been applied.
    pub fn is_initialized(&self) -> bool {
        self.cluster.is_some()
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The node with this raft id.
    pub fn node_by_raft_id(&self, raft_id: u64) -> Option<&Node> {
        self.nodes.values().find(|n| n.raft_id == raft_id)
    }

    // ---- commands --------------------------------------------------------------------------

    pub(super) fn init_cluster(&mut self, tx: &mut Tx, c: &InitCluster) -> Result<Outcome, Error> {
        if let Some(meta) = &self.cluster {
            return Err(Error::new(
                Code::ClusterAlreadyInitialized,
                "the cluster is already initialised",
            )
            .with("cluster_id", &meta.cluster_id));
        }
        let mut meta = c.meta.clone().ok_or_else(|| missing("meta"))?;
        required(&meta.cluster_id, "meta.cluster_id")?;
        if meta.ipam_pool.is_empty() {
            meta.ipam_pool = DEFAULT_IPAM_POOL.to_owned();
        }
        Pool::parse(&meta.ipam_pool)?;
        if meta.audit_retention_events == 0 {
            meta.audit_retention_events = DEFAULT_AUDIT_RETENTION;
        }
        if meta.created_at_unix_ms == 0 {
            meta.created_at_unix_ms = tx.now;
        }
        let mut node = self.new_member(tx, c.node.as_ref(), RaftRole::Leader)?;
        node.mesh_address = self.free_mesh_address(Pool::parse(&meta.ipam_pool)?);
        let mut bootstrap = c
            .bootstrap_token
            .clone()
            .ok_or_else(|| missing("bootstrap_token"))?;
        if bootstrap.name.is_empty() {
            bootstrap.name = "bootstrap".to_owned();
        }
        let bootstrap = self.new_operator_token(tx, Some(&bootstrap))?;

        tx.record(None, Some(&meta));
        let join = payload([
            ("node", node.name.clone()),
            ("raft_id", node.raft_id.to_string()),
            ("cluster_id", meta.cluster_id.clone()),
            ("init", "true".to_owned()),
        ]);
        self.cluster = Some(meta);
        put(&mut self.nodes, node.name.clone(), node, tx);
        self.audit_push(tx, AuditEventType::NodeJoin, join);
        self.store_operator_token(tx, bootstrap);
        Ok(ack())
    }

    /// Checks and completes a joining node (defaults: joining, `role`, reachable, now).
    fn new_member(&self, tx: &Tx, node: Option<&Node>, role: RaftRole) -> Result<Node, Error> {
        let mut node = node.cloned().ok_or_else(|| missing("node"))?;
        required(&node.name, "node.name")?;
        if self.nodes.contains_key(&node.name) {
            return Err(Error::new(
                Code::NodeAlreadyMember,
                format!("node {} is already a member", node.name),
            )
            .with("node", &node.name));
        }
        if let Some(other) = self.nodes.values().find(|n| n.raft_id == node.raft_id) {
            return Err(Error::new(
                Code::NodeAlreadyMember,
                format!("raft id {} belongs to node {}", node.raft_id, other.name),
            )
            .with("node", &node.name)
            .with("raft_id", node.raft_id)
            .with("member", &other.name));
        }
        let status = optional::<NodeStatus>(node.status, "node.status")?;
        node.status = status.unwrap_or(NodeStatus::Joining).into();
        let raft_role = optional::<RaftRole>(node.raft_role, "node.raft_role")?;
        node.raft_role = raft_role.unwrap_or(role).into();
        let reachability = optional::<Reachability>(node.reachability, "node.reachability")?;
        node.reachability = reachability.unwrap_or(Reachability::Reachable).into();
        if node.joined_at_unix_ms == 0 {
            node.joined_at_unix_ms = tx.now;
        }
        Ok(node)
    }

    pub(super) fn add_node(&mut self, tx: &mut Tx, c: &AddNode) -> Result<Outcome, Error> {
        let mut node = self.new_member(tx, c.node.as_ref(), RaftRole::Learner)?;
        node.mesh_address = self.free_mesh_address(self.ipam_pool());
        let join = payload([
            ("node", node.name.clone()),
            ("raft_id", node.raft_id.to_string()),
            ("api_address", node.api_address.clone()),
        ]);
        put(&mut self.nodes, node.name.clone(), node, tx);
        self.audit_push(tx, AuditEventType::NodeJoin, join);
        Ok(ack())
    }

    pub(super) fn remove_node(&mut self, tx: &mut Tx, c: &RemoveNode) -> Result<Outcome, Error> {
        self.existing_node(&c.node)?;
        take(&mut self.nodes, c.node.as_str(), tx);
        take_where(&mut self.subnets, tx, |(_, _, node), _| *node == c.node);
        let details = payload([("node", c.node.clone()), ("force", c.force.to_string())]);
        self.audit_push(tx, AuditEventType::NodeRemove, details);
        Ok(ack())
    }

    pub(super) fn update_node_info(
        &mut self,
        tx: &mut Tx,
        c: &UpdateNodeInfo,
    ) -> Result<Outcome, Error> {
        self.existing_node(&c.node)?;
        modify(&mut self.nodes, c.node.as_str(), tx, |node| {
            node.api_address.clone_from(&c.api_address);
            node.raft_address.clone_from(&c.raft_address);
            node.wireguard_public_key
                .clone_from(&c.wireguard_public_key);
            node.wireguard_endpoint.clone_from(&c.wireguard_endpoint);
            if c.capacity.is_some() {
                node.capacity = c.capacity;
            }
            node.labels.clone_from(&c.labels);
            node.version.clone_from(&c.version);
            node.os_version.clone_from(&c.os_version);
            node.boot_slot.clone_from(&c.boot_slot);
            node.root_verity = c.root_verity;
            node.arch.clone_from(&c.arch);
        });
        Ok(ack())
    }

    /// Checks a status change (also used inside scheduler batches).
    pub(super) fn check_node_status(&self, c: &SetNodeStatus) -> Result<(), Error> {
        self.existing_node(&c.node)?;
        optional::<NodeStatus>(c.status, "status")?;
        Ok(())
    }

    /// Applies a checked status change; entering `isolation_unavailable` is audited.
    pub(super) fn do_node_status(&mut self, tx: &mut Tx, c: &SetNodeStatus) {
        let was = self.nodes.get(&c.node).map(Node::status);
        let now = tx.now;
        modify(&mut self.nodes, c.node.as_str(), tx, |node| {
            if c.status != 0 {
                node.status = c.status;
            }
            node.status_details.clone_from(&c.status_details);
            for (slot, new) in [
                (&mut node.isolation, &c.isolation),
                (&mut node.docker, &c.docker),
            ] {
                if let Some(new) = new {
                    let mut new = new.clone();
                    if new.changed_at_unix_ms == 0 {
                        new.changed_at_unix_ms = match slot {
                            Some(old) if old.ok == new.ok => old.changed_at_unix_ms,
                            _ => now,
                        };
                    }
                    *slot = Some(new);
                }
            }
        });
        let entering = c.status == i32::from(NodeStatus::IsolationUnavailable)
            && was != Some(NodeStatus::IsolationUnavailable);
        if entering {
            let mut details = payload([("node", c.node.clone())]);
            if let Some(isolation) = &c.isolation {
                details.insert("code".to_owned(), isolation.code.clone());
                details.insert("message".to_owned(), isolation.message.clone());
            }
            self.audit_push(tx, AuditEventType::IsolationUnavailable, details);
        }
    }

    pub(super) fn set_node_status(
        &mut self,
        tx: &mut Tx,
        c: &SetNodeStatus,
    ) -> Result<Outcome, Error> {
        self.check_node_status(c)?;
        self.do_node_status(tx, c);
        Ok(ack())
    }

    pub(super) fn set_raft_roles(
        &mut self,
        tx: &mut Tx,
        c: &SetRaftRoles,
    ) -> Result<Outcome, Error> {
        for role in c.roles.values() {
            named::<RaftRole>(*role, "roles")?;
        }
        // Nodes removed meanwhile are skipped: the reconciler's view may lag by a tick.
        for (name, role) in &c.roles {
            modify(&mut self.nodes, name.as_str(), tx, |node| {
                node.raft_role = *role
            });
        }
        Ok(ack())
    }

    pub(super) fn record_heartbeats(
        &mut self,
        tx: &mut Tx,
        c: &RecordHeartbeats,
    ) -> Result<Outcome, Error> {
        for beat in &c.heartbeats {
            modify(&mut self.nodes, beat.node.as_str(), tx, |node| {
                node.last_heartbeat_unix_ms =
                    node.last_heartbeat_unix_ms.max(beat.received_at_unix_ms);
                if beat.pressure.is_some() {
                    node.pressure = beat.pressure;
                }
            });
        }
        Ok(ack())
    }

    pub(super) fn set_node_reachability(
        &mut self,
        tx: &mut Tx,
        c: &SetNodeReachability,
    ) -> Result<Outcome, Error> {
        self.existing_node(&c.node)?;
        let reachability = named::<Reachability>(c.reachability, "reachability")?;
        modify(&mut self.nodes, c.node.as_str(), tx, |node| {
            node.reachability = reachability.into();
        });
        Ok(ack())
    }

    /// Checks a drain change (also used inside scheduler batches).
    pub(super) fn check_node_drain(&self, c: &SetNodeDrain) -> Result<(), Error> {
        self.existing_node(&c.node).map(|_| ())
    }

    /// Applies a checked drain change (unset drain = cancel); request time and identity default
    /// to the command's.
    /// A new request or a cancel also ends a `drain_timeout`: the node is `ready` again (and,
    /// with a new request, the scheduler resumes moving its replicas).
    pub(super) fn do_node_drain(&mut self, tx: &mut Tx, c: &SetNodeDrain) {
        let operator = c.drain.as_ref().is_none_or(|d| d.requested_at_unix_ms == 0);
        let mut drain = c.drain.clone();
        if let Some(drain) = &mut drain {
            if drain.requested_at_unix_ms == 0 {
                drain.requested_at_unix_ms = tx.now;
            }
            if drain.requested_by.is_empty() {
                drain.requested_by = tx.identity.to_owned();
            }
        }
        modify(&mut self.nodes, c.node.as_str(), tx, |node| {
            node.drain = drain.clone();
            if operator && node.status() == NodeStatus::DrainTimeout {
                node.status = NodeStatus::Ready.into();
                node.status_details.clear();
            }
        });
    }

    pub(super) fn set_node_drain(
        &mut self,
        tx: &mut Tx,
        c: &SetNodeDrain,
    ) -> Result<Outcome, Error> {
        self.check_node_drain(c)?;
        self.do_node_drain(tx, c);
        Ok(ack())
    }

    /// The node with this name, or `not_found`.
    pub(super) fn existing_node(&self, name: &str) -> Result<&Node, Error> {
        self.nodes.get(name).ok_or_else(|| {
            if name.is_empty() {
                invalid("node", "node is required")
            } else {
                Error::new(Code::NotFound, format!("no node named {name}")).with("node", name)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::command::Kind;
    use crate::proto::v1::{
        CommandAck, NodeCondition, NodeDrain, NodeHeartbeat, NodePressure, NodeResources,
        command_result::Outcome,
    };
    use crate::state::testkit::*;
    use crate::state::{AuditFilter, ChangeKind, WatchEvent};

    fn audit_types(h: &Harness) -> Vec<AuditEventType> {
        h.state
            .audit(&AuditFilter::default())
            .events
            .iter()
            .map(|e| e.r#type())
            .collect()
    }

    fn node_events(events: &[WatchEvent]) -> Vec<(ChangeKind, &str)> {
        events
            .iter()
            .filter(|e| e.entity_type == crate::proto::v1::EntityType::Node)
            .map(|e| (e.kind, e.key.as_str()))
            .collect()
    }

    #[test]
    fn test_init_cluster_creates_meta_first_node_and_bootstrap_token() {
        let mut h = Harness::new();
        assert!(matches!(h.ok(init_cluster()), Outcome::Ack(CommandAck {})));
        let meta = h.state.cluster_meta().expect("initialised");
        assert_eq!(meta.cluster_id, "c-1");
        assert_eq!(meta.ipam_pool, "10.244.0.0/16");
        assert_eq!(meta.audit_retention_events, 100_000);
        assert_eq!(meta.created_at_unix_ms, h.now);
        let node = h.state.node("n1").expect("first node");
        assert_eq!(node.status(), NodeStatus::Joining);
        assert_eq!(node.raft_role(), RaftRole::Leader);
        assert_eq!(node.reachability(), Reachability::Reachable);
        assert_eq!(node.joined_at_unix_ms, h.now);
        let token = h
            .state
            .operator_token("bootstrap")
            .expect("bootstrap token");
        assert_eq!(token.sha256, sha(BOOTSTRAP_SECRET));
        assert_eq!(
            audit_types(&h),
            [AuditEventType::NodeJoin, AuditEventType::TokenIssue]
        );
        assert_eq!(h.state.revision(), h.index);
        let types: Vec<_> = h.events.iter().map(|e| e.entity_type).collect();
        use crate::proto::v1::EntityType as T;
        assert_eq!(
            types,
            [
                T::ClusterMeta,
                T::Node,
                T::AuditEvent,
                T::OperatorToken,
                T::AuditEvent
            ]
        );
    }

    #[test]
    fn test_init_cluster_errors() {
        let mut h = Harness::initialised();
        let err = h.rejected(init_cluster(), Code::ClusterAlreadyInitialized);
        assert_eq!(err.details["cluster_id"], "c-1");

        let mut h = Harness::new();
        let mut bad_pool = init_cluster();
        let mut no_token = init_cluster();
        let mut no_id = init_cluster();
        if let (Kind::InitCluster(a), Kind::InitCluster(b), Kind::InitCluster(c)) =
            (&mut bad_pool, &mut no_token, &mut no_id)
        {
            a.meta.as_mut().expect("meta").ipam_pool = "10.0.0.0/25".into();
            b.bootstrap_token = None;
            c.meta.as_mut().expect("meta").cluster_id.clear();
        }
        h.rejected(bad_pool, Code::ValidationFailed);
        h.rejected(no_token, Code::ValidationFailed);
        h.rejected(no_id, Code::ValidationFailed);
        assert!(!h.state.is_initialized());
    }

    #[test]
    fn test_every_command_but_init_needs_a_cluster() {
        let mut h = Harness::new();
        h.rejected(add_node("n2", 2), Code::ClusterUninitialized);
        h.rejected(
            Kind::RemoveNode(RemoveNode {
                node: "n1".into(),
                force: false,
            }),
            Code::ClusterUninitialized,
        );
    }

    #[test]
    fn test_add_node_records_a_learner_and_audits_the_join() {
        let mut h = Harness::initialised();
        h.ok(add_node("n2", 2));
        let node = h.state.node("n2").expect("added");
        assert_eq!(node.raft_role(), RaftRole::Learner);
        assert_eq!(node.status(), NodeStatus::Joining);
        assert_eq!(
            h.state.node_by_raft_id(2).map(|n| n.name.as_str()),
            Some("n2")
        );
        assert_eq!(audit_types(&h).last(), Some(&AuditEventType::NodeJoin));
        assert_eq!(node_events(&h.events), [(ChangeKind::Added, "n2")]);
    }

    #[test]
    fn test_add_node_errors() {
        let mut h = Harness::initialised();
        let err = h.rejected(add_node("n1", 9), Code::NodeAlreadyMember);
        assert_eq!(err.details["node"], "n1");
        let err = h.rejected(add_node("n9", 1), Code::NodeAlreadyMember);
        assert_eq!(err.details["member"], "n1");
        h.rejected(add_node("", 9), Code::ValidationFailed);
        h.rejected(
            Kind::AddNode(AddNode { node: None }),
            Code::ValidationFailed,
        );
        let mut bad_status = add_node("n2", 2);
        if let Kind::AddNode(c) = &mut bad_status {
            c.node.as_mut().expect("node").status = 99;
        }
        h.rejected(bad_status, Code::ValidationFailed);
    }

    #[test]
    fn test_remove_node_forgets_it_and_its_subnets() {
        let mut h = Harness::initialised();
        h.ok(add_node("n2", 2));
        h.ok(apply_deployment("shop", spec(&[("web", "nginx:1")])));
        h.ok(allocate_subnet("shop", "default", "n2"));
        h.ok(allocate_subnet("shop", "default", "n1"));
        h.ok(Kind::RemoveNode(RemoveNode {
            node: "n2".into(),
            force: true,
        }));
        assert!(h.state.node("n2").is_none());
        let hosts: Vec<&str> = h.state.subnets().map(|s| s.node.as_str()).collect();
        assert_eq!(hosts, ["n1"]);
        let audit = h
            .state
            .audit(&AuditFilter::default())
            .events
            .pop()
            .expect("audit");
        assert_eq!(audit.r#type(), AuditEventType::NodeRemove);
        assert_eq!(audit.payload["force"], "true");
        let err = h.rejected(
            Kind::RemoveNode(RemoveNode {
                node: "n2".into(),
                force: false,
            }),
            Code::NotFound,
        );
        assert_eq!(err.details["node"], "n2");
    }

    #[test]
    fn test_update_node_info_replaces_self_reported_fields_only() {
        let mut h = Harness::initialised();
        let update = UpdateNodeInfo {
            node: "n1".into(),
            api_address: "10.0.0.1:7000".into(),
            version: "0.2.0".into(),
            capacity: Some(NodeResources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
            }),
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            ..Default::default()
        };
        h.ok(Kind::UpdateNodeInfo(update.clone()));
        let node = h.state.node("n1").expect("node");
        assert_eq!(node.api_address, "10.0.0.1:7000");
        assert_eq!(node.version, "0.2.0");
        assert_eq!(node.capacity.map(|c| c.cpu_millis), Some(4000));
        assert_eq!(node.labels["zone"], "a");
        assert_eq!(
            node.raft_role(),
            RaftRole::Leader,
            "leader-recorded fields untouched"
        );
        // The same report again is no change at all.
        let revision = h.state.revision();
        h.ok(Kind::UpdateNodeInfo(update));
        assert!(h.events.is_empty());
        assert_eq!(h.state.revision(), revision);
        h.rejected(
            Kind::UpdateNodeInfo(UpdateNodeInfo {
                node: "zz".into(),
                ..Default::default()
            }),
            Code::NotFound,
        );
    }

    #[test]
    fn test_set_node_status_keeps_unset_conditions_and_audits_isolation_loss() {
        let mut h = Harness::initialised();
        let broken = NodeCondition {
            ok: false,
            code: "isolation_self_test_failed".into(),
            ..Default::default()
        };
        h.ok(Kind::SetNodeStatus(SetNodeStatus {
            node: "n1".into(),
            status: NodeStatus::IsolationUnavailable.into(),
            isolation: Some(broken),
            ..Default::default()
        }));
        let node = h.state.node("n1").expect("node");
        assert_eq!(node.status(), NodeStatus::IsolationUnavailable);
        assert_eq!(
            node.isolation.as_ref().map(|c| c.changed_at_unix_ms),
            Some(h.now)
        );
        let audit = h
            .state
            .audit(&AuditFilter::default())
            .events
            .pop()
            .expect("audit");
        assert_eq!(audit.r#type(), AuditEventType::IsolationUnavailable);
        assert_eq!(audit.payload["code"], "isolation_self_test_failed");
        let audited = h.state.audit_len();
        // Staying unavailable is not audited again; an unset status keeps the stored one.
        h.ok(Kind::SetNodeStatus(SetNodeStatus {
            node: "n1".into(),
            ..Default::default()
        }));
        assert_eq!(h.state.audit_len(), audited);
        let node = h.state.node("n1").expect("node");
        assert_eq!(node.status(), NodeStatus::IsolationUnavailable);
        assert!(
            node.isolation.is_some(),
            "unset condition keeps the stored one"
        );
        h.ok(Kind::SetNodeStatus(SetNodeStatus {
            node: "n1".into(),
            status: NodeStatus::Ready.into(),
            ..Default::default()
        }));
        assert_eq!(
            h.state.node("n1").map(Node::status),
            Some(NodeStatus::Ready)
        );
        h.rejected(
            Kind::SetNodeStatus(SetNodeStatus {
                node: "zz".into(),
                ..Default::default()
            }),
            Code::NotFound,
        );
        h.rejected(
            Kind::SetNodeStatus(SetNodeStatus {
                node: "n1".into(),
                status: 42,
                ..Default::default()
            }),
            Code::ValidationFailed,
        );
    }

    #[test]
    fn test_raft_roles_heartbeats_and_reachability() {
        let mut h = Harness::initialised();
        h.ok(add_node("n2", 2));
        h.ok(Kind::SetRaftRoles(SetRaftRoles {
            roles: [
                ("n2".to_owned(), RaftRole::Follower.into()),
                ("gone".to_owned(), RaftRole::Follower.into()),
            ]
            .into(),
        }));
        assert_eq!(
            h.state.node("n2").map(Node::raft_role),
            Some(RaftRole::Follower)
        );
        h.rejected(
            Kind::SetRaftRoles(SetRaftRoles {
                roles: [("n2".to_owned(), 0)].into(),
            }),
            Code::ValidationFailed,
        );

        let pressure = NodePressure {
            cpu: 0.5,
            memory: 0.25,
            sampled_at_unix_ms: 5,
        };
        h.ok(Kind::RecordHeartbeats(RecordHeartbeats {
            heartbeats: vec![
                NodeHeartbeat {
                    node: "n2".into(),
                    received_at_unix_ms: 900,
                    pressure: Some(pressure),
                    ..Default::default()
                },
                NodeHeartbeat {
                    node: "gone".into(),
                    received_at_unix_ms: 900,
                    ..Default::default()
                },
            ],
        }));
        // An older heartbeat does not move last_heartbeat back.
        h.ok(Kind::RecordHeartbeats(RecordHeartbeats {
            heartbeats: vec![NodeHeartbeat {
                node: "n2".into(),
                received_at_unix_ms: 800,
                ..Default::default()
            }],
        }));
        let n2 = h.state.node("n2").expect("n2");
        assert_eq!(n2.last_heartbeat_unix_ms, 900);
        assert_eq!(n2.pressure, Some(pressure));

        h.ok(Kind::SetNodeReachability(SetNodeReachability {
            node: "n2".into(),
            reachability: Reachability::Unreachable.into(),
        }));
        assert_eq!(
            h.state.node("n2").map(Node::reachability),
            Some(Reachability::Unreachable)
        );
        h.rejected(
            Kind::SetNodeReachability(SetNodeReachability {
                node: "zz".into(),
                reachability: 1,
            }),
            Code::NotFound,
        );
        h.rejected(
            Kind::SetNodeReachability(SetNodeReachability {
                node: "n2".into(),
                reachability: 0,
            }),
            Code::ValidationFailed,
        );
    }

    #[test]
    fn test_node_drain_set_and_cancel() {
        let mut h = Harness::initialised();
        let drain = NodeDrain {
            remove: true,
            ..Default::default()
        };
        h.ok(Kind::SetNodeDrain(SetNodeDrain {
            node: "n1".into(),
            drain: Some(drain),
        }));
        let stored = h
            .state
            .node("n1")
            .and_then(|n| n.drain.clone())
            .expect("drain");
        assert_eq!(stored.requested_at_unix_ms, h.now);
        assert_eq!(stored.requested_by, "local");
        h.ok(Kind::SetNodeStatus(SetNodeStatus {
            node: "n1".into(),
            status: NodeStatus::DrainTimeout.into(),
            ..Default::default()
        }));
        h.ok(Kind::SetNodeDrain(SetNodeDrain {
            node: "n1".into(),
            drain: None,
        }));
        let node = h.state.node("n1").unwrap();
        assert!(node.drain.is_none());
        assert_eq!(
            node.status(),
            NodeStatus::Ready,
            "a cancel ends drain_timeout"
        );
        h.rejected(
            Kind::SetNodeDrain(SetNodeDrain {
                node: "zz".into(),
                drain: None,
            }),
            Code::NotFound,
        );
    }
}
