//! The `jaco` command line.
//!
//! Role: the clap command tree, the dispatcher and the plumbing every command shares.

pub mod output;
