//! The node-agent protocol: newline-delimited JSON over a unix stream socket.
//!
//! Two conversations share one framing and one reply type:
//! - **node agent → ztunnel** ([`ZtunnelRequest`]): `hello`, `enroll`, `unenroll`, `snapshot`.
//!   ztunnel embeds the server ([`crate::server`]), the node agent is the client.
//! - **CNI plugin → node agent** ([`AgentRequest`]): `hello`, `add`, `del`, `check`. The agent
//!   embeds the server, the short-lived `ambit-cni` process is the client.
//!
//! Every message is one JSON object on one line (`\n`-terminated, at most
//! [`MAX_MESSAGE_BYTES`] including the newline), tagged by `"type"`. A connection starts with
//! `hello` carrying [`PROTOCOL_VERSION`]; every request gets exactly one [`Reply`], in order.
//! Decoding is strict: unknown message types and unknown fields are rejected, and every field
//! is validated (see [`Message::validate`]). A malformed message is answered with an `error`
//! reply of kind `invalid` and the connection is closed; a handler failure is answered with an
//! `error` reply and the connection stays open.
//!
//! An example exchange between a node agent (`>` sends) and ztunnel (`<` replies):
//!
//! ```text
//! > {"type":"hello","version":1}
//! < {"type":"ack"}
//! > {"type":"snapshot","pods":[{"uid":"6b1f0c2e-…","namespace":"shop","name":"web-0","service_account":"web","netns":"/var/run/netns/cni-3c1a…"}]}
//! < {"type":"ack"}
//! > {"type":"unenroll","uid":"6b1f0c2e-…"}
//! < {"type":"ack"}
//! > {"type":"enroll","pod":{"uid":"","namespace":"shop","name":"web-1","service_account":"web","netns":"/proc/42/ns/net"}}
//! < {"type":"error","kind":"invalid","message":"enroll: pod.uid: must not be empty"}
//!   (ztunnel closes the connection)
//! ```
//!
//! and between `ambit-cni` and the node agent:
//!
//! ```text
//! > {"type":"hello","version":1}
//! < {"type":"ack"}
//! > {"type":"add","pod":{"container_id":"9c0e…","namespace":"shop","name":"web-0","uid":"6b1f0c2e-…","netns":"/var/run/netns/cni-3c1a…"}}
//! < {"type":"ack","enrolled":true}
//! ```
//!
//! The pod's network namespace travels as a path (`/proc/<pid>/ns/net` or a bind mount under
//! `/var/run/netns`). Passing the namespace as a file descriptor with `SCM_RIGHTS` would close
//! the race where the path is unmounted between the message and ztunnel opening it; the path is
//! enough for now because the agent only reports sandboxes the runtime is still holding open.

use std::collections::HashSet;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::validate;

#[cfg(test)]
mod tests;

/// The protocol version sent in `hello`; a peer with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest encoded message, newline included. A snapshot carries every pod of a node (several
/// hundred with long names), which does not fit in 64 KiB; 1 MiB does with a wide margin.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Everything ztunnel needs to serve a pod: identity and network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodInfo {
    /// Kubernetes pod UID; the key of an enrollment.
    pub uid: String,
    /// Namespace (RFC 1123 label).
    pub namespace: String,
    /// Pod name (RFC 1123 subdomain).
    pub name: String,
    /// Service account (RFC 1123 subdomain); the pod's SPIFFE identity derives from it.
    pub service_account: String,
    /// Absolute path of the pod's network namespace.
    pub netns: String,
}

/// What the CNI plugin knows about a pod: the runtime's view, before the node agent resolves it.
///
/// `uid` and `service_account` are optional because the CNI runtime does not always pass them
/// (`K8S_POD_UID` depends on the runtime, a service account is never passed by standard
/// runtimes); the node agent fills them in from its pod watch before it sends a [`PodInfo`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodReport {
    /// CNI container (sandbox) ID.
    pub container_id: String,
    /// Namespace (RFC 1123 label).
    pub namespace: String,
    /// Pod name (RFC 1123 subdomain).
    pub name: String,
    /// Pod UID, when the runtime passed `K8S_POD_UID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Service account, when the runtime passed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Network namespace path; required for `add` and `check`, optional for `del`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// Requests from the node agent to ztunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ZtunnelRequest {
    /// First message of a connection.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Start serving a pod.
    Enroll {
        /// The pod.
        pod: PodInfo,
    },
    /// Stop serving a pod; unknown UIDs are not an error.
    Unenroll {
        /// The pod's UID.
        uid: String,
    },
    /// The complete set of pods to serve; pods not listed are unenrolled. Sent after every
    /// (re)connect so a restarted ztunnel serves every pod again.
    Snapshot {
        /// Every pod that should be enrolled, UIDs unique.
        pods: Vec<PodInfo>,
    },
}

/// Requests from the CNI plugin to the node agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentRequest {
    /// First message of a connection.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// CNI ADD: a pod sandbox was created. The agent replies `ack` with `enrolled`.
    Add {
        /// The pod, with `netns` set.
        pod: PodReport,
    },
    /// CNI DEL: a pod sandbox is going away. Idempotent.
    Del {
        /// The pod; `netns` may be absent.
        pod: PodReport,
    },
    /// CNI CHECK: does the agent know this pod? Replies `ack` with `enrolled`, or an
    /// `unknown_pod` error.
    Check {
        /// The pod, with `netns` set.
        pod: PodReport,
    },
}

/// The answer to every request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Success. `enrolled` answers `add` and `check` (is the pod in the mesh?).
    Ack {
        /// Whether the pod is (or will be) served by ztunnel; absent for other requests.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enrolled: Option<bool>,
    },
    /// Failure, with a kind the client can act on.
    Error {
        /// What went wrong.
        kind: ErrorKind,
        /// Human-readable detail.
        message: String,
    },
}

/// The class of an `error` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request was malformed or failed validation; the server closes the connection.
    Invalid,
    /// The pod is not known to the server.
    UnknownPod,
    /// A transient condition (not synced yet, ztunnel unreachable); retry later.
    Unavailable,
    /// Any other failure of the server.
    Internal,
}

/// A message that can be framed, encoded and decoded.
pub trait Message: Serialize + DeserializeOwned + fmt::Debug + Send + 'static {
    /// Checks every field; decoding calls this, and so does encoding.
    fn validate(&self) -> Result<(), ProtocolError>;
}

/// A request type: the first message of each conversation is its `hello`.
pub trait Request: Message {
    /// The `hello` of this protocol version.
    fn hello() -> Self;
    /// The version if this is a `hello`.
    fn hello_version(&self) -> Option<u32>;
    /// A short name of the message type, for logs and errors.
    fn kind_name(&self) -> &'static str;
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    kind: ProtocolErrorKind,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProtocolErrorKind {
    Oversize,
    Truncated,
    Malformed,
    Invalid,
}

/// Splits a byte stream into newline-terminated frames of bounded size, without doing IO.
#[derive(Debug, Default)]
pub(crate) struct FrameScanner {
    buf: Vec<u8>,
    complete: bool,
}

impl PodInfo {
    fn check(&self, at: &str) -> Result<(), ProtocolError> {
        field(at, "uid", validate::uid(&self.uid))?;
        field(at, "namespace", validate::dns_label(&self.namespace))?;
        field(at, "name", validate::dns_subdomain(&self.name))?;
        field(
            at,
            "service_account",
            validate::dns_subdomain(&self.service_account),
        )?;
        field(at, "netns", validate::absolute_path(&self.netns))
    }
}

impl PodReport {
    fn check(&self, at: &str, netns_required: bool) -> Result<(), ProtocolError> {
        field(
            at,
            "container_id",
            validate::container_id(&self.container_id),
        )?;
        field(at, "namespace", validate::dns_label(&self.namespace))?;
        field(at, "name", validate::dns_subdomain(&self.name))?;
        if let Some(uid) = &self.uid {
            field(at, "uid", validate::uid(uid))?;
        }
        if let Some(sa) = &self.service_account {
            field(at, "service_account", validate::dns_subdomain(sa))?;
        }
        match &self.netns {
            Some(netns) => field(at, "netns", validate::absolute_path(netns)),
            None if netns_required => Err(ProtocolError::invalid(format!(
                "{at}.netns: required for this request"
            ))),
            None => Ok(()),
        }
    }
}

impl Message for ZtunnelRequest {
    fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            Self::Hello { .. } => Ok(()),
            Self::Enroll { pod } => pod.check("enroll: pod"),
            Self::Unenroll { uid } => field("unenroll", "uid", validate::uid(uid)),
            Self::Snapshot { pods } => {
                let mut seen = HashSet::with_capacity(pods.len());
                for (i, pod) in pods.iter().enumerate() {
                    pod.check(&format!("snapshot: pods[{i}]"))?;
                    if !seen.insert(pod.uid.as_str()) {
                        return Err(ProtocolError::invalid(format!(
                            "snapshot: pods[{i}].uid: {:?} appears more than once",
                            pod.uid
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

impl Request for ZtunnelRequest {
    fn hello() -> Self {
        Self::Hello {
            version: PROTOCOL_VERSION,
        }
    }

    fn hello_version(&self) -> Option<u32> {
        match self {
            Self::Hello { version } => Some(*version),
            _ => None,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Enroll { .. } => "enroll",
            Self::Unenroll { .. } => "unenroll",
            Self::Snapshot { .. } => "snapshot",
        }
    }
}

impl Message for AgentRequest {
    fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            Self::Hello { .. } => Ok(()),
            Self::Add { pod } => pod.check("add: pod", true),
            Self::Del { pod } => pod.check("del: pod", false),
            Self::Check { pod } => pod.check("check: pod", true),
        }
    }
}

impl Request for AgentRequest {
    fn hello() -> Self {
        Self::Hello {
            version: PROTOCOL_VERSION,
        }
    }

    fn hello_version(&self) -> Option<u32> {
        match self {
            Self::Hello { version } => Some(*version),
            _ => None,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Add { .. } => "add",
            Self::Del { .. } => "del",
            Self::Check { .. } => "check",
        }
    }
}

impl Message for Reply {
    fn validate(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

impl Reply {
    /// A plain `ack`.
    pub fn ack() -> Self {
        Self::Ack { enrolled: None }
    }

    /// An `error` reply.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Error {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Invalid => "invalid",
            Self::UnknownPod => "unknown_pod",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        })
    }
}

impl ProtocolError {
    /// The message exceeded [`MAX_MESSAGE_BYTES`].
    pub fn is_oversize(&self) -> bool {
        self.kind == ProtocolErrorKind::Oversize
    }

    /// The stream ended in the middle of a message.
    pub fn is_truncated(&self) -> bool {
        self.kind == ProtocolErrorKind::Truncated
    }

    /// The message was not valid JSON of a known message type with the right field types.
    pub fn is_malformed(&self) -> bool {
        self.kind == ProtocolErrorKind::Malformed
    }

    /// The message decoded but a field failed validation.
    pub fn is_invalid(&self) -> bool {
        self.kind == ProtocolErrorKind::Invalid
    }

    pub(crate) fn invalid(message: String) -> Self {
        Self {
            kind: ProtocolErrorKind::Invalid,
            message,
        }
    }

    fn oversize(len: usize) -> Self {
        Self {
            kind: ProtocolErrorKind::Oversize,
            message: format!(
                "message of at least {len} bytes exceeds the limit of {MAX_MESSAGE_BYTES}"
            ),
        }
    }

    fn truncated(len: usize) -> Self {
        Self {
            kind: ProtocolErrorKind::Truncated,
            message: format!("stream ended after {len} bytes of an unterminated message"),
        }
    }
}

impl FrameScanner {
    /// Consumes bytes from `available` up to and including the next newline. Returns how many
    /// bytes were consumed; once a frame is complete, [`Self::take`] yields it.
    pub(crate) fn feed(&mut self, available: &[u8]) -> Result<usize, ProtocolError> {
        let (body, consumed, complete) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        // The newline counts towards the limit, so a body may use MAX_MESSAGE_BYTES - 1.
        if self.buf.len() + body.len() >= MAX_MESSAGE_BYTES {
            return Err(ProtocolError::oversize(self.buf.len() + body.len() + 1));
        }
        self.buf.extend_from_slice(body);
        self.complete = complete;
        Ok(consumed)
    }

    /// Whether a whole frame has been read.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Takes the completed frame (without its newline) and resets the scanner.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.complete = false;
        std::mem::take(&mut self.buf)
    }

    /// The stream ended: fine between frames, an error inside one.
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::truncated(self.buf.len()))
        }
    }
}

/// Encodes a message as one line, newline included, after validating it.
pub fn encode<M: Message>(message: &M) -> Result<Vec<u8>, ProtocolError> {
    message.validate()?;
    let mut line = serde_json::to_vec(message).map_err(|e| ProtocolError {
        kind: ProtocolErrorKind::Malformed,
        message: format!("cannot encode: {e}"),
    })?;
    line.push(b'\n');
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::oversize(line.len()));
    }
    Ok(line)
}

/// Decodes and validates one frame (a line without its newline).
pub fn decode<M: Message>(frame: &[u8]) -> Result<M, ProtocolError> {
    if frame.len() >= MAX_MESSAGE_BYTES {
        return Err(ProtocolError::oversize(frame.len() + 1));
    }
    let message: M = serde_json::from_slice(frame).map_err(|e| ProtocolError {
        kind: ProtocolErrorKind::Malformed,
        message: format!("malformed message: {e}"),
    })?;
    message.validate()?;
    Ok(message)
}

fn field(at: &str, name: &str, result: Result<(), String>) -> Result<(), ProtocolError> {
    result.map_err(|reason| ProtocolError::invalid(format!("{at}.{name}: {reason}")))
}
