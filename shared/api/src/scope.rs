//! Scopes: what a client subscribes to. The controller decides what each scope contains.

use std::fmt;

use crate::proto;

/// The key a snapshot is published under and a client subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ScopeKey {
    /// A ztunnel: everything the node needs.
    Node(String),
    /// A waypoint, named by its Gateway's namespace and name.
    Waypoint {
        /// The Gateway's namespace.
        namespace: String,
        /// The Gateway's name.
        name: String,
    },
}

impl ScopeKey {
    /// The scope of the ztunnel on `node`.
    pub fn node(node: impl Into<String>) -> Self {
        ScopeKey::Node(node.into())
    }

    /// The scope of the waypoint `namespace/name`.
    pub fn waypoint(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ScopeKey::Waypoint {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub(crate) fn to_proto(&self) -> proto::Scope {
        let kind = match self {
            ScopeKey::Node(node) => proto::scope::Kind::Node(node.clone()),
            ScopeKey::Waypoint { namespace, name } => {
                proto::scope::Kind::Waypoint(proto::WaypointScope {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })
            }
        };
        proto::Scope { kind: Some(kind) }
    }

    /// The scope a client asked for; `None` if it is missing or has empty names.
    pub(crate) fn from_proto(scope: Option<&proto::Scope>) -> Option<Self> {
        match scope?.kind.as_ref()? {
            proto::scope::Kind::Node(node) if !node.is_empty() => Some(ScopeKey::node(node)),
            proto::scope::Kind::Waypoint(w) if !w.namespace.is_empty() && !w.name.is_empty() => {
                Some(ScopeKey::waypoint(&w.namespace, &w.name))
            }
            _ => None,
        }
    }
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeKey::Node(node) => write!(f, "node={node}"),
            ScopeKey::Waypoint { namespace, name } => write!(f, "waypoint={namespace}/{name}"),
        }
    }
}
