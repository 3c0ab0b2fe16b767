//! `jaco upgrade start|status|abort|bundle|health-gate`: signed OS (or binary) upgrades.
//!
//! Role: adapter between the command line and the daemon's `Upgrade` service, plus the two
//! commands that run without a daemon: `bundle create|verify` (release tooling, offline) and
//! `health-gate` (the appliance's boot assessment unit: polls the local daemon and docker,
//! blesses the boot by exiting 0, or records why and marks the boot bad and reboots).
//! Contract: `start` uploads a bundle file to the serving node, which verifies it before
//! anything is recorded, and follows the plan node by node until it ends or the serving node
//! reboots (or `--detach`); a second concurrent start fails with `upgrade_in_progress`.
//!
//! This module must not implement bundle verification, slot handling or verdicts
//! ([`crate::upgrade`] does) and must not print success the daemon did not confirm.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::args::ReadArgs;
use super::client::{self, Target};
use super::{Context, Failure};
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::upgrade::gate::{self, Observation, Verdict};
use crate::upgrade::manifest::{
    BINARY, KERNEL_IMAGE, Manifest, ROOT_IMAGE, ROOT_VERITY, host_arch,
};
use crate::upgrade::record::{GateFailure, Records};
use crate::upgrade::{bundle, keys};

/// Bytes per upload message (well under gRPC's 4 MiB message limit).
const UPLOAD_CHUNK: usize = 1 << 20;

/// Arguments of `jaco upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The upgrade command to run.
    #[command(subcommand)]
    pub command: UpgradeCommand,
}

/// The subcommands of `jaco upgrade`.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Upgrade nodes to a signed bundle, one at a time (followers first, the leader last):
    /// upload, verify, write the other slot, reboot into it on trial
    Start(StartArgs),
    /// Show the running or last upgrade: per node, versions, slot and step
    Status(StatusArgs),
    /// Stop an upgrade (nodes already upgraded stay upgraded)
    Abort(AbortArgs),
    /// Create or check bundle files (offline)
    Bundle(BundleArgs),
    /// Boot assessment (run by jaco-health-gate.service): wait until the node is healthy, or
    /// mark the boot bad and reboot into the previous slot
    HealthGate(HealthGateArgs),
}

/// Arguments of `jaco upgrade start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Upgrade bundle file (jaco-<version>-<arch>.bundle), which the CLI uploads, or an
    /// http(s):// URL the node fetches it from
    #[arg(long, value_name = "PATH|URL")]
    pub bundle: PathBuf,
    /// Upgrade only this node; repeat for several (default: the node the CLI talks to)
    #[arg(long = "node", value_name = "NODE", conflicts_with = "all")]
    pub nodes: Vec<String>,
    /// Upgrade every node of the cluster, one at a time
    #[arg(long)]
    pub all: bool,
    /// Drain each node (move its replicas to the others) before its turn, and undrain it after
    #[arg(long)]
    pub drain: bool,
    /// Allow a version lower than the running one or the bundle's min_version, or a
    /// deny-listed one
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Return once the upgrade has started instead of following it
    #[arg(long)]
    pub detach: bool,
}

/// Arguments of `jaco upgrade status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Keep running and print the status again on every change
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco upgrade abort`.
#[derive(Debug, Args)]
pub struct AbortArgs {
    /// Why (recorded on the plan)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Arguments of `jaco upgrade bundle`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The bundle command to run.
    #[command(subcommand)]
    pub command: BundleCommand,
}

/// The subcommands of `jaco upgrade bundle`.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Hash the payload files, write and sign the manifest, and pack the bundle
    Create(Box<CreateArgs>),
    /// Check a bundle's signature and every file's checksum against trusted keys
    Verify(VerifyArgs),
    /// Make a new signing key pair (PREFIX.key, secret, and PREFIX.pub, to trust)
    Keygen(KeygenArgs),
}

/// Arguments of `jaco upgrade bundle keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix of the two files (PREFIX.key and PREFIX.pub; neither may exist)
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// File holding the password that encrypts the secret key (without it the key is stored
    /// unencrypted: for tests only)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// Arguments of `jaco upgrade bundle create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The version the bundle installs (semantic version)
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// The lowest running version that may install it without --allow-downgrade (default: any)
    #[arg(long, value_name = "VERSION", default_value = "0.0.0")]
    pub min_version: String,
    /// Target architecture (default: this machine's)
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// minisign secret key file
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// File holding the secret key's password (for encrypted keys)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Appliance bundle: the zstd-compressed root slot image
    #[arg(
        long,
        value_name = "FILE",
        requires = "kernel",
        conflicts_with = "binary"
    )]
    pub root: Option<PathBuf>,
    /// Appliance bundle: the unified kernel image
    #[arg(long, value_name = "FILE", requires = "root")]
    pub kernel: Option<PathBuf>,
    /// Appliance bundle with a verity-protected root: the root image's dm-verity hash device
    /// (`veritysetup format` of the uncompressed image)
    #[arg(long, value_name = "FILE", requires_all = ["root", "root_hash"])]
    pub verity: Option<PathBuf>,
    /// The dm-verity root hash `veritysetup format` printed for --verity
    #[arg(long, value_name = "HEX", requires = "verity")]
    pub root_hash: Option<String>,
    /// Plain-host bundle: the jaco binary
    #[arg(long, value_name = "FILE", required_unless_present = "root")]
    pub binary: Option<PathBuf>,
    /// Output file (default: jaco-<version>-<arch>.bundle in the current directory)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Arguments of `jaco upgrade bundle verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Directory of trusted public keys (*.pub)
    #[arg(long, value_name = "DIR", default_value = keys::DEFAULT_KEYS_DIR)]
    pub keys: PathBuf,
}

/// Arguments of `jaco upgrade health-gate`.
#[derive(Debug, Args)]
pub struct HealthGateArgs {
    /// How long the node may take to become healthy
    #[arg(long, value_name = "SECONDS", default_value_t = 180)]
    pub timeout: u64,
    /// Seconds between checks
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub interval: u64,
    /// The docker engine's socket
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    pub docker_socket: PathBuf,
    /// The upgrade records (pending upgrade, gate verdict)
    #[arg(long, value_name = "DIR", default_value = crate::upgrade::record::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The os-release file naming the running version
    #[arg(long, value_name = "FILE", default_value = "/etc/os-release")]
    pub os_release: PathBuf,
    /// Command that marks the running boot bad (words separated by spaces)
    #[arg(
        long,
        value_name = "COMMAND",
        default_value = "/usr/lib/systemd/systemd-bless-boot bad"
    )]
    pub mark_bad_command: String,
    /// Command that reboots the machine
    #[arg(long, value_name = "COMMAND", default_value = "systemctl reboot")]
    pub reboot_command: String,
}

/// Runs `jaco upgrade …`.
pub fn run(args: &UpgradeArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    match &args.command {
        UpgradeCommand::Start(start) => run_start(start, ctx),
        UpgradeCommand::Status(status) => run_status(status, ctx),
        UpgradeCommand::Abort(abort) => {
            let target = Target::of(ctx)?;
            let request = pb::AbortUpgradeRequest {
                plan_id: String::new(),
                reason: abort.reason.clone().unwrap_or_default(),
            };
            let response = client::run(&target, |c| async move {
                Ok(c.upgrade().abort(request).await?.into_inner())
            })?;
            let view = response.plan.as_ref().map(PlanView::from);
            ctx.print(&view, |v| {
                v.as_ref().map_or_else(String::new, PlanView::text)
            })
        }
        UpgradeCommand::Bundle(bundle) => match &bundle.command {
            BundleCommand::Create(create) => run_create(create, ctx),
            BundleCommand::Keygen(keygen) => run_keygen(keygen),
            BundleCommand::Verify(verify) => {
                let keys = keys::TrustedKeys::load_dir(&verify.keys)?;
                let verified = bundle::verify(&verify.bundle, &keys)?;
                let view = BundleView::of(&verified.manifest, &verified.manifest_sha256);
                ctx.print(&view, |v| {
                    format!("{}signed by {}\n", v.text(), verified.signed_by.display())
                })
            }
        },
        UpgradeCommand::HealthGate(args) => run_health_gate(args, &ctx.global.socket),
    }
}

fn read_password(path: Option<&PathBuf>) -> Result<Option<String>, Error> {
    path.map(|path| {
        std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches('\n').to_owned())
            .map_err(|e| crate::upgrade::io_failed("read", path, &e))
    })
    .transpose()
}

fn run_keygen(keygen: &KeygenArgs) -> Result<(), Failure> {
    let password = read_password(keygen.password_file.as_ref())?;
    let comment = if password.is_some() {
        "jaco upgrade signing key"
    } else {
        "jaco upgrade signing key (UNENCRYPTED: for tests only)"
    };
    let (secret, public) = keys::generate(password, comment)?;
    let mut written = Vec::new();
    for (extension, text, mode) in [("key", secret, 0o600), ("pub", public, 0o644)] {
        let mut path = keygen.out.as_os_str().to_owned();
        path.push(format!(".{extension}"));
        let path = PathBuf::from(path);
        super::bootstrap::write_new(&path, &text, mode)?;
        written.push(path.display().to_string());
    }
    println!(
        "wrote {} (secret) and {} (trust it: /usr/lib/jaco/keys/)",
        written[0], written[1]
    );
    Ok(())
}

fn run_create(create: &CreateArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let arch = create
        .arch
        .clone()
        .unwrap_or_else(|| host_arch().to_owned());
    let mut files: Vec<(String, PathBuf)> = match (&create.root, &create.kernel, &create.binary) {
        (Some(root), Some(kernel), None) => vec![
            (ROOT_IMAGE.to_owned(), root.clone()),
            (KERNEL_IMAGE.to_owned(), kernel.clone()),
        ],
        (None, None, Some(binary)) => vec![(BINARY.to_owned(), binary.clone())],
        _ => unreachable!("clap enforces --root with --kernel, or --binary"),
    };
    if let Some(verity) = &create.verity {
        files.push((ROOT_VERITY.to_owned(), verity.clone()));
    }
    let manifest = Manifest {
        root_hash: create
            .root_hash
            .as_ref()
            .map(|hash| hash.to_ascii_lowercase()),
        ..Manifest::new(&create.version, &create.min_version, &arch)
    };
    let password = read_password(create.password_file.as_ref())?;
    let key = keys::load_secret_key(&create.key, password)?;
    let out = create
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(bundle::file_name(&create.version, &arch)));
    let manifest = bundle::create(&out, manifest, &files, &key)?;
    let manifest_sha256 = crate::pki::hex(&Sha256::digest(manifest.to_bytes()));
    let view = BundleView::of(&manifest, &manifest_sha256);
    ctx.print(&view, |v| format!("wrote {}\n{}", out.display(), v.text()))
}

/// A bundle's manifest as printed.
#[derive(Debug, Serialize)]
struct BundleView {
    version: String,
    min_version: String,
    arch: String,
    manifest_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_hash: Option<String>,
    files: Vec<(String, u64, String)>,
}

impl BundleView {
    fn of(manifest: &Manifest, manifest_sha256: &str) -> BundleView {
        BundleView {
            version: manifest.version.clone(),
            min_version: manifest.min_version.clone(),
            arch: manifest.arch.clone(),
            manifest_sha256: manifest_sha256.to_owned(),
            root_hash: manifest.root_hash.clone(),
            files: manifest
                .files
                .iter()
                .map(|(name, f)| (name.clone(), f.size, f.sha256.clone()))
                .collect(),
        }
    }

    fn text(&self) -> String {
        let mut out = format!(
            "version {} (min_version {}), {}, manifest sha256 {}\n",
            self.version, self.min_version, self.arch, self.manifest_sha256
        );
        if let Some(root_hash) = &self.root_hash {
            out.push_str(&format!("  dm-verity root hash {root_hash}\n"));
        }
        for (name, size, sha256) in &self.files {
            out.push_str(&format!("  {name:<14} {size:>12} bytes  sha256 {sha256}\n"));
        }
        out
    }
}

/// A plan as printed.
#[derive(Debug, Serialize)]
struct PlanView {
    id: String,
    state: String,
    version: String,
    reason: String,
    nodes: Vec<NodeStepView>,
}

/// One node of a plan as printed.
#[derive(Debug, Serialize)]
struct NodeStepView {
    node: String,
    state: String,
    from_version: String,
    to_version: String,
    target_slot: String,
    code: String,
    message: String,
}

fn enum_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

impl From<&pb::UpgradePlan> for PlanView {
    fn from(plan: &pb::UpgradePlan) -> Self {
        PlanView {
            id: plan.id.clone(),
            state: enum_name(plan.state().as_str_name(), "UPGRADE_STATE_"),
            version: plan.version.clone(),
            reason: plan.reason.clone(),
            nodes: plan
                .nodes
                .iter()
                .map(|n| NodeStepView {
                    node: n.node.clone(),
                    state: enum_name(n.state().as_str_name(), "UPGRADE_NODE_STATE_"),
                    from_version: n.from_version.clone(),
                    to_version: n.to_version.clone(),
                    target_slot: n.target_slot.clone(),
                    code: n.code.clone(),
                    message: n.message.clone(),
                })
                .collect(),
        }
    }
}

impl PlanView {
    fn text(&self) -> String {
        let mut out = format!("upgrade {} to {}: {}", self.id, self.version, self.state);
        if !self.reason.is_empty() {
            out.push_str(&format!(" ({})", self.reason));
        }
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.node.clone(),
                    n.state.clone(),
                    format!("{} -> {}", n.from_version, n.to_version),
                    n.target_slot.clone(),
                    if n.code.is_empty() {
                        String::new()
                    } else {
                        format!("{}: {}", n.code, n.message)
                    },
                ]
            })
            .collect();
        out.push_str(&super::output::table(
            &["NODE", "STATE", "VERSION", "SLOT", "ERROR"],
            &rows,
        ));
        out
    }
}

fn run_status(status: &StatusArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let target = Target::of(ctx)?;
    let request = pb::UpgradeStatusRequest {
        plan_id: String::new(),
        consistent: status.read.consistent,
    };
    let mut last = None;
    loop {
        let request = request.clone();
        let response = client::run(&target, |c| async move {
            Ok(c.upgrade().status(request).await?.into_inner())
        })?;
        let view = response.plan.as_ref().map(PlanView::from);
        let rendered = format!("{view:?}");
        if last.as_ref() != Some(&rendered) {
            ctx.print(&view, |v| {
                v.as_ref().map_or_else(
                    || "no upgrade has run on this cluster\n".to_owned(),
                    PlanView::text,
                )
            })?;
            last = Some(rendered);
        }
        let running = response.plan.as_ref().is_some_and(|p| {
            matches!(
                p.state(),
                pb::UpgradeState::Pending | pb::UpgradeState::InProgress
            )
        });
        if !status.watch || !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn run_start(start: &StartArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    use pb::start_upgrade_request::Bundle;
    let target = Target::of(ctx)?;
    let named = start.bundle.to_string_lossy();
    let bundle = if crate::daemon::download::is_url(&named) {
        eprintln!("the node fetches {named} and verifies it");
        Bundle::Url(named.into_owned())
    } else {
        let (header, path) = upload_header(&start.bundle)?;
        let uploaded = client::run(&target, |c| async move {
            let messages = upload_messages(header, path)?;
            Ok(c.upgrade()
                .upload_bundle(tokio_stream::iter(messages))
                .await?
                .into_inner())
        })?;
        eprintln!(
            "uploaded {} to {} (version {}, signature and checksums verified there)",
            start.bundle.display(),
            uploaded.node,
            uploaded.version
        );
        Bundle::UploadId(uploaded.upload_id)
    };
    let request = pb::StartUpgradeRequest {
        bundle: Some(bundle),
        nodes: start.nodes.clone(),
        all: start.all,
        force: start.allow_downgrade,
        drain: start.drain,
    };
    let response = client::run(&target, |c| async move {
        Ok(c.upgrade().start(request).await?.into_inner())
    })?;
    let Some(plan) = response.plan else {
        return Err(Error::new(Code::Internal, "the daemon started no plan").into());
    };
    if start.detach {
        return ctx.print(&PlanView::from(&plan), PlanView::text);
    }
    follow(&target, &plan.id, &plan.bundle_node, ctx)
}

/// Follows a plan, printing each node's steps as they change, until it ends or the serving
/// node reboots (its daemon goes away with it).
fn follow(
    target: &Target,
    plan_id: &str,
    serving: &str,
    ctx: &mut Context<'_>,
) -> Result<(), Failure> {
    let mut shown = String::new();
    // The serving node's own step: once its turn has begun, losing it is its reboot (which can
    // come before this poll sees `rebooting`).
    let mut serving_on_turn = false;
    loop {
        let request = pb::UpgradeStatusRequest {
            plan_id: plan_id.to_owned(),
            consistent: false,
        };
        let plan = match client::run(target, |c| async move {
            Ok(c.upgrade().status(request).await?.into_inner())
        }) {
            Ok(response) => response.plan,
            Err(_) if serving_on_turn => {
                eprintln!(
                    "lost {serving}, which serves this command, during its turn: it reboots into \
                     the new version once installed; follow with `jaco upgrade status --watch`"
                );
                return Ok(());
            }
            Err(failure) => return Err(failure),
        };
        let Some(plan) = plan else {
            return Err(Error::new(Code::NotFound, format!("plan {plan_id} is gone")).into());
        };
        serving_on_turn = plan.nodes.iter().any(|n| {
            n.node == serving
                && crate::upgrade::fleet::in_flight(n.state())
                && n.state() != pb::UpgradeNodeState::Draining
        });
        let view = PlanView::from(&plan);
        for node in &view.nodes {
            let line = format!(
                "{}: {} ({} -> {}{}){}\n",
                node.node,
                node.state,
                node.from_version,
                node.to_version,
                if node.target_slot.is_empty() {
                    String::new()
                } else {
                    format!(", slot {}", node.target_slot)
                },
                if node.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", node.message)
                }
            );
            if !shown.contains(&line) {
                eprint!("{line}");
                shown.push_str(&line);
            }
        }
        let failed = matches!(
            plan.state(),
            pb::UpgradeState::Failed | pb::UpgradeState::Aborted
        );
        let done = plan.state() == pb::UpgradeState::Succeeded;
        if failed || done {
            ctx.print(&view, PlanView::text)?;
            return if failed {
                Err(Failure::Reported)
            } else {
                Ok(())
            };
        }
        if view
            .nodes
            .iter()
            .any(|n| n.node == serving && n.state == "rebooting")
        {
            eprintln!(
                "{serving}, which serves this command, is rebooting into the new version; follow \
                 with `jaco upgrade status --watch`"
            );
            return ctx.print(&view, PlanView::text);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn upload_header(path: &Path) -> Result<(pb::UploadBundleHeader, PathBuf), Error> {
    let mut file = bundle::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; UPLOAD_CHUNK];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| crate::upgrade::io_failed("read", path, &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    let header = pb::UploadBundleHeader {
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size_bytes: size,
        sha256: crate::pki::hex(&hasher.finalize()),
    };
    Ok((header, path.to_owned()))
}

/// The upload's messages: the header, then the file in chunks. Read in memory chunk by
/// chunk as the stream is consumed.
fn upload_messages(
    header: pb::UploadBundleHeader,
    path: PathBuf,
) -> Result<impl Iterator<Item = pb::UploadBundleRequest>, Failure> {
    use pb::upload_bundle_request::Chunk;
    let mut file =
        std::fs::File::open(&path).map_err(|e| crate::upgrade::io_failed("open", &path, &e))?;
    let first = std::iter::once(pb::UploadBundleRequest {
        chunk: Some(Chunk::Header(header)),
    });
    let data = std::iter::from_fn(move || {
        let mut buffer = vec![0u8; UPLOAD_CHUNK];
        match file.read(&mut buffer) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some(pb::UploadBundleRequest {
                    chunk: Some(Chunk::Data(buffer)),
                })
            }
        }
    });
    Ok(first.chain(data))
}

fn run_health_gate(args: &HealthGateArgs, socket: &Path) -> Result<(), Failure> {
    let records = Records::at(&args.state_dir);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last = Vec::new();
    loop {
        let observation = observe(args, socket);
        match gate::assess(&observation) {
            Verdict::Healthy => {
                println!("jaco health gate: healthy; the boot may be blessed");
                return Ok(());
            }
            Verdict::Unhealthy(reasons) => {
                if reasons != last {
                    eprintln!("jaco health gate: waiting: {}", reasons.join("; "));
                    last = reasons;
                }
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(args.interval.max(1)));
    }
    let reason = format!(
        "health gate timed out after {} s: {}",
        args.timeout,
        last.join("; ")
    );
    eprintln!("jaco health gate: {reason}");
    let running = std::fs::read_to_string(&args.os_release)
        .ok()
        .and_then(|t| crate::daemon::upgrade::os_release_field(&t, "IMAGE_VERSION"))
        .unwrap_or_default();
    // Only a boot that an upgrade put on trial is failed here; any other boot is left alone
    // (its unit fails and says why, and nothing reboots).
    let pending = records.pending()?;
    if let Some(pending) = pending.filter(|p| p.to_version == running) {
        records.set_gate_failure(&GateFailure {
            version: pending.to_version.clone(),
            reason: reason.clone(),
        })?;
        for command in [&args.mark_bad_command, &args.reboot_command] {
            run_command(command)?;
        }
    }
    Err(Error::new(Code::UpgradeFailed, reason)
        .with("reason", "health_gate_failed")
        .into())
}

fn run_command(command: &str) -> Result<(), Error> {
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or_default();
    let status = std::process::Command::new(program)
        .args(words)
        .status()
        .map_err(|e| {
            Error::new(Code::UpgradeFailed, format!("cannot run {command}: {e}"))
                .with("reason", "command_failed")
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(
            Error::new(Code::UpgradeFailed, format!("{command} failed: {status}"))
                .with("reason", "command_failed"),
        )
    }
}

/// One round of observation: the local daemon (socket), then the docker engine.
fn observe(args: &HealthGateArgs, socket: &Path) -> Observation {
    let socket = Target::Socket(socket.to_owned());
    let daemon = client::run(&socket, |c| async move {
        let status = c
            .cluster()
            .status(pb::ClusterStatusRequest { consistent: false })
            .await?
            .into_inner();
        if !status.initialized {
            return Ok((status, None, Ok(()), Vec::new()));
        }
        let consistent = c
            .cluster()
            .status(pb::ClusterStatusRequest { consistent: true })
            .await
            .map(drop)
            .map_err(|s| Error::from_status(&s).message);
        let node = status
            .nodes
            .iter()
            .find(|n| n.name == status.node_name)
            .cloned();
        let replicas = c
            .deploy()
            .get(pb::GetRequest {
                query: Some(pb::get_request::Query::Replicas(pb::ReplicasQuery {
                    node: status.node_name.clone(),
                    ..Default::default()
                })),
                consistent: false,
            })
            .await?
            .into_inner();
        let not_running = match replicas.result {
            Some(pb::get_response::Result::Replicas(list)) => list
                .replicas
                .iter()
                .filter_map(|r| {
                    let observed = r.observed.as_ref();
                    let state = observed.map_or(pb::ReplicaState::Pending, |o| o.state());
                    let fine =
                        matches!(state, pb::ReplicaState::Running | pb::ReplicaState::Stopped);
                    let id = r.desired.as_ref().map(|d| d.id.clone()).unwrap_or_default();
                    (!fine).then(|| {
                        format!(
                            "{id} ({})",
                            enum_name(state.as_str_name(), "REPLICA_STATE_")
                        )
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok((status, node, consistent, not_running))
    });
    let mut observation = Observation {
        docker_error: docker_ping(&args.docker_socket).err(),
        ..Observation::default()
    };
    match daemon {
        Err(failure) => observation.daemon_error = Some(failure_text(failure)),
        Ok((status, node, consistent, not_running)) => {
            observation.member = status.initialized;
            observation.raft_error = consistent.err();
            // Only a report from this boot counts: the record still holds the previous boot's
            // until this boot's network supervisor has checked its table.
            let boot_id = crate::net::supervisor::boot_id();
            observation.isolation = node
                .and_then(|n| n.isolation)
                .filter(|c| c.details.get(crate::net::supervisor::BOOT_ID_DETAIL) == Some(&boot_id))
                .map(|c| (c.ok, c.message));
            observation.replicas_not_running = not_running;
        }
    }
    observation
}

fn failure_text(failure: Failure) -> String {
    match failure {
        Failure::Errors(errors) => errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
        other => format!("{other:?}"),
    }
}

/// `GET /_ping` on the docker socket.
fn docker_ping(socket: &Path) -> Result<(), String> {
    use std::io::Write as _;
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    let _ = stream.take(4096).read_to_string(&mut reply);
    if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "unexpected answer to /_ping: {:?}",
            reply.lines().next().unwrap_or_default()
        ))
    }
}
