//! What a node tells the cluster about itself once it is a member: its schedulable capacity
//! (declared in daemon.yaml `capacity:`, else every CPU and all memory of the machine), the
//! jaco version, the CPU architecture and its WireGuard public key and endpoint
//! (`UpdateNodeInfo`, SPEC §5.2 and §7), and every
//! [`SAMPLE_EVERY`] its CPU and memory usage for the rebalancer (SPEC §5.5), as a heartbeat
//! that carries only the sample.
//!
//! [`capacity`], [`cpu_times`] and [`memory_used`] are pure functions of the machine's files;
//! [`report`] submits the info once (retrying until it is committed or the daemon stops) and
//! then the samples. This module must not change a node's API addresses or labels (it copies
//! them from the stored record), nor its `last_heartbeat`, which only the leader's probes set.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::CapacitySettings;
use super::member::Member;
use crate::api::auth::Identity;
use crate::proto::v1 as pb;

/// Wait between failed attempts.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// How often a newly admitted node looks for its own record in the replicated state.
const APPEAR_POLL: Duration = Duration::from_millis(200);

/// How often the node samples and reports its usage.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(30);

/// (busy, total) jiffies of all CPUs from the text of `/proc/stat`.
pub fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3).copied()? + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The share of memory in use (1 − MemAvailable / MemTotal) from the text of `/proc/meminfo`.
pub fn memory_used(meminfo: &str) -> Option<f64> {
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let (total, available) = (kib("MemTotal:")?, kib("MemAvailable:")?);
    (total > 0.0).then(|| (1.0 - available / total).clamp(0.0, 1.0))
}

/// The capacity this node offers: the declared values, else `cpus` × 1000 millicores and the
/// `MemTotal` of `meminfo` (the text of `/proc/meminfo`).
pub fn capacity(settings: &CapacitySettings, cpus: usize, meminfo: &str) -> pb::NodeResources {
    let detected_memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib.saturating_mul(1024));
    pb::NodeResources {
        cpu_millis: settings
            .cpu_millis
            .unwrap_or_else(|| u64::try_from(cpus).unwrap_or(0).saturating_mul(1000)),
        memory_bytes: settings.memory_bytes.unwrap_or(detected_memory),
    }
}

/// The mesh identity a node publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshIdentity {
    /// WireGuard public key, base64.
    pub public_key: String,
    /// `host:port` peers send mesh traffic to.
    pub endpoint: String,
}

/// Submits this node's capacity, version, OS image version and boot slot, architecture and
/// mesh identity, keeping the rest of
/// its record.
pub async fn report(
    member: Arc<Member>,
    settings: CapacitySettings,
    mesh: MeshIdentity,
    os: super::upgrade::OsFacts,
    mut stop: watch::Receiver<bool>,
) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let capacity = capacity(&settings, cpus, &meminfo);
    let mut seen = false;
    loop {
        let Some(node) = member.read(|s| s.node(&member.name).cloned()) else {
            if seen {
                return; // removed from the cluster
            }
            // Just admitted: the node's own record has not reached this replica yet.
            tokio::select! {
                () = tokio::time::sleep(APPEAR_POLL) => continue,
                _ = stop.changed() => return,
            }
        };
        seen = true;
        let info = pb::UpdateNodeInfo {
            node: node.name,
            api_address: node.api_address,
            raft_address: node.raft_address,
            wireguard_public_key: mesh.public_key.clone(),
            wireguard_endpoint: mesh.endpoint.clone(),
            capacity: Some(capacity),
            labels: node.labels,
            version: os.version.clone(),
            os_version: os.os_version.clone(),
            boot_slot: os.boot_slot.clone(),
            root_verity: os.root_verity,
            arch: std::env::consts::ARCH.to_owned(),
        };
        let kind = pb::command::Kind::UpdateNodeInfo(info);
        match member
            .submit(&Identity::Node(member.name.clone()), kind)
            .await
        {
            Ok(_) => break,
            Err(error) => {
                tracing::warn!(error = %error.render(true), "cannot record this node's capacity; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_AFTER) => {}
            _ = stop.changed() => return,
        }
    }
    report_pressure(member, stop).await;
}

/// Samples CPU (over the last interval) and memory usage every [`SAMPLE_EVERY`] and records
/// them; a failed write is simply replaced by the next sample.
async fn report_pressure(member: Arc<Member>, mut stop: watch::Receiver<bool>) {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut last = cpu_times(&read("/proc/stat"));
    loop {
        tokio::select! {
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.changed() => return,
        }
        let now = cpu_times(&read("/proc/stat"));
        let cpu = match (last, now) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64
            }
            _ => 0.0,
        };
        last = now;
        let Some(memory) = memory_used(&read("/proc/meminfo")) else {
            continue;
        };
        let at = crate::pki::now_unix_ms();
        let heartbeat = pb::NodeHeartbeat {
            node: member.name.clone(),
            sent_at_unix_ms: at,
            // 0 leaves last_heartbeat alone: only the leader's clock sets it.
            received_at_unix_ms: 0,
            pressure: Some(pb::NodePressure {
                cpu: cpu.clamp(0.0, 1.0),
                memory,
                sampled_at_unix_ms: at,
            }),
        };
        let kind = pb::command::Kind::RecordHeartbeats(pb::RecordHeartbeats {
            heartbeats: vec![heartbeat],
        });
        if let Err(error) = member
            .submit(&Identity::Node(member.name.clone()), kind)
            .await
        {
            tracing::debug!(error = %error.render(true), "cannot record this node's usage");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24528740 kB\nMemFree:         1000 kB\n";

    #[test]
    fn the_machine_is_offered_unless_declared() {
        let detected = capacity(&CapacitySettings::default(), 2, MEMINFO);
        assert_eq!(detected.cpu_millis, 2_000);
        assert_eq!(detected.memory_bytes, 24_528_740 * 1024);
        let declared = CapacitySettings {
            cpu_millis: Some(500),
            memory_bytes: None,
        };
        let mixed = capacity(&declared, 2, MEMINFO);
        assert_eq!(
            (mixed.cpu_millis, mixed.memory_bytes),
            (500, 24_528_740 * 1024)
        );
        assert_eq!(
            capacity(&CapacitySettings::default(), 1, "junk").memory_bytes,
            0
        );
    }
}
