//! `jaco cluster seed` and `jaco cluster bootstrap`: a node that initialises or joins a cluster
//! from a file that cloud-init wrote, with no operator on the machine (SPEC §9.5).
//!
//! Role: the bootstrap file's format (`/var/lib/jaco/bootstrap.yaml`: exactly one of `init:` or
//! `join:`, a closed schema), the offline `seed` that writes a first node's file together with
//! the secrets the operator keeps (cluster CA, bootstrap operator token), and the loop that
//! drives the local daemon's `Cluster.Init`/`Join` until the node is a member. Contract:
//! `bootstrap` is idempotent (a node that already belongs to a cluster succeeds at once), retries
//! every failure of the daemon with capped exponential backoff and says why on stderr (the
//! journal), and fails at once only when the file itself is wrong.
//!
//! This module must not implement cluster logic (the daemon does), must not print a secret, and
//! must not write a secret file readable by anyone but its owner.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::client::{self, Target};
use super::{Context, Failure};
use crate::error::{Code, Error};
use crate::pki::ca::ClusterCa;
use crate::pki::tokens::OperatorToken;
use crate::proto::v1::{ClusterStatusRequest, InitRequest, JoinRequest};

/// Where the appliance's bootstrap unit reads the file (cloud-init `write_files` puts it there).
pub const DEFAULT_BOOTSTRAP_FILE: &str = "/var/lib/jaco/bootstrap.yaml";
/// First wait between attempts; doubled after every failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Arguments of `jaco cluster seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Directory to write into (created; must not already hold a seed): ca.pem, ca.key, token,
    /// bootstrap-init.yaml and user-data-init.yaml
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A human name for the cluster
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// Arguments of `jaco cluster bootstrap`.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// The bootstrap file (written by cloud-init)
    #[arg(long, value_name = "FILE", default_value = DEFAULT_BOOTSTRAP_FILE)]
    pub file: PathBuf,
    /// Give up after this many failed attempts (default: keep trying)
    #[arg(long, value_name = "N")]
    pub attempts: Option<u32>,
}

/// The bootstrap file: what a node does on its first boot.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapFile {
    /// Initialise a new cluster with this node as its first voter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitSection>,
    /// Join an existing cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinSection>,
}

/// `init:` of the bootstrap file; every field is optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSection {
    /// Human name of the cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    /// Pre-seeded cluster CA certificate, PEM (with `ca_key`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert: String,
    /// Pre-seeded cluster CA key, PEM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_key: String,
    /// SHA-256 (hex) of the operator token the operator generated and keeps.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operator_token_sha256: String,
}

/// `join:` of the bootstrap file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSection {
    /// Members to join through (host:port), tried in order.
    pub peers: Vec<String>,
    /// The join token (`jaco node issue-join-token`).
    pub token: String,
    /// The cluster CA certificate, PEM.
    pub ca_cert: String,
}

/// What the bootstrap file asks the daemon for.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// `Cluster.Init`.
    Init(InitRequest),
    /// `Cluster.Join`.
    Join(JoinRequest),
}

impl BootstrapFile {
    /// Parses and checks a bootstrap file; `label` names it in errors.
    pub fn parse(label: &str, text: &str) -> Result<Self, Error> {
        let file: BootstrapFile = crate::yaml::deserialize(label, text)?;
        file.plan().map_err(|e| e.with("file", label))?;
        Ok(file)
    }

    /// The request to send: exactly one of `init` and `join` must be present, and a join needs
    /// at least one peer, a token and the CA certificate.
    pub fn plan(&self) -> Result<Plan, Error> {
        let invalid = |field: &str, message: &str| {
            Error::new(Code::ValidationFailed, message).with("field", field)
        };
        match (&self.init, &self.join) {
            (Some(init), None) => Ok(Plan::Init(InitRequest {
                cluster_name: init.cluster_name.clone(),
                ca_cert_pem: init.ca_cert.clone(),
                ca_key_pem: init.ca_key.clone(),
                operator_token_sha256: init.operator_token_sha256.clone(),
            })),
            (None, Some(join)) => {
                if join.peers.is_empty() {
                    return Err(invalid(
                        "join.peers",
                        "join.peers must name at least one member",
                    ));
                }
                if join.token.trim().is_empty() {
                    return Err(invalid("join.token", "join.token is required"));
                }
                if join.ca_cert.trim().is_empty() {
                    return Err(invalid("join.ca_cert", "join.ca_cert is required"));
                }
                Ok(Plan::Join(JoinRequest {
                    peers: join.peers.clone(),
                    join_token: join.token.trim().to_owned(),
                    ca_cert_pem: join.ca_cert.clone(),
                }))
            }
            (Some(_), Some(_)) => Err(invalid(
                "init",
                "the bootstrap file must hold either init or join, not both",
            )),
            (None, None) => Err(invalid(
                "init",
                "the bootstrap file must hold init (first node) or join (every other node)",
            )),
        }
    }
}

/// The wait after `failures` failed attempts: 1 s, 2 s, 4 s, … capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Runs `jaco cluster bootstrap`.
pub fn bootstrap(args: &BootstrapArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let label = args.file.display().to_string();
    let text = fs::read_to_string(&args.file).map_err(|e| {
        Error::new(
            Code::NotFound,
            format!("cannot read the bootstrap file {label}: {e}"),
        )
        .with("file", &label)
    })?;
    let plan = BootstrapFile::parse(&label, &text)?.plan()?;
    let target = Target::Socket(ctx.global.socket.clone());
    let mut failures = 0u32;
    loop {
        match attempt(&target, &plan) {
            Ok(message) => {
                println!("{message}");
                return Ok(());
            }
            Err(error) => {
                failures += 1;
                if args.attempts.is_some_and(|limit| failures >= limit) {
                    return Err(Failure::from(error));
                }
                let wait = backoff(failures);
                eprintln!(
                    "jaco bootstrap: attempt {failures} failed: {}; retrying in {} s",
                    error.render(true).replace('\n', ";"),
                    wait.as_secs()
                );
                std::thread::sleep(wait);
            }
        }
    }
}

/// One attempt: nothing to do when the node is already a member, otherwise the plan.
fn attempt(target: &Target, plan: &Plan) -> Result<String, Error> {
    let plan = plan.clone();
    let outcome = client::run(target, |c| async move {
        let status = c
            .cluster()
            .status(ClusterStatusRequest { consistent: false })
            .await?
            .into_inner();
        if status.initialized {
            return Ok(format!(
                "node {} is already a member of cluster {}",
                status.node_name, status.cluster_id
            ));
        }
        Ok(match plan {
            Plan::Init(request) => {
                let reply = c.cluster().init(request).await?.into_inner();
                let token = if reply.token.is_empty() {
                    "the seeded operator token".to_owned()
                } else {
                    // The token is shown once, to whoever reads this unit's output; an
                    // unattended first boot should seed it instead.
                    format!("operator token {}", reply.token)
                };
                format!(
                    "initialised cluster {} on node {}; {} is its bootstrap credential",
                    reply.cluster_id, reply.node_name, token
                )
            }
            Plan::Join(request) => {
                let reply = c.cluster().join(request).await?.into_inner();
                format!(
                    "node {} joined cluster {} (leader {})",
                    reply.node_name, reply.cluster_id, reply.leader
                )
            }
        })
    });
    outcome.map_err(|failure| match failure {
        Failure::Errors(mut errors) if !errors.is_empty() => errors.remove(0),
        other => Error::new(Code::Internal, format!("{other:?}")),
    })
}

/// Runs `jaco cluster seed`: a new cluster CA and operator token for a first node, written as
/// files the operator keeps and a bootstrap file (plus cloud-init user-data) for the node.
pub fn seed(args: &SeedArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let written = write_seed(&args.out, args.name.as_deref().unwrap_or_default())?;
    ctx.print(&written, Seeded::text)
}

/// What `seed` wrote.
#[derive(Debug, Serialize)]
pub struct Seeded {
    /// The cluster id the CA names.
    pub cluster_id: String,
    /// The directory.
    pub dir: String,
    /// The files, in the order the text lists them.
    pub files: Vec<String>,
}

impl Seeded {
    fn text(&self) -> String {
        format!(
            "Seeded cluster {id} in {dir}:\n  ca.pem               cluster CA certificate (--ca-cert)\n  \
             ca.key               cluster CA key (secret; also inside the user-data)\n  \
             token                operator token (secret; --token or JACO_TOKEN)\n  \
             bootstrap-init.yaml  the first node's /var/lib/jaco/bootstrap.yaml\n  \
             user-data-init.yaml  cloud-init user-data that writes it (secret)\n",
            id = self.cluster_id,
            dir = self.dir,
        )
    }
}

/// Writes a seed into `dir` (created; existing seed files are never overwritten).
pub fn write_seed(dir: &Path, cluster_name: &str) -> Result<Seeded, Error> {
    let cluster_id = crate::pki::hex(&rand::random::<[u8; 16]>());
    let ca = ClusterCa::generate(&cluster_id)?;
    let (token, token_sha256) = OperatorToken::generate();
    let file = BootstrapFile {
        init: Some(InitSection {
            cluster_name: cluster_name.to_owned(),
            ca_cert: ca.cert_pem().to_owned(),
            ca_key: ca.key_pem().to_owned(),
            operator_token_sha256: crate::pki::hex(&token_sha256),
        }),
        join: None,
    };
    let bootstrap = serde_yaml_text(&file);
    let user_data = cloud_config_writing(&bootstrap);
    fs::create_dir_all(dir).map_err(|e| io_error(dir, "create", &e))?;
    let files = [
        ("ca.pem", ca.cert_pem().to_owned(), 0o644),
        ("ca.key", ca.key_pem().to_owned(), 0o600),
        ("token", format!("{token}\n"), 0o600),
        ("bootstrap-init.yaml", bootstrap, 0o600),
        ("user-data-init.yaml", user_data, 0o600),
    ];
    for (name, content, mode) in &files {
        write_new(&dir.join(name), content, *mode)?;
    }
    Ok(Seeded {
        cluster_id,
        dir: dir.display().to_string(),
        files: files
            .iter()
            .map(|(name, _, _)| (*name).to_owned())
            .collect(),
    })
}

/// The bootstrap file as YAML text (block scalars keep the PEM readable).
fn serde_yaml_text(file: &BootstrapFile) -> String {
    let value = serde_json::to_value(file).expect("the bootstrap file serialises");
    super::output::to_yaml(&value).expect("a tree of strings emits as YAML")
}

/// cloud-init user-data that writes `bootstrap` to [`DEFAULT_BOOTSTRAP_FILE`], owner-only.
pub fn cloud_config_writing(bootstrap: &str) -> String {
    let indented: String = bootstrap
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect();
    format!(
        "#cloud-config\n# jaco first boot: the bootstrap unit reads this file once the daemon is up.\n\
         write_files:\n  - path: {DEFAULT_BOOTSTRAP_FILE}\n    permissions: '0600'\n    content: |\n{indented}"
    )
}

/// Creates `path` with `content` and `mode`; an existing file is never overwritten.
pub(crate) fn write_new(path: &Path, content: &str, mode: u32) -> Result<(), Error> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_error(path, "create", &e))?;
    // The umask may have narrowed the mode; secrets must not be wider either way.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(content.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, "write", &e))
}

fn io_error(path: &Path, verb: &str, error: &std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::AlreadyExists {
        return Error::new(
            Code::ValidationFailed,
            format!(
                "{} exists; a seed never overwrites one (choose another --out)",
                path.display()
            ),
        )
        .with("field", "out")
        .with("path", path.display());
    }
    Error::new(
        Code::Internal,
        format!("cannot {verb} {}: {error}", path.display()),
    )
    .with("path", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_init_file_becomes_an_init_request_with_its_seed() {
        let file = BootstrapFile::parse(
            "b.yaml",
            "init:\n  cluster_name: prod\n  operator_token_sha256: abc\n",
        )
        .unwrap();
        let Plan::Init(request) = file.plan().unwrap() else {
            panic!("init expected");
        };
        assert_eq!(request.cluster_name, "prod");
        assert_eq!(request.operator_token_sha256, "abc");
        assert!(request.ca_cert_pem.is_empty());
        assert_eq!(
            BootstrapFile::parse("b.yaml", "init: {}\n")
                .unwrap()
                .plan()
                .unwrap(),
            Plan::Init(InitRequest::default())
        );
    }

    #[test]
    fn a_join_file_needs_peers_token_and_ca() {
        let good = "join:\n  peers: [\"10.0.0.1:7000\"]\n  token: \" t \"\n  ca_cert: pem\n";
        let Plan::Join(request) = BootstrapFile::parse("b.yaml", good)
            .unwrap()
            .plan()
            .unwrap()
        else {
            panic!("join expected");
        };
        assert_eq!(request.peers, ["10.0.0.1:7000"]);
        assert_eq!(request.join_token, "t");
        for (text, field) in [
            (
                "join:\n  peers: []\n  token: t\n  ca_cert: pem\n",
                "join.peers",
            ),
            (
                "join:\n  peers: [a:1]\n  token: ''\n  ca_cert: pem\n",
                "join.token",
            ),
            (
                "join:\n  peers: [a:1]\n  token: t\n  ca_cert: ''\n",
                "join.ca_cert",
            ),
        ] {
            let error = BootstrapFile::parse("b.yaml", text).unwrap_err();
            assert_eq!(error.code, Code::ValidationFailed, "{text}");
            assert_eq!(
                error.details.get("field").map(String::as_str),
                Some(field),
                "{text}"
            );
        }
    }

    #[test]
    fn the_file_holds_exactly_one_known_section() {
        for text in ["", "init: {}\njoin: {peers: [a:1], token: t, ca_cert: c}\n"] {
            let error = BootstrapFile::parse("b.yaml", text).unwrap_err();
            assert_eq!(error.code, Code::ValidationFailed, "{text:?}");
        }
        let error = BootstrapFile::parse("b.yaml", "init: {}\nsurprise: 1\n").unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(
            error.details.get("field").map(String::as_str),
            Some("surprise")
        );
        let error = BootstrapFile::parse("b.yaml", "init: [\n").unwrap_err();
        assert_eq!(error.code, Code::ParseFailed);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_seed_writes_owner_only_secrets_and_a_bootstrap_file_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seed");
        let seeded = write_seed(&out, "prod").unwrap();
        for (name, mode) in [("ca.key", 0o600), ("token", 0o600), ("ca.pem", 0o644)] {
            let meta = fs::metadata(out.join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
        let text = fs::read_to_string(out.join("bootstrap-init.yaml")).unwrap();
        let Plan::Init(request) = BootstrapFile::parse("b", &text).unwrap().plan().unwrap() else {
            panic!("init expected");
        };
        let token = fs::read_to_string(out.join("token")).unwrap();
        let hash = crate::pki::tokens::hash_token(token.trim()).unwrap();
        assert_eq!(request.operator_token_sha256, crate::pki::hex(&hash));
        let ca = ClusterCa::from_pem(&request.ca_cert_pem, &request.ca_key_pem).unwrap();
        assert_eq!(ca.cluster_id(), seeded.cluster_id);
        assert_eq!(
            request.ca_cert_pem,
            fs::read_to_string(out.join("ca.pem")).unwrap()
        );

        // The user-data carries the same file under write_files.
        let user_data = fs::read_to_string(out.join("user-data-init.yaml")).unwrap();
        assert!(user_data.starts_with("#cloud-config\n"));
        let cloud = crate::yaml::parse(&user_data).unwrap();
        let entry = &cloud.get("write_files").unwrap().to_json()[0];
        assert_eq!(entry["path"], DEFAULT_BOOTSTRAP_FILE);
        assert_eq!(entry["content"], text.as_str());

        // A second seed into the same directory overwrites nothing.
        let error = write_seed(&out, "other").unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(fs::read_to_string(out.join("token")).unwrap(), token);
    }
}
