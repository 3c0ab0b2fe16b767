//! Unique IPAM pools for tests whose clusters share the machine's Docker engine: two clusters
//! with the same pool would ask the engine for overlapping bridge subnets.
//!
//! A [`PoolLease`] holds an exclusive lock on a file named after its pool, so concurrent test
//! processes (nextest runs each test in its own) never get the same one; the lock goes with
//! the lease, also when the test fails or is killed. Test support only.

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::fs::File;

/// Pools on offer: /22s (three /24s for deployments and one for mesh addresses) in
/// 10.200.0.0/14, far from Docker's default 172.16.0.0/12 and jaco's default 10.244.0.0/16.
const POOLS: u32 = 256;

/// An IPAM pool nobody else on this machine uses while the lease lives.
pub struct PoolLease {
    /// The pool in CIDR notation, e.g. `10.201.12.0/22`.
    pub cidr: String,
    _lock: File,
}

impl PoolLease {
    /// Takes the first free pool; panics when all are taken.
    pub fn take() -> PoolLease {
        let dir = std::env::temp_dir().join("jaco-test-pools");
        std::fs::create_dir_all(&dir).expect("create the pool lock directory");
        for index in 0..POOLS {
            let cidr = format!("10.{}.{}.0/22", 200 + index / 64, (index % 64) * 4);
            let path = dir.join(cidr.replace('/', "_"));
            let file = File::create(&path).expect("create a pool lock file");
            if file.try_lock().is_ok() {
                return PoolLease { cidr, _lock: file };
            }
        }
        panic!("all {POOLS} test pools are leased");
    }

    /// daemon.yaml text selecting this pool.
    pub fn daemon_yaml(&self) -> String {
        format!("network: {{ipam_pool: {}}}\n", self.cidr)
    }
}
