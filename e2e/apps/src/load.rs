//! The load generator behind `load get`: N requests over C connections, and a report of the
//! statuses, the `version` each echo server answered with, and the latency percentiles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::client::{Client, Protocol, Target};
use crate::duration::format_duration;

/// How many transport error messages a report keeps as samples.
const ERROR_SAMPLES: usize = 5;

/// The label of responses whose body carries no `version`.
pub const NO_VERSION: &str = "(none)";

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where to send requests.
    pub target: Target,
    /// Added to every request.
    pub headers: HeaderMap,
    /// Total number of requests.
    pub requests: u32,
    /// Number of connections sending at once.
    pub concurrency: u32,
    /// Per-request limit, connect included.
    pub timeout: Duration,
    /// HTTP/1.1 or h2c.
    pub protocol: Protocol,
    /// Reuse connections (default) or open one per request.
    pub keepalive: bool,
    /// Where the version is in the answer's JSON.
    pub version_field: VersionField,
}

/// A dotted path into the echo JSON naming the field the VERSION table counts: `version` (the
/// default) for the server answering, `calls.0.body.version` for the first service it called
/// (e.g. which reviews version answered productpage). Numeric segments index lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionField {
    segments: Vec<String>,
}

/// The outcome of a load run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u32>,
    /// Responses per `version` field of the JSON body ([`NO_VERSION`] when absent).
    pub versions: BTreeMap<String, u32>,
    /// Requests that got no response.
    pub transport_errors: u32,
    /// The first few transport errors.
    pub error_samples: Vec<String>,
    /// Latency of each answered request, sorted.
    pub latencies: Vec<Duration>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

/// A `-H name:value` flag that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid header {input:?}: {reason} (expected name:value)")]
pub struct HeaderError {
    input: String,
    reason: &'static str,
}

/// A `--version-field` path with an empty segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version field {0:?}: expected dotted names like version or calls.0.body.version")]
pub struct VersionFieldError(String);

#[derive(Debug, Default)]
struct WorkerResult {
    report: LoadReport,
}

impl LoadReport {
    /// Requests sent.
    pub fn requests(&self) -> u32 {
        self.statuses.values().sum::<u32>() + self.transport_errors
    }

    /// The latency at quantile `q` (0..=1) by nearest rank, if any request was answered.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        percentile(&self.latencies, q)
    }

    /// Records one answered request and the version it reported.
    pub fn record_response(&mut self, status: u16, version: String, latency: Duration) {
        *self.statuses.entry(status).or_default() += 1;
        *self.versions.entry(version).or_default() += 1;
        self.latencies.push(latency);
    }

    /// Records a request that got no response.
    pub fn record_error(&mut self, error: String) {
        self.transport_errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(error);
        }
    }

    fn merge(&mut self, other: LoadReport) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        for (version, count) in other.versions {
            *self.versions.entry(version).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        for error in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(error);
            }
        }
        self.latencies.extend(other.latencies);
    }

    /// The report as JSON (for `--json` and scripts).
    pub fn to_json(&self) -> Value {
        let millis = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        json!({
            "requests": self.requests(),
            "transportErrors": self.transport_errors,
            "errorSamples": self.error_samples,
            "statuses": self.statuses.iter().map(|(s, c)| (s.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "versions": self.versions,
            "latencyMs": {
                "min": millis(self.latencies.first().copied()),
                "p50": millis(self.percentile(0.5)),
                "p99": millis(self.percentile(0.99)),
                "max": millis(self.latencies.last().copied()),
            },
            "elapsedMs": self.elapsed.as_secs_f64() * 1e3,
        })
    }

    /// The report as the tables `load get` prints.
    pub fn render(&self) -> String {
        let total = self.requests().max(1);
        let share = |count: u32| format!("{:.1}%", f64::from(count) * 100.0 / f64::from(total));
        let mut out = String::new();
        let seconds = self.elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            f64::from(self.requests()) / seconds
        } else {
            0.0
        };
        out.push_str(&format!(
            "requests {}  transport errors {}  elapsed {}  rate {rate:.1}/s\n\n",
            self.requests(),
            self.transport_errors,
            format_duration(self.elapsed),
        ));
        out.push_str(&format!("{:<10} {:>7} {:>7}\n", "STATUS", "COUNT", "SHARE"));
        for (status, count) in &self.statuses {
            out.push_str(&format!("{status:<10} {count:>7} {:>7}\n", share(*count)));
        }
        if self.transport_errors > 0 {
            let errors = self.transport_errors;
            out.push_str(&format!(
                "{:<10} {errors:>7} {:>7}\n",
                "error",
                share(errors)
            ));
        }
        out.push_str(&format!(
            "\n{:<10} {:>7} {:>7}\n",
            "VERSION", "COUNT", "SHARE"
        ));
        for (version, count) in &self.versions {
            out.push_str(&format!("{version:<10} {count:>7} {:>7}\n", share(*count)));
        }
        let show = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), format_duration);
        out.push_str(&format!(
            "\nlatency p50 {}  p99 {}  max {}\n",
            show(self.percentile(0.5)),
            show(self.percentile(0.99)),
            show(self.latencies.last().copied()),
        ));
        for error in &self.error_samples {
            out.push_str(&format!("error: {error}\n"));
        }
        out
    }
}

impl VersionField {
    /// Parses a dotted path.
    pub fn parse(text: &str) -> Result<Self, VersionFieldError> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(|segment| segment.trim().is_empty()) {
            return Err(VersionFieldError(text.to_owned()));
        }
        Ok(Self { segments })
    }

    /// The string at this path in a JSON body, or [`NO_VERSION`].
    pub fn extract(&self, body: &[u8]) -> String {
        let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
            return NO_VERSION.to_owned();
        };
        for segment in &self.segments {
            let next = match (&mut value, segment.parse::<usize>()) {
                (Value::Array(items), Ok(index)) if index < items.len() => items.swap_remove(index),
                (Value::Object(fields), _) => match fields.remove(segment) {
                    Some(field) => field,
                    None => return NO_VERSION.to_owned(),
                },
                _ => return NO_VERSION.to_owned(),
            };
            value = next;
        }
        match value {
            Value::String(version) => version,
            _ => NO_VERSION.to_owned(),
        }
    }
}

impl Default for VersionField {
    fn default() -> Self {
        Self {
            segments: vec!["version".to_owned()],
        }
    }
}

/// Parses `-H name:value` flags into a header map (a name may repeat).
pub fn parse_headers(flags: &[String]) -> Result<HeaderMap, HeaderError> {
    let mut headers = HeaderMap::new();
    for flag in flags {
        let error = |reason| HeaderError {
            input: flag.clone(),
            reason,
        };
        let (name, value) = flag.split_once(':').ok_or_else(|| error("missing ':'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| error("invalid header name"))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| error("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Sends `options.requests` requests over `options.concurrency` connections.
pub async fn run(options: LoadOptions) -> LoadReport {
    let started = Instant::now();
    let issued = Arc::new(AtomicU32::new(0));
    let options = Arc::new(options);
    let workers = options.concurrency.clamp(1, options.requests.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let issued = issued.clone();
        let options = options.clone();
        tasks.spawn(async move {
            let mut result = WorkerResult::default();
            let mut client = Client::new(options.target.clone(), options.protocol, options.timeout)
                .keepalive(options.keepalive);
            while issued.fetch_add(1, Ordering::Relaxed) < options.requests {
                let sent = Instant::now();
                match client.get(&options.headers).await {
                    Ok(reply) => {
                        result.report.record_response(
                            reply.status.as_u16(),
                            options.version_field.extract(&reply.body),
                            sent.elapsed(),
                        );
                    }
                    Err(error) => result.report.record_error(error.to_string()),
                }
            }
            result
        });
    }
    let mut report = LoadReport::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(worker) => report.merge(worker.report),
            Err(error) => report.record_error(format!("load worker failed: {error}")),
        }
    }
    report.latencies.sort_unstable();
    report.elapsed = started.elapsed();
    report
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
