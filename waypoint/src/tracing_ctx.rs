//! Distributed tracing at the waypoint: the incoming trace context (W3C `traceparent` /
//! `tracestate`, B3 `x-b3-*` headers or the single `b3` header), one server span per request
//! as its child, that span's context injected into the upstream request, and `x-request-id`.
//!
//! Sampling follows the caller's sampled flag when it sent one, else [`Tracer`]'s ratio. A
//! sampled span is handed to the [`crate::otlp`] exporter when the request ends; without an
//! exporter the context is still propagated, so traces stay connected through the waypoint.

use std::fmt::Write as _;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

use crate::otlp::{FinishedSpan, SpanExport};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// The request id header Envoy and Istio use.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Creates server spans; one per waypoint.
#[derive(Debug, Clone)]
pub struct Tracer {
    sampling_ratio: f64,
    export: Option<SpanExport>,
}

/// What the caller sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingContext {
    /// The trace (128 bits; 64-bit B3 ids are zero-extended).
    pub trace_id: [u8; 16],
    /// The caller's span: the parent of the waypoint's span.
    pub parent_span_id: [u8; 8],
    /// The caller's sampling decision, if it made one.
    pub sampled: Option<bool>,
}

/// The waypoint's span for one request.
#[derive(Debug)]
pub struct ServerSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    sampled: bool,
    started: SystemTime,
}

impl Tracer {
    /// A tracer sampling `sampling_ratio` (0 to 1) of the traces that arrive without a
    /// decision, exporting sampled spans to `export` if given.
    pub fn new(sampling_ratio: f64, export: Option<SpanExport>) -> Self {
        Self {
            sampling_ratio: sampling_ratio.clamp(0.0, 1.0),
            export,
        }
    }

    /// Starts the server span of a request with `headers`, as a child of the incoming
    /// context, or as the root of a new trace.
    pub fn start(&self, headers: &HeaderMap) -> ServerSpan {
        let mut rng = rand::rng();
        let incoming = extract(headers);
        let sampled = incoming
            .as_ref()
            .and_then(|c| c.sampled)
            .unwrap_or_else(|| rng.random_bool(self.sampling_ratio));
        let span_id = random_nonzero(&mut rng);
        match incoming {
            Some(context) => ServerSpan {
                trace_id: context.trace_id,
                span_id,
                parent_span_id: Some(context.parent_span_id),
                sampled,
                started: SystemTime::now(),
            },
            None => ServerSpan {
                trace_id: random_nonzero(&mut rng),
                span_id,
                parent_span_id: None,
                sampled,
                started: SystemTime::now(),
            },
        }
    }

    /// Whether finished spans go anywhere (an exporter is configured).
    pub fn exports(&self) -> bool {
        self.export.is_some()
    }

    /// Ends `span`: a sampled span goes to the exporter with `attributes`.
    pub fn finish(&self, span: &ServerSpan, name: String, attributes: SpanAttributes) {
        let (Some(export), true) = (&self.export, span.sampled) else {
            return;
        };
        export.submit(FinishedSpan {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            name,
            started: span.started,
            ended: SystemTime::now(),
            attributes,
        });
    }
}

/// The attributes recorded on a finished server span (OpenTelemetry HTTP conventions).
#[derive(Debug, Clone, Default)]
pub struct SpanAttributes {
    /// `http.request.method`.
    pub method: String,
    /// `url.path`.
    pub path: String,
    /// `server.address` (the authority).
    pub authority: String,
    /// `http.response.status_code`.
    pub status: u16,
    /// `upstream` endpoint, if one was tried.
    pub upstream: Option<String>,
    /// `x-request-id`.
    pub request_id: String,
    /// The client's SPIFFE ID.
    pub source_principal: String,
    /// Envoy response flags (`-` when none).
    pub response_flags: String,
}

impl ServerSpan {
    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The waypoint's span id as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// Whether the span is sampled (and so exported).
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// Rewrites the trace headers of a request going upstream so the waypoint's span is the
    /// parent: `traceparent` always, the B3 headers always (multi-header form, plus `b3` if
    /// the caller used the single form). `tracestate` is left as the caller sent it.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let trace_id = hex(&self.trace_id);
        let span_id = hex(&self.span_id);
        let flags = if self.sampled { "01" } else { "00" };
        let traceparent = format!("00-{trace_id}-{span_id}-{flags}");
        let had_single_b3 = headers.contains_key(B3);
        for name in [
            &B3,
            &B3_TRACE_ID,
            &B3_SPAN_ID,
            &B3_PARENT_SPAN_ID,
            &B3_SAMPLED,
            &B3_FLAGS,
        ] {
            headers.remove(name);
        }
        let sampled = if self.sampled { "1" } else { "0" };
        let values = [
            (TRACEPARENT, traceparent),
            (B3_TRACE_ID, trace_id.clone()),
            (B3_SPAN_ID, span_id.clone()),
            (B3_SAMPLED, sampled.to_owned()),
        ];
        for (name, value) in values {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        if let Some(parent) = self.parent_span_id
            && let Ok(value) = HeaderValue::from_str(&hex(&parent))
        {
            headers.insert(B3_PARENT_SPAN_ID, value);
        }
        if had_single_b3 {
            let mut single = format!("{trace_id}-{span_id}-{sampled}");
            if let Some(parent) = self.parent_span_id {
                let _ = write!(single, "-{}", hex(&parent));
            }
            if let Ok(value) = HeaderValue::from_str(&single) {
                headers.insert(B3, value);
            }
        }
    }
}

/// The request's `x-request-id`, generated (UUID v4 form) and set when absent.
pub fn ensure_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
        && !id.is_empty()
    {
        return id.to_owned();
    }
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex(&bytes);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    id
}

/// The incoming context: `traceparent` first, then B3 multi-header, then single `b3`.
pub fn extract(headers: &HeaderMap) -> Option<IncomingContext> {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(context) = text(&TRACEPARENT).and_then(parse_traceparent) {
        return Some(context);
    }
    if let (Some(trace), Some(span)) = (text(&B3_TRACE_ID), text(&B3_SPAN_ID)) {
        let sampled = if text(&B3_FLAGS) == Some("1") {
            Some(true)
        } else {
            text(&B3_SAMPLED).and_then(parse_b3_sampled)
        };
        return Some(IncomingContext {
            trace_id: parse_b3_trace_id(trace)?,
            parent_span_id: parse_id(span)?,
            sampled,
        });
    }
    text(&B3).and_then(parse_b3_single)
}

fn parse_traceparent(value: &str) -> Option<IncomingContext> {
    let mut fields = value.trim().split('-');
    let version = fields.next()?;
    let (trace, span, flags) = (fields.next()?, fields.next()?, fields.next()?);
    // Version 00 has exactly four fields; later versions may append more.
    if version.len() != 2 || version == "ff" || (version == "00" && fields.next().is_some()) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16)
        .ok()
        .filter(|_| flags.len() == 2)?;
    Some(IncomingContext {
        trace_id: parse_id(trace)?,
        parent_span_id: parse_id(span)?,
        sampled: Some(flags & 1 == 1),
    })
}

fn parse_b3_single(value: &str) -> Option<IncomingContext> {
    let mut fields = value.trim().split('-');
    let trace = fields.next()?;
    // A lone sampling state ("0", "1", "d") carries no context to continue.
    let span = fields.next()?;
    let sampled = match fields.next() {
        Some("d") => Some(true),
        Some(flag) => parse_b3_sampled(flag),
        None => None,
    };
    Some(IncomingContext {
        trace_id: parse_b3_trace_id(trace)?,
        parent_span_id: parse_id(span)?,
        sampled,
    })
}

fn parse_b3_sampled(value: &str) -> Option<bool> {
    match value {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A 64- or 128-bit B3 trace id, as 128 bits.
fn parse_b3_trace_id(value: &str) -> Option<[u8; 16]> {
    match value.len() {
        32 => parse_id(value),
        16 => {
            let low: [u8; 8] = parse_id(value)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

/// Exactly `2 * N` lowercase or uppercase hex digits, not all zero (an invalid id in both
/// W3C and B3).
fn parse_id<const N: usize>(value: &str) -> Option<[u8; N]> {
    if value.len() != 2 * N {
        return None;
    }
    let mut id = [0; N];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(value.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    id.iter().any(|b| *b != 0).then_some(id)
}

fn random_nonzero<const N: usize>(rng: &mut impl Rng) -> [u8; N] {
    loop {
        let mut id = [0; N];
        rng.fill(&mut id[..]);
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests;
