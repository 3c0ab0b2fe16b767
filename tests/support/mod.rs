//! Support code shared by integration tests.

pub mod cluster;
pub mod daemons;
pub mod deploy;
pub mod dns;
pub mod docker;
pub mod mesh;
pub mod netns;
pub mod pool;
pub mod nft;
