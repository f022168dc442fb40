//! `security.istio.io/v1` RequestAuthentication: which JWTs a workload (or, through
//! `targetRefs`, a waypoint) accepts, where it finds them and what it does with them.
//!
//! Validation here is structural (names, headers, mutually exclusive fields, that inline JWKS
//! is a JSON key set); the proxy validates tokens. Ambit has no OpenID discovery, so every rule
//! must name its keys with `jwks` or `jwksUri`.

use serde::{Deserialize, Serialize};

use crate::authz::{PolicyScope, PolicyTargetReference};
use crate::error::{ErrorContext, ModelError};
use crate::labels::WorkloadSelector;

const KIND: &str = "RequestAuthentication";

/// The `spec` of a RequestAuthentication, field for field as in Istio (`fromCookies`,
/// `outputClaimToHeaders` and `timeout` are not supported and refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Workloads the policy applies to (sidecar/ztunnel style; waypoints ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single form of `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Gateways or Services the policy applies to (enforced by the waypoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The accepted issuers; a token must satisfy the rule of its `iss`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// One accepted issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The `iss` claim tokens of this rule carry.
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any audience.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where to fetch the JSON Web Key Set (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The JSON Web Key Set itself, as a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers carrying the token; `Authorization: Bearer` when neither this nor `fromParams`
    /// is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters carrying the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Keep the token in the request sent upstream (it is removed by default).
    #[serde(default)]
    pub forward_original_token: bool,
    /// A header to receive the base64url-encoded payload of a valid token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
}

/// A header a token is read from, e.g. `{name: authorization, prefix: "Bearer "}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// The header name.
    pub name: String,
    /// A prefix stripped before the token (e.g. `Bearer `).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// A validated RequestAuthentication; serializes as `{name, namespace, spec}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "RequestAuthenticationRepr",
    into = "RequestAuthenticationRepr"
)]
pub struct RequestAuthentication {
    name: String,
    namespace: String,
    spec: RequestAuthenticationSpec,
    scope: PolicyScope,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequestAuthenticationRepr {
    name: String,
    namespace: String,
    #[serde(default)]
    spec: RequestAuthenticationSpec,
}

impl RequestAuthentication {
    /// Validates the policy.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        spec: RequestAuthenticationSpec,
    ) -> Result<Self, ModelError> {
        let (name, namespace) = (name.into(), namespace.into());
        let ctx = ErrorContext {
            kind: KIND,
            namespace: &namespace,
            name: &name,
        };
        ctx.check_metadata()?;
        let scope = parse_scope(&ctx, &spec)?;
        for (i, rule) in spec.jwt_rules.iter().enumerate() {
            check_rule(&ctx, &format!("spec.jwtRules[{i}]"), rule)?;
        }
        Ok(Self {
            name,
            namespace,
            spec,
            scope,
        })
    }

    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The spec as given.
    pub fn spec(&self) -> &RequestAuthenticationSpec {
        &self.spec
    }

    /// Where the policy applies.
    pub fn scope(&self) -> &PolicyScope {
        &self.scope
    }

    /// The issuer rules.
    pub fn jwt_rules(&self) -> &[JwtRule] {
        &self.spec.jwt_rules
    }
}

impl JwtRule {
    /// The headers the token is read from, with the default `Authorization: Bearer ` when the
    /// rule names no header and no parameter.
    pub fn token_headers(&self) -> Vec<JwtHeader> {
        if self.from_headers.is_empty() && self.from_params.is_empty() {
            return vec![JwtHeader {
                name: "authorization".to_owned(),
                prefix: "Bearer ".to_owned(),
            }];
        }
        self.from_headers.clone()
    }
}

impl TryFrom<RequestAuthenticationRepr> for RequestAuthentication {
    type Error = ModelError;

    fn try_from(repr: RequestAuthenticationRepr) -> Result<Self, Self::Error> {
        Self::new(repr.name, repr.namespace, repr.spec)
    }
}

impl From<RequestAuthentication> for RequestAuthenticationRepr {
    fn from(policy: RequestAuthentication) -> Self {
        Self {
            name: policy.name,
            namespace: policy.namespace,
            spec: policy.spec,
        }
    }
}

fn parse_scope(
    ctx: &ErrorContext<'_>,
    spec: &RequestAuthenticationSpec,
) -> Result<PolicyScope, ModelError> {
    if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
        return Err(ctx.err("spec.targetRef", "cannot be combined with spec.targetRefs"));
    }
    let (field, targets) = match &spec.target_ref {
        Some(target) => ("spec.targetRef", vec![target.clone()]),
        None => ("spec.targetRefs", spec.target_refs.clone()),
    };
    for (i, target) in targets.iter().enumerate() {
        if target.kind.is_empty() {
            return Err(ctx.err(format!("{field}[{i}].kind"), "must not be empty"));
        }
        if target.name.is_empty() {
            return Err(ctx.err(format!("{field}[{i}].name"), "must not be empty"));
        }
    }
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty());
    match (selector, targets.is_empty()) {
        (Some(_), false) => {
            Err(ctx.err("spec.selector", format!("cannot be combined with {field}")))
        }
        (Some(selector), true) => Ok(PolicyScope::Selector(selector.clone())),
        (None, false) => Ok(PolicyScope::TargetRefs(targets)),
        (None, true) => Ok(PolicyScope::Namespace),
    }
}

fn check_rule(ctx: &ErrorContext<'_>, path: &str, rule: &JwtRule) -> Result<(), ModelError> {
    if rule.issuer.is_empty() {
        return Err(ctx.err(format!("{path}.issuer"), "must not be empty"));
    }
    for (i, audience) in rule.audiences.iter().enumerate() {
        if audience.is_empty() {
            return Err(ctx.err(format!("{path}.audiences[{i}]"), "must not be empty"));
        }
    }
    match (&rule.jwks, &rule.jwks_uri) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(format!("{path}.jwks"), "cannot be combined with jwksUri"));
        }
        (None, None) => {
            return Err(ctx.err(
                path.to_owned(),
                "needs jwks or jwksUri (OpenID discovery is not supported)",
            ));
        }
        (Some(jwks), None) => {
            check_jwks(jwks).map_err(|reason| ctx.err(format!("{path}.jwks"), reason))?;
        }
        (None, Some(uri)) => {
            check_uri(uri).map_err(|reason| ctx.err(format!("{path}.jwksUri"), reason))?;
        }
    }
    for (i, header) in rule.from_headers.iter().enumerate() {
        check_header_name(&header.name)
            .map_err(|reason| ctx.err(format!("{path}.fromHeaders[{i}].name"), reason))?;
    }
    for (i, param) in rule.from_params.iter().enumerate() {
        if param.is_empty() {
            return Err(ctx.err(format!("{path}.fromParams[{i}]"), "must not be empty"));
        }
    }
    if let Some(header) = &rule.output_payload_to_header {
        check_header_name(header)
            .map_err(|reason| ctx.err(format!("{path}.outputPayloadToHeader"), reason))?;
    }
    Ok(())
}

/// A JWKS document: a JSON object with a `keys` array of objects each naming its `kty`.
fn check_jwks(text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let keys = value
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("must be a JSON object with a \"keys\" array")?;
    for (i, key) in keys.iter().enumerate() {
        if key.get("kty").and_then(serde_json::Value::as_str).is_none() {
            return Err(format!("keys[{i}] has no \"kty\""));
        }
    }
    Ok(())
}

fn check_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| format!("{uri:?} is not an http or https URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{uri:?} has no host"));
    }
    Ok(())
}

/// An HTTP field name (RFC 9110 token), which proxies handle in lowercase.
fn check_header_name(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<RequestAuthentication, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    const JWKS: &str = r#"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"a\",\"y\":\"b\"}]}"#;

    #[test]
    fn accepts_a_full_rule() {
        let text = format!(
            r#"{{"name":"jwt","namespace":"shop","spec":{{
                "targetRefs":[{{"group":"","kind":"Service","name":"cart"}}],
                "jwtRules":[{{"issuer":"https://issuer.example","audiences":["cart"],
                  "jwks":"{JWKS}","fromHeaders":[{{"name":"x-jwt","prefix":"Token "}}],
                  "fromParams":["access_token"],"forwardOriginalToken":true,
                  "outputPayloadToHeader":"x-jwt-payload"}}]}}}}"#
        );
        let policy = parse(&text).unwrap();
        assert!(matches!(policy.scope(), PolicyScope::TargetRefs(t) if t.len() == 1));
        let rule = &policy.jwt_rules()[0];
        assert_eq!(rule.token_headers()[0].name, "x-jwt");
        // Round trip through the canonical form.
        let again: RequestAuthentication =
            serde_json::from_str(&serde_json::to_string(&policy).unwrap()).unwrap();
        assert_eq!(again, policy);
    }

    #[test]
    fn default_token_location_is_bearer() {
        let rule = JwtRule {
            issuer: "i".into(),
            jwks_uri: Some("http://keys.example/jwks".into()),
            ..JwtRule::default()
        };
        let headers = rule.token_headers();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].name, "authorization");
        assert_eq!(headers[0].prefix, "Bearer ");
    }

    #[test]
    fn refuses_invalid_rules() {
        let cases = [
            (r#"{"issuer":"","jwksUri":"http://a/k"}"#, "issuer"),
            (r#"{"issuer":"i"}"#, "OpenID discovery"),
            (r#"{"issuer":"i","jwksUri":"ftp://a/k"}"#, "jwksUri"),
            (r#"{"issuer":"i","jwks":"[]"}"#, "keys"),
            (r#"{"issuer":"i","jwks":"{\"keys\":[{}]}"}"#, "kty"),
            (
                r#"{"issuer":"i","jwks":"{\"keys\":[]}","jwksUri":"http://a"}"#,
                "combined",
            ),
            (
                r#"{"issuer":"i","jwksUri":"http://a","fromHeaders":[{"name":"a b"}]}"#,
                "fromHeaders[0]",
            ),
            (
                r#"{"issuer":"i","jwksUri":"http://a","outputPayloadToHeader":""}"#,
                "outputPayloadToHeader",
            ),
            (
                r#"{"issuer":"i","jwksUri":"http://a","fromCookies":["c"]}"#,
                "fromCookies",
            ),
        ];
        for (rule, expected) in cases {
            let text = format!(r#"{{"name":"n","namespace":"ns","spec":{{"jwtRules":[{rule}]}}}}"#);
            let err = parse(&text).expect_err(rule);
            assert!(err.contains(expected), "{rule}: {err}");
        }
    }

    #[test]
    fn selector_and_target_refs_exclude_each_other() {
        let text = r#"{"name":"n","namespace":"ns","spec":{
            "selector":{"matchLabels":{"app":"a"}},
            "targetRefs":[{"kind":"Service","name":"a"}]}}"#;
        assert!(parse(text).unwrap_err().contains("spec.selector"));
        let namespace_wide = parse(r#"{"name":"n","namespace":"ns","spec":{}}"#).unwrap();
        assert_eq!(namespace_wide.scope(), &PolicyScope::Namespace);
    }
}
