//! Retry decisions and backoff, as pure functions.
//!
//! A policy retries the status codes it lists and the failures its [`RetryOn`] names
//! (HTTPRoute: connect failures and per-try timeouts; VirtualService: its `retryOn`, read as
//! Envoy reads it).
//!
//! [`RetryOn`]: ambit_model::route::RetryOn

use std::time::Duration;

use ambit_model::route::RetryPolicy;
use http::{HeaderMap, StatusCode};
use rand::Rng;

use crate::errors::ProxyError;

/// Hard bound on retries whatever the route says, so one request cannot tie up the proxy.
pub const MAX_RETRIES: u32 = 10;
/// Backoff grows exponentially up to this multiple of the base (Envoy's default).
const MAX_BACKOFF_FACTOR: u32 = 10;

/// Whether a response with `status` should be tried again under `policy`.
pub fn retry_status(policy: &RetryPolicy, status: StatusCode) -> bool {
    let code = status.as_u16();
    let on = &policy.on;
    policy.codes.contains(&code)
        || (on.server_errors && status.is_server_error())
        || (on.gateway_errors && matches!(code, 502..=504))
        || (on.retriable_4xx && code == 409)
}

/// Whether a response (its status, and for gRPC a trailers-only `grpc-status`) should be
/// tried again under `policy`.
pub fn retry_response(policy: &RetryPolicy, status: StatusCode, headers: &HeaderMap) -> bool {
    if retry_status(policy, status) {
        return true;
    }
    !policy.on.grpc_codes.is_empty()
        && headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u16>().ok())
            .is_some_and(|code| policy.on.grpc_codes.contains(&code))
}

/// Whether a failed try should be tried again under `policy`.
pub fn retry_error(policy: &RetryPolicy, error: &ProxyError) -> bool {
    let on = &policy.on;
    (on.connect_failure && error.is_connect_failure())
        || (on.per_try_timeout && error.is_per_try_timeout())
        || (on.reset && error.is_reset())
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
    use ambit_model::route::RetryOn;
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
            on: RetryOn::default(),
        };
        assert!(retry_status(&policy, StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retry_status(&policy, StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(retries(&policy), MAX_RETRIES);
    }

    #[test]
    fn retry_on_conditions() {
        let policy = |on: RetryOn| RetryPolicy {
            attempts: 2,
            codes: Default::default(),
            backoff: Duration::ZERO,
            on,
        };
        let none = HeaderMap::new();
        let server = policy(RetryOn {
            server_errors: true,
            ..RetryOn::default()
        });
        assert!(retry_response(
            &server,
            StatusCode::INTERNAL_SERVER_ERROR,
            &none
        ));
        assert!(!retry_response(&server, StatusCode::CONFLICT, &none));
        let gateway = policy(RetryOn {
            gateway_errors: true,
            ..RetryOn::default()
        });
        assert!(retry_response(&gateway, StatusCode::BAD_GATEWAY, &none));
        assert!(!retry_response(
            &gateway,
            StatusCode::INTERNAL_SERVER_ERROR,
            &none
        ));
        let conflict = policy(RetryOn {
            retriable_4xx: true,
            ..RetryOn::default()
        });
        assert!(retry_response(&conflict, StatusCode::CONFLICT, &none));
        assert!(!retry_response(&conflict, StatusCode::NOT_FOUND, &none));
        let grpc = policy(RetryOn {
            grpc_codes: [14].into(),
            ..RetryOn::default()
        });
        let mut unavailable = HeaderMap::new();
        unavailable.insert("grpc-status", "14".parse().unwrap());
        assert!(retry_response(&grpc, StatusCode::OK, &unavailable));
        assert!(!retry_response(&grpc, StatusCode::OK, &none));

        let connect = policy(RetryOn {
            connect_failure: true,
            ..RetryOn::default()
        });
        let refused = ProxyError::connect_failure("refused");
        let reset = ProxyError::upstream_reset(false, "reset");
        assert!(retry_error(&connect, &refused));
        assert!(!retry_error(&connect, &reset));
        assert!(!retry_error(&connect, &ProxyError::per_try_timeout()));
        let resets = policy(RetryOn {
            reset: true,
            per_try_timeout: true,
            ..RetryOn::default()
        });
        assert!(retry_error(&resets, &reset));
        assert!(retry_error(&resets, &ProxyError::per_try_timeout()));
        assert!(!retry_error(&resets, &ProxyError::no_healthy_upstream()));
    }
}
