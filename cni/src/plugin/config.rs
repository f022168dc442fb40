//! Decoding of the plugin's inputs: the network configuration on stdin and the `CNI_*`
//! environment, each failure mapped to the CNI error code the spec assigns.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{CniError, code};
use crate::client::ClientConfig;
use crate::protocol::PodReport;
use crate::validate;

/// CNI spec versions this plugin speaks, oldest first. 0.3.0 introduced chaining.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest supported version, used when the input names none we support.
pub(super) const LATEST_VERSION: &str = "1.1.0";

const MAX_CONNECT_TIMEOUT_MS: u64 = 60_000;
const MAX_CALL_TIMEOUT_MS: u64 = 300_000;

/// The `CNI_*` environment variables the plugin was started with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    // `Err(())` marks a variable that was set but not valid UTF-8.
    vars: BTreeMap<String, Result<String, ()>>,
}

/// The decoded network configuration.
#[derive(Debug)]
pub(super) struct NetConf {
    pub(super) cni_version: &'static str,
    pub(super) prev_result: Option<Map<String, Value>>,
    pub(super) agent_socket: PathBuf,
    pub(super) client: ClientConfig,
    pub(super) exclude_namespaces: Vec<String>,
}

/// Pod identity from `CNI_ARGS`.
#[derive(Debug)]
pub(super) struct PodArgs {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) uid: Option<String>,
    pub(super) service_account: Option<String>,
}

impl CniEnv {
    /// Builds the environment from `(name, value)` pairs; only `CNI_*` names are kept.
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), Ok(v.into())))
            .filter(|(k, _)| k.starts_with("CNI_"))
            .collect();
        Self { vars }
    }

    /// Builds the environment from the process's variables; values that are not UTF-8 are
    /// kept as invalid so they are reported rather than silently ignored.
    pub fn from_os_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let vars = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let k = k.into_string().ok()?;
                k.starts_with("CNI_")
                    .then(|| (k, v.into_string().map_err(|_| ())))
            })
            .collect();
        Self { vars }
    }

    /// The variable's value; an error if it is not valid UTF-8.
    pub(super) fn get(&self, name: &str) -> Result<Option<&str>, CniError> {
        match self.vars.get(name) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value)),
            Some(Err(())) => Err(CniError::env(name, "is not valid UTF-8")),
        }
    }

    /// The variable's value, which must be set and non-empty.
    pub(super) fn required(&self, name: &str) -> Result<&str, CniError> {
        match self.get(name)? {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(CniError::env(name, "is required")),
        }
    }

    /// A required variable that must pass `check`.
    pub(super) fn checked(
        &self,
        name: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Result<&str, CniError> {
        let value = self.required(name)?;
        check(value).map_err(|reason| CniError::env(name, &format!("{value:?} {reason}")))?;
        Ok(value)
    }
}

/// The `cniVersion` to answer in: the input's, when it is one we support.
pub(super) fn reply_version(stdin: &[u8]) -> &'static str {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().and_then(supported))
        .unwrap_or(LATEST_VERSION)
}

/// Whether `version` is at least `minimum` (both supported versions).
pub(super) fn at_least(version: &str, minimum: &str) -> bool {
    let rank = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    rank(version) >= rank(minimum)
}

fn supported(version: &str) -> Option<&'static str> {
    SUPPORTED_VERSIONS.iter().copied().find(|v| *v == version)
}

impl NetConf {
    /// Decodes the network configuration from stdin.
    pub(super) fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode the network configuration")
                .details(e.to_string())
        })?;
        let Value::Object(mut conf) = value else {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration is not a JSON object",
            ));
        };
        let version = string_key(&conf, "cniVersion")?;
        let cni_version = supported(version).ok_or_else(|| {
            CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {version:?} is not supported"),
            )
            .details(format!(
                "supported versions: {}",
                SUPPORTED_VERSIONS.join(", ")
            ))
        })?;
        string_key(&conf, "name")?;
        string_key(&conf, "type")?;
        let agent_socket = string_key(&conf, "agentSocket")?;
        validate::absolute_path(agent_socket)
            .map_err(|reason| invalid_key("agentSocket", &reason))?;
        let agent_socket = PathBuf::from(agent_socket);
        let defaults = ClientConfig::default();
        let client = ClientConfig {
            connect_timeout: millis_key(&conf, "agentConnectTimeoutMs", MAX_CONNECT_TIMEOUT_MS)?
                .unwrap_or(defaults.connect_timeout),
            call_timeout: millis_key(&conf, "agentCallTimeoutMs", MAX_CALL_TIMEOUT_MS)?
                .unwrap_or(defaults.call_timeout),
        };
        let exclude_namespaces = match conf.get("excludeNamespaces") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let ns = item.as_str().ok_or_else(|| {
                        invalid_key("excludeNamespaces", "must be a list of strings")
                    })?;
                    validate::dns_label(ns).map_err(|reason| {
                        invalid_key("excludeNamespaces", &format!("{ns:?} {reason}"))
                    })?;
                    Ok(ns.to_owned())
                })
                .collect::<Result<_, CniError>>()?,
            Some(_) => {
                return Err(invalid_key(
                    "excludeNamespaces",
                    "must be a list of strings",
                ));
            }
        };
        let prev_result = match conf.remove("prevResult") {
            None | Some(Value::Null) => None,
            Some(Value::Object(prev)) => Some(prev),
            Some(_) => return Err(invalid_key("prevResult", "must be an object")),
        };
        Ok(Self {
            cni_version,
            prev_result,
            agent_socket,
            client,
            exclude_namespaces,
        })
    }

    /// Whether the namespace is excluded from the mesh by configuration.
    pub(super) fn excludes(&self, namespace: &str) -> bool {
        self.exclude_namespaces.iter().any(|ns| ns == namespace)
    }
}

impl PodArgs {
    /// Parses `CNI_ARGS` (`KEY=VALUE;KEY=VALUE`) and extracts the Kubernetes pod identity.
    /// Keys other than ours are ignored: a chained plugin shares `CNI_ARGS` with others.
    pub(super) fn parse(env: &CniEnv) -> Result<Self, CniError> {
        let raw = env.get("CNI_ARGS")?.unwrap_or("");
        let mut args = BTreeMap::new();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| CniError::env("CNI_ARGS", &format!("{pair:?} is not KEY=VALUE")))?;
            if key.is_empty() {
                return Err(CniError::env(
                    "CNI_ARGS",
                    &format!("{pair:?} has an empty key"),
                ));
            }
            if args.insert(key, value).is_some() {
                return Err(CniError::env("CNI_ARGS", &format!("{key} is given twice")));
            }
        }
        let required = |key: &str, check: fn(&str) -> Result<(), String>| {
            let value = args
                .get(key)
                .copied()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| CniError::env("CNI_ARGS", &format!("{key} is required")))?;
            check(value).map_err(|reason| {
                CniError::env("CNI_ARGS", &format!("{key}={value:?} {reason}"))
            })?;
            Ok::<_, CniError>(value.to_owned())
        };
        let optional = |key: &str, check: fn(&str) -> Result<(), String>| match args
            .get(key)
            .copied()
            .filter(|v| !v.is_empty())
        {
            None => Ok(None),
            Some(value) => check(value)
                .map(|()| Some(value.to_owned()))
                .map_err(|reason| CniError::env("CNI_ARGS", &format!("{key}={value:?} {reason}"))),
        };
        Ok(Self {
            namespace: required("K8S_POD_NAMESPACE", validate::dns_label)?,
            name: required("K8S_POD_NAME", validate::dns_subdomain)?,
            uid: optional("K8S_POD_UID", validate::uid)?,
            // Not a standard runtime argument; honoured when a runtime or wrapper sets it.
            service_account: optional("K8S_POD_SERVICE_ACCOUNT", validate::dns_subdomain)?,
        })
    }

    /// The report sent to the node agent.
    pub(super) fn report(self, container_id: &str, netns: Option<&str>) -> PodReport {
        PodReport {
            container_id: container_id.to_owned(),
            namespace: self.namespace,
            name: self.name,
            uid: self.uid,
            service_account: self.service_account,
            netns: netns.map(str::to_owned),
        }
    }
}

fn string_key<'a>(conf: &'a Map<String, Value>, key: &str) -> Result<&'a str, CniError> {
    match conf.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(invalid_key(key, "must not be empty")),
        None | Some(Value::Null) => Err(invalid_key(key, "is required")),
        Some(_) => Err(invalid_key(key, "must be a string")),
    }
}

fn millis_key(
    conf: &Map<String, Value>,
    key: &str,
    max: u64,
) -> Result<Option<Duration>, CniError> {
    match conf.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(ms) if (1..=max).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
            _ => Err(invalid_key(
                key,
                &format!("must be an integer from 1 to {max}, got {value}"),
            )),
        },
    }
}

fn invalid_key(key: &str, reason: &str) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        format!("network configuration key {key:?} {reason}"),
    )
}
