//! The gRPC API edge: listeners, authentication, the tonic services and forwarding of writes to
//! the leader.
//!
//! Handlers parse requests into typed commands and queries and format replies; decisions live
//! in the state machine and the subsystems. Nothing here may mutate state except by submitting
//! a command.

pub mod auth;
pub mod internal;
pub mod listen;
pub mod submit;
