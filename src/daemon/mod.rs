//! The `jaco daemon` process: configuration, data-dir layout, wiring of the subsystems and
//! their lifecycle.
//!
//! This module only assembles; the logic of each subsystem lives in its own module and is
//! tested there.
//!
//! # Data directory
//! - `raft/log.redb` — raft log, vote and committed index (fsynced); `raft/snapshot.bin` — the
//!   latest state snapshot.
//! - `pki/ca.crt`, `pki/node.crt`, `pki/node.key` — written when init or join completed; their
//!   presence is what makes a restarted daemon resume as a member.

pub mod config;
pub mod core;
pub mod download;
pub mod fleet;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod member;
pub mod metrics;
pub mod node_info;
pub mod reconcile;
pub mod restore;
pub mod run;
pub mod upgrade;
