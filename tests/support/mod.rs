//! Support code shared by integration tests.

pub mod cluster;
pub mod daemons;
pub mod deploy;
pub mod docker;
pub mod mesh;
pub mod netns;
