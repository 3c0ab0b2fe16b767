//! jaco runs Docker Compose applications on a small raft-backed cluster of appliance nodes.
//!
//! # Layout
//! - [`error`]: the closed error-code set and the `Error { code, message, details }` envelope.
//! - [`proto`]: generated `jaco.v1` protobuf messages and gRPC services.

pub mod error;
pub mod proto;
