//! Docker for tests: a tiny local image built from the host's static busybox (no registry, no
//! internet), unique names, a guard that removes what a test created even when it fails, and
//! a throwaway image registry (Debian's `docker-registry`, optionally behind htpasswd).
//!
//! The busybox image is content-addressed (`jaco-test/busybox:<hash of the binary>`): the first
//! test process that needs it imports it, later ones (and parallel ones) find it or import the
//! same content again, which is harmless. It is shared, so no test removes it. Needs the Docker
//! CLI and engine, `/bin/busybox` (busybox-static), `docker-registry` and `htpasswd`. Test
//! support only.

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// The engine's socket.
pub const DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";

/// The host's static busybox.
const BUSYBOX: &str = "/bin/busybox";

/// Runs the Docker CLI; panics with its stderr on failure.
pub fn docker_cli(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        output.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs the Docker CLI, ignoring failure (cleanup of things that may be gone already).
fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A name no other test (or run) uses: `prefix-<pid>-<random>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The tag of an image holding `/bin/busybox` and a symlink per applet (`sh`, `httpd`,
/// `sleep`, `cat`, …) under `/bin`, plus `/tmp` and a minimal `/etc/passwd`; built on first
/// use (once per process, and under a file lock so parallel processes import it once).
pub fn busybox_image() -> String {
    static BUILT: Mutex<Option<String>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tag) = built.as_ref() {
        return tag.clone();
    }
    let binary = std::fs::read(BUSYBOX).expect("read /bin/busybox (install busybox-static)");
    let digest = Sha256::digest(&binary);
    let tag = format!(
        "jaco-test/busybox:{}",
        digest[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    // Parallel test processes take turns, so the image is imported once, not once each.
    let lock_path = std::env::temp_dir().join(format!("{}.lock", tag.replace(['/', ':'], "-")));
    let lock = std::fs::File::create(&lock_path).expect("create the image lock file");
    lock.lock().expect("lock the image lock file");
    let present = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .expect("run the docker CLI")
        .status
        .success();
    if !present {
        import_busybox(&tag);
    }
    drop(lock);
    *built = Some(tag.clone());
    tag
}

fn import_busybox(tag: &str) {
    let root = tempfile::tempdir().expect("temporary directory");
    let bin = root.path().join("bin");
    for dir in [&bin, &root.path().join("tmp"), &root.path().join("etc")] {
        std::fs::create_dir_all(dir).expect("create image directories");
    }
    std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
    let applets = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("list busybox applets");
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("link an applet");
        }
    }
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write /etc/passwd");
    let mut tar = Command::new("tar")
        .args(["-C"])
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let status = Command::new("docker")
        .args(["import", "--change", "CMD [\"sh\"]", "-", tag])
        .stdin(tar.stdout.take().expect("tar output"))
        .stdout(Stdio::null())
        .status()
        .expect("run docker import");
    assert!(tar.wait().expect("tar finishes").success(), "tar failed");
    assert!(status.success(), "docker import {tag} failed");
}

/// What a test created; `Drop` removes all of it, also when the test panics.
#[derive(Debug, Default)]
pub struct Cleanup {
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
    paths: Mutex<Vec<PathBuf>>,
}

impl Cleanup {
    /// Removes container `name` (force) on drop.
    pub fn container(&self, name: &str) -> String {
        self.containers.lock().unwrap().push(name.to_owned());
        name.to_owned()
    }

    /// Removes network `name` on drop (after the containers).
    pub fn network(&self, name: &str) -> String {
        self.networks.lock().unwrap().push(name.to_owned());
        name.to_owned()
    }

    /// Removes volume `name` on drop (after the containers).
    pub fn volume(&self, name: &str) -> String {
        self.volumes.lock().unwrap().push(name.to_owned());
        name.to_owned()
    }

    /// Removes image `reference` on drop (after the containers).
    pub fn image(&self, reference: &str) -> String {
        self.images.lock().unwrap().push(reference.to_owned());
        reference.to_owned()
    }

    /// Removes a directory tree on drop.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.paths.lock().unwrap().push(path.to_owned());
        path.to_owned()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in self.containers.get_mut().unwrap().drain(..) {
            docker_quiet(&["rm", "--force", "--volumes", &name]);
        }
        for name in self.networks.get_mut().unwrap().drain(..) {
            docker_quiet(&["network", "rm", &name]);
        }
        for name in self.volumes.get_mut().unwrap().drain(..) {
            docker_quiet(&["volume", "rm", "--force", &name]);
        }
        for reference in self.images.get_mut().unwrap().drain(..) {
            docker_quiet(&["image", "rm", "--force", &reference]);
        }
        for path in self.paths.get_mut().unwrap().drain(..) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// A `docker-registry` process on a free port of 127.0.0.1 (the engine trusts plain HTTP
/// there), storing under a temporary directory; killed on drop.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub address: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Registry {
    /// An open registry.
    pub fn start() -> Registry {
        Registry::start_with(None, None)
    }

    /// A registry that serves the storage of `shared` (so images pushed to an open registry
    /// can be pulled through this one) and requires `user`/`password` (htpasswd, bcrypt).
    pub fn start_authenticated(shared: &Registry, user: &str, password: &str) -> Registry {
        Registry::start_with(Some(shared.storage()), Some((user, password)))
    }

    fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_with(storage: Option<PathBuf>, login: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = storage.unwrap_or_else(|| dir.path().join("data"));
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n",
            storage.display()
        );
        if let Some((user, password)) = login {
            let entry = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd (install apache2-utils)");
            assert!(entry.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &entry.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: jaco-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker-registry (install docker-registry)");
        let address = listening_address(&mut child);
        Registry {
            address,
            child,
            dir,
        }
    }

    /// Tags `image` as `<address>/<repository>` and pushes it; returns the new reference (the
    /// local tag is removed again by `cleanup`).
    pub fn push(&self, image: &str, repository: &str, cleanup: &Cleanup) -> String {
        let reference = cleanup.image(&format!("{}/{repository}", self.address));
        docker_cli(&["tag", image, &reference]);
        docker_cli(&["push", &reference]);
        reference
    }
}

/// Reads the registry's log until it says where it listens.
fn listening_address(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("registry stderr");
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(sender) = found.take()
            {
                let address = rest.split(|c: char| c == '"' || c.is_whitespace()).next();
                let _ = sender.send(address.unwrap_or_default().to_owned());
            }
            // Keep draining so the registry never blocks on a full pipe.
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    address
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("docker-registry did not say where it listens within 20 s")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
