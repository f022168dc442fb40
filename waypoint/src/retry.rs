//! Retry decisions and backoff, as pure functions.

use std::time::Duration;

use ambit_model::route::RetryPolicy;
use http::StatusCode;
use rand::Rng;

/// Hard bound on retries whatever the route says, so one request cannot tie up the proxy.
pub const MAX_RETRIES: u32 = 10;
/// Backoff grows exponentially up to this multiple of the base (Envoy's default).
const MAX_BACKOFF_FACTOR: u32 = 10;

/// Whether a response with `status` should be tried again under `policy`.
pub fn retry_status(policy: &RetryPolicy, status: StatusCode) -> bool {
    policy.codes.contains(&status.as_u16())
}

/// How many retries `policy` allows, bounded by [`MAX_RETRIES`].
pub fn retries(policy: &RetryPolicy) -> u32 {
    policy.attempts.min(MAX_RETRIES)
}

/// The wait before retry number `retry` (1-based): uniformly random in
/// `[0, min(base · 2^(retry-1), 10 · base)]` ("full jitter"), so retries of many requests
/// spread out instead of arriving together.
pub fn backoff(base: Duration, retry: u32, rng: &mut impl Rng) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(MAX_BACKOFF_FACTOR);
    let ceiling = base.saturating_mul(factor);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let mut rng = StdRng::seed_from_u64(1);
        let base = Duration::from_millis(10);
        for retry in 1..40 {
            let ceiling = base * (1u32 << (retry - 1).min(4)).min(10);
            for _ in 0..50 {
                assert!(backoff(base, retry, &mut rng) <= ceiling, "retry {retry}");
            }
        }
        let late: Duration = (0..200).map(|_| backoff(base, 5, &mut rng)).sum();
        let early: Duration = (0..200).map(|_| backoff(base, 1, &mut rng)).sum();
        assert!(late > early * 3, "{late:?} vs {early:?}");
    }

    #[test]
    fn status_and_attempt_bounds() {
        let policy = RetryPolicy {
            attempts: 99,
            codes: [503].into(),
            backoff: Duration::ZERO,
        };
        assert!(retry_status(&policy, StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retry_status(&policy, StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(retries(&policy), MAX_RETRIES);
    }
}
