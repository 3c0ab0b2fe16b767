//! Generated protobuf and gRPC types for the `jaco.v1` API (see `proto/jaco/v1/`).
//!
//! Nothing but the generated code lives here; conversions to domain types belong to the
//! modules that own those types.

/// The `jaco.v1` package: entities, commands, services and the error envelope.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("jaco.v1");
}
