//! Support code shared by integration tests.

pub mod daemons;
pub mod netns;
