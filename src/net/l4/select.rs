//! Upstream selection for an L4 route: round-robin across client connections, and for one
//! client connection the order in which upstreams are tried.
//!
//! Pure logic over values: no sockets, no clock. It does not judge health — the caller hands
//! the proxy only upstreams it believes healthy, and a failed connect simply moves on to the
//! next attempt in the order computed here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The round-robin position of one route, shared by its concurrent connections.
///
/// Each client connection takes one turn; the turn picks the first upstream to try. The
/// cursor survives upstream-list updates (the turn is reduced modulo the current length).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A cursor that starts at the first upstream.
    pub fn new() -> Self {
        RoundRobin::default()
    }

    /// Takes the next turn (wraps around on overflow, which keeps the rotation fair).
    pub fn next_turn(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// The upstreams to try for one client connection, in order: starting at `turn` modulo the
/// number of upstreams and wrapping around, each upstream exactly once. Empty when there are
/// no upstreams.
pub fn attempt_order<T>(upstreams: &[T], turn: usize) -> impl Iterator<Item = &T> {
    let start = turn.checked_rem(upstreams.len()).unwrap_or(0);
    upstreams[start..].iter().chain(&upstreams[..start])
}

/// A route's upstream list as the proxy keeps it: sorted and without duplicates, so that
/// each upstream is attempted at most once per connection and an unchanged set given in
/// another order leaves the rotation where it was.
pub fn distinct(mut upstreams: Vec<SocketAddr>) -> Vec<SocketAddr> {
    upstreams.sort_unstable();
    upstreams.dedup();
    upstreams
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(upstreams: &[u8], turn: usize) -> Vec<u8> {
        attempt_order(upstreams, turn).copied().collect()
    }

    #[test]
    fn attempts_start_at_the_turn_and_wrap_around() {
        assert_eq!(order(&[1, 2, 3], 0), vec![1, 2, 3]);
        assert_eq!(order(&[1, 2, 3], 1), vec![2, 3, 1]);
        assert_eq!(order(&[1, 2, 3], 2), vec![3, 1, 2]);
        assert_eq!(order(&[1, 2, 3], 3), vec![1, 2, 3]);
        assert_eq!(order(&[1, 2, 3], 7), vec![2, 3, 1]);
    }

    #[test]
    fn attempts_try_each_upstream_exactly_once() {
        let upstreams: Vec<u8> = (0..5).collect();
        for turn in 0..20 {
            let mut tried = order(&upstreams, turn);
            tried.sort_unstable();
            assert_eq!(tried, upstreams, "turn {turn}");
        }
    }

    #[test]
    fn no_upstreams_means_no_attempts() {
        assert!(order(&[], 0).is_empty());
        assert!(order(&[], 5).is_empty());
        assert_eq!(order(&[9], usize::MAX), vec![9]);
    }

    #[test]
    fn consecutive_turns_rotate_over_all_upstreams() {
        let rr = RoundRobin::new();
        let upstreams = [10, 20, 30];
        let firsts: Vec<u8> = (0..6)
            .map(|_| *attempt_order(&upstreams, rr.next_turn()).next().unwrap())
            .collect();
        assert_eq!(firsts, vec![10, 20, 30, 10, 20, 30]);
    }

    #[test]
    fn the_turn_wraps_on_overflow() {
        let rr = RoundRobin {
            next: AtomicUsize::new(usize::MAX),
        };
        assert_eq!(rr.next_turn(), usize::MAX);
        assert_eq!(rr.next_turn(), 0);
    }

    #[test]
    fn distinct_sorts_and_drops_duplicates() {
        let a: SocketAddr = "10.244.1.2:80".parse().unwrap();
        let b: SocketAddr = "10.244.0.9:80".parse().unwrap();
        let c: SocketAddr = "10.244.0.9:81".parse().unwrap();
        assert_eq!(distinct(vec![a, c, b, a, c]), vec![b, c, a]);
        assert_eq!(distinct(vec![]), Vec::<SocketAddr>::new());
    }
}
