//! A recording mock of the Kubernetes API server for the kube-layer tests of the controller,
//! the node agent and the CLI (a dev-dependency only): a `tower_test::mock` pair behind a real
//! `kube::Client`. Each request is recorded (method, path, query, content type, JSON body)
//! and answered by the test's script: canned replies queued per request, a live watch stream
//! the test feeds event by event, or no answer at all (a watch that stays open). What only
//! one crate needs (the controller's RBAC check, the CLI's port-forward server) stays in that
//! crate's tests.

// A test helper: a broken script or a poisoned lock should panic the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tower_test::mock;

/// How long any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);

type ResponseBody = BoxBody<Bytes, Infallible>;

/// One request the client sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: Option<String>,
    pub body: Value,
    /// The whole request URI, for checks that need path and query together (RBAC).
    pub uri: http::Uri,
}

/// How the mock answers one request.
pub enum Reply {
    /// A complete JSON response.
    Json(StatusCode, Value),
    /// A watch response whose events the test sends through the paired sender; dropping the
    /// sender ends the response.
    Stream(mpsc::UnboundedReceiver<Value>),
    /// Never answered: a watch that stays open.
    Hang,
}

/// Which requests a queued reply is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET without `watch=true`.
    Get,
    /// GET with `watch=true`.
    Watch,
    Post,
    Patch,
    Delete,
}

type Fallback = Box<dyn FnMut(&Recorded) -> Reply + Send>;

/// The mock API server; the test keeps it to script replies and read the log.
#[derive(Clone)]
pub struct MockApi {
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
}

struct State {
    log: Vec<Recorded>,
    queued: HashMap<(Verb, String), VecDeque<Reply>>,
    fallback: Fallback,
}

impl Recorded {
    pub fn verb(&self) -> Verb {
        match self.method {
            Method::GET if self.query.get("watch").map(String::as_str) == Some("true") => {
                Verb::Watch
            }
            Method::GET => Verb::Get,
            Method::POST => Verb::Post,
            Method::PATCH => Verb::Patch,
            Method::DELETE => Verb::Delete,
            ref other => panic!("unexpected method {other}"),
        }
    }

    /// `PATCH /path?fieldManager=..&force=..` in one line, for exact comparisons.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        self.query.get(key).map(|value| percent_decode(value))
    }
}

impl MockApi {
    /// A client and its mock. Unscripted requests go to `fallback`.
    pub fn start(fallback: impl FnMut(&Recorded) -> Reply + Send + 'static) -> (Client, Self) {
        let (service, handle) = mock::pair::<Request<Body>, Response<ResponseBody>>();
        let api = Self {
            state: Arc::new(Mutex::new(State {
                log: Vec::new(),
                queued: HashMap::new(),
                fallback: Box::new(fallback),
            })),
            arrived: Arc::new(Notify::new()),
        };
        tokio::spawn(api.clone().serve(handle));
        (Client::new(service, "default"), api)
    }

    /// The default for watch tests: every list is empty, every watch stays open.
    pub fn empty_cluster(recorded: &Recorded) -> Reply {
        match recorded.verb() {
            Verb::Get => Reply::Json(StatusCode::OK, empty_list("1")),
            Verb::Watch => Reply::Hang,
            _ => not_found(recorded),
        }
    }

    /// Answers the next `verb` request on `path` with `reply` (queued replies go first, in
    /// order).
    pub fn queue(&self, verb: Verb, path: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .queued
            .entry((verb, path.to_owned()))
            .or_default()
            .push_back(reply);
    }

    /// Queues a live watch on `path` and returns its event sender.
    pub fn queue_watch(&self, path: &str) -> mpsc::UnboundedSender<Value> {
        let (events, receiver) = mpsc::unbounded_channel();
        self.queue(Verb::Watch, path, Reply::Stream(receiver));
        events
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().log.clone()
    }

    /// The requests other than the source's lists and watches.
    pub fn writes(&self) -> Vec<Recorded> {
        self.log()
            .into_iter()
            .filter(|r| !matches!(r.verb(), Verb::Get | Verb::Watch) || !r.path.contains("/v1/"))
            .filter(|r| r.method != Method::GET)
            .collect()
    }

    /// Waits until `count` requests matching `filter` have arrived; returns them.
    pub async fn wait_for(
        &self,
        count: usize,
        filter: impl Fn(&Recorded) -> bool,
    ) -> Vec<Recorded> {
        tokio::time::timeout(WAIT, async {
            loop {
                let arrived = self.arrived.notified();
                let matching: Vec<Recorded> = self.log().into_iter().filter(&filter).collect();
                if matching.len() >= count {
                    return matching;
                }
                arrived.await;
            }
        })
        .await
        .expect("requests did not arrive in time")
    }

    async fn serve(self, mut handle: mock::Handle<Request<Body>, Response<ResponseBody>>) {
        // Unanswered requests stay open for as long as the mock lives.
        let mut hanging = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let recorded = record(request).await;
            let reply = {
                let mut state = self.state.lock().unwrap();
                state.log.push(recorded.clone());
                let queued = state
                    .queued
                    .get_mut(&(recorded.verb(), recorded.path.clone()))
                    .and_then(VecDeque::pop_front);
                match queued {
                    Some(reply) => reply,
                    None => (state.fallback)(&recorded),
                }
            };
            self.arrived.notify_waiters();
            match reply {
                Reply::Json(status, body) => respond.send_response(json_response(status, &body)),
                Reply::Stream(events) => respond.send_response(stream_response(events)),
                Reply::Hang => hanging.push(respond),
            }
        }
    }
}

async fn record(request: Request<Body>) -> Recorded {
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    let query = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect();
    Recorded {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        uri: parts.uri,
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).boxed())
        .unwrap()
}

fn stream_response(events: mpsc::UnboundedReceiver<Value>) -> Response<ResponseBody> {
    let frames = futures_util::stream::unfold(events, |mut events| async move {
        let event = events.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), events))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(frames).boxed())
        .unwrap()
}

/// A list with no items at `resource_version`.
pub fn empty_list(resource_version: &str) -> Value {
    list(resource_version, Vec::new())
}

/// A list response.
pub fn list(resource_version: &str, items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

/// A watch event line.
pub fn event(type_: &str, object: Value) -> Value {
    json!({"type": type_, "object": object})
}

/// A `Status` failure body.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// A 404 reply for `recorded`.
pub fn not_found(recorded: &Recorded) -> Reply {
    Reply::Json(
        StatusCode::NOT_FOUND,
        status(404, "NotFound", &format!("{} not found", recorded.path)),
    )
}

/// Echoes an apply body back as the stored object (what the API server returns).
pub fn echo(recorded: &Recorded) -> Reply {
    Reply::Json(StatusCode::OK, recorded.body.clone())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}
