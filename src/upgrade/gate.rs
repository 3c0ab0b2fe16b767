//! The boot health gate's verdict (SPEC §9.3): is this node healthy enough for its boot to be
//! blessed?
//!
//! Role: a pure function from what the gate observed (through the local daemon and the docker
//! socket) to a verdict with every reason that still stands in the way. The CLI command
//! `jaco upgrade health-gate` polls, calls [`assess`] and acts. It must not do I/O.

/// What the gate observed in one round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Why the local daemon did not answer, if it did not.
    pub daemon_error: Option<String>,
    /// Whether this node belongs to a cluster (a fresh node has nothing more to check).
    pub member: bool,
    /// Why a linearizable read through the leader failed (not caught up / no leader), if it did.
    pub raft_error: Option<String>,
    /// This node's isolation condition as reported during this boot: `None` until then (the
    /// node's record may still hold the previous boot's), else (ok, message).
    pub isolation: Option<(bool, String)>,
    /// Why the docker engine did not answer a ping, if it did not.
    pub docker_error: Option<String>,
    /// This node's replicas that should run but do not (ids with their state).
    pub replicas_not_running: Vec<String>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Bless the boot.
    Healthy,
    /// Not (yet) healthy, with every reason.
    Unhealthy(Vec<String>),
}

/// Judges one observation.
pub fn assess(o: &Observation) -> Verdict {
    let mut reasons = Vec::new();
    if let Some(error) = &o.daemon_error {
        reasons.push(format!("the jaco daemon does not answer: {error}"));
    }
    if let Some(error) = &o.docker_error {
        reasons.push(format!("docker is unreachable: {error}"));
    }
    if o.daemon_error.is_none() && o.member {
        if let Some(error) = &o.raft_error {
            reasons.push(format!("raft is not caught up with a leader: {error}"));
        }
        match &o.isolation {
            None => {
                reasons.push("the isolation self-test has not reported in this boot yet".to_owned())
            }
            Some((false, message)) => {
                reasons.push(format!("the isolation self-test failed: {message}"));
            }
            Some((true, _)) => {}
        }
        if !o.replicas_not_running.is_empty() {
            reasons.push(format!(
                "replicas not running yet: {}",
                o.replicas_not_running.join(", ")
            ));
        }
    }
    if reasons.is_empty() {
        Verdict::Healthy
    } else {
        Verdict::Unhealthy(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy_member() -> Observation {
        Observation {
            member: true,
            isolation: Some((true, String::new())),
            ..Observation::default()
        }
    }

    #[test]
    fn a_member_is_healthy_only_when_every_check_passes() {
        assert_eq!(assess(&healthy_member()), Verdict::Healthy);
        let cases = [
            (
                Observation {
                    daemon_error: Some("refused".into()),
                    ..healthy_member()
                },
                "daemon",
            ),
            (
                Observation {
                    docker_error: Some("no socket".into()),
                    ..healthy_member()
                },
                "docker",
            ),
            (
                Observation {
                    raft_error: Some("no leader".into()),
                    ..healthy_member()
                },
                "raft",
            ),
            (
                Observation {
                    isolation: None,
                    ..healthy_member()
                },
                "not reported",
            ),
            (
                Observation {
                    isolation: Some((false, "nft: no such file".into())),
                    ..healthy_member()
                },
                "nft: no such file",
            ),
            (
                Observation {
                    replicas_not_running: vec!["web-1 (pending)".into()],
                    ..healthy_member()
                },
                "web-1 (pending)",
            ),
        ];
        for (observation, needle) in cases {
            let Verdict::Unhealthy(reasons) = assess(&observation) else {
                panic!("unhealthy expected for {needle}");
            };
            assert_eq!(reasons.len(), 1, "{reasons:?}");
            assert!(reasons[0].contains(needle), "{reasons:?}");
        }
    }

    #[test]
    fn a_node_outside_any_cluster_needs_only_the_daemon_and_docker() {
        assert_eq!(assess(&Observation::default()), Verdict::Healthy);
        let down = Observation {
            daemon_error: Some("refused".into()),
            docker_error: Some("gone".into()),
            ..Observation::default()
        };
        let Verdict::Unhealthy(reasons) = assess(&down) else {
            panic!()
        };
        assert_eq!(reasons.len(), 2);
    }
}
