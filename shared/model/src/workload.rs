//! Workloads: one per pod, with the identity and metadata the proxies need.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ambit_identity::{DEFAULT_TRUST_DOMAIN, SpiffeId};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorContext, ModelError, check_dns_label, check_dns_subdomain};
use crate::labels::Labels;
use crate::waypoint::WaypointRef;

const KIND: &str = "Workload";

/// Labels that name the canonical service, most specific first (as Istio reads them).
const CANONICAL_NAME_LABELS: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
/// Labels that name the canonical revision, most specific first.
const CANONICAL_REVISION_LABELS: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];
/// The canonical revision when no label names one.
const DEFAULT_REVISION: &str = "latest";

/// How traffic reaches a workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransportProtocol {
    /// Enrolled in the ambient mesh: HBONE to its ztunnel.
    Hbone,
    /// Not enrolled: plain TCP.
    #[default]
    Tcp,
}

/// The input a [`Workload`] is built from, and its serialized form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// The pod's Kubernetes UID.
    pub uid: String,
    /// The pod name.
    pub name: String,
    /// The pod namespace.
    pub namespace: String,
    /// The pod's service account; Kubernetes defaults it to `default`.
    pub service_account: String,
    /// The node the pod runs on.
    pub node: String,
    /// The pod IPs (one per family on dual-stack clusters).
    pub ips: Vec<IpAddr>,
    /// The pod labels.
    #[serde(default)]
    pub labels: Labels,
    /// The mesh trust domain; `cluster.local` if empty.
    #[serde(default)]
    pub trust_domain: String,
    /// HBONE when the pod is enrolled in the ambient mesh.
    #[serde(default)]
    pub protocol: TransportProtocol,
    /// The waypoint this workload's traffic goes through, if bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointRef>,
    /// The network the pod is on (multi-network meshes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// A validated workload. Built with [`Workload::new`]; serializes as its [`WorkloadSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WorkloadSpec", into = "WorkloadSpec")]
pub struct Workload {
    spec: WorkloadSpec,
    identity: SpiffeId,
    canonical_name: String,
    canonical_revision: String,
}

impl Workload {
    /// Validates `spec` and derives the identity and the canonical service name and revision.
    pub fn new(mut spec: WorkloadSpec) -> Result<Self, ModelError> {
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &spec.namespace,
            name: &spec.name,
        };
        ctx.check_metadata()?;
        if spec.uid.is_empty() {
            return Err(ctx.err("uid", "must not be empty"));
        }
        check_dns_subdomain(&spec.node).map_err(|reason| ctx.err("node", reason))?;
        if spec.ips.is_empty() {
            return Err(ctx.err("ips", "a workload needs at least one IP"));
        }
        let mut seen = BTreeSet::new();
        for (i, ip) in spec.ips.iter().enumerate() {
            if !seen.insert(ip) {
                return Err(ctx.err(format!("ips[{i}]"), format!("{ip} is listed twice")));
            }
        }
        if let Some(key) = spec.labels.keys().find(|key| key.is_empty()) {
            return Err(ctx.err(format!("labels[{key:?}]"), "label keys must not be empty"));
        }
        if let Some(network) = &spec.network {
            check_dns_label(network).map_err(|reason| ctx.err("network", reason))?;
        }
        if spec.trust_domain.is_empty() {
            spec.trust_domain = DEFAULT_TRUST_DOMAIN.to_owned();
        }
        let identity = SpiffeId::new(&spec.trust_domain, &spec.namespace, &spec.service_account)
            .map_err(|err| ctx.err("serviceAccount", err.to_string()))?;
        let canonical_name = first_label(&spec.labels, &CANONICAL_NAME_LABELS)
            .unwrap_or(&spec.name)
            .to_owned();
        let canonical_revision = first_label(&spec.labels, &CANONICAL_REVISION_LABELS)
            .unwrap_or(DEFAULT_REVISION)
            .to_owned();
        Ok(Self {
            spec,
            identity,
            canonical_name,
            canonical_revision,
        })
    }

    /// The pod UID, the workload's key.
    pub fn uid(&self) -> &str {
        &self.spec.uid
    }

    /// The pod name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The pod namespace.
    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    /// The pod's service account.
    pub fn service_account(&self) -> &str {
        &self.spec.service_account
    }

    /// The node the pod runs on.
    pub fn node(&self) -> &str {
        &self.spec.node
    }

    /// The pod IPs.
    pub fn ips(&self) -> &[IpAddr] {
        &self.spec.ips
    }

    /// The pod labels.
    pub fn labels(&self) -> &Labels {
        &self.spec.labels
    }

    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// HBONE when enrolled in the mesh, TCP otherwise.
    pub fn protocol(&self) -> TransportProtocol {
        self.spec.protocol
    }

    /// Whether the workload is enrolled in the ambient mesh.
    pub fn is_enrolled(&self) -> bool {
        self.spec.protocol == TransportProtocol::Hbone
    }

    /// The waypoint bound to this workload, if any.
    pub fn waypoint(&self) -> Option<&WaypointRef> {
        self.spec.waypoint.as_ref()
    }

    /// The network the pod is on, if the mesh spans several.
    pub fn network(&self) -> Option<&str> {
        self.spec.network.as_deref()
    }

    /// The canonical service for metrics (Istio's `canonical-name` rules, else the pod name).
    pub fn canonical_name(&self) -> &str {
        &self.canonical_name
    }

    /// The canonical revision for metrics (Istio's `canonical-revision` rules, else `latest`).
    pub fn canonical_revision(&self) -> &str {
        &self.canonical_revision
    }

    /// The validated input, e.g. to change one field and build a new workload.
    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }
}

impl TryFrom<WorkloadSpec> for Workload {
    type Error = ModelError;

    fn try_from(spec: WorkloadSpec) -> Result<Self, Self::Error> {
        Self::new(spec)
    }
}

impl From<Workload> for WorkloadSpec {
    fn from(workload: Workload) -> Self {
        workload.spec
    }
}

fn first_label<'a>(labels: &'a Labels, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|key| labels.get(*key))
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkloadSpec {
        WorkloadSpec {
            uid: "uid-1".into(),
            name: "web-0".into(),
            namespace: "shop".into(),
            service_account: "web".into(),
            node: "node-a".into(),
            ips: vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            protocol: TransportProtocol::Hbone,
            ..WorkloadSpec::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn derives_identity_in_the_default_trust_domain() {
        let workload = Workload::new(spec()).unwrap();
        assert_eq!(
            workload.identity().to_string(),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        assert!(workload.is_enrolled());
        let custom = Workload::new(WorkloadSpec {
            trust_domain: "example.org".into(),
            ..spec()
        })
        .unwrap();
        assert_eq!(custom.identity().trust_domain(), "example.org");
    }

    #[test]
    fn canonical_name_and_revision_follow_istio_precedence() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case<'_>] = &[
            (&[], "web-0", "latest"),
            (&[("app", "a"), ("version", "v1")], "a", "v1"),
            (
                &[
                    ("app", "a"),
                    ("app.kubernetes.io/name", "b"),
                    ("app.kubernetes.io/version", "2"),
                ],
                "b",
                "2",
            ),
            (
                &[
                    ("app", "a"),
                    ("app.kubernetes.io/name", "b"),
                    ("service.istio.io/canonical-name", "c"),
                    ("version", "v1"),
                    ("service.istio.io/canonical-revision", "r9"),
                ],
                "c",
                "r9",
            ),
            (&[("app", "")], "web-0", "latest"),
        ];
        for (pairs, name, revision) in cases {
            let workload = Workload::new(WorkloadSpec {
                labels: labels(pairs),
                ..spec()
            })
            .unwrap();
            assert_eq!(workload.canonical_name(), *name, "{pairs:?}");
            assert_eq!(workload.canonical_revision(), *revision, "{pairs:?}");
        }
    }

    #[test]
    fn rejects_invalid_fields_naming_them() {
        let cases: Vec<(WorkloadSpec, &str)> = vec![
            (
                WorkloadSpec {
                    uid: String::new(),
                    ..spec()
                },
                "uid",
            ),
            (
                WorkloadSpec {
                    name: "Web".into(),
                    ..spec()
                },
                "name",
            ),
            (
                WorkloadSpec {
                    namespace: String::new(),
                    ..spec()
                },
                "namespace",
            ),
            (
                WorkloadSpec {
                    service_account: "Bad_SA".into(),
                    ..spec()
                },
                "serviceAccount",
            ),
            (
                WorkloadSpec {
                    node: String::new(),
                    ..spec()
                },
                "node",
            ),
            (
                WorkloadSpec {
                    ips: vec![],
                    ..spec()
                },
                "ips",
            ),
            (
                WorkloadSpec {
                    ips: vec!["10.1.0.5".parse().unwrap(), "10.1.0.5".parse().unwrap()],
                    ..spec()
                },
                "ips[1]",
            ),
            (
                WorkloadSpec {
                    trust_domain: "Bad TD".into(),
                    ..spec()
                },
                "serviceAccount",
            ),
            (
                WorkloadSpec {
                    network: Some("Net 1".into()),
                    ..spec()
                },
                "network",
            ),
            (
                WorkloadSpec {
                    labels: labels(&[("", "x")]),
                    ..spec()
                },
                "labels[\"\"]",
            ),
        ];
        for (bad, field) in cases {
            let err = Workload::new(bad).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert_eq!(err.kind(), "Workload");
        }
    }

    #[test]
    fn serde_round_trip_validates() {
        let workload = Workload::new(WorkloadSpec {
            labels: labels(&[("app", "web")]),
            ..spec()
        })
        .unwrap();
        let json = serde_json::to_string(&workload).unwrap();
        assert!(json.contains("\"serviceAccount\":\"web\""), "{json}");
        let back: Workload = serde_json::from_str(&json).unwrap();
        assert_eq!(back, workload);
        assert_eq!(back.canonical_name(), "web");
        let invalid = json.replace("\"ips\":[\"10.1.0.5\",\"fd00::5\"]", "\"ips\":[]");
        assert_ne!(invalid, json);
        let err = serde_json::from_str::<Workload>(&invalid).unwrap_err();
        assert!(err.to_string().contains("ips"), "{err}");
    }
}
