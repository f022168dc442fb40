use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::json;

use super::*;

const RSA_PKCS8: &[u8] = include_bytes!("../../tests/fixtures/jwt-rsa-2048.pk8");
const ISSUER: &str = "https://issuer.test";

/// Signs tokens with one RSA and one P-256 key and publishes both as a JWKS.
struct Signer {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let ec_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self {
            rsa: RsaKeyPair::from_pkcs8(RSA_PKCS8).unwrap(),
            ec: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
                .unwrap(),
        }
    }

    fn jwks(&self) -> String {
        let rsa = signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        let point = self.ec.public_key().as_ref();
        json!({ "keys": [
            { "kty": "RSA", "kid": "r1", "use": "sig", "n": URL_SAFE_NO_PAD.encode(&rsa.n),
              "e": URL_SAFE_NO_PAD.encode(&rsa.e) },
            { "kty": "EC", "kid": "e1", "crv": "P-256",
              "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]) },
            { "kty": "oct", "k": "c2VjcmV0" },
        ]})
        .to_string()
    }

    fn token(&self, alg: &str, kid: &str, claims: &Value) -> String {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match alg {
            "RS256" => {
                let mut out = vec![0; self.rsa.public().modulus_len()];
                self.rsa
                    .sign(&RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut out)
                    .unwrap();
                out
            }
            _ => self
                .ec
                .sign(&rng, signed.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({ "iss": ISSUER, "sub": "alice", "aud": ["cart", "other"], "exp": now() + 600,
            "azp": "web", "groups": ["admin", "dev"], "org": { "team": "payments" } })
}

fn rule(jwks: String) -> JwtRule {
    JwtRule {
        issuer: ISSUER.to_owned(),
        audiences: vec!["cart".to_owned()],
        jwks: Some(jwks),
        ..JwtRule::default()
    }
}

fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn bearer(token: &str) -> Parts {
    parts("/a", &[("authorization", &format!("Bearer {token}"))])
}

async fn check(rule: &JwtRule, parts: &mut Parts) -> Result<Option<RequestAuth>, JwtError> {
    JwksCache::default().authenticate(&[rule], parts).await
}

#[tokio::test]
async fn valid_rs256_and_es256_tokens_yield_the_claims() {
    let signer = Signer::new();
    let rule = rule(signer.jwks());
    for (alg, kid) in [("RS256", "r1"), ("ES256", "e1")] {
        let mut request = bearer(&signer.token(alg, kid, &claims()));
        let auth = check(&rule, &mut request).await.unwrap().unwrap();
        assert_eq!(auth.principal(), "https://issuer.test/alice", "{alg}");
        assert_eq!(auth.audiences(), ["cart", "other"]);
        assert_eq!(auth.presenter(), Some("web"));
        assert_eq!(auth.claim(&["groups".into()]), ["admin", "dev"]);
        assert_eq!(auth.claim(&["org".into(), "team".into()]), ["payments"]);
        assert!(auth.claim(&["org".into(), "missing".into()]).is_empty());
        // Not forwarded by default.
        assert!(request.headers.get("authorization").is_none(), "{alg}");
    }
}

#[tokio::test]
async fn invalid_tokens_are_refused_with_the_reason() {
    let signer = Signer::new();
    let rule = rule(signer.jwks());
    let with = |changes: Value| {
        let mut claims = claims();
        for (key, value) in changes.as_object().unwrap() {
            claims[key] = value.clone();
        }
        claims
    };
    let good = signer.token("RS256", "r1", &claims());
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_payload = URL_SAFE_NO_PAD.encode(with(json!({"sub": "mallory"})).to_string());
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let cases = [
        (
            signer.token("RS256", "r1", &with(json!({"exp": now() - 3600}))),
            JwtError::Expired,
        ),
        (
            signer.token("ES256", "e1", &with(json!({"nbf": now() + 3600}))),
            JwtError::NotYetValid,
        ),
        (
            signer.token("ES256", "e1", &with(json!({"aud": "billing"}))),
            JwtError::AudienceMismatch,
        ),
        (
            signer.token("RS256", "r1", &with(json!({"iss": "https://evil.test"}))),
            JwtError::UnknownIssuer("https://evil.test".into()),
        ),
        (
            format!("{head}.{forged_payload}.{signature}"),
            JwtError::BadSignature,
        ),
        (signer.token("RS256", "unknown", &claims()), JwtError::NoKey),
        (
            format!(
                "{none_header}.{}.",
                URL_SAFE_NO_PAD.encode(claims().to_string())
            ),
            JwtError::UnsupportedAlgorithm("none".into()),
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(check(&rule, &mut bearer(&token)).await, Err(expected));
    }
    let malformed = check(&rule, &mut bearer("not-a-jwt")).await;
    assert!(
        matches!(malformed, Err(JwtError::Malformed(_))),
        "{malformed:?}"
    );
}

#[tokio::test]
async fn no_token_passes_without_auth() {
    let signer = Signer::new();
    let rule = rule(signer.jwks());
    assert_eq!(check(&rule, &mut parts("/a", &[])).await, Ok(None));
    // A different scheme in the header is not this rule's token.
    let mut basic = parts("/a", &[("authorization", "Basic dTpw")]);
    assert_eq!(check(&rule, &mut basic).await, Ok(None));
    assert!(basic.headers.get("authorization").is_some());
}

#[tokio::test]
async fn custom_locations_forwarding_and_payload_output() {
    let signer = Signer::new();
    let token = signer.token("ES256", "e1", &claims());
    let mut from_param = JwtRule {
        from_params: vec!["access_token".into()],
        output_payload_to_header: Some("x-jwt-payload".into()),
        ..rule(signer.jwks())
    };
    let mut request = parts(&format!("/a?x=1&access_token={token}&y=2"), &[]);
    assert!(check(&from_param, &mut request).await.unwrap().is_some());
    assert_eq!(request.uri.path_and_query().unwrap().as_str(), "/a?x=1&y=2");
    let payload = request
        .headers
        .get("x-jwt-payload")
        .unwrap()
        .to_str()
        .unwrap();
    let decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(decoded["sub"], "alice");

    from_param.forward_original_token = true;
    let mut request = parts(&format!("/a?access_token={token}"), &[]);
    assert!(check(&from_param, &mut request).await.unwrap().is_some());
    assert_eq!(
        request.uri.query(),
        Some(format!("access_token={token}").as_str())
    );

    let header_rule = JwtRule {
        from_headers: vec![JwtHeader {
            name: "x-jwt".into(),
            prefix: "Token ".into(),
        }],
        ..rule(signer.jwks())
    };
    let mut request = parts("/a", &[("x-jwt", &format!("token {token}"))]);
    assert!(check(&header_rule, &mut request).await.unwrap().is_some());
    assert!(request.headers.get("x-jwt").is_none());
    // The default Authorization header is not read when the rule names its own.
    let mut request = bearer(&token);
    assert_eq!(check(&header_rule, &mut request).await, Ok(None));
}

#[test]
fn key_sets_keep_only_signature_keys_of_known_types() {
    let signer = Signer::new();
    assert_eq!(KeySet::parse(signer.jwks().as_bytes()).unwrap().len(), 2);
    let encryption = json!({"keys": [{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]});
    assert!(
        KeySet::parse(encryption.to_string().as_bytes())
            .unwrap()
            .is_empty()
    );
    let short = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]});
    assert!(KeySet::parse(short.to_string().as_bytes()).is_err());
    assert!(KeySet::parse(b"[]").is_err());
}

/// An https server (self-signed for `localhost`) answering every GET with `body`; returns its
/// JWKS URI and its certificate.
async fn serve_https_jwks(body: String) -> (String, rustls::pki_types::CertificateDer<'static>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}/jwks"), cert.der().clone())
}

#[tokio::test]
async fn jwks_over_https_from_a_trusted_server() {
    let signer = Signer::new();
    let (uri, certificate) = serve_https_jwks(signer.jwks()).await;
    let rule = JwtRule {
        jwks: None,
        jwks_uri: Some(uri),
        ..rule(String::new())
    };
    let token = signer.token("ES256", "e1", &claims());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let trusting = JwksCache::default().with_tls_roots(roots);
    let auth = trusting.authenticate(&[&rule], &mut bearer(&token)).await;
    assert!(matches!(auth, Ok(Some(_))), "{auth:?}");

    let untrusting = JwksCache::default().with_tls_roots(rustls::RootCertStore::empty());
    let refused = untrusting.authenticate(&[&rule], &mut bearer(&token)).await;
    assert!(
        matches!(&refused, Err(JwtError::Jwks(reason)) if reason.contains("TLS")),
        "{refused:?}"
    );
}

/// An http server answering every GET with the current `document`, reporting each hit.
async fn serve_jwks(
    document: Arc<Mutex<String>>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hits, hit) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (document, hits) = (document.clone(), hits.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                    let body = document.lock().unwrap().clone();
                    let _ = hits.send(());
                    async move { Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/jwks"), hit)
}

async fn next_hit(hits: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(10), hits.recv())
        .await
        .expect("no JWKS fetch")
        .expect("server gone");
}

#[tokio::test]
async fn uri_key_sets_are_cached_and_refreshed_in_the_background() {
    let (old, new) = (Signer::new(), Signer::new());
    let document = Arc::new(Mutex::new(old.jwks()));
    let (uri, mut hits) = serve_jwks(document.clone()).await;
    let rule = JwtRule {
        jwks: None,
        jwks_uri: Some(uri),
        ..rule(String::new())
    };
    let old_token = old.token("ES256", "e1", &claims());
    let new_token = new.token("ES256", "e1", &claims());

    // Refreshed on every use: the first request fetches, later ones refetch behind.
    let cache = JwksCache::new(Duration::ZERO, Duration::from_secs(5));
    let auth = cache.authenticate(&[&rule], &mut bearer(&old_token)).await;
    assert!(matches!(auth, Ok(Some(_))), "{auth:?}");
    next_hit(&mut hits).await;

    // The issuer rotates its key. The cached set has no key the new token verifies with
    // (same kid, other key), so it fails while the use starts a background refetch...
    *document.lock().unwrap() = new.jwks();
    let refused = cache.authenticate(&[&rule], &mut bearer(&new_token)).await;
    assert_eq!(refused, Err(JwtError::BadSignature));
    next_hit(&mut hits).await;
    // ...after which the new key verifies, from the cache. The keys are stored just after
    // the server answers, unobservably, so retry until then (bounded).
    let accepted = async {
        loop {
            if let Ok(Some(_)) = cache.authenticate(&[&rule], &mut bearer(&new_token)).await {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), accepted)
        .await
        .expect("the refreshed key set was never used");

    // A long refresh period: one fetch serves every request.
    let (uri, mut hits) = serve_jwks(Arc::new(Mutex::new(new.jwks()))).await;
    let rule = JwtRule {
        jwks_uri: Some(uri),
        ..rule.clone()
    };
    let cache = JwksCache::default();
    for _ in 0..5 {
        let auth = cache.authenticate(&[&rule], &mut bearer(&new_token)).await;
        assert!(matches!(auth, Ok(Some(_))), "{auth:?}");
    }
    next_hit(&mut hits).await;
    assert!(hits.try_recv().is_err(), "fetched once");
}
