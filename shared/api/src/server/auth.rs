//! Who may ask the CA for what: [`Authenticator`] turns a bearer token into a [`Caller`],
//! [`Authorizer`] decides whether that caller may hold a requested identity. Local-mode
//! implementations: [`StaticTokens`] and [`HostedIdentities`]. [`ScopeAccess`] decides which
//! config scopes a caller may subscribe to.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use ambit_identity::SpiffeId;

use crate::scope::ScopeKey;

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>>;

/// An authenticated CA client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Caller {
    /// The ztunnel of this node.
    Node(String),
    /// A waypoint, which holds exactly this identity.
    Waypoint(SpiffeId),
}

/// Checks a bearer token (local bootstrap token, Kubernetes TokenReview, ...).
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// The caller `token` belongs to.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// Decides whether a caller may receive a certificate for an identity.
pub trait Authorizer: Send + Sync + fmt::Debug + 'static {
    /// `Ok` if `caller` may hold `requested`; otherwise why not.
    fn authorize(&self, caller: &Caller, requested: &SpiffeId) -> Result<(), Denied>;
}

/// A token was not accepted, or could not be checked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct AuthError {
    reason: String,
    unavailable: bool,
}

/// An authorizer said no.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct Denied {
    reason: String,
}

/// Local mode: a fixed set of bootstrap tokens, one per node (and per waypoint), optionally
/// expiring. Tokens can be added and revoked while serving.
#[derive(Default)]
pub struct StaticTokens {
    tokens: RwLock<Vec<TokenEntry>>,
}

struct TokenEntry {
    token: String,
    caller: Caller,
    expires: Option<SystemTime>,
}

/// Local mode authorizer: a node may hold an identity when `hosts(node, id)` says a pod on it
/// runs as that identity (the controller's state answers); a waypoint only its own identity.
pub struct HostedIdentities {
    hosts: Arc<HostsFn>,
}

/// `hosts(node, identity)`: whether a pod on `node` runs as `identity`.
type HostsFn = dyn Fn(&str, &SpiffeId) -> bool + Send + Sync;

/// Which config scopes a caller may subscribe to: the ztunnel of a node only that node's
/// scope; a waypoint only the scope of a waypoint (Gateway) that runs as the waypoint's own
/// identity. Which identity a waypoint runs as is the controller's knowledge (the Gateway's
/// service account, from its translated config), asked through `waypoint_identity`; a waypoint
/// it does not know is refused (the client retries, and succeeds once the Gateway is
/// translated).
pub struct ScopeAccess {
    waypoint_identity: Arc<WaypointIdentityFn>,
}

/// `waypoint_identity(namespace, name)`: the identity the waypoint `namespace/name` runs as.
type WaypointIdentityFn = dyn Fn(&str, &str) -> Option<SpiffeId> + Send + Sync;

impl AuthError {
    /// The token is missing, unknown, expired or otherwise not acceptable.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            unavailable: false,
        }
    }

    /// The token could not be checked (e.g. the Kubernetes API is unreachable); worth retrying.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            unavailable: true,
        }
    }

    /// Whether checking failed, as opposed to the token being refused.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

impl Denied {
    /// A refusal with a reason the caller will see.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

impl StaticTokens {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` as `caller` (until `expires`, if given); replaces an earlier entry for
    /// the same token.
    pub fn insert(&self, token: impl Into<String>, caller: Caller, expires: Option<SystemTime>) {
        let token = token.into();
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|entry| entry.token != token);
        tokens.push(TokenEntry {
            token,
            caller,
            expires,
        });
    }

    /// Revokes `token`; whether it was known.
    pub fn remove(&self, token: &str) -> bool {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let before = tokens.len();
        tokens.retain(|entry| entry.token != token);
        tokens.len() != before
    }

    fn lookup(&self, token: &str) -> Result<Caller, AuthError> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        // Compare against every entry in constant time per entry, so timing does not reveal
        // how much of a guessed token was right.
        let found = tokens.iter().fold(None, |found, entry| {
            if constant_time_eq(entry.token.as_bytes(), token.as_bytes()) {
                Some(entry)
            } else {
                found
            }
        });
        let entry = found.ok_or_else(|| AuthError::invalid("unknown token"))?;
        if entry.expires.is_some_and(|at| at <= SystemTime::now()) {
            return Err(AuthError::invalid("token expired"));
        }
        Ok(entry.caller.clone())
    }
}

impl Authenticator for StaticTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.lookup(token)))
    }
}

impl fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the tokens.
        let count = self.tokens.read().map(|t| t.len()).unwrap_or(0);
        f.debug_struct("StaticTokens")
            .field("tokens", &count)
            .finish()
    }
}

impl HostedIdentities {
    /// An authorizer asking `hosts(node, identity)` for node callers.
    pub fn new(hosts: impl Fn(&str, &SpiffeId) -> bool + Send + Sync + 'static) -> Self {
        Self {
            hosts: Arc::new(hosts),
        }
    }
}

impl Authorizer for HostedIdentities {
    fn authorize(&self, caller: &Caller, requested: &SpiffeId) -> Result<(), Denied> {
        match caller {
            Caller::Node(node) if (self.hosts)(node, requested) => Ok(()),
            Caller::Node(node) => Err(Denied::new(format!(
                "node {node} runs no pod with identity {requested}"
            ))),
            Caller::Waypoint(own) if own == requested => Ok(()),
            Caller::Waypoint(own) => Err(Denied::new(format!(
                "waypoint {own} may only request its own identity, not {requested}"
            ))),
        }
    }
}

impl fmt::Debug for HostedIdentities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostedIdentities").finish_non_exhaustive()
    }
}

impl ScopeAccess {
    /// Scope access asking `waypoint_identity(namespace, name)` which identity a waypoint
    /// scope belongs to (`None`: no such waypoint, nobody may subscribe).
    pub fn new(
        waypoint_identity: impl Fn(&str, &str) -> Option<SpiffeId> + Send + Sync + 'static,
    ) -> Self {
        Self {
            waypoint_identity: Arc::new(waypoint_identity),
        }
    }

    /// `Ok` if `caller` may receive the config of `scope`; otherwise why not.
    pub fn check(&self, caller: &Caller, scope: &ScopeKey) -> Result<(), Denied> {
        match (caller, scope) {
            (Caller::Node(own), ScopeKey::Node(node)) if own == node => Ok(()),
            (Caller::Waypoint(own), ScopeKey::Waypoint { namespace, name }) => {
                match (self.waypoint_identity)(namespace, name) {
                    Some(identity) if identity == *own => Ok(()),
                    Some(identity) => Err(Denied::new(format!(
                        "waypoint {namespace}/{name} runs as {identity}"
                    ))),
                    None => Err(Denied::new(format!(
                        "no waypoint {namespace}/{name} is known"
                    ))),
                }
            }
            (Caller::Node(_), _) => Err(Denied::new("a node may only subscribe to its own scope")),
            (Caller::Waypoint(_), _) => Err(Denied::new(
                "a waypoint may only subscribe to its own waypoint scope",
            )),
        }
    }
}

impl fmt::Debug for ScopeAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeAccess").finish_non_exhaustive()
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Node(node) => write!(f, "node {node}"),
            Caller::Waypoint(id) => write!(f, "waypoint {id}"),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", "default", sa).unwrap()
    }

    #[test]
    fn static_tokens_map_to_callers() {
        let tokens = StaticTokens::new();
        tokens.insert("a-token", Caller::Node("node-a".into()), None);
        let past = SystemTime::now() - Duration::from_secs(1);
        tokens.insert("old", Caller::Node("node-b".into()), Some(past));
        assert_eq!(
            tokens.lookup("a-token").unwrap(),
            Caller::Node("node-a".into())
        );
        assert!(tokens.lookup("a-toke").is_err());
        assert!(tokens.lookup("").is_err());
        assert_eq!(
            tokens.lookup("old").unwrap_err().to_string(),
            "token expired"
        );
        assert!(tokens.remove("a-token"));
        assert!(tokens.lookup("a-token").is_err());
        assert!(!format!("{tokens:?}").contains("old"));
    }

    #[test]
    fn hosted_identities_checks_node_and_waypoint() {
        let authz =
            HostedIdentities::new(|node, id| node == "node-a" && id.service_account() == "web");
        let node_a = Caller::Node("node-a".into());
        assert!(authz.authorize(&node_a, &id("web")).is_ok());
        assert!(authz.authorize(&node_a, &id("db")).is_err());
        assert!(
            authz
                .authorize(&Caller::Node("node-b".into()), &id("web"))
                .is_err()
        );
        let waypoint = Caller::Waypoint(id("waypoint"));
        assert!(authz.authorize(&waypoint, &id("waypoint")).is_ok());
        assert!(authz.authorize(&waypoint, &id("web")).is_err());
    }

    #[test]
    fn scope_access_matches_nodes_and_waypoint_identities() {
        let access = ScopeAccess::new(|namespace, name| {
            (namespace == "default" && name == "gw").then(|| id("gw-sa"))
        });
        let node_a = Caller::Node("node-a".into());
        let gateway = ScopeKey::waypoint("default", "gw");
        assert!(access.check(&node_a, &ScopeKey::node("node-a")).is_ok());
        assert!(access.check(&node_a, &ScopeKey::node("node-b")).is_err());
        assert!(access.check(&node_a, &gateway).is_err());
        let waypoint = Caller::Waypoint(id("gw-sa"));
        assert!(access.check(&waypoint, &gateway).is_ok());
        assert!(access.check(&waypoint, &ScopeKey::node("node-a")).is_err());
        // Unknown waypoints are nobody's; another identity is not this waypoint's.
        let unknown = access
            .check(&waypoint, &ScopeKey::waypoint("default", "other"))
            .unwrap_err();
        assert!(unknown.to_string().contains("no waypoint default/other"));
        let other = Caller::Waypoint(id("gw"));
        let denied = access.check(&other, &gateway).unwrap_err();
        assert!(denied.to_string().contains("runs as"), "{denied}");
    }
}
