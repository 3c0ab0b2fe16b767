//! Support code shared by integration tests.

pub mod daemons;
pub mod docker;
pub mod netns;
