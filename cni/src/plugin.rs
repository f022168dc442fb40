//! The chained CNI plugin: a pure function of (environment, stdin, node agent) to
//! (stdout, exit code), so every case is tested without spawning processes.
//!
//! | command | does | output on success |
//! |---|---|---|
//! | `ADD` | reports the pod to the node agent (`add`); fails closed with code 11 if the agent is unreachable or not ready | `prevResult`, unchanged |
//! | `DEL` | reports the pod (`del`); always succeeds, whatever the agent says or whether it runs | nothing |
//! | `CHECK` | asks the agent whether it knows the pod (`check`), cniVersion ≥ 0.4.0 | nothing |
//! | `VERSION` | lists [`SUPPORTED_VERSIONS`] | version object |
//! | `STATUS` | checks the agent answers `hello` (code 50 if not), cniVersion ≥ 1.1.0 | nothing |
//! | `GC` | nothing: the agent reconciles enrollments against its pod watch, cniVersion ≥ 1.1.0 | nothing |
//!
//! Failures print the spec's error object (`cniVersion`, `code`, `msg`, `details`) on stdout
//! and exit with status 1. Codes 1–11 are the spec's; ours are in [`code`] from 100 up.
//!
//! Network configuration keys beyond the spec's (`cniVersion`, `name`, `type`, `prevResult`):
//! - `agentSocket` (required): absolute path of the node agent's unix socket;
//! - `agentConnectTimeoutMs`, `agentCallTimeoutMs` (optional): client deadlines;
//! - `excludeNamespaces` (optional): namespaces never reported, so the pods the mesh itself
//!   depends on (the node agent's own namespace, `kube-system`) can start while the agent is
//!   down instead of deadlocking on fail-closed ADDs. This is an install-time constant, unlike
//!   the ambient labels, which only the agent knows.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::client::{Client, ClientConfig, ClientError};
use crate::protocol::{AgentRequest, ErrorKind, PodReport, Reply};

mod config;
#[cfg(test)]
mod tests;

pub use config::{CniEnv, SUPPORTED_VERSIONS};
use config::{LATEST_VERSION, NetConf, PodArgs, at_least, reply_version};

/// CNI error codes: the spec's well-known ones (1–99) and Ambit's own (100+).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure, e.g. reading stdin.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available to serve ADD (STATUS, CNI 1.1).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The node agent rejected the report as invalid.
    pub const AGENT_REJECTED: u32 = 100;
    /// CHECK: the node agent does not know the pod.
    pub const POD_UNKNOWN: u32 = 101;
    /// The node agent's reply made no sense.
    pub const AGENT_PROTOCOL: u32 = 102;
}

/// Where and how to reach the node agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentTarget {
    /// The agent's unix socket.
    pub socket: PathBuf,
    /// Connect and call deadlines.
    pub client: ClientConfig,
}

/// How the plugin talks to the node agent; [`SocketAgent`] in production, fakes in tests.
pub trait NodeAgent {
    /// Connects (with `hello`), sends one request and returns the reply.
    fn call(&mut self, target: &AgentTarget, request: &AgentRequest) -> Result<Reply, AgentError>;
    /// Connects and exchanges `hello` only.
    fn ping(&mut self, target: &AgentTarget) -> Result<(), AgentError>;
}

/// The production [`NodeAgent`]: one blocking connection per call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketAgent;

/// Why the node agent could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    protocol: bool,
    message: String,
}

/// What the plugin process prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginOutput {
    /// Bytes for stdout: a result, a version object, an error object, or nothing.
    pub stdout: Vec<u8>,
    /// Process exit status: 0 on success, 1 on error.
    pub exit_code: i32,
    /// Human-readable lines for stderr (the runtime logs them).
    pub diagnostics: Vec<String>,
}

/// A CNI error result.
#[derive(Debug)]
struct CniError {
    code: u32,
    msg: String,
    details: Option<String>,
}

enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl NodeAgent for SocketAgent {
    fn call(&mut self, target: &AgentTarget, request: &AgentRequest) -> Result<Reply, AgentError> {
        let mut client = Client::<AgentRequest>::connect(&target.socket, &target.client)?;
        Ok(client.call(request)?)
    }

    fn ping(&mut self, target: &AgentTarget) -> Result<(), AgentError> {
        Client::<AgentRequest>::connect(&target.socket, &target.client)?;
        Ok(())
    }
}

impl AgentError {
    /// The agent could not be reached or did not answer in time.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            protocol: false,
            message: message.into(),
        }
    }

    /// The agent answered something that is not a valid reply.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self {
            protocol: true,
            message: message.into(),
        }
    }

    /// Whether the agent answered garbage (as opposed to not answering).
    pub fn is_protocol(&self) -> bool {
        self.protocol
    }
}

impl From<ClientError> for AgentError {
    fn from(e: ClientError) -> Self {
        if e.is_protocol() || e.rejected_kind().is_some() || e.is_invalid_request() {
            Self::protocol(e.to_string())
        } else {
            Self::unreachable(e.to_string())
        }
    }
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    /// Code 4; the message names the variable, as the spec requires.
    fn env(name: &str, reason: &str) -> Self {
        Self::new(code::INVALID_ENV, format!("{name} {reason}"))
    }

    fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    fn output(&self, cni_version: &str, mut diagnostics: Vec<String>) -> PluginOutput {
        let mut body = json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if let (Some(details), Value::Object(map)) = (&self.details, &mut body) {
            map.insert("details".into(), Value::String(details.clone()));
        }
        diagnostics.push(format!("ambit-cni: error {}: {}", self.code, self.msg));
        PluginOutput {
            stdout: json_line(&body),
            exit_code: 1,
            diagnostics,
        }
    }
}

impl Command {
    fn parse(env: &CniEnv) -> Result<Self, CniError> {
        match env.required("CNI_COMMAND")? {
            "ADD" => Ok(Self::Add),
            "DEL" => Ok(Self::Del),
            "CHECK" => Ok(Self::Check),
            "VERSION" => Ok(Self::Version),
            "STATUS" => Ok(Self::Status),
            "GC" => Ok(Self::Gc),
            other => Err(CniError::env(
                "CNI_COMMAND",
                &format!("{other:?} is not a known command"),
            )),
        }
    }
}

/// Runs one plugin invocation.
pub fn run(env: &CniEnv, stdin: &[u8], agent: &mut dyn NodeAgent) -> PluginOutput {
    let mut diagnostics = Vec::new();
    match dispatch(env, stdin, agent, &mut diagnostics) {
        Ok(stdout) => PluginOutput {
            stdout,
            exit_code: 0,
            diagnostics,
        },
        Err(e) => e.output(reply_version(stdin), diagnostics),
    }
}

/// The error output for a failure before the plugin logic runs (reading stdin).
pub fn io_failure(message: &str) -> PluginOutput {
    CniError::new(code::IO, "cannot read the network configuration from stdin")
        .details(message)
        .output(LATEST_VERSION, Vec::new())
}

fn dispatch(
    env: &CniEnv,
    stdin: &[u8],
    agent: &mut dyn NodeAgent,
    diagnostics: &mut Vec<String>,
) -> Result<Vec<u8>, CniError> {
    let command = Command::parse(env)?;
    if let Command::Version = command {
        return Ok(version(stdin));
    }
    let conf = NetConf::parse(stdin)?;
    let target = AgentTarget {
        socket: conf.agent_socket.clone(),
        client: conf.client.clone(),
    };
    match command {
        Command::Add => add(env, &conf, &target, agent, diagnostics),
        Command::Del => del(env, &target, agent, diagnostics).map(|()| Vec::new()),
        Command::Check => check(env, &conf, &target, agent, diagnostics).map(|()| Vec::new()),
        Command::Status => status(&conf, &target, agent).map(|()| Vec::new()),
        Command::Gc => {
            require_version(&conf, "1.1.0", "GC")?;
            Ok(Vec::new())
        }
        Command::Version => Ok(version(stdin)),
    }
}

/// VERSION answers in the input's cniVersion when supported, else in the newest; a missing
/// or unreadable stdin is not an error (pre-1.0 runtimes send none).
fn version(stdin: &[u8]) -> Vec<u8> {
    json_line(&json!({
        "cniVersion": reply_version(stdin),
        "supportedVersions": SUPPORTED_VERSIONS,
    }))
}

fn add(
    env: &CniEnv,
    conf: &NetConf,
    target: &AgentTarget,
    agent: &mut dyn NodeAgent,
    diagnostics: &mut Vec<String>,
) -> Result<Vec<u8>, CniError> {
    let Some(prev_result) = conf.prev_result.clone() else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "prevResult is missing: ambit-cni is a chained plugin and must follow the plugin that sets up the pod's interface",
        ));
    };
    let report = sandbox_report(env)?;
    let mut result = prev_result;
    // A result must name its version; the runtime has already converted prevResult to ours.
    result
        .entry("cniVersion")
        .or_insert_with(|| Value::String(conf.cni_version.to_owned()));
    let result = json_line(&Value::Object(result));
    if conf.excludes(&report.namespace) {
        diagnostics.push(format!(
            "ambit-cni: namespace {} is excluded; not reporting {}",
            report.namespace, report.name
        ));
        return Ok(result);
    }
    let pod = format!("{}/{}", report.namespace, report.name);
    match agent.call(target, &AgentRequest::Add { pod: report }) {
        Ok(Reply::Ack {
            enrolled: Some(enrolled),
        }) => {
            diagnostics.push(format!("ambit-cni: ADD {pod}: enrolled={enrolled}"));
            Ok(result)
        }
        other => Err(agent_failure("ADD", &pod, other)),
    }
}

fn del(
    env: &CniEnv,
    target: &AgentTarget,
    agent: &mut dyn NodeAgent,
    diagnostics: &mut Vec<String>,
) -> Result<(), CniError> {
    let container_id = sandbox_id(env)?;
    // The netns may already be gone on DEL; report it only when it is usable.
    let netns = env
        .get("CNI_NETNS")?
        .filter(|n| crate::validate::absolute_path(n).is_ok());
    let report = match PodArgs::parse(env) {
        Ok(args) => args.report(container_id, netns),
        // Without a pod identity there is nothing the agent could not find on its own (it
        // reconciles against its pod watch), and failing would wedge the pod's teardown.
        Err(e) => {
            diagnostics.push(format!(
                "ambit-cni: DEL without a reportable pod: {}",
                e.msg
            ));
            return Ok(());
        }
    };
    let pod = format!("{}/{}", report.namespace, report.name);
    match agent.call(target, &AgentRequest::Del { pod: report }) {
        Ok(Reply::Ack { .. }) => diagnostics.push(format!("ambit-cni: DEL {pod}: done")),
        Ok(Reply::Error { kind, message }) => {
            diagnostics.push(format!(
                "ambit-cni: DEL {pod}: agent said {kind}: {message}"
            ));
        }
        Err(e) => diagnostics.push(format!("ambit-cni: DEL {pod}: agent not reached: {e}")),
    }
    Ok(())
}

fn check(
    env: &CniEnv,
    conf: &NetConf,
    target: &AgentTarget,
    agent: &mut dyn NodeAgent,
    diagnostics: &mut Vec<String>,
) -> Result<(), CniError> {
    require_version(conf, "0.4.0", "CHECK")?;
    if conf.prev_result.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "prevResult is missing: CHECK needs the result of the preceding ADD",
        ));
    }
    let report = sandbox_report(env)?;
    if conf.excludes(&report.namespace) {
        return Ok(());
    }
    let pod = format!("{}/{}", report.namespace, report.name);
    match agent.call(target, &AgentRequest::Check { pod: report }) {
        Ok(Reply::Ack {
            enrolled: Some(enrolled),
        }) => {
            diagnostics.push(format!("ambit-cni: CHECK {pod}: enrolled={enrolled}"));
            Ok(())
        }
        other => Err(agent_failure("CHECK", &pod, other)),
    }
}

fn status(conf: &NetConf, target: &AgentTarget, agent: &mut dyn NodeAgent) -> Result<(), CniError> {
    require_version(conf, "1.1.0", "STATUS")?;
    agent.ping(target).map_err(|e| {
        CniError::new(code::NOT_AVAILABLE, "the node agent is not answering").details(e.to_string())
    })
}

/// The pod report for ADD and CHECK, which need the netns and CNI_PATH.
fn sandbox_report(env: &CniEnv) -> Result<PodReport, CniError> {
    let container_id = sandbox_id(env)?;
    env.get("CNI_PATH")?
        .ok_or_else(|| CniError::env("CNI_PATH", "is required"))?;
    let netns = env.checked("CNI_NETNS", crate::validate::absolute_path)?;
    Ok(PodArgs::parse(env)?.report(container_id, Some(netns)))
}

/// The container ID, after checking the variables every sandbox command needs.
fn sandbox_id(env: &CniEnv) -> Result<&str, CniError> {
    let container_id = env.checked("CNI_CONTAINERID", crate::validate::container_id)?;
    env.checked("CNI_IFNAME", crate::validate::ifname)?;
    Ok(container_id)
}

fn require_version(conf: &NetConf, minimum: &str, command: &str) -> Result<(), CniError> {
    if at_least(conf.cni_version, minimum) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{command} needs cniVersion {minimum} or later, the configuration says {}",
                conf.cni_version
            ),
        ))
    }
}

/// Maps everything but a proper `ack` to a CNI error. Transient conditions get code 11 so the
/// runtime retries and the pod never starts outside the mesh it belongs to.
fn agent_failure(command: &str, pod: &str, outcome: Result<Reply, AgentError>) -> CniError {
    let retry = |detail: String| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("{command} {pod}: the node agent cannot take the pod yet"),
        )
        .details(detail)
    };
    match outcome {
        Ok(Reply::Ack { .. }) => CniError::new(
            code::AGENT_PROTOCOL,
            format!("{command} {pod}: the node agent did not say whether the pod is enrolled"),
        ),
        Ok(Reply::Error {
            kind: ErrorKind::UnknownPod,
            message,
        }) if command == "CHECK" => CniError::new(
            code::POD_UNKNOWN,
            format!("{command} {pod}: the node agent does not know the pod"),
        )
        .details(message),
        Ok(Reply::Error {
            kind: ErrorKind::Invalid,
            message,
        }) => CniError::new(
            code::AGENT_REJECTED,
            format!("{command} {pod}: the node agent rejected the report"),
        )
        .details(message),
        Ok(Reply::Error { kind, message }) => retry(format!("{kind}: {message}")),
        Err(e) if e.is_protocol() => CniError::new(
            code::AGENT_PROTOCOL,
            format!("{command} {pod}: bad answer from the node agent"),
        )
        .details(e.to_string()),
        Err(e) => retry(e.to_string()),
    }
}

fn json_line(value: &Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}
