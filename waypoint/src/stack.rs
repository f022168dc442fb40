//! The whole L7 stack, top to bottom, one phase per function (in the spirit of pingora's
//! phase chart):
//!
//! ```text
//! per tunnel:   accept HBONE ─► resolve destination ─► detect protocol ─┬─► serve HTTP (h1/h2c)
//!                                                                       └─► serve TCP (L4 policy, copy)
//! per request:  authorize ─► route ─► request filters ─► fault injection ─► mirrors (spawned)
//!               ─► [pick backend ─► pick endpoint ─► upstream (retries, timeouts)]
//!               ─► response filters ─► log
//! ```
//!
//! Failures of any phase are [`ProxyError`]s and become responses only in
//! [`crate::errors::respond`].

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ambit_hbone::{ByteCounters, HboneStream, InboundRequest, Responder, Target};
use ambit_identity::SpiffeId;
use ambit_model::route::{Backend, RouteFilter};
use ambit_model::{AppProtocol, Workload};
use ambit_policy::Connection;
use ambit_telemetry::{Metrics, ResponseFlags};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, OwnedSemaphorePermit, oneshot};
use tracing::{debug, info};

use crate::access_log::{AccessRecord, ObservedBody};
use crate::authz::{self, HttpAttributes};
use crate::baggage::PeerMetadata;
use crate::balance::{self, EndpointTarget, PickRequest, Picked};
use crate::cluster::HeldBody;
use crate::config::{ConfigHandle, ServiceEntry, ServiceKey, Snapshot};
use crate::detect::{self, Detected, PrefixedIo};
use crate::errors::{self, ProxyError, ResponseBody};
use crate::jwt::{JwksCache, RequestAuth};
use crate::metrics::{CountingBody, MeteredBody, PendingRecord, RequestFacts};
use crate::outlier::TryOutcome;
use crate::ratelimit::{RateLimitRequest, RateLimiter};
use crate::retry;
use crate::route::filters::{self, RequestOutcome};
use crate::route::mirror::{self, MirrorLimiter, TeeBody};
use crate::route::{CompiledRule, Selection, fault};
use crate::tracing_ctx::{self, ServerSpan, SpanAttributes, Tracer};
use crate::upgrade;
use crate::upstream::{SendLimits, Upstream, UpstreamBody, UpstreamProtocol};

/// Limits on downstream HTTP, against slow or oversized clients.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Largest request head (request line and headers) in bytes; beyond → `431`.
    pub max_header_bytes: usize,
    /// Most request headers; beyond → `431`.
    pub max_headers: usize,
    /// Time allowed to receive a request head (HTTP/1.1, slowloris); then the connection closes.
    pub header_read_timeout: Duration,
    /// Requests served on one downstream connection before it is closed gracefully.
    pub max_requests_per_connection: Option<u32>,
    /// How long to wait for the first bytes of a tunnel to a port of unknown protocol.
    pub protocol_detection_timeout: Duration,
    /// Largest request body buffered so a request can be retried; beyond → `413`.
    pub max_retry_body_bytes: usize,
    /// Largest request body copied to a mirror; larger requests are not mirrored.
    pub max_mirror_body_bytes: usize,
}

/// The L7 proxy behind the HBONE server.
#[derive(Debug)]
pub struct Stack {
    config: ConfigHandle,
    upstream: Arc<Upstream>,
    limits: HttpLimits,
    metrics: Option<Metrics>,
    rate_limits: RateLimiter,
    /// The dice of fault injection (seedable, so tests are deterministic).
    fault_rng: Mutex<StdRng>,
    mirrors: MirrorLimiter,
    observe: Observability,
}

/// Tracing, access logging and JWT key caching: what every request is observed and
/// authenticated with.
#[derive(Debug, Clone)]
pub struct Observability {
    /// Creates the request spans (and exports them, if it has an exporter).
    pub tracer: Tracer,
    /// Writes one JSON access-log line per request (see [`crate::access_log`]).
    pub access_log: bool,
    /// JWKS shared by all requests (RequestAuthentication).
    pub jwks: JwksCache,
}

/// A downstream request body, counted as it streams.
type DownstreamBody = CountingBody<Incoming>;

/// Where a tunnel goes, resolved from its `:authority`.
#[derive(Debug, Clone)]
struct Destination {
    target: SocketAddr,
    /// The service, when addressed by VIP.
    service: Option<Arc<ServiceEntry>>,
    /// The pod, when addressed by pod IP.
    pod: Option<Arc<Workload>>,
    protocol: AppProtocol,
}

/// What every request of one tunnel shares.
#[derive(Debug)]
struct Tunnel {
    destination: Destination,
    client_identity: SpiffeId,
    client_ip: IpAddr,
    /// What the client's ztunnel says about the client (telemetry only).
    client_metadata: Option<PeerMetadata>,
    served: AtomicU32,
    close: Notify,
}

/// One line of the access log, filled in as the request moves through the phases.
#[derive(Debug, Default)]
struct RequestLog {
    route: Option<String>,
    backend: Option<String>,
    endpoint: Option<SocketAddr>,
    tries: u32,
    flags: ResponseFlags,
    error: Option<String>,
    /// The service the request went to: the routed backend, else the addressed service.
    service: Option<Arc<ServiceEntry>>,
    /// The workload of the last endpoint tried.
    workload: Option<Arc<Workload>>,
    /// The connection-pool limits of the last try's destination (its `maxRetries` budget).
    limits: Option<SendLimits>,
    /// A consistent-hash cookie generated for this request.
    set_cookie: Option<HeaderValue>,
    /// The last try's endpoint choice, whose counts the response body holds.
    picked: Option<Picked>,
}

impl Default for Observability {
    /// Istio's default: 1 % of traces without a caller's decision are sampled; no export,
    /// no access log.
    fn default() -> Self {
        Self {
            tracer: Tracer::new(0.01, None),
            access_log: false,
            jwks: JwksCache::default(),
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            max_requests_per_connection: None,
            protocol_detection_timeout: Duration::from_secs(1),
            max_retry_body_bytes: 1024 * 1024,
            max_mirror_body_bytes: 64 * 1024,
        }
    }
}

impl Stack {
    /// A stack reading config from `config` and sending upstream with `upstream`.
    pub fn new(config: ConfigHandle, upstream: Upstream, limits: HttpLimits) -> Self {
        Self {
            config,
            upstream: Arc::new(upstream),
            limits,
            metrics: None,
            rate_limits: RateLimiter::default(),
            fault_rng: Mutex::new(StdRng::from_os_rng()),
            mirrors: MirrorLimiter::default(),
            observe: Observability::default(),
        }
    }

    /// Seeds the fault-injection dice, so which requests are delayed or aborted repeats.
    pub fn with_fault_seed(mut self, seed: u64) -> Self {
        self.fault_rng = Mutex::new(StdRng::seed_from_u64(seed));
        self
    }

    /// Traces, logs and authenticates requests with `observe`.
    pub fn with_observability(mut self, observe: Observability) -> Self {
        self.observe = observe;
        self
    }

    /// Records Istio's request metrics into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    // ─── Phase 1: accept HBONE ──────────────────────────────────────────────────────────

    /// Handles one CONNECT: resolves where it goes and serves it as HTTP or TCP. Refusals
    /// before the tunnel opens use HBONE's codes (`400` unknown form, `503` unknown
    /// destination, `401` denied TCP).
    pub async fn on_connect(self: Arc<Self>, request: InboundRequest, responder: Responder) {
        let snapshot = self.config.load();
        let destination = match resolve_destination(&snapshot, request.target()) {
            Ok(destination) => destination,
            Err(status) => {
                debug!(target = %request.target(), %status, "refusing tunnel");
                responder.reject(status);
                return;
            }
        };
        let tunnel = Arc::new(Tunnel {
            client_identity: request.peer_identity().clone(),
            client_ip: client_ip(&request),
            client_metadata: PeerMetadata::from_connect(request.headers(), request.peer_identity()),
            destination,
            served: AtomicU32::new(0),
            close: Notify::new(),
        });
        match tunnel.destination.protocol {
            AppProtocol::Tcp => self.serve_tcp(&snapshot, tunnel, responder).await,
            protocol => {
                let stream = match responder.accept(HeaderMap::new()) {
                    Ok(stream) => stream,
                    Err(err) => {
                        debug!(%err, "could not open tunnel");
                        return;
                    }
                };
                self.detect_and_serve(stream, tunnel, protocol.is_http())
                    .await;
            }
        }
    }

    // ─── Phase 2: protocol ──────────────────────────────────────────────────────────────

    /// Reads the first bytes: h2 preface → HTTP/2, request line → HTTP/1.1. On a declared
    /// HTTP port anything else is HTTP/1.1 too (and gets `400`); on an undeclared port it is
    /// opaque TCP.
    async fn detect_and_serve(
        self: Arc<Self>,
        mut stream: HboneStream,
        tunnel: Arc<Tunnel>,
        declared_http: bool,
    ) {
        let timeout = if declared_http {
            self.limits.header_read_timeout
        } else {
            self.limits.protocol_detection_timeout
        };
        let (detected, prefix) = match detect::detect(&mut stream, timeout).await {
            Ok(result) => result,
            Err(err) => {
                debug!(%err, "tunnel failed during protocol detection");
                return;
            }
        };
        let io = PrefixedIo::new(prefix, stream);
        match (detected, declared_http) {
            (Detected::Http2, _) => self.serve_http(io, tunnel, true).await,
            (Detected::Http1, _) | (Detected::Opaque, true) => {
                self.serve_http(io, tunnel, false).await
            }
            (Detected::Opaque, false) => {
                let snapshot = self.config.load();
                self.copy_opaque(&snapshot, io, &tunnel).await;
            }
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 on the tunnel until the client is done, the header-read
    /// timeout passes, or the per-connection request limit is reached.
    async fn serve_http(
        self: Arc<Self>,
        io: PrefixedIo<HboneStream>,
        tunnel: Arc<Tunnel>,
        h2: bool,
    ) {
        let stack = self.clone();
        let conn_tunnel = tunnel.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let stack = stack.clone();
            let tunnel = conn_tunnel.clone();
            async move { Ok::<_, Infallible>(stack.handle_request(&tunnel, request).await) }
        });
        let io = TokioIo::new(io);
        let limits = &self.limits;
        let result = if h2 {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
            let connection = builder.serve_connection(io, service);
            run_until_closed(connection, &tunnel, |c| c.graceful_shutdown()).await
        } else {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .keep_alive(true)
                .max_headers(limits.max_headers)
                .max_header_size(limits.max_header_bytes)
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(io, service).with_upgrades();
            run_until_closed(connection, &tunnel, |c| c.graceful_shutdown()).await
        };
        if let Err(err) = result {
            // Malformed requests were answered by hyper (400/431) before the connection ended.
            info!(%err, destination = %tunnel.destination.target, "downstream HTTP connection ended with an error");
        }
    }

    // ─── Opaque TCP ────────────────────────────────────────────────────────────────────

    /// A declared TCP port: L4 policy, then a tunnel to an endpoint, then the client's
    /// tunnel is accepted and bytes are copied.
    async fn serve_tcp(&self, snapshot: &Snapshot, tunnel: Arc<Tunnel>, responder: Responder) {
        if let Err(status) = self.authorize_tcp(snapshot, &tunnel) {
            responder.reject(status);
            return;
        }
        let Some(endpoint) = pick_tcp_endpoint(snapshot, &tunnel.destination) else {
            responder.reject(StatusCode::SERVICE_UNAVAILABLE);
            return;
        };
        let mut upstream = match self.upstream.tunnel(&endpoint).await {
            Ok(upstream) => upstream,
            Err(err) => {
                info!(%err, endpoint = %endpoint.addr, "TCP upstream failed");
                responder.reject(StatusCode::SERVICE_UNAVAILABLE);
                return;
            }
        };
        let Ok(mut downstream) = responder.accept(HeaderMap::new()) else {
            return;
        };
        copy(&mut downstream, &mut upstream, &tunnel, &endpoint).await;
    }

    /// Opaque bytes found by detection on an already accepted tunnel: same as [`Self::serve_tcp`],
    /// but a failure can only reset the tunnel.
    async fn copy_opaque(
        &self,
        snapshot: &Snapshot,
        mut downstream: PrefixedIo<HboneStream>,
        tunnel: &Tunnel,
    ) {
        if self.authorize_tcp(snapshot, tunnel).is_err() {
            return;
        }
        let Some(endpoint) = pick_tcp_endpoint(snapshot, &tunnel.destination) else {
            info!(destination = %tunnel.destination.target, flag = "UH", "no endpoint for TCP");
            return;
        };
        match self.upstream.tunnel(&endpoint).await {
            Ok(mut upstream) => copy(&mut downstream, &mut upstream, tunnel, &endpoint).await,
            Err(err) => info!(%err, endpoint = %endpoint.addr, flag = "UF", "TCP upstream failed"),
        }
    }

    fn authorize_tcp(&self, snapshot: &Snapshot, tunnel: &Tunnel) -> Result<(), StatusCode> {
        let service = tunnel.destination.service.as_ref().map(|e| &e.service);
        let decision = authz::authorize_connection(snapshot, service, &connection(tunnel));
        if decision.is_denied() {
            info!(source = %tunnel.client_identity, destination = %tunnel.destination.target,
                reason = ?decision.reason(), "TCP connection denied by policy");
            return Err(StatusCode::UNAUTHORIZED);
        }
        Ok(())
    }

    // ─── Per request ───────────────────────────────────────────────────────────────────

    /// One request through every phase; errors become responses here via `errors::respond`.
    async fn handle_request(
        &self,
        tunnel: &Tunnel,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let served = tunnel.served.fetch_add(1, Ordering::Relaxed) + 1;
        if self
            .limits
            .max_requests_per_connection
            .is_some_and(|max| served >= max)
        {
            tunnel.close.notify_one();
        }
        // Each request sees the configuration current when it arrives.
        let snapshot = self.config.load();
        let (mut parts, body) = request.into_parts();
        let request_id = tracing_ctx::ensure_request_id(&mut parts.headers);
        let span = self.observe.tracer.start(&parts.headers);
        span.inject(&mut parts.headers);
        let mut record = self
            .observe
            .access_log
            .then(|| access_record(tunnel, &parts, &span, request_id.clone(), SystemTime::now()));
        let request_bytes = Arc::new(AtomicU64::new(0));
        let body = CountingBody::new(body, request_bytes.clone());
        let grpc = errors::is_grpc(&parts.headers);
        let mut log = RequestLog {
            service: tunnel.destination.service.clone(),
            ..RequestLog::default()
        };
        let method = parts.method.clone();
        let path = parts.uri.path().to_owned();
        let response = match self
            .proxy(&snapshot, tunnel, &mut parts, body, &mut log)
            .await
        {
            Ok(response) => response,
            Err(err) => {
                log.flags = if err.is_denied() {
                    ResponseFlags::RBAC_DENIED
                } else {
                    err.flag().map_or(ResponseFlags::NONE, |f| {
                        ResponseFlags::from_static(f.code())
                    })
                };
                log.error = Some(err.to_string());
                errors::respond(&err, grpc)
            }
        };
        log_request(tunnel, &method, &path, &response, &log, started.elapsed());
        if let Some(record) = &mut record {
            complete_record(record, &response, &log);
        }
        // Span attributes only matter when the span will be exported.
        let exported = span.is_sampled() && self.observe.tracer.exports();
        let span_attributes = exported.then(|| SpanAttributes {
            method: method.to_string(),
            path: path.clone(),
            authority: filters::request_host(&parts).unwrap_or("").to_owned(),
            status: response.status().as_u16(),
            upstream: log.endpoint.map(|e| e.to_string()),
            request_id,
            source_principal: tunnel.client_identity.to_string(),
            response_flags: log.flags.as_str().to_owned(),
        });
        let request_bytes_seen = request_bytes.clone();
        let response = match &self.metrics {
            Some(metrics) => {
                let source_workload = snapshot.workload_by_ip(tunnel.client_ip);
                let facts = RequestFacts {
                    source_identity: &tunnel.client_identity,
                    source_workload: source_workload.map(|w| &**w),
                    source_metadata: tunnel.client_metadata.as_ref(),
                    destination_service: log.service.as_ref().map(|e| &e.service),
                    destination_workload: log.workload.as_deref(),
                    grpc,
                    response_code: response.status().as_u16(),
                    response_flags: log.flags,
                };
                let pending = PendingRecord::new(
                    metrics.clone(),
                    &facts,
                    response.headers(),
                    started,
                    request_bytes,
                );
                response.map(|body| MeteredBody::new(body, pending).boxed_unsync())
            }
            None => response,
        };
        self.observe_end(
            response,
            span,
            span_attributes,
            record,
            started,
            request_bytes_seen,
        )
    }

    /// Finishes the span and writes the access-log line when the response's last byte is
    /// sent.
    fn observe_end(
        &self,
        response: Response<ResponseBody>,
        span: ServerSpan,
        span_attributes: Option<SpanAttributes>,
        record: Option<AccessRecord>,
        started: Instant,
        request_bytes: Arc<AtomicU64>,
    ) -> Response<ResponseBody> {
        if span_attributes.is_none() && record.is_none() {
            return response;
        }
        let tracer = self.observe.tracer.clone();
        response.map(|body| {
            ObservedBody::new(body, move |bytes_sent| {
                if let Some(attributes) = span_attributes {
                    let name = format!("{} {}", attributes.method, attributes.path);
                    tracer.finish(&span, name, attributes);
                }
                if let Some(record) = record {
                    record.emit(started, &request_bytes, bytes_sent);
                }
            })
            .boxed_unsync()
        })
    }

    async fn proxy(
        &self,
        snapshot: &Snapshot,
        tunnel: &Tunnel,
        parts: &mut Parts,
        body: DownstreamBody,
        log: &mut RequestLog,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let auth = self.authenticate(snapshot, tunnel, parts).await?;
        self.authorize(snapshot, tunnel, parts, auth.as_ref())?;
        self.rate_limits.check(
            snapshot,
            &RateLimitRequest {
                service: tunnel.destination.service.as_ref().map(|e| &e.service),
                method: parts.method.as_str(),
                path: parts.uri.path(),
                source: &tunnel.client_identity,
            },
        )?;
        let routed = route(snapshot, tunnel, parts)?;
        log.route = routed
            .rule
            .as_ref()
            .map(|r| format!("{}#{}", r.route, r.index));
        let rule = routed.rule.as_ref().map(|r| &r.rule);
        if let Some(rule) = rule
            && let RequestOutcome::Redirect(response) =
                filters::apply_request(&rule.filters, parts, routed.prefix.as_deref())?
        {
            return Ok(response);
        }
        if let Some(fault) = rule.and_then(|r| r.fault.as_ref()) {
            let plan = {
                let mut rng = self
                    .fault_rng
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                fault::decide(fault, &mut *rng)
            };
            log.flags = plan.flags();
            if let Some(delay) = plan.delay {
                tokio::time::sleep(delay).await;
            }
            if let Some(abort) = plan.abort {
                return Ok(fault::abort_response(abort));
            }
        }
        if upgrade::is_upgrade(parts) {
            let on_upgrade = parts.extensions.remove::<OnUpgrade>();
            let response = self
                .forward_upgrade(snapshot, tunnel, &routed, parts, on_upgrade, log)
                .await?;
            let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            let upstream_headers = switching.then(|| response.headers().clone());
            let mut response = response.map(|b| b.map_err(Into::into).boxed_unsync());
            filter_response(response.headers_mut(), rule.map(|r| r.filters.as_slice()));
            if let Some(upstream_headers) = upstream_headers {
                upgrade::restore_switching_headers(response.headers_mut(), &upstream_headers);
            }
            return Ok(response);
        }
        let body = self.start_mirrors(snapshot, tunnel, &routed, parts, body);
        let request_timeout = rule.and_then(|r| r.request_timeout);
        let exchange = self.forward(snapshot, tunnel, &routed, parts, body, log);
        let mut response = match request_timeout {
            Some(timeout) => tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| ProxyError::timeout())??,
            None => exchange.await?,
        };
        filter_response(response.headers_mut(), rule.map(|r| r.filters.as_slice()));
        if let Some(cookie) = log.set_cookie.take() {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    // ─── Phase 3: authenticate (JWT) and authorize ────────────────────────────────────

    /// Validates the request's JWT under the RequestAuthentications of the destination and
    /// this waypoint: none there or no token → `None`; an invalid token → `401`.
    async fn authenticate(
        &self,
        snapshot: &Snapshot,
        tunnel: &Tunnel,
        parts: &mut Parts,
    ) -> Result<Option<RequestAuth>, ProxyError> {
        let service = tunnel.destination.service.as_ref().map(|e| &e.service);
        let rules = authz::request_authentications(snapshot, service);
        if rules.is_empty() {
            return Ok(None);
        }
        self.observe
            .jwks
            .authenticate(&rules, parts)
            .await
            .map_err(|err| ProxyError::unauthenticated(err.to_string()))
    }

    /// Evaluates the policies attached to the destination service and to this waypoint,
    /// with the request's method, host, path and headers; the source principal is the
    /// client identity of the HBONE connection.
    fn authorize(
        &self,
        snapshot: &Snapshot,
        tunnel: &Tunnel,
        parts: &Parts,
        auth: Option<&RequestAuth>,
    ) -> Result<(), ProxyError> {
        let service = tunnel.destination.service.as_ref().map(|e| &e.service);
        let attributes = HttpAttributes::new(parts, tunnel.client_ip).with_auth(auth);
        let decision =
            authz::authorize_request(snapshot, service, &connection(tunnel), &attributes);
        if decision.is_denied() {
            let by = decision
                .policy()
                .map_or_else(|| format!("{:?}", decision.reason()), |p| p.to_string());
            return Err(ProxyError::denied(by));
        }
        Ok(())
    }

    // ─── Mirrors ──────────────────────────────────────────────────────────────────────

    /// Starts the rule's mirrors that this request falls into: the body streams on through
    /// a [`TeeBody`] and a spawned task sends the copies once it is complete. Mirrors that
    /// cannot be resolved, or exceed the in-flight cap, are skipped; the main request never
    /// waits for or fails because of a mirror.
    fn start_mirrors(
        &self,
        snapshot: &Snapshot,
        tunnel: &Tunnel,
        routed: &Routed,
        parts: &Parts,
        body: DownstreamBody,
    ) -> UpstreamBody {
        let Some(rule) = &routed.rule else {
            return body.map_err(Into::into).boxed_unsync();
        };
        let mut targets = Vec::new();
        for filter in &rule.rule.filters {
            let RouteFilter::Mirror(mirror) = filter else {
                continue;
            };
            if !fault::hit(mirror.fraction, &mut rand::rng()) {
                continue;
            }
            match mirror_target(snapshot, tunnel, &mirror.backend, parts) {
                Ok(target) => targets.push(target),
                Err(err) => debug!(%err, backend = %mirror.backend.name, "mirror skipped"),
            }
        }
        if targets.is_empty() {
            return body.map_err(Into::into).boxed_unsync();
        }
        let Some(permit) = self.mirrors.try_acquire() else {
            debug!("mirror skipped: too many mirrored requests in flight");
            return body.map_err(Into::into).boxed_unsync();
        };
        let (tee, copy) = TeeBody::new(body, self.limits.max_mirror_body_bytes);
        let timeout = rule.rule.request_timeout.unwrap_or(MIRROR_TIMEOUT);
        tokio::spawn(send_mirrors(
            self.upstream.clone(),
            targets,
            copy,
            permit,
            timeout,
        ));
        tee.map_err(Into::into).boxed_unsync()
    }

    // ─── Phases 5–7: backends, endpoints, upstream, with retries ─────────────────────

    /// Sends the request to a backend of the rule (or the destination itself), retrying on
    /// the rule's codes and on connect failures, each try bounded by `backendRequest`.
    async fn forward(
        &self,
        snapshot: &Snapshot,
        tunnel: &Tunnel,
        routed: &Routed,
        parts: &Parts,
        body: UpstreamBody,
        log: &mut RequestLog,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let rule = routed.rule.as_ref().map(|r| &r.rule);
        let retry_policy = rule.and_then(|r| r.retry.as_ref());
        let max_retries = retry_policy.map_or(0, retry::retries);
        let per_try_timeout = rule.and_then(|r| r.backend_request_timeout);
        let mut body = if max_retries > 0 {
            RequestBody::Buffered(buffer_body(body, self.limits.max_retry_body_bytes).await?)
        } else {
            RequestBody::Streaming(Some(body))
        };
        let mut tries = 0;
        // Held through the try it allows, so `maxRetries` bounds retries in flight.
        let mut _retry_budget = None;
        loop {
            tries += 1;
            log.tries = tries;
            let outcome = self
                .try_once(
                    snapshot,
                    tunnel,
                    routed,
                    parts,
                    body.take(),
                    per_try_timeout,
                    log,
                )
                .await;
            let retries_left = tries <= max_retries;
            let retry = match (&outcome, retry_policy) {
                (Ok(response), Some(policy)) => {
                    retries_left
                        && retry::retry_response(policy, response.status(), response.headers())
                }
                (Err(err), Some(policy)) => retries_left && retry::retry_error(policy, err),
                (_, None) => false,
            };
            // The previous retry is over; this request holds at most one unit at a time.
            _retry_budget = None;
            let budget = match (&log.limits, retry) {
                (Some(limits), true) => limits.counters.try_retry(limits.pool.max_retries),
                _ => None,
            };
            // Out of retry budget: the last outcome stands (Envoy's retry overflow).
            let retry = retry && (log.limits.is_none() || budget.is_some());
            if !retry {
                let picked = log.picked.take();
                return outcome.map(|response| {
                    response.map(|b| HeldBody::new(b, picked).map_err(Into::into).boxed_unsync())
                });
            }
            _retry_budget = budget;
            if let Some(policy) = retry_policy {
                let wait = retry::backoff(policy.backoff, tries, &mut rand::rng());
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// An HTTP/1.1 Upgrade request: one try on a dedicated connection, spliced after `101`.
    async fn forward_upgrade(
        &self,
        snapshot: &Snapshot,
        tunnel: &Tunnel,
        routed: &Routed,
        parts: &Parts,
        on_upgrade: Option<OnUpgrade>,
        log: &mut RequestLog,
    ) -> Result<Response<Incoming>, ProxyError> {
        log.tries = 1;
        let (endpoint, _, picked, _) =
            pick_upstream(snapshot, &self.upstream, tunnel, routed, parts, log)?;
        log.endpoint = Some(endpoint.addr);
        log.workload = Some(endpoint.workload.clone());
        let protocol = parts
            .headers
            .get(header::UPGRADE)
            .cloned()
            .ok_or_else(|| ProxyError::malformed("upgrade header"))?;
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = upstream_request(parts, body, UpstreamProtocol::Http1, &endpoint)?;
        let result =
            upgrade::forward(&self.upstream, &endpoint, request, protocol, on_upgrade).await;
        if let Some(picked) = picked {
            match &result {
                Ok(response) => picked.report(TryOutcome::Status(response.status().as_u16())),
                Err(_) => picked.report(TryOutcome::NoAnswer),
            }
        }
        result
    }

    /// One try: pick a backend and an endpoint, send, wait for the response head.
    #[allow(
        clippy::too_many_arguments,
        reason = "the phases' shared state, passed explicitly"
    )]
    async fn try_once(
        &self,
        snapshot: &Snapshot,
        tunnel: &Tunnel,
        routed: &Routed,
        parts: &Parts,
        body: Option<UpstreamBody>,
        per_try_timeout: Option<Duration>,
        log: &mut RequestLog,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (endpoint, protocol, picked, backend) =
            pick_upstream(snapshot, &self.upstream, tunnel, routed, parts, log)?;
        log.endpoint = Some(endpoint.addr);
        log.workload = Some(endpoint.workload.clone());
        let body = body.ok_or_else(|| ProxyError::malformed("request body already consumed"))?;
        let mut request = upstream_request(parts, body, protocol, &endpoint)?;
        // Per-destination header operations (VirtualService `route[].headers`).
        let backend_filters = backend.map_or(&[][..], |b| b.filters.as_slice());
        for filter in backend_filters {
            if let RouteFilter::RequestHeaders(modifier) = filter {
                filters::modify_headers(request.headers_mut(), modifier);
            }
        }
        let limits = match &picked {
            Some(picked) => SendLimits {
                counters: picked.cluster.counters().clone(),
                pool: picked.policy.connection_pool,
            },
            None => SendLimits {
                counters: Arc::default(),
                pool: Default::default(),
            },
        };
        let send = self
            .upstream
            .send_limited(&endpoint, protocol, request, &limits);
        let result = match per_try_timeout {
            Some(timeout) => tokio::time::timeout(timeout, send)
                .await
                .map_err(|_| ProxyError::per_try_timeout())
                .and_then(|result| result),
            None => send.await,
        };
        if let Some(picked) = picked {
            match &result {
                Ok(response) => picked.report(TryOutcome::Status(response.status().as_u16())),
                // Our own limits say nothing about the endpoint's health.
                Err(err) if err.flag() == Some(crate::errors::ResponseFlag::UpstreamOverflow) => {}
                Err(_) => picked.report(TryOutcome::NoAnswer),
            }
            if picked.set_cookie.is_some() {
                log.set_cookie = picked.set_cookie.clone();
            }
            log.limits = Some(limits);
            // Counted as in flight (LEAST_REQUEST, http2MaxRequests) until its body ends.
            log.picked = Some(picked);
        }
        let mut response = result?;
        filters::apply_response(backend_filters, response.headers_mut());
        Ok(response)
    }
}

/// The rule chosen for a request, if any.
#[derive(Debug)]
struct Routed {
    rule: Option<Arc<CompiledRule>>,
    prefix: Option<String>,
}

/// A request body: streamed once, or buffered so it can be sent again.
enum RequestBody {
    Streaming(Option<UpstreamBody>),
    Buffered(Bytes),
}

/// One mirror copy to send: the request head (with the `-shadow` host) and where it goes.
#[derive(Debug)]
struct MirrorTarget {
    parts: Parts,
    endpoint: EndpointTarget,
    protocol: UpstreamProtocol,
}

/// How long a mirror copy may take when the rule sets no request timeout.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

impl RequestBody {
    fn take(&mut self) -> Option<UpstreamBody> {
        match self {
            Self::Streaming(body) => body.take(),
            Self::Buffered(bytes) => Some(
                Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
        }
    }
}

// ─── Phase 1 helpers: destination ──────────────────────────────────────────────────────

/// Maps the CONNECT `:authority` to a service (by VIP:port) or a pod (by IP); anything else
/// is refused.
fn resolve_destination(snapshot: &Snapshot, target: &Target) -> Result<Destination, StatusCode> {
    let Target::Socket(addr) = target else {
        return Err(StatusCode::BAD_REQUEST);
    };
    if let Some(entry) = snapshot.service_by_vip(*addr) {
        let protocol = entry
            .service
            .port(addr.port())
            .map_or(AppProtocol::Unknown, |p| p.protocol());
        return Ok(Destination {
            target: *addr,
            service: Some(entry.clone()),
            pod: None,
            protocol,
        });
    }
    if let Some(workload) = snapshot.workload_by_ip(addr.ip()) {
        // The protocol of the service port that targets this pod port, if any service does.
        let protocol = snapshot
            .services()
            .find_map(|entry| {
                let service = &entry.service;
                service.ports().iter().find(|port| {
                    service.target_port(workload.uid(), port.port) == Some(addr.port())
                })
            })
            .map_or(AppProtocol::Unknown, |port| port.protocol());
        return Ok(Destination {
            target: *addr,
            service: None,
            pod: Some(workload.clone()),
            protocol,
        });
    }
    Err(StatusCode::SERVICE_UNAVAILABLE)
}

/// The original client address: `forwarded: for="ip:port"` from the client's ztunnel, else
/// the HBONE peer.
fn client_ip(request: &InboundRequest) -> IpAddr {
    request
        .headers()
        .get(header::FORWARDED)
        .and_then(|value| value.to_str().ok())
        .and_then(forwarded_for)
        .unwrap_or_else(|| request.remote_addr().ip())
}

fn forwarded_for(value: &str) -> Option<IpAddr> {
    let element = value.split(',').next()?;
    let for_value = element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.eq_ignore_ascii_case("for").then_some(value)
    })?;
    let for_value = for_value.trim_matches('"');
    if let Ok(addr) = for_value.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    for_value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn connection(tunnel: &Tunnel) -> Connection {
    Connection {
        source_identity: Some(tunnel.client_identity.clone()),
        source_ip: tunnel.client_ip,
        destination_ip: tunnel.destination.target.ip(),
        destination_port: tunnel.destination.target.port(),
    }
}

// ─── Phase 4: route ─────────────────────────────────────────────────────────────────────

/// Picks the route rule for a service-addressed request. Pod-addressed requests and services
/// without routes go straight to the destination.
fn route(snapshot: &Snapshot, tunnel: &Tunnel, parts: &Parts) -> Result<Routed, ProxyError> {
    let Some(entry) = &tunnel.destination.service else {
        return Ok(Routed {
            rule: None,
            prefix: None,
        });
    };
    let key = ServiceKey::of(&entry.service);
    match snapshot
        .routes()
        .select(&key, tunnel.destination.target.port(), parts)
    {
        Selection::Unrouted => Ok(Routed {
            rule: None,
            prefix: None,
        }),
        Selection::NoMatch => Err(ProxyError::no_route()),
        Selection::Matched { rule, prefix } => Ok(Routed {
            rule: Some(rule.clone()),
            prefix: prefix.map(str::to_owned),
        }),
    }
}

// ─── Phase 5–6: backend and endpoint ───────────────────────────────────────────────────

/// What [`pick_upstream`] chose: the endpoint, the HTTP version, the destination's state
/// when the endpoint belongs to a service, and the rule's backend.
type UpstreamChoice<'r> = (
    EndpointTarget,
    UpstreamProtocol,
    Option<Picked>,
    Option<&'r Backend>,
);

/// The endpoint and HTTP version for one try, with the rule's backend it belongs to; for a
/// service, the endpoint is chosen under its DestinationRule (the backend's subset, if it
/// names one) and comes with the destination's state ([`Picked`]).
fn pick_upstream<'r>(
    snapshot: &Snapshot,
    upstream: &Upstream,
    tunnel: &Tunnel,
    routed: &'r Routed,
    parts: &Parts,
    log: &mut RequestLog,
) -> Result<UpstreamChoice<'r>, ProxyError> {
    let downstream = parts.version;
    let destination = &tunnel.destination;
    if let Some(pod) = &destination.pod {
        let endpoint = balance::pod_endpoint(snapshot, pod.clone(), destination.target);
        return Ok((
            endpoint,
            upstream_protocol(destination.protocol, downstream),
            None,
            None,
        ));
    }
    let Some(entry) = &destination.service else {
        return Err(ProxyError::no_healthy_upstream());
    };
    let (entry, port, backend) = match &routed.rule {
        None => (entry.clone(), destination.target.port(), None),
        Some(rule) => {
            let backend = balance::pick_backend(&rule.rule.backends, &mut rand::rng())
                .ok_or_else(|| ProxyError::bad_backend("the rule has no backend with weight"))?;
            let (entry, port) = backend_service(snapshot, backend, destination.target.port())?;
            (entry, port, Some(backend))
        }
    };
    log.backend = Some(format!(
        "{}.{}:{port}",
        entry.service.name(),
        entry.service.namespace()
    ));
    log.service = Some(entry.clone());
    let service_port = entry.service.port(port).ok_or_else(|| {
        ProxyError::bad_backend(format!("{} has no port {port}", entry.service.hostname()))
    })?;
    let protocol = upstream_protocol(service_port.protocol(), downstream);
    let request = PickRequest {
        parts,
        client_ip: tunnel.client_ip,
        subset: backend.and_then(|b| b.subset.as_deref()),
    };
    let picked = balance::pick(snapshot, upstream.clusters(), &entry, port, request)?;
    Ok((picked.endpoint.clone(), protocol, Some(picked), backend))
}

/// The service a backend names, and its port: a VirtualService destination without a port
/// (port 0) goes to the service's only port, else to the port the request was addressed to.
fn backend_service(
    snapshot: &Snapshot,
    backend: &Backend,
    request_port: u16,
) -> Result<(Arc<ServiceEntry>, u16), ProxyError> {
    let key = ServiceKey {
        namespace: backend.namespace.clone(),
        name: backend.name.clone(),
    };
    let entry = snapshot.service(&key).ok_or_else(|| {
        ProxyError::bad_backend(format!("service {}/{} not found", key.namespace, key.name))
    })?;
    let port = match (backend.port, entry.service.ports()) {
        (0, [only]) => only.port,
        (0, _) => request_port,
        (port, _) => port,
    };
    Ok((entry.clone(), port))
}

/// Where one mirror copy goes: the mirror backend's endpoint, and the request head with
/// its host marked `-shadow`.
fn mirror_target(
    snapshot: &Snapshot,
    tunnel: &Tunnel,
    backend: &Backend,
    parts: &Parts,
) -> Result<MirrorTarget, ProxyError> {
    let (entry, port) = backend_service(snapshot, backend, tunnel.destination.target.port())?;
    let service_port = entry.service.port(port).ok_or_else(|| {
        ProxyError::bad_backend(format!("{} has no port {port}", entry.service.hostname()))
    })?;
    let protocol = upstream_protocol(service_port.protocol(), parts.version);
    // A copy goes to an endpoint of the mirror's subset, without the main request's
    // DestinationRule state (pools, outlier ejection): mirrors are fire-and-forget.
    let labels = match backend.subset.as_deref() {
        Some(name) => Some(&balance::subset(snapshot, &entry, name)?.labels),
        None => None,
    };
    let endpoint = balance::pick_endpoint(snapshot, &entry, port, labels)
        .ok_or_else(ProxyError::no_healthy_upstream)?;
    let mut copy = Request::new(());
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.version_mut() = parts.version;
    *copy.headers_mut() = parts.headers.clone();
    let (mut copy, ()) = copy.into_parts();
    let host = filters::request_host(parts)
        .map(str::to_owned)
        .unwrap_or_else(|| entry.service.hostname().to_string());
    filters::set_host(&mut copy, &mirror::shadow_host(&host))?;
    Ok(MirrorTarget {
        parts: copy,
        endpoint,
        protocol,
    })
}

/// Sends the mirror copies once the request body has been copied whole; every answer is
/// read and discarded. Holds its in-flight permit until done or `timeout`.
async fn send_mirrors(
    upstream: Arc<Upstream>,
    targets: Vec<MirrorTarget>,
    copy: oneshot::Receiver<Bytes>,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
) {
    let work = async {
        let Ok(body) = copy.await else {
            // Too large, failed, or the main request ended before its body did.
            return;
        };
        let sends = targets.iter().map(|target| {
            let body = Full::new(body.clone())
                .map_err(|never| match never {})
                .boxed_unsync();
            let upstream = &upstream;
            async move {
                let request =
                    upstream_request(&target.parts, body, target.protocol, &target.endpoint)?;
                let response = upstream
                    .send(&target.endpoint, target.protocol, request)
                    .await?;
                let status = response.status();
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.map_err(|err| ProxyError::upstream_reset(false, err))?;
                }
                Ok::<_, ProxyError>(status)
            }
        });
        for (target, result) in targets
            .iter()
            .zip(futures_util::future::join_all(sends).await)
        {
            match result {
                Ok(status) => debug!(endpoint = %target.endpoint.addr, %status, "mirror answered"),
                Err(err) => debug!(endpoint = %target.endpoint.addr, %err, "mirror failed"),
            }
        }
    };
    if tokio::time::timeout(timeout, work).await.is_err() {
        debug!("mirror timed out");
    }
    drop(permit);
}

fn pick_tcp_endpoint(snapshot: &Snapshot, destination: &Destination) -> Option<EndpointTarget> {
    if let Some(pod) = &destination.pod {
        return Some(balance::pod_endpoint(
            snapshot,
            pod.clone(),
            destination.target,
        ));
    }
    let entry = destination.service.as_ref()?;
    balance::pick_endpoint(snapshot, entry, destination.target.port(), None)
}

/// HTTP/2 for declared h2/gRPC ports, HTTP/1.1 for declared HTTP ports, else what the client
/// spoke.
fn upstream_protocol(declared: AppProtocol, downstream: Version) -> UpstreamProtocol {
    match declared {
        AppProtocol::Http2 | AppProtocol::Grpc => UpstreamProtocol::Http2,
        AppProtocol::Http => UpstreamProtocol::Http1,
        AppProtocol::Tcp | AppProtocol::Unknown if downstream == Version::HTTP_2 => {
            UpstreamProtocol::Http2
        }
        AppProtocol::Tcp | AppProtocol::Unknown => UpstreamProtocol::Http1,
    }
}

// ─── Phase 7: upstream request ─────────────────────────────────────────────────────────

/// Headers that describe one hop and never cross the proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// The request as the endpoint receives it: origin-form with `Host` for HTTP/1.1, absolute
/// form (`:authority`) for HTTP/2; hop-by-hop headers removed.
fn upstream_request(
    parts: &Parts,
    body: UpstreamBody,
    protocol: UpstreamProtocol,
    endpoint: &EndpointTarget,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    // gRPC needs `te: trailers` end to end.
    if parts
        .headers
        .get(header::TE)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let authority = filters::request_host(parts)
        .map(str::to_owned)
        .unwrap_or_else(|| endpoint.addr.to_string());
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    match protocol {
        UpstreamProtocol::Http1 => {
            *request.version_mut() = Version::HTTP_11;
            *request.uri_mut() = Uri::from(path);
            if !headers.contains_key(header::HOST) {
                let host = HeaderValue::from_str(&authority)
                    .map_err(|err| ProxyError::malformed(format!("host: {err}")))?;
                headers.insert(header::HOST, host);
            }
        }
        UpstreamProtocol::Http2 => {
            *request.version_mut() = Version::HTTP_2;
            let authority = Authority::try_from(authority.as_str())
                .map_err(|err| ProxyError::malformed(format!("authority: {err}")))?;
            *request.uri_mut() = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(path)
                .build()
                .map_err(|err| ProxyError::malformed(format!("uri: {err}")))?;
            headers.remove(header::HOST);
        }
    }
    *request.headers_mut() = headers;
    Ok(request)
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the `connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

async fn buffer_body(mut body: UpstreamBody, limit: usize) -> Result<Bytes, ProxyError> {
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| ProxyError::malformed(format!("request body: {err}")))?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(ProxyError::body_too_large(limit));
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

// ─── Phase 8: response ─────────────────────────────────────────────────────────────────

/// Removes hop-by-hop headers and the upstream's `server` header (no software or version is
/// disclosed), then applies the rule's response header modifiers.
fn filter_response(headers: &mut HeaderMap, filters: Option<&[ambit_model::route::RouteFilter]>) {
    strip_hop_by_hop(headers);
    headers.remove(header::SERVER);
    headers.remove("x-powered-by");
    if let Some(filters) = filters {
        filters::apply_response(filters, headers);
    }
}

// ─── Phase 9: log ──────────────────────────────────────────────────────────────────────

/// The access-log fields known when the request arrives.
fn access_record(
    tunnel: &Tunnel,
    parts: &Parts,
    span: &ServerSpan,
    request_id: String,
    now: SystemTime,
) -> AccessRecord {
    AccessRecord {
        method: parts.method.to_string(),
        authority: filters::request_host(parts).unwrap_or("").to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        protocol: format!("{:?}", parts.version),
        source_principal: tunnel.client_identity.to_string(),
        source_address: tunnel.client_ip.to_string(),
        destination_address: tunnel.destination.target.to_string(),
        trace_id: span.trace_id(),
        request_id,
        ..AccessRecord::started_at(now)
    }
}

/// The access-log fields known once the response head is ready.
fn complete_record(record: &mut AccessRecord, response: &Response<ResponseBody>, log: &RequestLog) {
    record.response_code = response.status().as_u16();
    record.response_flags = log.flags.as_str().to_owned();
    record.upstream_host = log.endpoint.map(|e| e.to_string());
    record.upstream_cluster = log.backend.clone();
    record.route_name = log.route.clone();
    record.destination_principal = log.workload.as_ref().map(|w| w.identity().to_string());
    record.attempts = log.tries;
    record.error = log.error.clone();
}

fn log_request(
    tunnel: &Tunnel,
    method: &http::Method,
    path: &str,
    response: &Response<ResponseBody>,
    log: &RequestLog,
    duration: Duration,
) {
    debug!(
        target: "ambit_waypoint::access",
        source = %tunnel.client_identity,
        client_ip = %tunnel.client_ip,
        destination = %tunnel.destination.target,
        %method,
        path,
        status = response.status().as_u16(),
        grpc_status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()),
        flags = log.flags.as_str(),
        route = log.route.as_deref(),
        backend = log.backend.as_deref(),
        endpoint = log.endpoint.map(|e| e.to_string()),
        tries = log.tries,
        error = log.error.as_deref(),
        duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        "request"
    );
}

// ─── Helpers ───────────────────────────────────────────────────────────────────────────

/// Drives a hyper server connection; when the tunnel's request limit is reached, shuts it
/// down gracefully (in-flight requests finish, HTTP/1.1 closes, HTTP/2 sends GOAWAY).
async fn run_until_closed<C, E>(
    connection: C,
    tunnel: &Tunnel,
    shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) -> Result<(), E>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        () = tunnel.close.notified() => {}
    }
    shutdown(connection.as_mut());
    connection.await
}

async fn copy<D, U>(
    downstream: &mut D,
    upstream: &mut U,
    tunnel: &Tunnel,
    endpoint: &EndpointTarget,
) where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let counters = ByteCounters::default();
    let result = ambit_hbone::copy_bidirectional(downstream, upstream, &counters).await;
    info!(
        target: "ambit_waypoint::access",
        source = %tunnel.client_identity,
        destination = %tunnel.destination.target,
        endpoint = %endpoint.addr,
        sent = counters.a_to_b(),
        received = counters.b_to_a(),
        error = result.err().map(|e| e.to_string()),
        "tcp connection"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_forms() {
        assert_eq!(
            forwarded_for("for=\"10.0.0.1:4000\""),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            forwarded_for("for=\"[fd00::1]:4000\";host=a.b"),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(
            forwarded_for("for=10.0.0.2"),
            Some("10.0.0.2".parse().unwrap())
        );
        assert_eq!(forwarded_for("by=x"), None);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn upstream_protocol_table() {
        use AppProtocol::*;
        assert_eq!(
            upstream_protocol(Grpc, Version::HTTP_11),
            UpstreamProtocol::Http2
        );
        assert_eq!(
            upstream_protocol(Http, Version::HTTP_2),
            UpstreamProtocol::Http1
        );
        assert_eq!(
            upstream_protocol(Unknown, Version::HTTP_2),
            UpstreamProtocol::Http2
        );
        assert_eq!(
            upstream_protocol(Unknown, Version::HTTP_11),
            UpstreamProtocol::Http1
        );
    }
}
