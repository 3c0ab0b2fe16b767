//! The daemon's lifecycle: configuration → logging → data directory → metrics endpoint →
//! control socket → (once a member) raft, the TLS API, the membership reconciler and the node
//! agent → wait for a signal or a fatal storage error → graceful shutdown.
//!
//! Exits non-zero when raft storage fails (systemd restarts the daemon) and never limps on.
//! This module wires; it must not contain request handling or cluster logic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::{self, DaemonConfig};
use super::http::{self, Readiness};
use super::lifecycle::ClusterDefaults;
use super::member::{Member, MemberSettings};
use super::metrics::Metrics;
use super::{logging, reconcile};
use crate::api::context::ApiContext;
use crate::api::{listen, server};
use crate::error::{Code, Error};
use crate::pki::NodeIdentity;
use crate::raft::raft_config;
use crate::runtime::Runtime;
use crate::runtime::docker::Docker;

/// How often the raft gauges and readiness are refreshed (besides on every metrics change).
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Loads the configuration at `path`, installs logging and runs the daemon until it stops.
pub fn main(path: &Path) -> Result<(), Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(Error::new(
                Code::Internal,
                format!("cannot read {}: {error}", path.display()),
            )
            .with("file", path.display()));
        }
    };
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let config = config::load(
        path,
        text.as_deref(),
        &|name| std::env::var(name).ok(),
        &hostname,
    )?;
    logging::init(&config.log, config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("jaco")
        .build()
        .map_err(|e| Error::new(Code::Internal, format!("cannot start the runtime: {e}")))?;
    let outcome = runtime.block_on(run(config));
    // Background tasks (idle connections, stuck streams) must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    outcome
}

/// The openraft configuration from the daemon's raft settings.
pub fn member_raft_config(config: &DaemonConfig) -> Result<openraft::Config, Error> {
    let settings = &config.raft;
    openraft::Config {
        heartbeat_interval: settings.heartbeat_interval_ms,
        election_timeout_min: settings.election_timeout_min_ms,
        election_timeout_max: settings.election_timeout_max_ms,
        ..raft_config(settings.snapshot_every).map_err(config_error)?
    }
    .validate()
    .map_err(config_error)
}

fn config_error(error: openraft::ConfigError) -> Error {
    Error::new(Code::ValidationFailed, format!("raft settings: {error}")).with("field", "raft")
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> Error {
    Error::new(
        Code::Internal,
        format!("{what} {}: {error}", path.display()),
    )
    .with("path", path.display())
}

/// Runs the daemon with `config` until SIGINT/SIGTERM (Ok) or a fatal error (Err).
pub async fn run(config: DaemonConfig) -> Result<(), Error> {
    prepare_data_dir(&config.data_dir)?;
    let metrics = Arc::new(Metrics::new());
    let settings = MemberSettings {
        name: config.node_name.clone(),
        data_dir: config.data_dir.clone(),
        advertise: config.advertise_addr(),
        raft: member_raft_config(&config)?,
        leader_wait: Duration::from_millis(config.leader_wait_ms),
    };
    let member = resume(&settings, metrics.clone()).await?;
    let context = Arc::new(ApiContext::new(
        settings,
        ClusterDefaults {
            audit_retention: config.audit_retention,
            ipam_pool: config.network.ipam_pool.clone(),
        },
        metrics.clone(),
        member,
    ));
    let (stop_tx, stop) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move { until_stopped(&mut stop).await };
    let (ready_tx, ready) = watch::channel(Readiness::NotReady("starting".into()));

    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| {
            Error::new(
                Code::Internal,
                format!("cannot listen on {}: {e}", config.metrics_listen),
            )
            .with("field", "metrics_listen")
        })?;
    let app = http::router(metrics.clone(), ready);
    let http_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(metrics_listener, app)
                .with_graceful_shutdown(stopped(stop))
                .await
        }
    });

    let (fatal_tx, mut fatal) = tokio::sync::mpsc::channel::<Error>(4);
    let socket = listen::control_socket(&config.socket, config.socket_group.as_deref())
        .map_err(|e| io_error("cannot open the control socket", &config.socket, e))?;
    let bound_socket = matches!(socket, listen::ControlSocket::Bound(_));
    let socket = tokio::net::UnixListener::from_std(socket.into_listener())
        .map_err(|e| io_error("cannot use the control socket", &config.socket, e))?;
    let local_task = tokio::spawn({
        let (context, stop, fatal) = (context.clone(), stop.clone(), fatal_tx.clone());
        async move {
            if let Err(error) = server::serve_local(context, socket, stopped(stop)).await {
                let _ = fatal.send(error).await;
            }
        }
    });
    tracing::info!(
        node = %config.node_name,
        socket = %config.socket.display(),
        api = %config.api_listen,
        metrics = %config.metrics_listen,
        "jaco daemon started"
    );

    // The engine is contacted lazily: a node whose Docker is down still starts, and says so.
    let runtime: Arc<dyn Runtime> = Arc::new(Docker::new(&config.runtime.docker_socket));
    context.set_runtime(runtime.clone());
    context.set_upgrade_host(Arc::new(super::upgrade::UpgradeHost::new(&config)));
    let member_task = tokio::spawn(run_member(
        context.clone(),
        config.clone(),
        runtime,
        ready_tx,
        fatal_tx,
        stop.clone(),
    ));

    let outcome = tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
        Some(error) = fatal.recv() => {
            tracing::error!(error = %error.render(true), "fatal error; exiting");
            Err(error)
        }
    };
    let _ = stop_tx.send(true);
    let _ = member_task.await;
    if let Some(member) = context.try_member() {
        member.shutdown().await;
    }
    let _ = local_task.await;
    let _ = http_task.await;
    if bound_socket {
        let _ = std::fs::remove_file(&config.socket);
    }
    outcome
}

/// Creates the data directory (mode 0700: it holds keys) if needed.
fn prepare_data_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("cannot create the data directory", dir, e))
}

/// Restarts the member a previous run left in the data directory, if any.
async fn resume(
    settings: &MemberSettings,
    metrics: Arc<Metrics>,
) -> Result<Option<Arc<Member>>, Error> {
    let identity = NodeIdentity::load(&settings.data_dir)?;
    let raft_dir = settings.data_dir.join("raft");
    let Some(identity) = identity else {
        if raft_dir.exists() {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "{} holds raft data but no node certificate: an init or join was interrupted; \
                     remove {} and run it again",
                    settings.data_dir.display(),
                    raft_dir.display()
                ),
            )
            .with("reason", "half_initialised_data_dir"));
        }
        return Ok(None);
    };
    let name = identity.verify(crate::pki::now_unix_ms())?;
    if name != settings.name {
        return Err(Error::new(
            Code::ValidationFailed,
            format!(
                "the data directory belongs to node {name:?} but node_name is {:?}",
                settings.name
            ),
        )
        .with("field", "node_name"));
    }
    Member::start(settings, identity, metrics).await.map(Some)
}

/// Once this node is a member: serves the TLS API, runs the reconciler, the scheduler and the node agent,
/// samples raft metrics and reports a fatal raft error.
async fn run_member(
    context: Arc<ApiContext>,
    config: super::config::DaemonConfig,
    runtime: Arc<dyn Runtime>,
    ready: watch::Sender<Readiness>,
    fatal: tokio::sync::mpsc::Sender<Error>,
    mut stop: watch::Receiver<bool>,
) {
    ready.send_replace(Readiness::NotReady("not part of a cluster yet".into()));
    let mut membership = context.subscribe();
    let member = tokio::select! {
        member = async { membership.wait_for(Option::is_some).await.map(|m| m.clone()) } => {
            match member {
                Ok(Some(member)) => member,
                Ok(None) | Err(_) => return,
            }
        }
        () = until_stopped(&mut stop) => return,
    };
    let api_listen = config.api_listen;
    let listener = match tokio::net::TcpListener::bind(api_listen).await {
        Ok(listener) => listener,
        Err(error) => {
            let _ = fatal
                .send(
                    Error::new(
                        Code::Internal,
                        format!("cannot listen on {api_listen}: {error}"),
                    )
                    .with("field", "api_listen"),
                )
                .await;
            return;
        }
    };
    let tls = tokio::spawn({
        let (context, member, stop) = (context.clone(), member.clone(), stop.clone());
        async move {
            let stopped = async move {
                let mut stop = stop;
                until_stopped(&mut stop).await;
            };
            server::serve_tls(context, member, listener, stopped).await
        }
    });
    let reconciler = tokio::spawn(reconcile::run(member.clone(), stop.clone()));
    let scheduler = tokio::spawn(crate::scheduler::run(
        member.clone(),
        config.scheduler.plan_settings(),
        stop.clone(),
    ));
    let agent = tokio::spawn(crate::runtime::agent::run(
        member.clone(),
        runtime,
        config.runtime.clone(),
        stop.clone(),
    ));
    let mesh_key = match crate::net::mesh::load_or_create(&config.data_dir.join("wg")) {
        Ok(key) => key,
        Err(error) => {
            let _ = fatal.send(error).await;
            return;
        }
    };
    let mesh_identity = super::node_info::MeshIdentity {
        public_key: mesh_key.public_base64(),
        endpoint: crate::net::supervisor::mesh_endpoint(
            &config.network,
            &context.settings.advertise,
        ),
    };
    let network = tokio::spawn(crate::net::supervisor::run(
        member.clone(),
        config.network.clone(),
        mesh_key,
        stop.clone(),
    ));
    let upgrade_host = Arc::new(super::upgrade::UpgradeHost::new(&config));
    tokio::spawn(super::node_info::report(
        member.clone(),
        config.capacity.clone(),
        mesh_identity,
        upgrade_host.os_facts(),
        stop.clone(),
    ));
    tokio::spawn(super::upgrade::report_after_boot(
        member.clone(),
        upgrade_host.clone(),
        stop.clone(),
    ));
    tokio::spawn(super::fleet::run_controller(
        member.clone(),
        upgrade_host.step_timeout(),
        stop.clone(),
    ));
    tokio::spawn(super::fleet::run_agent(
        member.clone(),
        upgrade_host,
        stop.clone(),
    ));
    tokio::spawn(record_restore(
        member.clone(),
        context.settings.data_dir.clone(),
    ));
    let mut raft_metrics = member.raft.metrics();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    // A raft core that stops closes its metrics stream at about the moment it reports the
    // fatal error; the loop keeps waiting for that report (or the stop) instead of ending on
    // the closed stream, which would leave the error unreported and the daemon running.
    let mut metrics_open = true;
    loop {
        sample(&context.metrics, &member, &ready);
        tokio::select! {
            _ = tick.tick() => {}
            changed = raft_metrics.changed(), if metrics_open => metrics_open = changed.is_ok(),
            reason = member.failed() => {
                let error = Error::new(Code::Internal, format!("raft storage failed: {reason}"))
                    .with("reason", "raft_fatal");
                let _ = fatal.send(error).await;
                break;
            }
            () = until_stopped(&mut stop) => break,
        }
    }
    let _ = reconciler.await;
    let _ = scheduler.await;
    let _ = agent.await;
    let _ = network.await;
    if let Ok(Err(error)) = tls.await {
        let _ = fatal.send(error).await;
    }
}

/// Records `restore_completed` once a restored node leads, then removes the restore's marker.
async fn record_restore(member: Arc<Member>, data_dir: std::path::PathBuf) {
    let Some(restored) = super::restore::pending_marker(&data_dir) else {
        return;
    };
    let led = member
        .raft
        .wait(None)
        .current_leader(member.id, "the restored node leads")
        .await;
    if led.is_err() {
        return;
    }
    let event = crate::proto::v1::AuditEvent {
        r#type: crate::proto::v1::AuditEventType::RestoreCompleted.into(),
        payload: [
            ("cluster_id".to_owned(), restored.cluster_id),
            ("index".to_owned(), restored.index.to_string()),
            ("node".to_owned(), restored.node),
        ]
        .into(),
        ..Default::default()
    };
    let kind = crate::proto::v1::command::Kind::AppendAudit(crate::proto::v1::AppendAudit {
        events: vec![event],
    });
    match member
        .submit(&crate::api::auth::Identity::Local, kind)
        .await
    {
        Ok(_) => super::restore::clear_marker(&data_dir),
        // The marker stays: the next start records the event.
        Err(error) => {
            tracing::warn!(error = %error.render(true), "cannot record restore_completed")
        }
    }
}

/// Copies raft's position into the gauges and derives readiness.
fn sample(metrics: &Metrics, member: &Member, ready: &watch::Sender<Readiness>) {
    let raft = member.metrics();
    metrics.raft_term.set(raft.current_term as i64);
    metrics
        .raft_last_log_index
        .set(raft.last_log_index.unwrap_or(0) as i64);
    metrics
        .raft_last_applied
        .set(raft.last_applied.map_or(0, |l| l.index) as i64);
    metrics
        .raft_is_leader
        .set(i64::from(raft.current_leader == Some(raft.id)));
    metrics
        .raft_leader_known
        .set(i64::from(raft.current_leader.is_some()));
    let readiness = if raft.current_leader.is_none() {
        Readiness::NotReady("no raft leader".into())
    } else if !member.read(|s| s.is_initialized()) {
        Readiness::NotReady("the cluster state is not replicated here yet".into())
    } else {
        Readiness::Ready
    };
    ready.send_if_modified(|current| {
        let changed = *current != readiness;
        *current = readiness;
        changed
    });
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
