//! Signed OS and binary upgrades of a node (SPEC §9.2–9.3).
//!
//! Role: everything between a bundle file and a node that boots (or runs) the new version:
//! the bundle format and its minisign signature ([`bundle`], [`keys`]), the rules that decide
//! whether a version may be installed ([`policy`]), the A/B slot and boot-entry decisions
//! ([`slots`], pure), the disk and ESP writes ([`disk`], [`esp`]), the appliance and plain-host
//! installers ([`install`], [`binary`]), the record of an upgrade across its reboot
//! ([`record`]), the boot health gate's decision ([`gate`]) and the leader's fleet rollout
//! decision ([`fleet`], pure).
//!
//! This module must not talk to raft, the API or docker: the daemon and the CLI call it and
//! report what it did. Pure decisions are functions of values; I/O stays in `disk`, `esp`,
//! `install`, `binary` and `record`.

pub mod binary;
pub mod bundle;
pub mod disk;
pub mod esp;
pub mod fleet;
pub mod gate;
pub mod install;
pub mod keys;
pub mod manifest;
pub mod policy;
pub mod record;
pub mod slots;

use crate::error::{Code, Error};

/// An `upgrade_verification_failed` error with its `reason` detail.
pub(crate) fn verification_failed(reason: &str, message: impl Into<String>) -> Error {
    Error::new(Code::UpgradeVerificationFailed, message).with("reason", reason)
}

/// An internal error for a failed file operation on `path`.
pub(crate) fn io_failed(verb: &str, path: &std::path::Path, error: &std::io::Error) -> Error {
    Error::new(
        Code::Internal,
        format!("cannot {verb} {}: {error}", path.display()),
    )
    .with("reason", "io_failed")
    .with("path", path.display())
}
