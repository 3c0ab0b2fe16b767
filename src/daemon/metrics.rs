//! The daemon's Prometheus metrics: raft position, commit and apply latency, and RPC counts
//! and latencies by method and code.
//!
//! One [`Metrics`] value is shared by the subsystems that record into it; rendering is the text
//! exposition format served on `/metrics`. This module records and renders only; it must not
//! decide anything from the numbers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the RPC metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Full gRPC method, e.g. `/jaco.v1.Cluster/Status`.
    pub method: String,
    /// `ok` or the error code from the closed set.
    pub code: String,
}

/// Latency buckets from 100 µs to about 6.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Current raft term.
    pub raft_term: Gauge,
    /// Index of the last log entry.
    pub raft_last_log_index: Gauge,
    /// Index of the last applied entry.
    pub raft_last_applied: Gauge,
    /// 1 while this node is the leader.
    pub raft_is_leader: Gauge,
    /// 1 while a leader is known.
    pub raft_leader_known: Gauge,
    /// Time from proposing a command to its commit.
    pub commit_latency: Histogram,
    /// Time to apply one command to the state machine.
    pub apply_latency: Histogram,
    /// RPCs served.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// RPC latency.
    pub rpc_latency: Family<RpcLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `jaco_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jaco");
        let metrics = Metrics {
            raft_term: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_last_applied: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_leader_known: Gauge::default(),
            commit_latency: latency_histogram(),
            apply_latency: latency_histogram(),
            rpc_requests: Family::default(),
            rpc_latency: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        registry.register("raft_term", "Current raft term", metrics.raft_term.clone());
        registry.register(
            "raft_last_log_index",
            "Index of the last raft log entry",
            metrics.raft_last_log_index.clone(),
        );
        registry.register(
            "raft_last_applied",
            "Index of the last entry applied to the state machine",
            metrics.raft_last_applied.clone(),
        );
        registry.register(
            "raft_is_leader",
            "1 while this node is the raft leader",
            metrics.raft_is_leader.clone(),
        );
        registry.register(
            "raft_leader_known",
            "1 while this node knows a raft leader",
            metrics.raft_leader_known.clone(),
        );
        registry.register(
            "raft_commit_latency_seconds",
            "Time from proposing a command to its commit",
            metrics.commit_latency.clone(),
        );
        registry.register(
            "state_apply_latency_seconds",
            "Time to apply one command to the state machine",
            metrics.apply_latency.clone(),
        );
        registry.register(
            "rpc_requests",
            "gRPC requests served, by method and code",
            metrics.rpc_requests.clone(),
        );
        registry.register(
            "rpc_latency_seconds",
            "gRPC request latency, by method and code",
            metrics.rpc_latency.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Records one served RPC.
    pub fn observe_rpc(&self, method: &str, code: &str, seconds: f64) {
        let labels = RpcLabels {
            method: method.to_owned(),
            code: code.to_owned(),
        };
        self.rpc_requests.get_or_create(&labels).inc();
        self.rpc_latency.get_or_create(&labels).observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_metric_is_rendered() {
        let metrics = Metrics::new();
        metrics.raft_term.set(7);
        metrics.commit_latency.observe(0.002);
        metrics.observe_rpc("/jaco.v1.Cluster/Status", "ok", 0.001);
        let text = metrics.render();
        for name in [
            "jaco_raft_term 7",
            "jaco_raft_last_log_index",
            "jaco_raft_last_applied",
            "jaco_raft_is_leader",
            "jaco_raft_leader_known",
            "jaco_raft_commit_latency_seconds_count 1",
            "jaco_state_apply_latency_seconds",
            "jaco_rpc_requests_total{method=\"/jaco.v1.Cluster/Status\",code=\"ok\"} 1",
            "jaco_rpc_latency_seconds_count{method=\"/jaco.v1.Cluster/Status\",code=\"ok\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
