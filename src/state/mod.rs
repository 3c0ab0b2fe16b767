//! The replicated state machine and its watch stream.
//!
//! # Layout
//! - [`watch`]: watch events and the [`WatchHub`] that fans them out.

pub mod watch;

pub use watch::{ChangeKind, Published, ResyncReason, WatchEvent, WatchFilter, WatchHub};
