//! The gRPC API edge: listeners, authentication, the tonic services and forwarding of writes to
//! the leader.
//!
//! Handlers parse requests into typed commands and queries and format replies; decisions live
//! in the state machine and the subsystems. Nothing here may mutate state except by submitting
//! a command.

pub mod audit;
pub mod auth;
pub mod cluster;
pub mod context;
pub mod deploy;
pub mod deploy_view;
pub mod edge;
pub mod internal;
pub mod listen;
pub mod registry;
pub mod replica_io;
pub mod server;
pub mod submit;
pub mod tokens;
pub mod upgrade;
