//! VirtualService fault injection: which requests are delayed or aborted, and the abort answer.
//!
//! Delay and abort are decided independently, each with its own share of requests, as Envoy's
//! fault filter does: a request may be delayed and then aborted. The decision takes the random
//! source as an argument so tests can seed it; the stack owns one seeded generator.

use std::time::Duration;

use ambit_model::route::{FaultAbort, FaultInjection, Fraction};
use ambit_telemetry::ResponseFlags;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use rand::Rng;

use crate::errors::{ResponseBody, empty_body, full_body};

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultPlan {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// Then answer with this instead of forwarding.
    pub abort: Option<FaultAbort>,
}

impl FaultPlan {
    /// The response flags the plan earns: `DI` for a delay, `FI` for an abort, both joined.
    pub fn flags(&self) -> ResponseFlags {
        match (self.delay.is_some(), self.abort.is_some()) {
            (true, true) => ResponseFlags::from_static("DI,FI"),
            (false, true) => ResponseFlags::FAULT_INJECTED,
            (true, false) => ResponseFlags::DELAY_INJECTED,
            (false, false) => ResponseFlags::NONE,
        }
    }
}

/// Rolls the dice for `fault`: each part applies to its share of requests.
pub fn decide(fault: &FaultInjection, rng: &mut impl Rng) -> FaultPlan {
    FaultPlan {
        delay: fault
            .delay
            .and_then(|(delay, share)| hit(share, rng).then_some(delay)),
        abort: fault
            .abort
            .and_then(|(abort, share)| hit(share, rng).then_some(abort)),
    }
}

/// Whether a request falls into `share`.
pub fn hit(share: Fraction, rng: &mut impl Rng) -> bool {
    share.hits(rng.random_range(0..1_000_000))
}

/// The answer of an injected abort: the HTTP status with a short body, or for a gRPC status a
/// trailers-only `200` carrying `grpc-status`, as Envoy sends them.
pub fn abort_response(abort: FaultAbort) -> Response<ResponseBody> {
    match abort {
        FaultAbort::Http(status) => {
            let mut response = Response::new(full_body("fault filter abort"));
            // The model only admits 200 to 599.
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        FaultAbort::Grpc(code) => {
            let mut response = Response::new(empty_body());
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from(code));
            headers.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn percent(p: f64) -> Fraction {
        Fraction::from_percent(p).unwrap()
    }

    #[test]
    fn shares_are_respected_and_independent() {
        let fault = FaultInjection {
            delay: Some((Duration::from_millis(5), percent(30.0))),
            abort: Some((FaultAbort::Http(503), percent(10.0))),
        };
        let mut rng = StdRng::seed_from_u64(42);
        let (mut delayed, mut aborted, mut both) = (0, 0, 0);
        for _ in 0..10_000 {
            let plan = decide(&fault, &mut rng);
            delayed += usize::from(plan.delay.is_some());
            aborted += usize::from(plan.abort.is_some());
            both += usize::from(plan.delay.is_some() && plan.abort.is_some());
        }
        // Binomial sds: 46 (30 %), 30 (10 %), 17 (3 %); 5 sd of slack.
        assert!((2770..=3230).contains(&delayed), "{delayed}");
        assert!((850..=1150).contains(&aborted), "{aborted}");
        assert!((215..=385).contains(&both), "{both}");
    }

    #[test]
    fn all_and_none() {
        let mut rng = StdRng::seed_from_u64(1);
        let always = FaultInjection {
            delay: None,
            abort: Some((FaultAbort::Grpc(14), Fraction::ALL)),
        };
        let never = FaultInjection {
            delay: Some((Duration::from_secs(1), percent(0.0))),
            abort: None,
        };
        for _ in 0..1000 {
            assert_eq!(decide(&always, &mut rng).abort, Some(FaultAbort::Grpc(14)));
            assert_eq!(decide(&never, &mut rng), FaultPlan::default());
        }
    }

    #[test]
    fn abort_answers_and_flags() {
        let http = abort_response(FaultAbort::Http(418));
        assert_eq!(http.status(), 418);
        let grpc = abort_response(FaultAbort::Grpc(14));
        assert_eq!(grpc.status(), 200);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        let plan = FaultPlan {
            delay: Some(Duration::ZERO),
            abort: Some(FaultAbort::Http(500)),
        };
        assert_eq!(plan.flags().as_str(), "DI,FI");
        assert_eq!(FaultPlan::default().flags().as_str(), "-");
    }
}
