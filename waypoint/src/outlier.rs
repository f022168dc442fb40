//! Outlier detection for one endpoint: consecutive errors eject it for
//! `baseEjectionTime × ejections`, after which it takes traffic again.
//!
//! The state is driven by the outcomes the stack reports and by the clock (tokio's, so tests
//! run on paused time); there is no timer task. An ejection ends lazily when the endpoint is
//! next looked at after its time, and each `interval` that passes after the endpoint is back
//! without a new ejection takes one off its ejection count, as Envoy's multiplier decays.
//! The `maxEjectionPercent` cap needs every endpoint of the destination, so the caller
//! ([`crate::cluster`]) decides whether a crossed threshold really ejects.

use ambit_model::destination_rule::OutlierDetection;
use tokio::time::Instant;

/// What one try to an endpoint came to, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No answer: connect failure, reset or timeout (a locally seen gateway error).
    NoAnswer,
}

/// The outlier state of one endpoint.
#[derive(Debug, Default, Clone)]
pub struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    returned_at: Option<Instant>,
}

impl TryOutcome {
    fn is_5xx(self) -> bool {
        match self {
            Self::Status(status) => (500..600).contains(&status),
            Self::NoAnswer => true,
        }
    }

    fn is_gateway_error(self) -> bool {
        match self {
            Self::Status(status) => matches!(status, 502..=504),
            Self::NoAnswer => true,
        }
    }
}

impl OutlierState {
    /// Whether the endpoint is ejected at `now`; an ejection whose time has passed ends here.
    pub fn is_ejected(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if now < until => true,
            Some(until) => {
                self.ejected_until = None;
                self.returned_at = Some(until);
                false
            }
            None => false,
        }
    }

    /// Counts `outcome`; returns whether a consecutive-error threshold of `config` is reached.
    pub fn record(&mut self, outcome: TryOutcome, config: &OutlierDetection) -> bool {
        if outcome.is_5xx() {
            self.consecutive_5xx = self.consecutive_5xx.saturating_add(1);
        } else {
            self.consecutive_5xx = 0;
        }
        if outcome.is_gateway_error() {
            self.consecutive_gateway = self.consecutive_gateway.saturating_add(1);
        } else {
            self.consecutive_gateway = 0;
        }
        let over = |count: u32, threshold: Option<u32>| threshold.is_some_and(|t| count >= t);
        over(self.consecutive_5xx, config.consecutive_5xx_errors)
            || over(self.consecutive_gateway, config.consecutive_gateway_errors)
    }

    /// Ejects the endpoint from `now` for `baseEjectionTime × ejections`.
    pub fn eject(&mut self, now: Instant, config: &OutlierDetection) {
        if let Some(returned) = self.returned_at.take() {
            let quiet = now.saturating_duration_since(returned);
            let intervals = quiet.as_nanos() / config.interval.as_nanos().max(1);
            let decay = u32::try_from(intervals).unwrap_or(u32::MAX);
            self.ejections = self.ejections.saturating_sub(decay);
        }
        self.ejections = self.ejections.saturating_add(1);
        self.ejected_until = Some(now + config.base_ejection_time.saturating_mul(self.ejections));
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
    }

    /// How many times the endpoint has been ejected (after decay).
    pub fn ejections(&self) -> u32 {
        self.ejections
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx_errors: Some(3),
            consecutive_gateway_errors: Some(2),
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
        }
    }

    #[test]
    fn thresholds_count_consecutive_errors_only() {
        let config = config();
        let mut state = OutlierState::default();
        assert!(!state.record(TryOutcome::Status(500), &config));
        assert!(!state.record(TryOutcome::Status(500), &config));
        assert!(!state.record(TryOutcome::Status(200), &config), "reset");
        assert!(!state.record(TryOutcome::Status(500), &config));
        assert!(!state.record(TryOutcome::Status(501), &config));
        assert!(state.record(TryOutcome::Status(500), &config), "3 × 5xx");

        let mut state = OutlierState::default();
        assert!(!state.record(TryOutcome::Status(503), &config));
        assert!(
            state.record(TryOutcome::NoAnswer, &config),
            "2 gateway errors"
        );
        let only_gateway = OutlierDetection {
            consecutive_5xx_errors: None,
            ..config
        };
        let mut state = OutlierState::default();
        for _ in 0..5 {
            assert!(!state.record(TryOutcome::Status(500), &only_gateway));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_grows_with_each_ejection_and_decays() {
        let config = config();
        let mut state = OutlierState::default();
        let start = Instant::now();
        state.eject(start, &config);
        assert!(state.is_ejected(start + Duration::from_secs(29)));
        assert!(!state.is_ejected(start + Duration::from_secs(30)));
        // Ejected again right away: twice the base time.
        let again = start + Duration::from_secs(31);
        state.eject(again, &config);
        assert_eq!(state.ejections(), 2);
        assert!(state.is_ejected(again + Duration::from_secs(59)));
        assert!(!state.is_ejected(again + Duration::from_secs(60)));
        // Quiet for 2 intervals after its return: the count decays to 0, next ejection is 1×.
        let later = again + Duration::from_secs(60 + 20);
        state.eject(later, &config);
        assert_eq!(state.ejections(), 1);
        tokio::time::advance(Duration::from_secs(0)).await;
        assert!(!state.is_ejected(later + Duration::from_secs(30)));
    }
}
