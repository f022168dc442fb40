//! What the evaluator knows about a connection and, at a waypoint, about a request.

use std::net::IpAddr;

use ambit_identity::SpiffeId;

/// The L4 facts of an inbound connection, as ztunnel sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The peer's identity from its mTLS certificate; `None` for plaintext.
    pub source_identity: Option<SpiffeId>,
    /// The peer's address.
    pub source_ip: IpAddr,
    /// The destination pod address.
    pub destination_ip: IpAddr,
    /// The destination (target) port.
    pub destination_port: u16,
}

/// The request-level attributes a waypoint can offer. ztunnel has none, which makes every rule
/// that needs one unevaluable there (see the crate documentation for what that means).
pub trait RequestAttributes {
    /// The HTTP method, e.g. `GET`.
    fn method(&self) -> &str;
    /// The `:authority`/`Host`, without port.
    fn host(&self) -> &str;
    /// The request path, without the query.
    fn path(&self) -> &str;
    /// A request header by lowercase name.
    fn header(&self, name: &str) -> Option<&str>;
    /// `iss/sub` of a validated JWT, if the request carried one.
    fn request_principal(&self) -> Option<&str>;
    /// The original client address (from `X-Forwarded-For`), else the peer address.
    fn remote_ip(&self) -> IpAddr;
    /// `aud` of a validated JWT (`request.auth.audiences`); none without one.
    fn request_audiences(&self) -> Vec<&str> {
        Vec::new()
    }
    /// `azp` of a validated JWT (`request.auth.presenter`).
    fn request_presenter(&self) -> Option<&str> {
        None
    }
    /// The string values of a validated JWT's claim at `path` (`request.auth.claims[a][b]`):
    /// the string, or each string of a list; none without a token or such claim.
    fn request_claim(&self, path: &[String]) -> Vec<&str> {
        let _ = path;
        Vec::new()
    }
}

impl Connection {
    /// The principal as Istio policies write it: the SPIFFE ID without `spiffe://`.
    pub(crate) fn principal(&self) -> Option<String> {
        self.source_identity.as_ref().map(|id| {
            format!(
                "{}/ns/{}/sa/{}",
                id.trust_domain(),
                id.namespace(),
                id.service_account()
            )
        })
    }

    /// The source namespace, from the identity.
    pub(crate) fn source_namespace(&self) -> Option<&str> {
        self.source_identity.as_ref().map(SpiffeId::namespace)
    }
}
