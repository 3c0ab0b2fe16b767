//! The daily deployment commands: `apply`, `status`, `get`, `logs`, `exec`, `rollback`,
//! `delete`.
//!
//! Role: adapter between the command line and the daemon's `Deploy` service. Contract (SPEC
//! §5.3, §6, §10 and docs/cli.md): `apply` resolves jaco.yaml and the compose file on this
//! machine ([`crate::manifest::load_documents`]), sends the resolved documents with the secret
//! and config contents, prints what changes, then — unless `--dry-run` or `--detach` — follows
//! the replicas it changed until each is terminal ([`super::follow`]): exit 0 only when all of
//! them run and no rollout aborted, 1 with a summary naming what failed or (after `--timeout`)
//! what is still pending, 130 on Ctrl-C, which leaves the deployment as it is. `rollback`
//! does the same for the previous revision. `status -o json` is the stable
//! `{"deployments": […], "replicas": […]}` shape of [`super::deploy_view`]; `get` never shows
//! secrets (the daemon masks environment values; blobs are named, never shown); `delete` asks
//! on a terminal and needs `--yes` otherwise. `logs` and `exec` live in [`super::replica_io`].
//!
//! This module must not implement manifest resolution, scheduling or runtime logic, and must
//! not print success for an operation the daemon did not confirm.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::{
    DeploymentSelector, ReadArgs, ReplicaSelector, Since, parse_duration, parse_since,
};
use super::client::{self, Service, Target};
use super::deploy_view::{
    DeploymentDetailView, DeploymentView, DiffView, ReplicaDetailView, ReplicaView,
    RouteDetailView, RoutesView, StatusView, deployment_table, replica_table,
};
use super::follow::{self, Ending, Live};
use super::output::{self, OutputFormat};
use super::progress::{self, Goal, Outcome, Progress};
use super::terminal::{self, Redraw};
use super::validate::{load_documents, print_warnings};
use super::{Context, Failure, Terminals, print_to, replica_io};
use crate::error::{Code, Error};
use crate::proto::v1 as pb;
use crate::proto::v1::deploy_client::DeployClient;

/// Exit status after Ctrl-C (128 + SIGINT), as shells report an interrupted command.
pub const EXIT_INTERRUPTED: i32 = 130;

/// How long `apply` and `rollback` follow the replicas by default.
const DEFAULT_TIMEOUT: &str = "10m";

/// Arguments of `jaco apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The deployment's jaco.yaml
    #[arg(value_name = "JACO_YAML", default_value = "jaco.yaml")]
    pub file: PathBuf,
    /// Compose file to use instead of the one jaco.yaml names or the one found next to it
    #[arg(long, value_name = "FILE")]
    pub compose: Option<PathBuf>,
    /// Show what would change (services and replicas added, updated, removed) and change
    /// nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Return once the change is committed instead of waiting for the replicas
    #[arg(long, conflicts_with = "dry_run")]
    pub detach: bool,
    /// Give up waiting for the replicas after this long (the deployment keeps converging)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = DEFAULT_TIMEOUT)]
    pub timeout: Duration,
}

/// Arguments of `jaco status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this deployment, or one service of it (DEPLOYMENT[/SERVICE])
    #[arg(value_name = "DEPLOYMENT[/SERVICE]")]
    pub target: Option<DeploymentSelector>,
    /// Keep running and print the status again on every change (until Ctrl-C)
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: GetCommand,
}

/// The subcommands of `jaco get`.
#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// List deployments with revision and status
    Deployments(GetDeploymentsArgs),
    /// Show one deployment: revisions, status, services and their resolved specs (secrets
    /// redacted)
    Deployment(GetDeploymentArgs),
    /// List replicas with node, state, code and container
    Replicas(GetReplicasArgs),
    /// Show one replica: desired spec, last observation, restarts and dependency gates
    Replica(GetReplicaArgs),
    /// List public routes (domain, path, service, port, TLS)
    Routes(GetRoutesArgs),
    /// Show the routes of one domain in matching order, with ready upstream counts
    Route(GetRouteArgs),
}

/// Arguments of `jaco get deployments`.
#[derive(Debug, Args)]
pub struct GetDeploymentsArgs {
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get deployment`.
#[derive(Debug, Args)]
pub struct GetDeploymentArgs {
    /// Deployment name
    #[arg(value_name = "DEPLOYMENT")]
    pub name: String,
    /// Show this retained earlier revision instead of the current one
    #[arg(long, value_name = "N")]
    pub revision: Option<u64>,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get replicas`.
#[derive(Debug, Args)]
pub struct GetReplicasArgs {
    /// Only replicas of this deployment
    #[arg(long, value_name = "DEPLOYMENT")]
    pub deployment: Option<String>,
    /// Only replicas of this service (with --deployment)
    #[arg(long, value_name = "SERVICE", requires = "deployment")]
    pub service: Option<String>,
    /// Only replicas on this node
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get replica`.
#[derive(Debug, Args)]
pub struct GetReplicaArgs {
    /// Replica id, e.g. shop-web-3
    #[arg(value_name = "REPLICA")]
    pub id: String,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get routes`.
#[derive(Debug, Args)]
pub struct GetRoutesArgs {
    /// Only routes of this domain
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Only routes of this deployment
    #[arg(long, value_name = "DEPLOYMENT")]
    pub deployment: Option<String>,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco get route`.
#[derive(Debug, Args)]
pub struct GetRouteArgs {
    /// The domain whose routes are shown
    #[arg(value_name = "DOMAIN")]
    pub domain: String,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `jaco logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service whose replicas' logs are merged (DEPLOYMENT/SERVICE), or one replica of it
    /// (DEPLOYMENT/SERVICE/INDEX)
    #[arg(value_name = "DEPLOYMENT/SERVICE[/INDEX]")]
    pub target: ReplicaSelector,
    /// Keep printing new lines as they are written
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines written in this last period (10m, 2h, 1h30m) or since this RFC 3339 time
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Only the last N lines of each replica
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
}

/// Arguments of `jaco exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The replica to run in: DEPLOYMENT/SERVICE (any running replica) or
    /// DEPLOYMENT/SERVICE/INDEX
    #[arg(value_name = "DEPLOYMENT/SERVICE[/INDEX]")]
    pub target: ReplicaSelector,
    /// Keep standard input open and send it to the command
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Allocate a terminal for the command
    #[arg(long, short = 't')]
    pub tty: bool,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Arguments of `jaco rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Deployment to roll back
    #[arg(value_name = "DEPLOYMENT")]
    pub deployment: String,
    /// Show what the rollback would change and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Return once the rollback is committed instead of waiting for the replicas
    #[arg(long, conflicts_with = "dry_run")]
    pub detach: bool,
    /// Give up waiting for the replicas after this long (the deployment keeps converging)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = DEFAULT_TIMEOUT)]
    pub timeout: Duration,
}

/// Arguments of `jaco delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Deployment to delete
    #[arg(value_name = "DEPLOYMENT")]
    pub deployment: String,
    /// Keep the named volumes jaco created for the deployment
    #[arg(long)]
    pub keep_volumes: bool,
    /// Do not ask for confirmation (required when standard input is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

// ---- apply and rollback -------------------------------------------------------------------

/// Runs `jaco apply`.
pub fn apply(args: &ApplyArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let (resolved, documents) =
        load_documents(&args.file, args.compose.as_deref()).map_err(Failure::Errors)?;
    print_warnings(&resolved, ctx)?;
    let printed: Vec<String> = resolved.warnings.iter().map(ToString::to_string).collect();
    let blob = |kind: pb::BlobKind,
                (name, object): (&String, &crate::manifest::spec::FileObject)| {
        pb::BlobContent {
            kind: kind.into(),
            name: name.clone(),
            content: object.content.clone(),
        }
    };
    let blobs = (resolved.deployment.secrets.iter())
        .map(|entry| blob(pb::BlobKind::Secret, entry))
        .chain((resolved.deployment.configs.iter()).map(|entry| blob(pb::BlobKind::Config, entry)))
        .collect();
    let request = pb::ApplyRequest {
        jaco_yaml: documents.jaco_yaml,
        compose_yaml: documents.compose_yaml,
        blobs,
        dry_run: args.dry_run,
        expected_revision: 0,
        jaco_yaml_path: args.file.display().to_string(),
        compose_path: documents.compose_path.display().to_string(),
    };
    let follow = Follow::of(args.dry_run, args.detach, args.timeout);
    let target = Target::of(ctx)?;
    let mut io = Io::of(ctx);
    client::run(&target, |c| async move {
        let mut deploy = c.deploy();
        let response = deploy.apply(request).await?.into_inner();
        let mut warnings = response.warnings.clone();
        warnings.retain(|w| !printed.contains(w));
        for warning in &warnings {
            io.warn(warning)?;
        }
        let committed = Committed {
            kind: CommitKind::Apply,
            deployment: response.deployment,
            revision: response.revision,
            previous_revision: response.previous_revision,
            rolled_back_to: None,
            state_revision: response.state_revision,
            dry_run: response.dry_run,
            diff: DiffView::from(&response.diff.unwrap_or_default()),
            rollouts_started: response.rollouts_started,
            warnings: response.warnings,
        };
        finish(&mut deploy, committed, follow, &mut io).await
    })
}

/// Runs `jaco rollback`.
pub fn rollback(args: &RollbackArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let request = pb::RollbackRequest {
        deployment: args.deployment.clone(),
        expected_revision: 0,
        dry_run: args.dry_run,
    };
    let follow = Follow::of(args.dry_run, args.detach, args.timeout);
    let dry_run = args.dry_run;
    let target = Target::of(ctx)?;
    let mut io = Io::of(ctx);
    client::run(&target, |c| async move {
        let mut deploy = c.deploy();
        let response = deploy.rollback(request).await?.into_inner();
        let diff = response.diff.unwrap_or_default();
        let committed = Committed {
            kind: CommitKind::Rollback,
            deployment: response.deployment,
            revision: response.revision,
            previous_revision: response.revision.saturating_sub(1),
            rolled_back_to: Some(response.rolled_back_to),
            state_revision: response.state_revision,
            dry_run,
            rollouts_started: diff
                .services
                .iter()
                .filter(|s| s.starts_rollout)
                .map(|s| s.service.clone())
                .collect(),
            diff: DiffView::from(&diff),
            warnings: Vec::new(),
        };
        finish(&mut deploy, committed, follow, &mut io).await
    })
}

/// Whether and how long to follow the replicas after a commit.
#[derive(Debug, Clone, Copy)]
enum Follow {
    /// Dry run or `--detach`: return at once.
    No,
    /// Follow for at most this long.
    For(Duration),
}

impl Follow {
    fn of(dry_run: bool, detach: bool, timeout: Duration) -> Follow {
        if dry_run || detach {
            Follow::No
        } else {
            Follow::For(timeout)
        }
    }
}

/// The output side of a command that runs inside the I/O runtime.
struct Io<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    format: OutputFormat,
    quiet: bool,
    terminals: Terminals,
}

impl<'a> Io<'a> {
    fn of(ctx: &'a mut Context<'_>) -> Io<'a> {
        Io {
            out: &mut *ctx.out,
            err: &mut *ctx.err,
            format: ctx.format,
            quiet: ctx.global.quiet,
            terminals: ctx.terminals,
        }
    }

    fn warn(&mut self, warning: &str) -> std::io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        writeln!(self.err, "Warning: {warning}")
    }

    fn table(&self) -> bool {
        self.format == OutputFormat::Table
    }
}

/// Apply or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitKind {
    Apply,
    Rollback,
}

/// What the daemon committed (or, for a dry run, would commit).
#[derive(Debug, Serialize)]
struct Committed {
    #[serde(skip)]
    kind: CommitKind,
    deployment: String,
    revision: u64,
    previous_revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rolled_back_to: Option<u64>,
    state_revision: u64,
    dry_run: bool,
    diff: DiffView,
    rollouts_started: Vec<String>,
    warnings: Vec<String>,
}

impl Committed {
    /// The first line of the text output.
    fn headline(&self) -> String {
        let unchanged = if self.diff.changed {
            ""
        } else {
            " (nothing changes)"
        };
        let name = &self.deployment;
        let revision = self.revision;
        match (self.kind, self.dry_run, self.rolled_back_to) {
            (CommitKind::Rollback, true, Some(to)) => format!(
                "dry run: rolling back would restore revision {to} of {name} as revision \
                 {revision}{unchanged}; nothing was changed"
            ),
            (CommitKind::Rollback, false, Some(to)) => {
                format!("rolled back {name} to revision {to} as revision {revision}{unchanged}")
            }
            (_, true, _) if self.diff.created => format!(
                "dry run: applying would create {name} at revision {revision}; nothing was \
                 changed"
            ),
            (_, true, _) => format!(
                "dry run: applying would make revision {revision} of {name} (now \
                 {}){unchanged}; nothing was changed",
                self.previous_revision
            ),
            (_, false, _) if self.diff.created => {
                format!("created {name} at revision {revision}")
            }
            (_, false, _) => format!(
                "applied {name} revision {revision} (was {}){unchanged}",
                self.previous_revision
            ),
        }
    }

    fn text(&self) -> String {
        let mut text = format!("{}\n", self.headline());
        for line in self.diff.lines() {
            text.push_str(&format!("  {line}\n"));
        }
        text
    }
}

/// The JSON/YAML answer of `apply` and `rollback`: the commit and how following ended.
#[derive(Debug, Serialize)]
struct CommitView<'a> {
    #[serde(flatten)]
    committed: &'a Committed,
    /// `null` for a dry run and with `--detach`.
    convergence: Option<Convergence<'a>>,
}

#[derive(Debug, Serialize)]
struct Convergence<'a> {
    /// `converged`, `failed`, `superseded`, `deleted`, `timed_out` or `interrupted`.
    outcome: &'static str,
    #[serde(flatten)]
    progress: &'a Progress,
}

/// Prints what was committed, follows the replicas unless told not to, and turns the ending
/// into the command's result.
async fn finish(
    deploy: &mut DeployClient<Service>,
    committed: Committed,
    follow: Follow,
    io: &mut Io<'_>,
) -> Result<(), Failure> {
    if io.table() {
        io.out.write_all(committed.text().as_bytes())?;
        io.out.flush()?;
    }
    let Follow::For(timeout) = follow else {
        if io.table() {
            if !committed.dry_run && !io.quiet {
                writeln!(
                    io.err,
                    "not waiting for the replicas (--detach); follow them with `jaco status {} \
                     --watch`",
                    committed.deployment
                )?;
            }
            return Ok(());
        }
        let view = CommitView {
            committed: &committed,
            convergence: None,
        };
        return print_to(io.out, io.format, &view, |_| String::new());
    };
    let goal = Goal {
        deployment: committed.deployment.clone(),
        revision: committed.revision,
    };
    let mut live = if io.quiet {
        Live::Silent
    } else if io.terminals.stderr {
        Live::Redraw(Redraw::new(
            terminal::window_size().map(|(columns, _)| usize::from(columns)),
        ))
    } else {
        Live::Lines
    };
    let ending = follow::converge(
        deploy,
        &goal,
        committed.state_revision,
        timeout,
        &mut live,
        io.err,
    )
    .await?;
    let (outcome, progress) = match &ending {
        Ending::Over(p) => (p.outcome.name(), p),
        Ending::TimedOut(p) => ("timed_out", p),
        Ending::Interrupted(p) => ("interrupted", p),
    };
    if !io.table() {
        let view = CommitView {
            committed: &committed,
            convergence: Some(Convergence { outcome, progress }),
        };
        print_to(io.out, io.format, &view, |_| String::new())?;
    }
    match ending {
        Ending::Over(p) if p.outcome == Outcome::Converged => {
            if io.table() {
                io.out.write_all(progress::summary(&goal, &p).as_bytes())?;
            }
            Ok(())
        }
        Ending::Over(p) => {
            io.err.write_all(progress::summary(&goal, &p).as_bytes())?;
            Err(Failure::Reported)
        }
        Ending::TimedOut(p) => {
            writeln!(
                io.err,
                "gave up waiting after {} (--timeout); the cluster keeps converging the \
                 deployment",
                humanize(timeout)
            )?;
            io.err.write_all(progress::summary(&goal, &p).as_bytes())?;
            Err(Failure::Reported)
        }
        Ending::Interrupted(_) => {
            writeln!(
                io.err,
                "interrupted: revision {} of {} stays committed and keeps converging on the \
                 cluster; follow it with `jaco status {} --watch`",
                goal.revision, goal.deployment, goal.deployment
            )?;
            Err(Failure::Exit(EXIT_INTERRUPTED))
        }
    }
}

/// A duration as the flags write it (`10m`, `1h30m`, `45s`).
fn humanize(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size {
            text.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    if seconds > 0 || text.is_empty() {
        text.push_str(&format!("{seconds}s"));
    }
    text
}

// ---- status and get -----------------------------------------------------------------------

/// Runs `jaco status`.
pub fn status(args: &StatusArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let request = pb::DeployStatusRequest {
        deployment: args
            .target
            .as_ref()
            .map(|t| t.deployment.clone())
            .unwrap_or_default(),
        service: args
            .target
            .as_ref()
            .and_then(|t| t.service.clone())
            .unwrap_or_default(),
        consistent: args.read.consistent,
    };
    let target = Target::of(ctx)?;
    if !args.watch {
        let response = client::run(&target, |c| async move {
            Ok(c.deploy().status(request).await?.into_inner())
        })?;
        return ctx.print(&StatusView::from(&response), StatusView::text);
    }
    let io = Io::of(ctx);
    let mut redraw = (io.terminals.stdout && io.table())
        .then(|| Redraw::new(terminal::window_size().map(|(columns, _)| usize::from(columns))));
    let (out, format) = (io.out, io.format);
    let mut frames = 0usize;
    client::run(&target, |c| async move {
        let mut deploy = c.deploy();
        follow::watch_status(&mut deploy, request, |status| {
            let view = StatusView::from(status);
            let text = match (output::DataFormat::of(format), redraw.as_mut()) {
                (Some(data), _) => output::stream_item(&view, data)?,
                (None, Some(redraw)) => redraw.frame(&view.text()),
                (None, None) if frames > 0 => format!("\n{}", view.text()),
                (None, None) => view.text(),
            };
            frames += 1;
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        })
        .await
    })
}

/// Runs `jaco get …`.
pub fn get(args: &GetArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    use pb::get_request::Query;
    use pb::get_response::Result as Answer;
    let (query, consistent) = match &args.command {
        GetCommand::Deployments(a) => (Query::Deployments(pb::DeploymentsQuery {}), a.read),
        GetCommand::Deployment(a) => (
            Query::Deployment(pb::DeploymentQuery {
                name: a.name.clone(),
                revision: a.revision.unwrap_or(0),
                show_secrets: false,
            }),
            a.read,
        ),
        GetCommand::Replicas(a) => (
            Query::Replicas(pb::ReplicasQuery {
                deployment: a.deployment.clone().unwrap_or_default(),
                service: a.service.clone().unwrap_or_default(),
                node: a.node.clone().unwrap_or_default(),
            }),
            a.read,
        ),
        GetCommand::Replica(a) => (
            Query::Replica(pb::ReplicaQuery { id: a.id.clone() }),
            a.read,
        ),
        GetCommand::Routes(a) => (
            Query::Routes(pb::RoutesQuery {
                domain: a.domain.clone().unwrap_or_default(),
                deployment: a.deployment.clone().unwrap_or_default(),
            }),
            a.read,
        ),
        GetCommand::Route(a) => (
            Query::Route(pb::RouteQuery {
                domain: a.domain.clone(),
            }),
            a.read,
        ),
    };
    let request = pb::GetRequest {
        query: Some(query),
        consistent: consistent.consistent,
    };
    let target = Target::of(ctx)?;
    let answer = client::run(&target, |c| async move {
        Ok(c.deploy().get(request).await?.into_inner())
    })?;
    match (&args.command, answer.result) {
        (GetCommand::Deployments(_), Some(Answer::Deployments(list))) => {
            let views: Vec<DeploymentView> =
                list.deployments.iter().map(DeploymentView::from).collect();
            ctx.print(&views, |v| {
                if v.is_empty() {
                    "no deployments\n".to_owned()
                } else {
                    deployment_table(v)
                }
            })
        }
        (GetCommand::Deployment(_), Some(Answer::Deployment(detail))) => ctx.print(
            &DeploymentDetailView::from(&detail),
            DeploymentDetailView::text,
        ),
        (GetCommand::Replicas(_), Some(Answer::Replicas(list))) => {
            let views: Vec<ReplicaView> = list.replicas.iter().map(ReplicaView::from).collect();
            ctx.print(&views, |v| {
                if v.is_empty() {
                    "no replicas\n".to_owned()
                } else {
                    replica_table(v)
                }
            })
        }
        (GetCommand::Replica(_), Some(Answer::Replica(detail))) => {
            ctx.print(&ReplicaDetailView::from(&detail), ReplicaDetailView::text)
        }
        (GetCommand::Routes(_), Some(Answer::Routes(list))) => {
            ctx.print(&RoutesView::from(&list), RoutesView::text)
        }
        (GetCommand::Route(_), Some(Answer::Route(detail))) => {
            ctx.print(&RouteDetailView::from(&detail), RouteDetailView::text)
        }
        _ => Err(Failure::from(
            Error::new(
                Code::Internal,
                "the daemon answered another kind of object than the one asked for",
            )
            .with("reason", "unexpected_answer"),
        )),
    }
}

// ---- delete -------------------------------------------------------------------------------

/// What `delete` prints.
#[derive(Debug, Serialize)]
struct Deleted {
    deployment: String,
    last_revision: u64,
    keep_volumes: bool,
    state_revision: u64,
}

impl Deleted {
    fn text(&self) -> String {
        let volumes = if self.keep_volumes {
            "; its named volumes are kept"
        } else {
            " and the named volumes jaco created"
        };
        format!(
            "deleted {} (last revision {}); every node removes its containers, networks{volumes}\n",
            self.deployment, self.last_revision
        )
    }
}

/// Runs `jaco delete`.
pub fn delete(args: &DeleteArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    if !args.yes {
        if !ctx.terminals.stdin {
            return Err(ctx.usage_error(
                ErrorKind::MissingRequiredArgument,
                format!(
                    "refusing to delete {} without confirmation: standard input is not a \
                     terminal, so pass --yes",
                    args.deployment
                ),
            ));
        }
        let volumes = if args.keep_volumes {
            "named volumes are kept"
        } else {
            "named volumes are deleted too"
        };
        let question = format!(
            "Delete deployment {} with its replicas, networks and routes ({volumes})?",
            args.deployment
        );
        let confirmed = terminal::confirm(&question, ctx.err).map_err(|e| {
            Error::new(Code::Internal, format!("cannot read the answer: {e}"))
                .with("reason", "terminal_failed")
        })?;
        if !confirmed {
            writeln!(ctx.err, "not deleted")?;
            return Err(Failure::Reported);
        }
    }
    let request = pb::DeleteRequest {
        deployment: args.deployment.clone(),
        keep_volumes: args.keep_volumes,
    };
    let target = Target::of(ctx)?;
    let response = client::run(&target, |c| async move {
        Ok(c.deploy().delete(request).await?.into_inner())
    })?;
    let deleted = Deleted {
        deployment: response.deployment,
        last_revision: response.last_revision,
        keep_volumes: args.keep_volumes,
        state_revision: response.state_revision,
    };
    ctx.print(&deleted, Deleted::text)
}

// ---- logs and exec ------------------------------------------------------------------------

/// Runs `jaco logs`.
pub fn logs(args: &LogsArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    replica_io::logs(args, ctx)
}

/// Runs `jaco exec`.
pub fn exec(args: &ExecArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    replica_io::exec(args, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, parse};

    fn command(argv: &[&str]) -> Command {
        let (cli, _): (Cli, _) = parse(std::iter::once("jaco").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        cli.command
    }

    #[test]
    fn exec_takes_the_command_after_double_dash() {
        let Command::Exec(args) =
            command(&["exec", "shop/web/2", "-it", "--", "sh", "-c", "ls -l"])
        else {
            panic!("not exec")
        };
        assert_eq!(args.target.index, Some(2));
        assert!(args.interactive && args.tty);
        assert_eq!(args.command, ["sh", "-c", "ls -l"]);
    }

    #[test]
    fn exec_without_a_command_is_rejected() {
        assert!(parse(["jaco", "exec", "shop/web"]).is_err());
        assert!(parse(["jaco", "exec", "shop/web", "ls"]).is_err());
    }

    #[test]
    fn malformed_targets_are_usage_errors() {
        for argv in [
            &["jaco", "logs", "shop"][..],
            &["jaco", "status", "shop/web/1"],
            &["jaco", "exec", "shop/web/x", "--", "ls"],
            &["jaco", "logs", "shop/web", "--since", "yesterday"],
            &["jaco", "apply", "--dry-run", "--detach"],
            &["jaco", "apply", "--timeout", "soon"],
        ] {
            let err = parse(argv.iter().copied()).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn logs_parses_since_and_tail() {
        let Command::Logs(args) = command(&[
            "logs",
            "shop/web/2",
            "-f",
            "--since",
            "1h30m",
            "--tail",
            "50",
        ]) else {
            panic!("not logs")
        };
        assert!(args.follow);
        assert_eq!(args.target.index, Some(2));
        assert_eq!(args.since, Some(Since::Ago(Duration::from_secs(5400))));
        assert_eq!(args.tail, Some(50));
    }

    #[test]
    fn apply_defaults_to_jaco_yaml_and_ten_minutes() {
        let Command::Apply(args) = command(&["apply", "--dry-run"]) else {
            panic!("not apply")
        };
        assert_eq!(args.file, std::path::Path::new("jaco.yaml"));
        assert!(args.dry_run && !args.detach);
        assert_eq!(args.timeout, Duration::from_secs(600));
    }

    #[test]
    fn durations_are_written_like_the_flags() {
        assert_eq!(humanize(Duration::from_secs(600)), "10m");
        assert_eq!(humanize(Duration::from_secs(5_445)), "1h30m45s");
        assert_eq!(humanize(Duration::ZERO), "0s");
    }

    fn committed(kind: CommitKind, dry_run: bool, created: bool) -> Committed {
        Committed {
            kind,
            deployment: "shop".into(),
            revision: 3,
            previous_revision: 2,
            rolled_back_to: (kind == CommitKind::Rollback).then_some(1),
            state_revision: if dry_run { 0 } else { 77 },
            dry_run,
            diff: DiffView::from(&pb::DeploymentDiff {
                created,
                changed: true,
                services: vec![pb::ServiceDiff {
                    service: "web".into(),
                    kind: pb::DiffKind::Added.into(),
                    to_replicas: 2,
                    to_image: "nginx:1.27".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            rollouts_started: vec![],
            warnings: vec![],
        }
    }

    #[test]
    fn headlines_say_what_was_committed() {
        assert_eq!(
            committed(CommitKind::Apply, false, false).text(),
            "applied shop revision 3 (was 2)\n  + service web: nginx:1.27, 2 replicas\n"
        );
        assert_eq!(
            committed(CommitKind::Apply, false, true).headline(),
            "created shop at revision 3"
        );
        assert_eq!(
            committed(CommitKind::Apply, true, false).headline(),
            "dry run: applying would make revision 3 of shop (now 2); nothing was changed"
        );
        assert_eq!(
            committed(CommitKind::Rollback, false, false).headline(),
            "rolled back shop to revision 1 as revision 3"
        );
        assert_eq!(
            committed(CommitKind::Rollback, true, false).headline(),
            "dry run: rolling back would restore revision 1 of shop as revision 3; nothing \
             was changed"
        );
    }

    #[test]
    fn the_json_answer_carries_the_diff_and_the_convergence() {
        let c = committed(CommitKind::Apply, false, false);
        let progress = Progress::empty();
        let view = CommitView {
            committed: &c,
            convergence: Some(Convergence {
                outcome: "timed_out",
                progress: &progress,
            }),
        };
        let json: serde_json::Value =
            serde_json::from_str(&output::render(&view, output::DataFormat::Json).unwrap())
                .unwrap();
        assert_eq!(json["deployment"], "shop");
        assert_eq!(json["diff"]["services"][0]["change"], "added");
        assert_eq!(json["convergence"]["outcome"], "timed_out");
        assert!(json["convergence"]["pending"].is_array());
        assert!(json.get("rolled_back_to").is_none());
    }

    /// A replica of `shop` at revision 2 (`NEW` spec) or 1 (`OLD`), observed in `state`.
    fn replica(id: &str, spec: &str, state: Option<pb::ReplicaState>) -> pb::Replica {
        pb::Replica {
            desired: Some(pb::ReplicaDesired {
                id: id.into(),
                deployment: "shop".into(),
                service: "web".into(),
                node: "n1".into(),
                spec_hash: spec.into(),
                revision: if spec == NEW { 2 } else { 1 },
                ..Default::default()
            }),
            observed: state.map(|state| pb::ReplicaObserved {
                id: id.into(),
                state: state.into(),
                code: if state == pb::ReplicaState::Failed {
                    "image_pull_failed".into()
                } else {
                    String::new()
                },
                spec_hash: spec.into(),
                ..Default::default()
            }),
        }
    }

    const NEW: &str = "spec-2";
    const OLD: &str = "spec-1";

    fn snapshot(reason: Option<&str>, replicas: Vec<pb::Replica>) -> pb::DeployStatusResponse {
        pb::DeployStatusResponse {
            deployments: vec![pb::DeploymentSummary {
                name: "shop".into(),
                revision: 2,
                status: if reason.is_some() {
                    pb::DeploymentStatus::Pending
                } else {
                    pb::DeploymentStatus::Active
                }
                .into(),
                status_details: reason
                    .map(|r| [("reason".to_owned(), r.to_owned())].into())
                    .unwrap_or_default(),
                services: vec![pb::ServiceSummary {
                    name: "web".into(),
                    placement: pb::PlacementMode::Spread.into(),
                    desired_replicas: 1,
                    spec_hash: NEW.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            replicas,
            ..Default::default()
        }
    }

    /// Runs `apply` of a minimal deployment against a scripted server.
    fn apply_against(statuses: Vec<pb::DeployStatusResponse>) -> (i32, String, String) {
        let scripted = crate::cli::scripted::Scripted::with_statuses(statuses);
        let (dir, _runtime, socket) = scripted.serve();
        std::fs::write(dir.path().join("jaco.yaml"), "deployment: shop\n").unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  web:\n    image: web:2\n",
        )
        .unwrap();
        let file = dir.path().join("jaco.yaml");
        crate::cli::tests::run(&[
            "apply",
            file.to_str().unwrap(),
            "--socket",
            &socket,
            "--timeout",
            "20s",
        ])
    }

    #[test]
    fn apply_follows_the_replicas_until_they_run() {
        use pb::ReplicaState::{Pulling, Running};
        let (status, out, err) = apply_against(vec![
            snapshot(
                Some("converging"),
                vec![replica("shop-web-1", OLD, Some(Running))],
            ),
            snapshot(
                None,
                vec![
                    replica("shop-web-1", OLD, Some(Running)),
                    replica("shop-web-2", NEW, Some(Pulling)),
                ],
            ),
            snapshot(None, vec![replica("shop-web-2", NEW, Some(Running))]),
        ]);
        assert_eq!(status, 0, "{err}");
        assert_eq!(
            out,
            "applied shop revision 2 (was 1)\n  ~ service web: image web:1 → web:2; rolling \
             update\nshop revision 2 converged: 1 replica running\n"
        );
        assert_eq!(
            err,
            "shop-web-1 on n1: running\n\
             shop-web-1 on n1: running, to be removed\n\
             shop-web-2 on n1: pulling\n\
             shop-web-2 on n1: running\n\
             shop-web-1 on n1: removed\n"
        );
    }

    #[test]
    fn apply_fails_naming_the_failed_replica() {
        let (status, out, err) = apply_against(vec![snapshot(
            None,
            vec![replica("shop-web-2", NEW, Some(pb::ReplicaState::Failed))],
        )]);
        assert_eq!(status, 1, "{err}");
        assert!(out.starts_with("applied shop revision 2"), "{out}");
        assert!(
            err.ends_with(
                "shop revision 2 did not converge:\n  shop-web-2 on n1: failed \
                 (image_pull_failed)\n"
            ),
            "{err}"
        );
    }

    #[test]
    fn delete_without_yes_and_without_a_terminal_is_refused() {
        let (status, out, err) = crate::cli::tests::run(&["delete", "shop"]);
        assert_eq!(status, 2, "{err}");
        assert_eq!(out, "");
        assert!(err.contains("pass --yes"), "{err}");
    }
}
