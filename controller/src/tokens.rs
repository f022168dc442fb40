//! Local-mode bootstrap tokens (`--node-tokens FILE`): which bearer token makes a CA caller
//! the ztunnel of a node, or a waypoint.
//!
//! The file is YAML:
//!
//! ```yaml
//! # A caller presenting `authorization: Bearer <token>` is:
//! nodes:                       # the ztunnel of this node: it may get certificates for the
//!   node-a: 3f9c0c2e6a1b47d8a0 #   identities of enrolled pods scheduled on node-a
//!   node-b: 9d4e7b1f0c2a4e6b88
//! waypoints:                   # the waypoint Gateway namespace/name: it may get a
//!   shop/waypoint: c1a8e5f2b7  #   certificate for its own service account identity only
//! ```
//!
//! Rules, checked when the file is loaded (the controller refuses to start otherwise): node
//! names are DNS subdomains; waypoint keys are `namespace/name` of DNS labels; tokens are at
//! least [`MIN_TOKEN_LEN`] characters of visible ASCII (they travel in an HTTP header) and no
//! token is used twice. Unknown keys are refused. Both sections are optional.
//!
//! A waypoint's identity is `spiffe://<trust-domain>/ns/<namespace>/sa/<service account>`,
//! where the service account is the Gateway's (its name, unless the Gateway names another);
//! the controller updates it from the translated config (see [`NodeTokens::install`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use ambit_api::server::{Caller, StaticTokens};
use ambit_identity::SpiffeId;
use serde::Deserialize;

use crate::translate::MeshConfig;

/// The shortest token accepted: guessing 16 random characters is out of reach.
pub const MIN_TOKEN_LEN: usize = 16;

/// The validated token file.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NodeTokens {
    nodes: BTreeMap<String, String>,
    waypoints: BTreeMap<(String, String), String>,
}

/// The token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape, or an entry breaks a rule.
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending entry (`nodes["node-a"]`) or YAML path (`nodes.node-a`, an unknown key).
        field: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    nodes: BTreeMap<String, String>,
    #[serde(default)]
    waypoints: BTreeMap<String, String>,
}

impl NodeTokens {
    /// Reads and validates the token file at `path`.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(field, message)| TokensError::Invalid {
            path: path.to_owned(),
            field,
            message,
        })
    }

    /// Parses and validates the token file's text; errors are `(field, message)`.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let file: TokenFile = if text.trim().is_empty() {
            TokenFile {
                nodes: BTreeMap::new(),
                waypoints: BTreeMap::new(),
            }
        } else {
            let deserializer = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(deserializer)
                .map_err(|err| (err.path().to_string(), err.inner().to_string()))?
        };
        let mut seen = HashSet::new();
        let mut check_token = |field: &str, token: &str| {
            if token.len() < MIN_TOKEN_LEN {
                return Err((
                    field.to_owned(),
                    format!("a token needs at least {MIN_TOKEN_LEN} characters"),
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err((
                    field.to_owned(),
                    "a token may hold only visible ASCII characters (no spaces)".to_owned(),
                ));
            }
            if !seen.insert(token.to_owned()) {
                return Err((
                    field.to_owned(),
                    "this token is already used by another entry".to_owned(),
                ));
            }
            Ok(())
        };
        for (node, token) in &file.nodes {
            let field = format!("nodes[{node:?}]");
            if !is_dns_subdomain(node) {
                return Err((field, "a node name must be a DNS subdomain".to_owned()));
            }
            check_token(&field, token)?;
        }
        let mut waypoints = BTreeMap::new();
        for (key, token) in &file.waypoints {
            let field = format!("waypoints[{key:?}]");
            let Some((namespace, name)) = key.split_once('/') else {
                return Err((
                    field,
                    "the key must be <namespace>/<gateway name>".to_owned(),
                ));
            };
            if !is_dns_label(namespace) || !is_dns_subdomain(name) || name.contains('/') {
                return Err((
                    field,
                    "the key must be <namespace>/<gateway name> of DNS names".to_owned(),
                ));
            }
            check_token(&field, token)?;
            waypoints.insert((namespace.to_owned(), name.to_owned()), token.clone());
        }
        Ok(Self {
            nodes: file.nodes,
            waypoints,
        })
    }

    /// The nodes with a token.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// The waypoints (namespace, name) with a token.
    pub fn waypoints(&self) -> impl Iterator<Item = (&str, &str)> {
        self.waypoints
            .keys()
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
    }

    /// Puts every token into `tokens`: node tokens as [`Caller::Node`], waypoint tokens as
    /// [`Caller::Waypoint`] with the identity `config` gives the waypoint (its Gateway's
    /// service account), or the default one named after the Gateway while it is unknown.
    /// Called again after every translation, so a changed service account takes effect.
    pub fn install(&self, tokens: &StaticTokens, trust_domain: &str, config: Option<&MeshConfig>) {
        for (node, token) in &self.nodes {
            tokens.insert(token.clone(), Caller::Node(node.clone()), None);
        }
        for ((namespace, name), token) in &self.waypoints {
            let translated = config
                .and_then(|c| c.waypoint(namespace, name))
                .map(|w| w.reference.identity.clone());
            let identity = match translated {
                Some(identity) => identity,
                None => match SpiffeId::new(trust_domain, namespace, name) {
                    Ok(identity) => identity,
                    Err(err) => {
                        tracing::warn!(%namespace, %name, error = %err, "no identity for waypoint token");
                        tokens.remove(token);
                        continue;
                    }
                },
            };
            tokens.insert(token.clone(), Caller::Waypoint(identity), None);
        }
    }
}

impl std::fmt::Debug for NodeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens.
        f.debug_struct("NodeTokens")
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .field("waypoints", &self.waypoints.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// RFC 1123 label: 1–63 of `[a-z0-9-]`, alphanumeric at both ends.
fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbb";

    fn error(text: &str) -> (String, String) {
        NodeTokens::parse(text).unwrap_err()
    }

    #[test]
    fn valid_file_installs_callers() {
        let text = format!("nodes:\n  node-a: {A}\nwaypoints:\n  shop/waypoint: {B}\n");
        let parsed = NodeTokens::parse(&text).unwrap();
        assert_eq!(parsed.nodes().collect::<Vec<_>>(), ["node-a"]);
        assert_eq!(
            parsed.waypoints().collect::<Vec<_>>(),
            [("shop", "waypoint")]
        );
        assert!(NodeTokens::parse("").unwrap().nodes().next().is_none());
        assert!(!format!("{parsed:?}").contains(A));
    }

    #[test]
    fn invalid_entries_name_the_field() {
        assert_eq!(
            error(&format!("nodes:\n  Node_A: {A}\n")).0,
            "nodes[\"Node_A\"]"
        );
        let short = error("nodes:\n  node-a: short\n");
        assert_eq!(short.0, "nodes[\"node-a\"]");
        assert!(short.1.contains("at least 16"), "{short:?}");
        let reused = error(&format!("nodes:\n  node-a: {A}\n  node-b: {A}\n"));
        assert_eq!(reused.0, "nodes[\"node-b\"]");
        assert!(reused.1.contains("already used"));
        assert_eq!(
            error(&format!("waypoints:\n  waypoint: {A}\n")).0,
            "waypoints[\"waypoint\"]"
        );
        let unknown = error(&format!("node:\n  a: {A}\n"));
        assert_eq!(unknown.0, "node");
        assert!(unknown.1.contains("unknown field `node`"), "{unknown:?}");
        assert_eq!(error("nodes:\n  node-a: [1]\n").0, "nodes.node-a");
        assert!(
            error(&format!("nodes:\n  node-a: \"{A} x\"\n"))
                .1
                .contains("visible ASCII")
        );
    }
}
