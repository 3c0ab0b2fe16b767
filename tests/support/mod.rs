//! Support code shared by integration tests.

pub mod cluster;
pub mod daemons;
pub mod deploy;
pub mod docker;
pub mod netns;
pub mod nft;
