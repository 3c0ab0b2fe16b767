//! The container runtime of a node: what runs where, observed and reported (issue 4).
//!
//! This build holds the pure decisions the Docker runtime will be driven by — how an inspected
//! container maps to the closed set of replica states ([`observe`]) and when a failed image
//! pull is retried ([`backoff`]) — each a function of values, tested without Docker. The
//! Docker edge (bollard) and the node's runtime loop arrive next; this module must not talk to
//! Docker itself, and nothing in the daemon calls it yet.

pub mod backoff;
pub mod observe;
