//! The replicated state machine and its watch stream.
//!
//! # Layout
//! - `diff`: what an apply or rollback changes ([`deployment_diff`]).
//! - [`watch`]: watch events and the [`WatchHub`] that fans them out.

mod diff;
pub mod watch;

pub use diff::deployment_diff;
pub use watch::{ChangeKind, Published, ResyncReason, WatchEvent, WatchFilter, WatchHub};
