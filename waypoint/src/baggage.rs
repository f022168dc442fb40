//! The source's description in the HBONE `baggage` header (W3C Baggage), for telemetry only.
//!
//! A waypoint's config covers its own scope, so a client pod outside it (another namespace,
//! another node's ztunnel) is not in the snapshot and its metrics labels would read
//! `unknown`. The client's ztunnel describes the source in `baggage` on the CONNECT
//! (`k8s.namespace.name`, `k8s.<kind>.name`, `service.name`, `service.version`,
//! `k8s.cluster.name`, as Istio's ztunnel does), and the waypoint labels requests with it.
//!
//! The header is a claim by the peer, so it never feeds policy, and a claim whose namespace
//! differs from the namespace of the peer's verified SPIFFE identity is dropped as a whole.

use ambit_identity::SpiffeId;
use http::HeaderMap;
use percent_encoding::percent_decode_str;
use thiserror::Error;

/// Longest `baggage` value read; W3C Baggage allows senders 8192 bytes.
const MAX_BAGGAGE_BYTES: usize = 8192;
/// Most list members read; W3C Baggage allows senders 64.
const MAX_MEMBERS: usize = 64;

/// What the source's ztunnel says about the source workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    /// `k8s.namespace.name`.
    pub namespace: Option<String>,
    /// `k8s.deployment.name`, `k8s.pod.name`, … (the workload, whatever its kind).
    pub workload: Option<String>,
    /// `service.name`: the canonical service.
    pub canonical_service: Option<String>,
    /// `service.version`: the canonical revision.
    pub canonical_revision: Option<String>,
    /// `k8s.cluster.name`.
    pub cluster: Option<String>,
}

/// Why a `baggage` value was not used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BaggageError {
    /// More than [`MAX_BAGGAGE_BYTES`].
    #[error("baggage is {0} bytes, more than the {MAX_BAGGAGE_BYTES} read")]
    TooLong(usize),
    /// More than [`MAX_MEMBERS`] list members.
    #[error("baggage has more than {MAX_MEMBERS} members")]
    TooManyMembers,
    /// Not visible ASCII.
    #[error("baggage is not a visible-ASCII string")]
    NotText,
    /// A member without `=`, or with an empty key.
    #[error("baggage member {0:?} is not key=value")]
    BadMember(String),
    /// A value that is not UTF-8 once percent-decoded.
    #[error("baggage value of {0:?} is not UTF-8")]
    BadValue(String),
}

impl PeerMetadata {
    /// Parses a W3C `baggage` value, keeping the keys above and ignoring others (and every
    /// member's properties). Empty list members are allowed, as the spec says.
    pub fn parse(value: &str) -> Result<Self, BaggageError> {
        if value.len() > MAX_BAGGAGE_BYTES {
            return Err(BaggageError::TooLong(value.len()));
        }
        let mut metadata = Self::default();
        let mut members = 0;
        for member in value.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            members += 1;
            if members > MAX_MEMBERS {
                return Err(BaggageError::TooManyMembers);
            }
            // Properties follow the first `;` and say nothing we use.
            let pair = member.split(';').next().unwrap_or_default();
            let Some((key, raw_value)) = pair.split_once('=') else {
                return Err(BaggageError::BadMember(member.to_owned()));
            };
            let key = key.trim_matches([' ', '\t']);
            if key.is_empty() {
                return Err(BaggageError::BadMember(member.to_owned()));
            }
            let decoded = percent_decode_str(raw_value.trim_matches([' ', '\t']))
                .decode_utf8()
                .map_err(|_| BaggageError::BadValue(key.to_owned()))?;
            if decoded.is_empty() {
                continue;
            }
            let decoded = decoded.into_owned();
            match key {
                "k8s.namespace.name" => metadata.namespace = Some(decoded),
                "k8s.cluster.name" => metadata.cluster = Some(decoded),
                "service.name" => metadata.canonical_service = Some(decoded),
                "service.version" => metadata.canonical_revision = Some(decoded),
                // `k8s.deployment.name` beats `k8s.pod.name` when both are sent: metrics
                // aggregate by workload, not by pod.
                _ if is_workload_key(key)
                    && (metadata.workload.is_none() || key != "k8s.pod.name") =>
                {
                    metadata.workload = Some(decoded);
                }
                _ => {}
            }
        }
        Ok(metadata)
    }

    /// The source's metadata from a CONNECT's headers, if it sent a usable `baggage` whose
    /// namespace (when given) is the one of its verified identity. Problems are logged at
    /// debug: a bad header costs labels, never the request.
    pub fn from_connect(headers: &HeaderMap, peer: &SpiffeId) -> Option<Self> {
        let value = headers.get("baggage")?;
        let Ok(text) = value.to_str() else {
            tracing::debug!(error = %BaggageError::NotText, "ignoring baggage");
            return None;
        };
        let metadata = match Self::parse(text) {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::debug!(%error, "ignoring baggage");
                return None;
            }
        };
        match &metadata.namespace {
            Some(namespace) if namespace != peer.namespace() => {
                tracing::debug!(
                    claimed = %namespace,
                    %peer,
                    "ignoring baggage: its namespace is not the peer's"
                );
                None
            }
            _ => Some(metadata),
        }
    }
}

/// `k8s.<kind>.name` for a workload kind (not the namespace, cluster or node).
fn is_workload_key(key: &str) -> bool {
    let Some(kind) = key
        .strip_prefix("k8s.")
        .and_then(|rest| rest.strip_suffix(".name"))
    else {
        return false;
    };
    matches!(
        kind,
        "pod" | "deployment" | "replicaset" | "statefulset" | "daemonset" | "job" | "cronjob"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn peer(namespace: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", namespace, "client").unwrap()
    }

    #[test]
    fn reads_what_ztunnel_sends() {
        let metadata = PeerMetadata::parse(
            "k8s.namespace.name=shop,k8s.pod.name=cart-7d9f,service.name=cart,service.version=v2",
        )
        .unwrap();
        assert_eq!(
            metadata,
            PeerMetadata {
                namespace: Some("shop".into()),
                workload: Some("cart-7d9f".into()),
                canonical_service: Some("cart".into()),
                canonical_revision: Some("v2".into()),
                cluster: None,
            }
        );
    }

    #[test]
    fn a_deployment_name_beats_the_pod_name_in_either_order() {
        for value in [
            "k8s.pod.name=cart-7d9f,k8s.deployment.name=cart",
            "k8s.deployment.name=cart,k8s.pod.name=cart-7d9f",
        ] {
            let metadata = PeerMetadata::parse(value).unwrap();
            assert_eq!(metadata.workload.as_deref(), Some("cart"), "{value}");
        }
    }

    #[test]
    fn decodes_values_skips_properties_unknown_keys_and_empty_members() {
        let metadata = PeerMetadata::parse(
            " service.name = my%20app ;prop=1 ,, userid=42,k8s.cluster.name=east;ttl",
        )
        .unwrap();
        assert_eq!(metadata.canonical_service.as_deref(), Some("my app"));
        assert_eq!(metadata.cluster.as_deref(), Some("east"));
        assert_eq!(metadata.namespace, None);
        assert_eq!(metadata.workload, None);
    }

    #[test]
    fn refuses_malformed_and_oversized_values() {
        assert_eq!(
            PeerMetadata::parse("service.name"),
            Err(BaggageError::BadMember("service.name".into()))
        );
        assert_eq!(
            PeerMetadata::parse("=v"),
            Err(BaggageError::BadMember("=v".into()))
        );
        assert_eq!(
            PeerMetadata::parse("service.name=%ff"),
            Err(BaggageError::BadValue("service.name".into()))
        );
        let long = format!("k={}", "x".repeat(MAX_BAGGAGE_BYTES));
        assert_eq!(
            PeerMetadata::parse(&long),
            Err(BaggageError::TooLong(long.len()))
        );
        let many = vec!["k=v"; MAX_MEMBERS + 1].join(",");
        assert_eq!(
            PeerMetadata::parse(&many),
            Err(BaggageError::TooManyMembers)
        );
        assert!(PeerMetadata::parse(&vec!["k=v"; MAX_MEMBERS].join(",")).is_ok());
    }

    #[test]
    fn a_claim_for_another_namespace_than_the_identity_is_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "baggage",
            HeaderValue::from_static("k8s.namespace.name=prod,service.name=admin"),
        );
        assert_eq!(PeerMetadata::from_connect(&headers, &peer("dev")), None);
        let metadata = PeerMetadata::from_connect(&headers, &peer("prod")).unwrap();
        assert_eq!(metadata.canonical_service.as_deref(), Some("admin"));
    }

    #[test]
    fn no_or_unreadable_baggage_gives_nothing() {
        let mut headers = HeaderMap::new();
        assert_eq!(PeerMetadata::from_connect(&headers, &peer("a")), None);
        headers.insert("baggage", HeaderValue::from_bytes(b"k=\xff").unwrap());
        assert_eq!(PeerMetadata::from_connect(&headers, &peer("a")), None);
        headers.insert("baggage", HeaderValue::from_static("broken"));
        assert_eq!(PeerMetadata::from_connect(&headers, &peer("a")), None);
    }
}
