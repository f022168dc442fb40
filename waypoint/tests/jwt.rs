//! RequestAuthentication through a real waypoint (HBONE in and out): RS256 and ES256 tokens
//! from inline and URL-served key sets, the 401 cases, and AuthorizationPolicy on
//! `requestPrincipals`, `notRequestPrincipals` and `request.auth.claims`.
// Test helpers panic on a failed setup.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
    RsaPublicKeyComponents,
};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpListener;

const RSA_PKCS8: &[u8] = include_bytes!("fixtures/jwt-rsa-2048.pk8");
const INLINE_ISSUER: &str = "https://inline.test";
const URI_ISSUER: &str = "https://remote.test";

/// One RSA and one P-256 key, published together as a JWKS.
struct Signer {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self {
            rsa: RsaKeyPair::from_pkcs8(RSA_PKCS8).unwrap(),
            ec: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref(), &rng)
                .unwrap(),
        }
    }

    fn jwks(&self) -> String {
        let rsa = RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        let point = self.ec.public_key().as_ref();
        json!({ "keys": [
            { "kty": "RSA", "kid": "rsa", "n": URL_SAFE_NO_PAD.encode(&rsa.n),
              "e": URL_SAFE_NO_PAD.encode(&rsa.e) },
            { "kty": "EC", "kid": "ec", "crv": "P-256",
              "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]) },
        ]})
        .to_string()
    }

    fn sign(&self, alg: &str, claims: &Value) -> String {
        let kid = if alg == "RS256" { "rsa" } else { "ec" };
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = if alg == "RS256" {
            let mut out = vec![0; self.rsa.public().modulus_len()];
            self.rsa
                .sign(&RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut out)
                .unwrap();
            out
        } else {
            self.ec
                .sign(&rng, signed.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec()
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// An HTTP server answering every GET with `body`, counting requests.
async fn serve_jwks(body: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (body, counter) = (body.clone(), counter.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    async move { Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/.well-known/jwks.json"), hits)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(issuer: &str, changes: Value) -> Value {
    let mut claims = json!({ "iss": issuer, "sub": "alice", "aud": "cart", "exp": now() + 600,
                             "groups": ["dev"] });
    for (key, value) in changes.as_object().unwrap() {
        claims[key] = value.clone();
    }
    claims
}

#[tokio::test]
async fn jwt_matrix() {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    let inline = Signer::new();
    let remote = Signer::new();
    let (jwks_uri, jwks_hits) = serve_jwks(remote.jwks()).await;
    let harness = Harness::start(|zt| {
        let mut config = config(
            zt,
            vec![service("cart", "10.96.0.10", &[(Some("http"), 80, port)], &["cart-1"])],
            vec![workload("cart-1")],
            vec![
                json!({ "name": "allow", "namespace": "test", "spec": {
                    "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                    "rules": [
                        { "to": [{ "operation": { "paths": ["/open/*", "/strict/*"] } }] },
                        { "from": [{ "source": { "requestPrincipals": ["*"] } }],
                          "to": [{ "operation": { "paths": ["/secure/*"] } }] },
                        { "to": [{ "operation": { "paths": ["/admin/*"] } }],
                          "when": [{ "key": "request.auth.claims[groups]", "values": ["admin"] }] },
                    ]
                }}),
                json!({ "name": "deny-anonymous", "namespace": "test", "spec": {
                    "targetRefs": [{ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint" }],
                    "action": "DENY",
                    "rules": [{ "from": [{ "source": { "notRequestPrincipals": ["*"] } }],
                                "to": [{ "operation": { "paths": ["/strict/*"] } }] }]
                }}),
            ],
            vec![],
        );
        config["requestAuthentications"] = json!([
            { "name": "inline", "namespace": "test", "spec": {
                "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                "jwtRules": [{ "issuer": INLINE_ISSUER, "audiences": ["cart"], "jwks": inline.jwks() }]
            }},
            { "name": "remote", "namespace": "test", "spec": {
                "targetRefs": [{ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint" }],
                "jwtRules": [{ "issuer": URI_ISSUER, "jwksUri": jwks_uri,
                               "forwardOriginalToken": true, "outputPayloadToHeader": "x-jwt-payload" }]
            }},
        ]);
        config
    })
    .await;

    let rs256 = inline.sign("RS256", &claims(INLINE_ISSUER, json!({})));
    let es256 = inline.sign("ES256", &claims(INLINE_ISSUER, json!({})));
    let admin = inline.sign(
        "ES256",
        &claims(INLINE_ISSUER, json!({"groups": ["admin"]})),
    );
    let expired = inline.sign(
        "RS256",
        &claims(INLINE_ISSUER, json!({"exp": now() - 3600})),
    );
    let wrong_audience = inline.sign("RS256", &claims(INLINE_ISSUER, json!({"aud": "billing"})));
    let unknown_issuer = inline.sign("RS256", &claims("https://other.test", json!({})));
    // Signed by the remote issuer's EC key (the RSA key is the same fixture in both) but
    // claiming the inline issuer; and a valid token with its payload swapped.
    let bad_signature = remote.sign("ES256", &claims(INLINE_ISSUER, json!({})));
    let forged = {
        let parts: Vec<&str> = rs256.split('.').collect();
        let payload = claims(INLINE_ISSUER, json!({"groups": ["admin"]}));
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let from_uri = remote.sign("ES256", &claims(URI_ISSUER, json!({})));
    let from_uri_rsa = remote.sign("RS256", &claims(URI_ISSUER, json!({"sub": "bob"})));

    let cases: &[(&str, Option<&str>, u16)] = &[
        ("/open/a", None, 200),
        ("/secure/a", None, 403),
        ("/strict/a", None, 403),
        ("/admin/a", None, 403),
        ("/secure/a", Some(&rs256), 200),
        ("/secure/a", Some(&es256), 200),
        ("/strict/a", Some(&rs256), 200),
        ("/admin/a", Some(&es256), 403),
        ("/admin/a", Some(&admin), 200),
        ("/secure/a", Some(&from_uri), 200),
        ("/secure/a", Some(&from_uri_rsa), 200),
        // An invalid token is refused before any policy, even on an open path.
        ("/open/a", Some(&expired), 401),
        ("/open/a", Some(&wrong_audience), 401),
        ("/open/a", Some(&unknown_issuer), 401),
        ("/open/a", Some(&bad_signature), 401),
        ("/admin/a", Some(&forged), 401),
        ("/open/a", Some("garbage"), 401),
    ];
    let before = upstream.count();
    for (path, token, status) in cases {
        for h2 in [false, true] {
            let mut client = harness.client("10.96.0.10:80", h2).await;
            let bearer = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = bearer
                .iter()
                .map(|b| ("authorization", b.as_str()))
                .collect();
            let answer = client.send(request("GET", path, &headers)).await;
            let what = format!("{path} token={token:?} h2={h2}");
            assert_eq!(answer.status.as_u16(), *status, "{what}: {answer:?}");
            match status {
                401 => {
                    assert_eq!(&answer.body[..], b"Jwt verification fails", "{what}");
                    assert_eq!(answer.header("x-backend"), None, "{what}");
                }
                200 if *token == Some(rs256.as_str()) => {
                    // The inline rule does not forward the token.
                    assert_eq!(answer.header("x-echo-authorization"), None, "{what}");
                }
                200 if *token == Some(from_uri.as_str()) => {
                    let forwarded = answer.header("x-echo-authorization").unwrap();
                    assert!(forwarded.ends_with(&from_uri), "{what}");
                    let payload = answer.header("x-echo-x-jwt-payload").unwrap();
                    let decoded = URL_SAFE_NO_PAD.decode(payload).unwrap();
                    let decoded: Value = serde_json::from_slice(&decoded).unwrap();
                    assert_eq!(decoded["iss"], URI_ISSUER, "{what}");
                }
                _ => {}
            }
        }
    }
    let allowed = cases.iter().filter(|c| c.2 == 200).count() * 2;
    assert_eq!(upstream.count() - before, allowed);
    // The remote key set was fetched once and then served from the cache.
    assert_eq!(jwks_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unreachable_jwks_refuses_tokens_but_not_anonymous_requests() {
    let upstream = Upstream::start("echo", Behavior::Echo).await;
    let port = upstream.addr.port();
    // A port nothing listens on: bind, note it, close.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let signer = Signer::new();
    let harness = Harness::start(|zt| {
        let mut config = config(
            zt,
            vec![service(
                "cart",
                "10.96.0.10",
                &[(Some("http"), 80, port)],
                &["cart-1"],
            )],
            vec![workload("cart-1")],
            vec![],
            vec![],
        );
        config["requestAuthentications"] = json!([{ "name": "r", "namespace": "test", "spec": {
            "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
            "jwtRules": [{ "issuer": URI_ISSUER, "jwksUri": format!("http://{closed}/jwks") }]
        }}]);
        config
    })
    .await;
    let token = format!(
        "Bearer {}",
        signer.sign("RS256", &claims(URI_ISSUER, json!({})))
    );
    let mut client = harness.client("10.96.0.10:80", false).await;
    let answer = client
        .send(request("GET", "/", &[("authorization", &token)]))
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(client.get("/").await.status, 200);
}
