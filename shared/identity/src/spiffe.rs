//! SPIFFE identities of mesh workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Parsing is strict: an identity is what authorization decisions are made on, so anything
//! that is not exactly the Istio form, with a valid trust domain and Kubernetes names, is
//! refused rather than normalised.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The trust domain used when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";
/// SPIFFE ID spec §2.1: a trust domain is at most 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// SPIFFE ID spec §2.3: a SPIFFE ID is at most 2048 bytes.
const MAX_ID_LEN: usize = 2048;
/// Kubernetes namespaces are RFC 1123 labels.
const MAX_NAMESPACE_LEN: usize = 63;
/// Kubernetes service accounts are RFC 1123 subdomains.
const MAX_SERVICE_ACCOUNT_LEN: usize = 253;

/// Why a string is not a valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID is {0} bytes long, more than the 2048 allowed")]
    TooLong(usize),
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    MissingScheme,
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    #[error("trust domain is {0} bytes long, more than the 255 allowed")]
    TrustDomainTooLong(usize),
    #[error(
        "trust domain {domain:?} has invalid character {character:?} (allowed: a-z, 0-9, '.', '-', '_')"
    )]
    InvalidTrustDomainChar { domain: String, character: char },
    #[error("SPIFFE ID must not carry a port, user info, query or fragment")]
    UnexpectedUriPart,
    #[error("path {0:?} is not of the form /ns/<namespace>/sa/<service-account>")]
    BadPath(String),
    #[error("namespace {name:?} is not a valid Kubernetes namespace: {reason}")]
    InvalidNamespace { name: String, reason: &'static str },
    #[error("service account {name:?} is not a valid Kubernetes service account name: {reason}")]
    InvalidServiceAccount { name: String, reason: &'static str },
}

/// A workload identity. Cheap to clone (one shared allocation).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    inner: Arc<Parts>,
}

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Parts {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(trust_domain)?;
        validate_namespace(namespace)?;
        validate_service_account(service_account)?;
        Ok(Self {
            inner: Arc::new(Parts {
                trust_domain: trust_domain.to_owned(),
                namespace: namespace.to_owned(),
                service_account: service_account.to_owned(),
            }),
        })
    }

    /// Parses `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub fn parse(uri: &str) -> Result<Self, SpiffeIdError> {
        if uri.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if uri.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(uri.len()));
        }
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or(SpiffeIdError::MissingScheme)?;
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if trust_domain.contains([':', '@']) || path.contains(['?', '#']) {
            return Err(SpiffeIdError::UnexpectedUriPart);
        }
        validate_trust_domain(trust_domain)?;
        let mut segments = path.split('/');
        // `path` starts with '/', so the first split item is always empty.
        let leading = segments.next();
        let (Some(""), Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            leading,
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(SpiffeIdError::BadPath(path.to_owned()));
        };
        Self::new(trust_domain, namespace, service_account)
    }

    pub fn trust_domain(&self) -> &str {
        &self.inner.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.inner.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.inner.trust_domain, self.inner.namespace, self.inner.service_account
        )
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Validates a trust domain name by the SPIFFE ID spec: lowercase letters, digits, '.', '-', '_'.
pub fn validate_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    if domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(domain.len()));
    }
    if let Some(character) = domain
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(SpiffeIdError::InvalidTrustDomainChar {
            domain: domain.to_owned(),
            character,
        });
    }
    Ok(())
}

fn validate_namespace(name: &str) -> Result<(), SpiffeIdError> {
    check_dns_label(name, MAX_NAMESPACE_LEN).map_err(|reason| SpiffeIdError::InvalidNamespace {
        name: name.to_owned(),
        reason,
    })
}

fn validate_service_account(name: &str) -> Result<(), SpiffeIdError> {
    let invalid = |reason| SpiffeIdError::InvalidServiceAccount {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_SERVICE_ACCOUNT_LEN {
        return Err(invalid("it is longer than 253 characters"));
    }
    // An RFC 1123 subdomain is dot-separated labels; each label has the label rules.
    for label in name.split('.') {
        check_dns_label(label, MAX_SERVICE_ACCOUNT_LEN).map_err(invalid)?;
    }
    Ok(())
}

/// RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric.
fn check_dns_label(label: &str, max_len: usize) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("it has an empty label");
    }
    if label.len() > max_len {
        return Err("it is too long");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_istio_form() {
        let uri = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
        let id = SpiffeId::parse(uri).unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(id.to_string(), uri);
        assert_eq!(uri.parse::<SpiffeId>().unwrap(), id);
    }

    #[test]
    fn accepts_dotted_service_accounts_and_underscored_domains() {
        let id = SpiffeId::parse("spiffe://my_td.example-1/ns/a1/sa/sa.with.dots").unwrap();
        assert_eq!(id.service_account(), "sa.with.dots");
    }

    #[test]
    fn rejects_malformed_ids_with_a_specific_error() {
        use SpiffeIdError as E;
        type Check = fn(&SpiffeIdError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, E::Empty)),
            ("http://cluster.local/ns/a/sa/b", |e| {
                matches!(e, E::MissingScheme)
            }),
            ("SPIFFE://cluster.local/ns/a/sa/b", |e| {
                matches!(e, E::MissingScheme)
            }),
            ("spiffe:///ns/a/sa/b", |e| matches!(e, E::EmptyTrustDomain)),
            ("spiffe://Cluster.local/ns/a/sa/b", |e| {
                matches!(e, E::InvalidTrustDomainChar { character: 'C', .. })
            }),
            ("spiffe://cluster.local:443/ns/a/sa/b", |e| {
                matches!(e, E::UnexpectedUriPart)
            }),
            ("spiffe://user@cluster.local/ns/a/sa/b", |e| {
                matches!(e, E::UnexpectedUriPart)
            }),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", |e| {
                matches!(e, E::UnexpectedUriPart)
            }),
            ("spiffe://cluster.local/ns/a/sa/b#frag", |e| {
                matches!(e, E::UnexpectedUriPart)
            }),
            ("spiffe://cluster.local", |e| matches!(e, E::BadPath(_))),
            ("spiffe://cluster.local/", |e| matches!(e, E::BadPath(_))),
            ("spiffe://cluster.local/ns/a", |e| {
                matches!(e, E::BadPath(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b/", |e| {
                matches!(e, E::BadPath(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b/c", |e| {
                matches!(e, E::BadPath(_))
            }),
            ("spiffe://cluster.local/sa/b/ns/a", |e| {
                matches!(e, E::BadPath(_))
            }),
            ("spiffe://cluster.local//ns/a/sa/b", |e| {
                matches!(e, E::BadPath(_))
            }),
            ("spiffe://cluster.local/ns//sa/b", |e| {
                matches!(e, E::InvalidNamespace { .. })
            }),
            ("spiffe://cluster.local/ns/Default/sa/b", |e| {
                matches!(e, E::InvalidNamespace { .. })
            }),
            ("spiffe://cluster.local/ns/-a/sa/b", |e| {
                matches!(e, E::InvalidNamespace { .. })
            }),
            ("spiffe://cluster.local/ns/a.b/sa/b", |e| {
                matches!(e, E::InvalidNamespace { .. })
            }),
            ("spiffe://cluster.local/ns/../sa/b", |e| {
                matches!(e, E::InvalidNamespace { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/", |e| {
                matches!(e, E::InvalidServiceAccount { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/b..c", |e| {
                matches!(e, E::InvalidServiceAccount { .. })
            }),
            ("spiffe://cluster.local/ns/a/sa/b%20c", |e| {
                matches!(e, E::InvalidServiceAccount { .. })
            }),
        ];
        for (input, expected) in cases {
            let err = SpiffeId::parse(input).expect_err(input);
            assert!(expected(&err), "{input:?} gave unexpected error {err:?}");
            // Every error must explain itself.
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn enforces_length_limits() {
        let long_ns = "a".repeat(64);
        assert!(matches!(
            SpiffeId::new("cluster.local", &long_ns, "sa"),
            Err(SpiffeIdError::InvalidNamespace { .. })
        ));
        assert!(SpiffeId::new("cluster.local", &"a".repeat(63), "sa").is_ok());
        let long_td = "a".repeat(256);
        assert!(matches!(
            SpiffeId::new(&long_td, "ns", "sa"),
            Err(SpiffeIdError::TrustDomainTooLong(256))
        ));
        let huge = format!("spiffe://{}", "a".repeat(3000));
        assert!(matches!(
            SpiffeId::parse(&huge),
            Err(SpiffeIdError::TooLong(_))
        ));
    }
}
