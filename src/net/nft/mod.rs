//! The `inet jaco` isolation table (SPEC §7, issue 6): containers of one (deployment, network)
//! scope reach each other on every node, containers of two different jaco scopes do not, and
//! host traffic is untouched.
//!
//! - [`render`] (pure): scopes → the expected table and its text for one atomic `nft -f -`.
//! - [`table`] (pure): the value model both sides are compared in, and the parser of
//!   `nft -j list table` output.
//! - [`check`] (pure): startup self-test and drift report.
//! - [`apply`]: runs `nft` (apply, read back).
//! - [`docker`]: the iptables exemptions Docker's own rules need.
//!
//! Deciding the scopes from the replicated state, when to re-apply and what to audit belong
//! to the network supervisor; nothing here reads or changes the replicated state.

pub mod apply;
pub mod check;
pub mod docker;
pub mod render;
pub mod table;

pub use apply::Nft;

/// The code of every failure to run `nft` or `iptables`: the isolation cannot be brought up.
const FAILURE: crate::error::Code = crate::error::Code::IsolationUnavailable;
pub use check::{drift, self_test};
pub use docker::ensure_docker_exemptions;
pub use render::{RulesetSpec, Scope, render};
pub use table::ObservedTable;
