//! jaco runs Docker Compose applications on a small raft-backed cluster of appliance nodes.
//!
//! # Layout
//! - [`cli`]: the `jaco` command line — clap command tree, output formats, command adapters.
//! - [`error`]: the closed error-code set and the `Error { code, message, details }` envelope.
//! - [`manifest`]: jaco.yaml + compose → validated, resolved deployment (SPEC §2).
//! - [`proto`]: generated `jaco.v1` protobuf messages and gRPC services.
//! - [`state`]: the replicated state machine — every entity, the pure deterministic `apply`,
//!   snapshots, audit log, and the watch hub that fans changes out.

pub mod cli;
pub mod error;
pub mod manifest;
pub mod proto;
pub mod state;
