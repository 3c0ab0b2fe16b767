//! The `jaco daemon` process: configuration, data-dir layout, wiring of the subsystems and
//! their lifecycle.
//!
//! This module only assembles; the logic of each subsystem lives in its own module and is
//! tested there.

pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
