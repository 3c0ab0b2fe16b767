//! What every API handler shares: the node's membership (none until `cluster init`/`join`),
//! the settings to become a member, the metrics, and the caller's [`Identity`] as the edge
//! layer established it.
//!
//! This module holds and hands out; it must not serve or decide. Becoming a member is
//! announced on a watch channel so that the daemon can start what a member runs (the TLS
//! listener, the membership reconciler).

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, MutexGuard, watch};
use tonic::{Request, Status};

use super::auth::Identity;
use crate::daemon::lifecycle::ClusterDefaults;
use crate::daemon::member::{Member, MemberSettings};
use crate::daemon::metrics::Metrics;
use crate::error::{Code, Error};
use crate::runtime::Runtime;

/// The shared context of the API services.
pub struct ApiContext {
    /// How to start a member (init, join).
    pub settings: MemberSettings,
    /// Cluster-wide settings for `cluster init`.
    pub cluster_defaults: ClusterDefaults,
    /// The daemon's metrics.
    pub metrics: Arc<Metrics>,
    member: watch::Sender<Option<Arc<Member>>>,
    lifecycle: Mutex<()>,
    runtime: OnceLock<Arc<dyn Runtime>>,
    upgrade: OnceLock<Arc<crate::daemon::upgrade::UpgradeHost>>,
}

impl ApiContext {
    /// A context for a node that is `member` already (restart) or not yet (`None`).
    pub fn new(
        settings: MemberSettings,
        cluster_defaults: ClusterDefaults,
        metrics: Arc<Metrics>,
        member: Option<Arc<Member>>,
    ) -> Self {
        ApiContext {
            settings,
            cluster_defaults,
            metrics,
            member: watch::Sender::new(member),
            lifecycle: Mutex::new(()),
            runtime: OnceLock::new(),
            upgrade: OnceLock::new(),
        }
    }

    /// The member, or `cluster_uninitialized`.
    pub fn member(&self) -> Result<Arc<Member>, Error> {
        self.member.borrow().clone().ok_or_else(|| {
            Error::new(
                Code::ClusterUninitialized,
                format!(
                    "node {} is not part of a cluster yet: run `jaco cluster init` on the first \
                     node or `jaco cluster join` here",
                    self.settings.name
                ),
            )
            .with("node", &self.settings.name)
        })
    }

    /// The member, if any.
    pub fn try_member(&self) -> Option<Arc<Member>> {
        self.member.borrow().clone()
    }

    /// Serialises init and join (two at once must not both create a cluster).
    pub async fn lifecycle(&self) -> MutexGuard<'_, ()> {
        self.lifecycle.lock().await
    }

    /// Records that this node became a member.
    pub fn became_member(&self, member: Arc<Member>) {
        self.member.send_replace(Some(member));
    }

    /// Hands the node's container runtime to the services that reach containers (logs, exec);
    /// the first call wins.
    pub fn set_runtime(&self, runtime: Arc<dyn Runtime>) {
        let _ = self.runtime.set(runtime);
    }

    /// The node's container runtime, or `docker_error` when the daemon runs without one.
    pub fn runtime(&self) -> Result<Arc<dyn Runtime>, Error> {
        self.runtime.get().cloned().ok_or_else(|| {
            Error::new(
                Code::DockerError,
                format!("node {} has no container runtime", self.settings.name),
            )
            .with("node", &self.settings.name)
            .with("reason", "no_runtime")
        })
    }

    /// Hands the node's upgrade host to the `Upgrade` service; the first call wins.
    pub fn set_upgrade_host(&self, host: Arc<crate::daemon::upgrade::UpgradeHost>) {
        let _ = self.upgrade.set(host);
    }

    /// The node's upgrade host, or `internal` when the daemon runs without one (tests).
    pub fn upgrade_host(&self) -> Result<Arc<crate::daemon::upgrade::UpgradeHost>, Error> {
        self.upgrade.get().cloned().ok_or_else(|| {
            Error::new(
                Code::Internal,
                format!("node {} is not set up for upgrades", self.settings.name),
            )
            .with("reason", "no_upgrade_host")
        })
    }

    /// Watches membership (for the daemon's wiring).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Member>>> {
        self.member.subscribe()
    }
}

/// The caller of `request` as the edge layer authenticated it.
pub fn caller<T>(request: &Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| {
            Status::from(
                Error::new(
                    Code::Internal,
                    "the request reached a handler unauthenticated",
                )
                .with("reason", "no_identity"),
            )
        })
}

/// `permission_denied` unless the caller is the local socket (init and join change what this
/// node is; only its administrator may do that).
pub fn require_local(identity: &Identity, what: &str) -> Result<(), Error> {
    if *identity == Identity::Local {
        Ok(())
    } else {
        Err(Error::new(
            Code::PermissionDenied,
            format!("{what} is only accepted on the node's local socket"),
        )
        .with("identity", identity.audit_name())
        .with("reason", "local_socket_only"))
    }
}

/// The values of a repeated proto enum field, refusing `UNSPECIFIED` (0) and values outside
/// the closed set with `validation_failed` naming `field`.
pub fn closed_set<E>(values: &[i32], field: &str, what: &str) -> Result<BTreeSet<E>, Error>
where
    E: TryFrom<i32> + Ord,
{
    values
        .iter()
        .map(|value| match E::try_from(*value) {
            Ok(kind) if *value != 0 => Ok(kind),
            _ => Err(
                Error::new(Code::ValidationFailed, format!("{value} is not {what}"))
                    .with("field", field)
                    .with("type", value),
            ),
        })
        .collect()
}
