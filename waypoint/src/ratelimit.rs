//! Local rate limiting ([`ambit_model::LocalRateLimit`], docs/ratelimit.md): token buckets
//! in this waypoint, refilled lazily from tokio's clock.
//!
//! A request is checked against every rule of every policy that targets its destination
//! service or this waypoint and whose match it meets; one empty bucket refuses it with
//! `429` and `retry-after` = whole seconds until that bucket's next fill. Buckets are keyed
//! by policy, rule index and (for `perSourceIdentity`) the client's SPIFFE identity, and
//! survive configuration reloads; a bucket whose rule changed starts full again. Tokens are
//! taken only when every matching bucket has one, so a refused request costs nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ambit_identity::SpiffeId;
use ambit_model::Service;
use ambit_model::rate_limit::{RateLimitRule, RateLimitTarget};
use tokio::time::Instant;

use crate::config::Snapshot;
use crate::errors::ProxyError;

/// Most per-identity buckets kept; beyond, full buckets are forgotten first.
const MAX_BUCKETS: usize = 100_000;

/// Every bucket of the waypoint.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

/// The request facts rate limiting looks at.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitRequest<'a> {
    /// The service the request is addressed to, if by VIP.
    pub service: Option<&'a Service>,
    /// HTTP method.
    pub method: &'a str,
    /// Request path (without query).
    pub path: &'a str,
    /// The client identity of the HBONE connection.
    pub source: &'a SpiffeId,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    namespace: String,
    policy: String,
    rule: usize,
    source: Option<String>,
}

#[derive(Debug, Clone)]
struct Bucket {
    rule: RateLimitRule,
    tokens: u32,
    /// When the last fill was counted; fills happen every `fill_interval` after it.
    last_fill: Instant,
}

impl Bucket {
    fn new(rule: &RateLimitRule, now: Instant) -> Self {
        Self {
            rule: rule.clone(),
            tokens: rule.max_tokens,
            last_fill: now,
        }
    }

    /// Adds the fills that have happened by `now`.
    fn refill(&mut self, now: Instant) {
        let interval = self.rule.fill_interval.as_nanos().max(1);
        let elapsed = now.saturating_duration_since(self.last_fill).as_nanos();
        let fills = elapsed / interval;
        if fills == 0 {
            return;
        }
        let added = fills.saturating_mul(u128::from(self.rule.tokens_per_fill));
        let tokens = u128::from(self.tokens).saturating_add(added);
        self.tokens =
            u32::try_from(tokens.min(u128::from(self.rule.max_tokens))).unwrap_or(u32::MAX);
        let advanced = u64::try_from(fills.saturating_mul(interval)).unwrap_or(u64::MAX);
        self.last_fill += Duration::from_nanos(advanced);
    }

    fn until_next_fill(&self, now: Instant) -> Duration {
        (self.last_fill + self.rule.fill_interval).saturating_duration_since(now)
    }
}

impl RateLimiter {
    /// Takes a token from every bucket that applies to `request`, or refuses it with `429`.
    pub fn check(
        &self,
        snapshot: &Snapshot,
        request: &RateLimitRequest<'_>,
    ) -> Result<(), ProxyError> {
        let mut keys = Vec::new();
        for policy in snapshot.local_rate_limits() {
            let applies = policy.targets().iter().any(|target| match target {
                RateLimitTarget::Service(name) => request
                    .service
                    .is_some_and(|s| s.name() == name && s.namespace() == policy.namespace()),
                RateLimitTarget::Gateway(name) => snapshot
                    .waypoint
                    .as_ref()
                    .is_some_and(|w| &w.name == name && w.namespace == policy.namespace()),
            });
            if !applies {
                continue;
            }
            for (index, rule) in policy.rules().iter().enumerate() {
                if rule.matches(request.method, request.path) {
                    let key = BucketKey {
                        namespace: policy.namespace().to_owned(),
                        policy: policy.name().to_owned(),
                        rule: index,
                        source: rule.per_source_identity.then(|| request.source.to_string()),
                    };
                    keys.push((key, rule));
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > MAX_BUCKETS {
            buckets.retain(|_, bucket| {
                bucket.refill(now);
                bucket.tokens < bucket.rule.max_tokens
            });
        }
        let mut wait: Option<Duration> = None;
        for (key, rule) in &keys {
            let bucket = buckets
                .entry(key.clone())
                .or_insert_with(|| Bucket::new(rule, now));
            if bucket.rule != **rule {
                *bucket = Bucket::new(rule, now);
            }
            bucket.refill(now);
            if bucket.tokens == 0 {
                let until = bucket.until_next_fill(now);
                wait = Some(wait.map_or(until, |w| w.max(until)));
            }
        }
        if let Some(wait) = wait {
            // Whole seconds, rounded up, at least 1 (`retry-after: 0` invites a hot loop).
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ProxyError::rate_limited(secs.max(1)));
        }
        for (key, _) in &keys {
            if let Some(bucket) = buckets.get_mut(key) {
                bucket.tokens -= 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn snapshot(rules: serde_json::Value) -> Snapshot {
        let config = serde_json::json!({
            "waypoint": { "name": "waypoint", "namespace": "shop" },
            "services": [{ "name": "cart", "namespace": "shop", "vips": ["10.96.0.1"],
                           "ports": [{ "port": 80, "name": "http" }] }],
            "localRateLimits": [{ "name": "rl", "namespace": "shop", "spec": {
                "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                "rules": rules } }]
        });
        parse(&config.to_string(), 1).unwrap()
    }

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", "shop", sa).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_empties_refills_and_reports_retry_after() {
        let snapshot = snapshot(serde_json::json!([
            { "tokensPerFill": 1, "fillInterval": "2s", "maxTokens": 2 }
        ]));
        let service = snapshot.services().next().unwrap().service.clone();
        let limiter = RateLimiter::default();
        let source = id("a");
        let request = RateLimitRequest {
            service: Some(&service),
            method: "GET",
            path: "/",
            source: &source,
        };
        assert!(limiter.check(&snapshot, &request).is_ok());
        assert!(limiter.check(&snapshot, &request).is_ok());
        let err = limiter.check(&snapshot, &request).unwrap_err();
        assert_eq!(err.status(), 429);
        assert_eq!(err.to_string(), "rate limited; retry after 2s");
        tokio::time::advance(Duration::from_millis(1500)).await;
        let err = limiter.check(&snapshot, &request).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rate limited; retry after 1s",
            "0.5 s rounds up"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(
            limiter.check(&snapshot, &request).is_ok(),
            "one token per fill"
        );
        assert!(limiter.check(&snapshot, &request).is_err());
        // Long idle: refills to maxTokens, no more.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(limiter.check(&snapshot, &request).is_ok());
        assert!(limiter.check(&snapshot, &request).is_ok());
        assert!(limiter.check(&snapshot, &request).is_err());
        // Requests to other services are not counted.
        let other = RateLimitRequest {
            service: None,
            ..request
        };
        assert!(limiter.check(&snapshot, &other).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn per_identity_buckets_and_matches() {
        let snapshot = snapshot(serde_json::json!([
            { "match": { "pathPrefix": "/api", "method": "POST" }, "perSourceIdentity": true,
              "tokensPerFill": 1, "fillInterval": "1m", "maxTokens": 1 }
        ]));
        let service = snapshot.services().next().unwrap().service.clone();
        let limiter = RateLimiter::default();
        let (a, b) = (id("a"), id("b"));
        let post = |source| RateLimitRequest {
            service: Some(&service),
            method: "POST",
            path: "/api/items",
            source,
        };
        assert!(limiter.check(&snapshot, &post(&a)).is_ok());
        assert!(limiter.check(&snapshot, &post(&a)).is_err());
        assert!(limiter.check(&snapshot, &post(&b)).is_ok(), "own bucket");
        let get = RateLimitRequest {
            method: "GET",
            ..post(&a)
        };
        assert!(limiter.check(&snapshot, &get).is_ok(), "not matched");
        let elsewhere = RateLimitRequest {
            path: "/apix",
            ..post(&a)
        };
        assert!(limiter.check(&snapshot, &elsewhere).is_ok(), "not matched");
    }
}
