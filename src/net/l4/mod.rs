//! Cluster-wide L4 routes (SPEC §2.4, §7): every node listens on every compose-published TCP
//! host port and forwards each connection to a healthy replica of the service anywhere in the
//! cluster, optionally announcing the client with a PROXY protocol v2 header.
//!
//! - [`select`]: round-robin and the order of connect attempts (pure).
//! - [`header`]: the PROXY v2 header bytes (pure).
//! - [`proxy`]: the listeners, their reconciliation and the byte copying.
//!
//! The caller (the network supervisor) turns the replicated state into [`Route`]s with
//! replica container addresses and hands them over on every change; nothing here reads the
//! state or judges health.

pub mod header;
pub mod proxy;
pub mod select;

pub use proxy::{L4, Route, RouteStats};
