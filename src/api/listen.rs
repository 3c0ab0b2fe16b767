//! The local control socket: `/run/jaco/jaco.sock`, mode 0660, group `jaco` — the file
//! permission is the authentication (identity `local`, SPEC §3.4).
//!
//! Under systemd the socket is passed by socket activation so that it lives in the host's mount
//! namespace (prior art #167); otherwise the daemon binds it itself, replacing a stale socket
//! file but never one that a running daemon still answers on. This module binds and hands
//! over listeners; it must not serve requests.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Mode of the control socket: owner and group may connect, nobody else.
pub const SOCKET_MODE: u32 = 0o660;

/// Where the control socket came from.
#[derive(Debug)]
pub enum ControlSocket {
    /// Passed by systemd socket activation (`LISTEN_FDS`).
    Activated(UnixListener),
    /// Bound by the daemon at the configured path.
    Bound(UnixListener),
}

impl ControlSocket {
    /// The listener, whatever its origin.
    pub fn into_listener(self) -> UnixListener {
        match self {
            ControlSocket::Activated(listener) | ControlSocket::Bound(listener) => listener,
        }
    }
}

/// Takes the socket systemd passed, or binds `path` with mode 0660 and, when given, `group`.
pub fn control_socket(path: &Path, group: Option<&str>) -> io::Result<ControlSocket> {
    let mut fds = listenfd::ListenFd::from_env();
    if let Some(listener) = fds.take_unix_listener(0)? {
        listener.set_nonblocking(true)?;
        return Ok(ControlSocket::Activated(listener));
    }
    bind(path, group).map(ControlSocket::Bound)
}

/// Binds the control socket at `path` (non-blocking, ready for tokio).
pub fn bind(path: &Path, group: Option<&str>) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: another jaco daemon is running",
                    path.display()
                ),
            ));
        }
        // Nobody answers: a leftover from a daemon that did not shut down cleanly.
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    if let Some(group) = group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn group_id(name: &str) -> io::Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("group {name:?} does not exist (create it or set socket_group: null)"),
        )),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[test]
    fn binds_with_mode_0660_and_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/jaco.sock");
        let _listener = bind(&path, Some("root")).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, SOCKET_MODE);
        assert_eq!(meta.gid(), 0);
        UnixStream::connect(&path).expect("the socket accepts connections");
    }

    #[test]
    fn replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jaco.sock");
        let live = bind(&path, None).unwrap();
        let error = bind(&path, None).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        drop(live); // the file stays behind, as after a crash
        assert!(path.exists());
        let _again = bind(&path, None).expect("a stale socket is replaced");
    }

    #[test]
    fn an_unknown_group_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = bind(&dir.path().join("s"), Some("no-such-group-jaco")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains("no-such-group-jaco"));
    }
}
