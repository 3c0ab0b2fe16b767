//! Retry schedule of a failing image pull (SPEC §5.4): 1 s after the first failure, doubling
//! after each further one, at most 5 min apart; the replica stays `pending` with
//! `image_pull_failed` and the schedule in its details meanwhile.
//!
//! Pure: attempt numbers and times in, delays and details out. This module must not sleep or
//! pull.

use std::collections::BTreeMap;
use std::time::Duration;

/// Delay after the first failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Longest delay between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// How long to wait after failed attempt number `attempt` (1-based) before the next one.
pub fn retry_delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    FIRST_RETRY
        .checked_mul(1u32 << doublings)
        .map_or(MAX_RETRY, |delay| delay.min(MAX_RETRY))
}

/// The details of a `pending` replica whose pull failed for the `attempt`-th time at
/// `failed_at_unix_ms` with `reason`: `reason`, `attempt` and `next_retry_at` (RFC 3339 UTC).
pub fn pull_failure_details(
    reason: &str,
    attempt: u32,
    failed_at_unix_ms: i64,
) -> BTreeMap<String, String> {
    let next = failed_at_unix_ms.saturating_add(retry_delay(attempt).as_millis() as i64);
    BTreeMap::from([
        ("reason".to_owned(), reason.to_owned()),
        ("attempt".to_owned(), attempt.to_string()),
        (
            "next_retry_at".to_owned(),
            // Same rendering as every time the CLI prints (RFC 3339 UTC).
            crate::cli::view::time(next).unwrap_or_else(|| next.to_string()),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_one_second_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(0), FIRST_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn details_name_the_reason_the_attempt_and_the_next_retry() {
        // 2026-11-26T21:57:44.000Z, third failure → next attempt 4 s later.
        let details = pull_failure_details("manifest unknown", 3, 1_795_730_264_000);
        assert_eq!(details["reason"], "manifest unknown");
        assert_eq!(details["attempt"], "3");
        assert_eq!(details["next_retry_at"], "2026-11-26T21:57:48Z");
        let details = pull_failure_details("timeout", 1, 1_795_730_264_123);
        assert_eq!(details["next_retry_at"], "2026-11-26T21:57:45.123Z");
    }
}
