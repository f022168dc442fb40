//! RequestAuthentication at the waypoint: find a JWT in the request, validate it (RS256 or
//! ES256, `iss`, `aud`, `exp`, `nbf`) against its issuer's JSON Web Key Set, and hand the
//! claims to authorization as `request.auth.*`.
//!
//! Istio's semantics: a request without a token passes (policy decides, with
//! `request.auth.*` unset); a request with a token that fails any check is refused with `401`,
//! whatever the policies say. A token whose `iss` no rule accepts fails too.
//!
//! Keys come inline (`jwks`, parsed once) or from `jwksUri` over HTTP or HTTPS (rustls, the
//! system's CA roots), cached and refreshed in the background every [`JwksCache::refresh`]; a
//! token naming an unknown `kid` triggers one early refetch (key rotation). A key set that
//! cannot be fetched refuses every token of its issuer (`401`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ambit_model::request_authn::{JwtHeader, JwtRule};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

/// Clock skew tolerated on `exp` and `nbf` (Envoy's default).
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Largest JWKS document accepted from a URI.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// An unknown `kid` refetches the key set at most this often.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Key sets by source, shared by every request and kept across config reloads.
#[derive(Debug, Clone)]
pub struct JwksCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    entries: Mutex<HashMap<String, CacheEntry>>,
    refresh: Duration,
    fetch_timeout: Duration,
    /// For https JWKS URIs; built on first use from the system roots unless given.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    keys: Arc<KeySet>,
    fetched: Instant,
    refreshing: bool,
}

/// The usable keys of one JWKS document.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

#[derive(Debug)]
struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

#[derive(Debug)]
enum PublicKey {
    /// Big-endian modulus and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed SEC1 point (`04 || x || y`).
    P256 { point: Vec<u8> },
}

/// The validated token of a request: what `request.auth.*` evaluates against.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestAuth {
    principal: String,
    audiences: Vec<String>,
    presenter: Option<String>,
    claims: Map<String, Value>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` other than RS256 and ES256.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No rule accepts the token's `iss`.
    #[error("issuer {0:?} is not accepted")]
    UnknownIssuer(String),
    /// The issuer's key set has no key for the token's `kid`/algorithm.
    #[error("no key for the token")]
    NoKey,
    /// No key verifies the signature.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("token not yet valid")]
    NotYetValid,
    /// None of the token's `aud` is accepted.
    #[error("audience not accepted")]
    AudienceMismatch,
    /// The key set could not be obtained or parsed.
    #[error("JWKS: {0}")]
    Jwks(String),
}

#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct JwkDocument {
    keys: Vec<Map<String, Value>>,
}

/// A token taken from the request, with where it was found (to strip it).
#[derive(Debug)]
struct FoundToken {
    token: String,
    location: TokenLocation,
}

#[derive(Debug, Clone)]
enum TokenLocation {
    Header(String),
    Param(String),
}

/// A decoded but not yet verified token.
struct Decoded<'t> {
    header: TokenHeader,
    claims: Map<String, Value>,
    signed: &'t [u8],
    signature: Vec<u8>,
    payload_b64: &'t str,
}

impl Default for JwksCache {
    fn default() -> Self {
        Self::new(Duration::from_secs(20 * 60), Duration::from_secs(5))
    }
}

impl JwksCache {
    /// A cache refreshing URI key sets every `refresh`, each fetch bounded by `fetch_timeout`.
    pub fn new(refresh: Duration, fetch_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                entries: Mutex::new(HashMap::new()),
                refresh,
                fetch_timeout,
                tls: OnceLock::new(),
            }),
        }
    }

    /// Trusts only `roots` for https JWKS URIs instead of the system's roots.
    pub fn with_tls_roots(self, roots: rustls::RootCertStore) -> Self {
        let _ = self.inner.tls.set(tls_config(roots));
        self
    }

    /// How often key sets from URIs are refetched.
    pub fn refresh(&self) -> Duration {
        self.inner.refresh
    }

    /// Validates the request's token against `rules` (all rules of the RequestAuthentications
    /// that apply). `Ok(None)`: no token. On success the token is removed from the request
    /// unless the rule forwards it, and the payload is copied to `outputPayloadToHeader`.
    pub async fn authenticate(
        &self,
        rules: &[&JwtRule],
        parts: &mut Parts,
    ) -> Result<Option<RequestAuth>, JwtError> {
        let mut refused = None;
        for rule in rules {
            let Some(found) = find_token(rule, parts) else {
                continue;
            };
            let decoded = decode(&found.token)?;
            let issuer = decoded.claims.get("iss").and_then(Value::as_str);
            if issuer != Some(rule.issuer.as_str()) {
                refused = Some(JwtError::UnknownIssuer(issuer.unwrap_or("").to_owned()));
                continue;
            }
            let auth = self.verify(rule, &decoded).await?;
            if let Some(name) = &rule.output_payload_to_header
                && let Ok(value) = HeaderValue::from_str(decoded.payload_b64)
            {
                parts.headers.insert(
                    http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|err| JwtError::Malformed(err.to_string()))?,
                    value,
                );
            }
            if !rule.forward_original_token {
                strip_token(parts, &found.location);
            }
            return Ok(Some(auth));
        }
        match refused {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }

    async fn verify(&self, rule: &JwtRule, decoded: &Decoded<'_>) -> Result<RequestAuth, JwtError> {
        let keys = self.keys(rule, false).await?;
        let verified = match check_signature(&keys, decoded) {
            Err(JwtError::NoKey) if rule.jwks_uri.is_some() => {
                let keys = self.keys(rule, true).await?;
                check_signature(&keys, decoded)
            }
            other => other,
        };
        verified?;
        check_claims(rule, &decoded.claims, SystemTime::now())
    }

    /// The key set of `rule`; `rotated`: the cached one lacked a key, refetch if allowed.
    async fn keys(&self, rule: &JwtRule, rotated: bool) -> Result<Arc<KeySet>, JwtError> {
        if let Some(text) = &rule.jwks {
            if let Some(entry) = self.cached(text) {
                return Ok(entry.keys);
            }
            let keys = Arc::new(KeySet::parse(text.as_bytes())?);
            self.store(text, keys.clone());
            return Ok(keys);
        }
        let uri = rule
            .jwks_uri
            .as_deref()
            .ok_or_else(|| JwtError::Jwks("the rule has neither jwks nor jwksUri".into()))?;
        let Some(entry) = self.cached(uri) else {
            return self.fetch_and_store(uri).await;
        };
        let age = entry.fetched.elapsed();
        if rotated && age >= MIN_REFETCH_INTERVAL {
            return self.fetch_and_store(uri).await;
        }
        if age >= self.inner.refresh && !entry.refreshing {
            self.start_background_refresh(uri);
        }
        Ok(entry.keys)
    }

    fn cached(&self, source: &str) -> Option<CacheEntry> {
        let entries = self
            .inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(source).cloned()
    }

    fn store(&self, source: &str, keys: Arc<KeySet>) {
        let mut entries = self
            .inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.insert(
            source.to_owned(),
            CacheEntry {
                keys,
                fetched: Instant::now(),
                refreshing: false,
            },
        );
    }

    async fn fetch_and_store(&self, uri: &str) -> Result<Arc<KeySet>, JwtError> {
        let tls = self
            .inner
            .tls
            .get_or_init(|| tls_config(system_roots()))
            .as_ref()
            .map_err(|err| JwtError::Jwks(err.clone()))?;
        let keys = Arc::new(fetch(uri, self.inner.fetch_timeout, tls).await?);
        self.store(uri, keys.clone());
        Ok(keys)
    }

    /// Refetches `uri` while requests keep using the stale keys.
    fn start_background_refresh(&self, uri: &str) {
        {
            let mut entries = self
                .inner
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match entries.get_mut(uri) {
                Some(entry) if !entry.refreshing => entry.refreshing = true,
                _ => return,
            }
        }
        let cache = self.clone();
        let uri = uri.to_owned();
        tokio::spawn(async move {
            if let Err(err) = cache.fetch_and_store(&uri).await {
                warn!(%err, %uri, "JWKS refresh failed; keeping the previous keys");
                let mut entries = cache
                    .inner
                    .entries
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(entry) = entries.get_mut(&uri) {
                    // Try again after another refresh period rather than on every request.
                    entry.refreshing = false;
                    entry.fetched = Instant::now();
                }
            }
        });
    }
}

impl KeySet {
    /// Parses a JWKS document, keeping the RSA and P-256 keys usable for signatures.
    pub fn parse(document: &[u8]) -> Result<Self, JwtError> {
        let document: JwkDocument =
            serde_json::from_slice(document).map_err(|err| JwtError::Jwks(err.to_string()))?;
        let mut keys = Vec::new();
        for key in &document.keys {
            let field = |name: &str| key.get(name).and_then(Value::as_str);
            if field("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let bytes = |name: &str| -> Result<Vec<u8>, JwtError> {
                let text =
                    field(name).ok_or_else(|| JwtError::Jwks(format!("key without {name}")))?;
                URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|err| JwtError::Jwks(format!("{name}: {err}")))
            };
            let public = match (field("kty"), field("crv")) {
                (Some("RSA"), _) => PublicKey::Rsa {
                    n: bytes("n")?,
                    e: bytes("e")?,
                },
                (Some("EC"), Some("P-256")) => {
                    let (x, y) = (bytes("x")?, bytes("y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(JwtError::Jwks("P-256 coordinates must be 32 bytes".into()));
                    }
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    PublicKey::P256 { point }
                }
                (kty, crv) => {
                    debug!(?kty, ?crv, "skipping a JWK of an unsupported type");
                    continue;
                }
            };
            keys.push(Jwk {
                kid: field("kid").map(str::to_owned),
                key: public,
            });
        }
        Ok(Self { keys })
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl RequestAuth {
    /// `iss/sub`, as `requestPrincipals` and `request.auth.principal` match it.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The token's `aud` values.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The `azp` claim.
    pub fn presenter(&self) -> Option<&str> {
        self.presenter.as_deref()
    }

    /// The string values at `path` in the claims: a string, or each string of a list;
    /// booleans and numbers as their JSON text.
    pub fn claim(&self, path: &[String]) -> Vec<&str> {
        let Some((first, rest)) = path.split_first() else {
            return Vec::new();
        };
        let mut value = self.claims.get(first);
        for name in rest {
            value = value.and_then(|v| v.get(name));
        }
        match value {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::Bool(true)) => vec!["true"],
            Some(Value::Bool(false)) => vec!["false"],
            _ => Vec::new(),
        }
    }
}

/// The first token `rule` finds: in its headers (after the prefix), then its query params.
fn find_token(rule: &JwtRule, parts: &Parts) -> Option<FoundToken> {
    for JwtHeader { name, prefix } in rule.token_headers() {
        let Some(value) = parts
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
        else {
            continue;
        };
        let token = match value.get(..prefix.len()) {
            Some(head) if head.eq_ignore_ascii_case(&prefix) => &value[prefix.len()..],
            _ => continue,
        };
        return Some(FoundToken {
            token: token.trim().to_owned(),
            location: TokenLocation::Header(name),
        });
    }
    let query = parts.uri.query()?;
    for param in &rule.from_params {
        if let Some(token) = query_param(query, param) {
            return Some(FoundToken {
                token: token.to_owned(),
                location: TokenLocation::Param(param.clone()),
            });
        }
    }
    None
}

fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

fn strip_token(parts: &mut Parts, location: &TokenLocation) {
    match location {
        TokenLocation::Header(name) => {
            parts.headers.remove(name.as_str());
        }
        TokenLocation::Param(name) => {
            let Some(query) = parts.uri.query() else {
                return;
            };
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
                .collect();
            let path = parts.uri.path();
            let rebuilt = if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            let mut uri = parts.uri.clone().into_parts();
            if let Ok(path_and_query) = PathAndQuery::try_from(rebuilt) {
                uri.path_and_query = Some(path_and_query);
                if let Ok(uri) = Uri::from_parts(uri) {
                    parts.uri = uri;
                }
            }
        }
    }
}

fn decode(token: &str) -> Result<Decoded<'_>, JwtError> {
    let malformed = |what: &str| JwtError::Malformed(what.to_owned());
    let mut pieces = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(malformed("a JWT has three parts"));
    };
    let part = |text: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| malformed(&format!("{what} is not base64url")))
    };
    let header: TokenHeader = serde_json::from_slice(&part(header, "header")?)
        .map_err(|_| malformed("the header is not a JOSE header"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&part(payload, "payload")?)
        .map_err(|_| malformed("the payload is not a JSON object"))?;
    let signed_len = token.len() - signature.len() - 1;
    Ok(Decoded {
        header,
        claims,
        signed: &token.as_bytes()[..signed_len],
        signature: part(signature, "signature")?,
        payload_b64: payload,
    })
}

fn check_signature(keys: &KeySet, decoded: &Decoded<'_>) -> Result<(), JwtError> {
    let alg = decoded.header.alg.as_str();
    let kid = decoded.header.kid.as_deref();
    let candidates = keys.keys.iter().filter(|key| {
        let kid_ok = match (kid, &key.kid) {
            (Some(wanted), Some(have)) => wanted == have,
            _ => true,
        };
        let type_ok = matches!(
            (alg, &key.key),
            ("RS256", PublicKey::Rsa { .. }) | ("ES256", PublicKey::P256 { .. })
        );
        kid_ok && type_ok
    });
    if !matches!(alg, "RS256" | "ES256") {
        return Err(JwtError::UnsupportedAlgorithm(alg.to_owned()));
    }
    let mut any = false;
    for key in candidates {
        any = true;
        let ok = match &key.key {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    decoded.signed,
                    &decoded.signature,
                )
                .is_ok(),
            PublicKey::P256 { point } => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(decoded.signed, &decoded.signature)
                    .is_ok()
            }
        };
        if ok {
            return Ok(());
        }
    }
    Err(if any {
        JwtError::BadSignature
    } else {
        JwtError::NoKey
    })
}

fn check_claims(
    rule: &JwtRule,
    claims: &Map<String, Value>,
    now: SystemTime,
) -> Result<RequestAuth, JwtError> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let skew = CLOCK_SKEW.as_secs_f64();
    let number = |name: &str| claims.get(name).and_then(Value::as_f64);
    if let Some(exp) = number("exp")
        && now > exp + skew
    {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = number("nbf")
        && now + skew < nbf
    {
        return Err(JwtError::NotYetValid);
    }
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    if !rule.audiences.is_empty() && !audiences.iter().any(|a| rule.audiences.contains(a)) {
        return Err(JwtError::AudienceMismatch);
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    Ok(RequestAuth {
        principal: format!("{}/{}", rule.issuer, text("sub").unwrap_or("")),
        audiences,
        presenter: text("azp").map(str::to_owned),
        claims: claims.clone(),
    })
}

/// GETs a JWKS over HTTP/1.1, in TLS for `https` URIs.
async fn fetch(
    uri: &str,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<KeySet, JwtError> {
    let err = |what: String| JwtError::Jwks(format!("{uri}: {what}"));
    let parsed: Uri = uri.parse().map_err(|e| err(format!("{e}")))?;
    let https = match parsed.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(err("not an http or https URI".into())),
    };
    let authority = parsed
        .authority()
        .ok_or_else(|| err("no host".into()))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = parsed
        .path_and_query()
        .map_or("/", PathAndQuery::as_str)
        .to_owned();
    let exchange = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| err(format!("connect: {e}")))?;
        let body = if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| err(format!("server name: {e}")))?;
            let stream = TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| err(format!("TLS: {e}")))?;
            get(stream, authority.as_str(), &path).await
        } else {
            get(tcp, authority.as_str(), &path).await
        };
        KeySet::parse(&body.map_err(err)?)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| err("timed out".into()))?
}

/// One GET over `io`; the body of a `200`.
async fn get<I>(io: I, authority: &str, path: &str) -> Result<Bytes, String>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map(|body| body.to_bytes())
        .map_err(|e| format!("body: {e}"))
}

/// The system's trusted CAs; none (every https fetch fails) if they cannot be read.
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        warn!(%err, "reading the system CA roots for JWKS fetches");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    debug!(added, ignored, "system CA roots for JWKS fetches");
    roots
}

fn tls_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS for JWKS fetches: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
