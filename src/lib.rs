//! jaco runs Docker Compose applications on a small raft-backed cluster of appliance nodes.
//!
//! # Layout
//! - [`api`]: the gRPC API edge — listeners, authentication, services, forwarding.
//! - [`backup`]: the backup file format — header, snapshot payload, checksum, atomic write.
//! - [`cli`]: the `jaco` command line — clap command tree, output formats, command adapters.
//! - [`daemon`]: the `jaco daemon` process — configuration, wiring, lifecycle.
//! - [`error`]: the closed error-code set and the `Error { code, message, details }` envelope.
//! - [`manifest`]: jaco.yaml + compose → validated, resolved deployment (SPEC §2).
//! - [`net`]: networking on every node — isolation (nftables), WireGuard mesh, service DNS,
//!   cluster-wide L4 routes (SPEC §7).
//! - [`pki`]: cluster CA, node keys and certificates, TLS configs, operator and join tokens.
//! - [`proto`]: generated `jaco.v1` protobuf messages and gRPC services.
//! - [`raft`]: openraft 0.9 wiring — durable redb log, snapshotting state machine adapter, gRPC
//!   transport between nodes (SPEC §4).
//! - [`state`]: the replicated state machine — every entity, the pure deterministic `apply`,
//!   snapshots, audit log, and the watch hub that fans changes out.
//! - [`yaml`]: YAML documents whose every node knows its line and column.

pub mod api;
pub mod backup;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod manifest;
pub mod net;
pub mod pki;
pub mod proto;
pub mod raft;
pub mod runtime;
pub mod scheduler;
pub mod state;
pub mod upgrade;
pub mod yaml;
