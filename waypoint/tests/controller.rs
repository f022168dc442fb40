//! The real `waypoint` binary fed by a controller, on loopback: an in-test gRPC server with
//! config distribution and the CA; the waypoint subscribes for its Gateway, gets its
//! certificate with a bootstrap token, serves requests, applies a pushed DENY live, and keeps
//! its last config when the controller goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ambit_api::server::{
    Caller, HostedIdentities, ScopeAccess, ServerTls, ServerTransport, StaticTokens,
};
use ambit_api::{CaServer, ConfigServer, ConfigServerOptions, MeshResource, ScopeKey, Snapshot};
use ambit_hbone::{
    ByteCounters, ConnectRequest, InboundRequest, Pool, PoolConfig, Responder, Server,
    ServerConfig, Target,
};
use ambit_identity::tls::FixedCertificate;
use ambit_identity::{CaOptions, CertificateAuthority, SpiffeId, TrustBundle, Validity};
use ambit_model::{AuthorizationPolicy, Service, Workload};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::{Behavior, Upstream, id, within};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The controller's gRPC server on 127.0.0.1.
struct TestController {
    config: ConfigServer,
    ca: CaServer,
    authority: Arc<CertificateAuthority>,
    bundle: TrustBundle,
    /// `--controller` and its TLS flags, as the waypoint is given them.
    args: Vec<String>,
    /// The root file the waypoint trusts the controller by; removed on drop.
    roots: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestController {
    /// Token `token-waypoint` is the waypoint `test/waypoint`'s.
    async fn start() -> Self {
        let authority = Arc::new(
            CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap(),
        );
        let bundle = authority.trust_bundle().unwrap();
        let tokens = Arc::new(StaticTokens::new());
        tokens.insert("token-waypoint", Caller::Waypoint(id("waypoint")), None);
        let hosts = HostedIdentities::new(|_node: &str, _id: &SpiffeId| false);
        let ca = CaServer::new(authority.clone(), &bundle, tokens.clone(), Arc::new(hosts));
        // As the controller does: the config stream takes the CA's tokens, and the waypoint
        // gets only the scope of its own identity.
        let access = ScopeAccess::new(|namespace: &str, name: &str| {
            (namespace == "test" && name == "waypoint").then(|| id("waypoint"))
        });
        let config = ConfigServer::new(
            ConfigServerOptions::default().with_debounce(Duration::from_millis(10)),
        )
        .with_authenticator(tokens, access);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // TLS as the real controller serves it: a certificate of its CA for the address.
        let serving = authority
            .issue_server_certificate(
                &[],
                &[addr.ip()],
                Validity::starting_now(Duration::from_secs(3600)),
            )
            .unwrap();
        let tls = ServerTls::new(serving.chain, serving.key).unwrap();
        let roots = std::env::temp_dir().join(format!(
            "ambit-waypoint-test-root-{}-{}.pem",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&roots, authority.root_pem()).unwrap();
        let args = vec![
            "--controller".to_owned(),
            format!("https://{addr}"),
            "--controller-ca-file".to_owned(),
            roots.display().to_string(),
        ];
        let (stop, stopped) = oneshot::channel::<()>();
        let served = ambit_api::server::serve(
            listener,
            ServerTransport::Tls(tls),
            Some(config.clone()),
            Some(ca.clone()),
            async {
                let _ = stopped.await;
            },
        );
        let task = tokio::spawn(async move { served.await.unwrap() });
        Self {
            config,
            ca,
            authority,
            bundle,
            args,
            roots,
            stop: Some(stop),
            task,
        }
    }

    fn publish(&self, resources: &[MeshResource]) {
        let snapshot = Snapshot::from_resources(resources).unwrap();
        self.config
            .publish(ScopeKey::waypoint("test", "waypoint"), snapshot);
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.config.shutdown();
        within(&mut self.task).await.unwrap();
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.roots);
    }
}

/// A loopback address of its own per test run, so fixed ports (15008, 15021) never collide.
fn loopback_ip(salt: u8) -> Ipv4Addr {
    let pid = std::process::id();
    Ipv4Addr::new(127, 77, (pid % 250) as u8 + 1, salt)
}

/// The destination pod's ztunnel: an HBONE server on `pod_ip:15008` presenting the backend
/// identity, forwarding each tunnel to the target it names.
async fn destination_ztunnel(controller: &TestController, pod_ip: Ipv4Addr) {
    let cert = controller
        .authority
        .issue_workload(&id(support::BACKEND_SA), Duration::from_secs(3600))
        .unwrap();
    let tls = ambit_identity::tls::server_config(
        Arc::new(FixedCertificate(Arc::new(cert))),
        &controller.bundle,
    )
    .unwrap();
    let listener = TcpListener::bind((pod_ip, 15008)).await.unwrap();
    let server = Server::new(tls, forward, ServerConfig::default());
    tokio::spawn(async move {
        server
            .serve(listener, ambit_hbone::DrainSignal::never())
            .await
    });
}

async fn forward(request: InboundRequest, responder: Responder) {
    let Target::Socket(addr) = request.target().clone() else {
        responder.reject(StatusCode::BAD_REQUEST);
        return;
    };
    // The upstream listens on 127.0.0.1; the target's port names it.
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port());
    match TcpStream::connect(local).await {
        Ok(mut tcp) => {
            let Ok(mut stream) = responder.accept(HeaderMap::new()) else {
                return;
            };
            let _ =
                ambit_hbone::copy_bidirectional(&mut stream, &mut tcp, &ByteCounters::default())
                    .await;
        }
        Err(_) => responder.reject(StatusCode::SERVICE_UNAVAILABLE),
    }
}

fn resources(pod_ip: Ipv4Addr, app_port: u16, deny: bool) -> Vec<MeshResource> {
    let service: Service = serde_json::from_value(support::service(
        "cart",
        "10.96.0.10",
        &[(Some("http"), 80, app_port)],
        &["cart-1"],
    ))
    .unwrap();
    let mut workload = support::workload("cart-1");
    workload["ips"] = json!([pod_ip.to_string()]);
    let workload: Workload = serde_json::from_value(workload).unwrap();
    let mut resources = vec![service.into(), workload.into()];
    if deny {
        let policy: AuthorizationPolicy = serde_json::from_value(json!({
            "name": "deny-admin", "namespace": "test", "spec": {
                "targetRefs": [{ "group": "", "kind": "Service", "name": "cart" }],
                "action": "DENY",
                "rules": [{ "to": [{ "operation": { "paths": ["/admin"] } }] }]
            }
        }))
        .unwrap();
        resources.push(policy.into());
    }
    resources
}

/// Starts the binary on `ip` (15008, admin 15000, metrics 15020, readiness 15021).
fn start_waypoint(controller: &[String], token_file: &Path, ip: Ipv4Addr, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .args(controller)
        .args(["--gateway", "test/waypoint"])
        .arg("--token-file")
        .arg(token_file)
        .args(["--identity", &id("waypoint").to_string()])
        .args(["--listen", &format!("{ip}:15008")])
        .args(["--admin-addr", &format!("{ip}:15000")])
        .args(["--metrics-addr", &format!("{ip}:15020")])
        .args(["--readiness-addr", &format!("{ip}:15021")])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The readiness status code, or `None` while nothing listens.
async fn readiness(ip: Ipv4Addr) -> Option<StatusCode> {
    let tcp = TcpStream::connect((ip, 15021)).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let request = Request::get("/healthz/ready")
        .header("host", "waypoint")
        .body(Full::new(Bytes::new()))
        .ok()?;
    Some(send.send_request(request).await.ok()?.status())
}

/// Polls readiness until `want` (the process starts asynchronously; nothing to await on).
async fn wait_readiness(ip: Ipv4Addr, want: StatusCode) {
    within(async {
        while readiness(ip).await != Some(want) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// `GET path` from `client` through the waypoint at `ip` to the cart service.
async fn get(controller: &TestController, ip: Ipv4Addr, path: &str) -> StatusCode {
    let authority = controller.authority.clone();
    let bundle = controller.bundle.clone();
    let tls = move |source: &SpiffeId, expected: &[SpiffeId]| {
        let cert = authority.issue_workload(source, Duration::from_secs(3600))?;
        let config = ambit_identity::tls::client_config(
            Arc::new(FixedCertificate(Arc::new(cert))),
            &bundle,
            expected.to_vec(),
        )?;
        Ok(config)
    };
    let pool = Pool::new(Arc::new(tls), PoolConfig::default());
    let request = ConnectRequest::new(
        id("client"),
        vec![id("waypoint")],
        SocketAddr::new(IpAddr::V4(ip), 15008),
        "10.96.0.10:80".parse::<Target>().unwrap(),
    );
    let stream = within(pool.connect(request)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = within(send.send_request(support::request("GET", path, &[])))
        .await
        .unwrap();
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn config_and_certificate_from_the_controller_live_updates_and_last_config_kept() {
    let mut controller = TestController::start().await;
    let pod_ip = loopback_ip(2);
    let waypoint_ip = loopback_ip(1);
    let upstream = Upstream::start("cart", Behavior::Echo).await;
    destination_ztunnel(&controller, pod_ip).await;
    controller.publish(&resources(pod_ip, upstream.addr.port(), false));

    let dir = tempdir("ok");
    let token = dir.join("token");
    std::fs::write(&token, "token-waypoint\n").unwrap();
    let _waypoint = start_waypoint(&controller.args, &token, waypoint_ip, &dir.join("log"));
    wait_readiness(waypoint_ip, StatusCode::OK).await;
    assert_eq!(controller.ca.stats().signed, 1, "certificate from the CA");

    assert_eq!(
        get(&controller, waypoint_ip, "/admin").await,
        StatusCode::OK
    );
    assert_eq!(upstream.count(), 1);

    // A DENY pushed by the controller applies without a restart.
    controller.publish(&resources(pod_ip, upstream.addr.port(), true));
    within(async {
        while get(&controller, waypoint_ip, "/admin").await != StatusCode::FORBIDDEN {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(get(&controller, waypoint_ip, "/ok").await, StatusCode::OK);

    // The controller goes away: the last config stays in force.
    controller.stop().await;
    assert_eq!(
        get(&controller, waypoint_ip, "/admin").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(&controller, waypoint_ip, "/ok").await, StatusCode::OK);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_rejected_token_keeps_the_waypoint_not_ready_and_says_why() {
    let controller = TestController::start().await;
    let waypoint_ip = loopback_ip(3);
    controller.publish(&[]);
    let dir = tempdir("bad-token");
    let token = dir.join("token");
    std::fs::write(&token, "not-a-token\n").unwrap();
    let _waypoint = start_waypoint(&controller.args, &token, waypoint_ip, &dir.join("log"));
    wait_readiness(waypoint_ip, StatusCode::SERVICE_UNAVAILABLE).await;
    within(async {
        while controller.ca.stats().unauthenticated == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        readiness(waypoint_ip).await,
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(log.contains("Unauthenticated"), "says why: {log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ambit-waypoint-controller-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_plaintext_controller_url_is_refused_at_start_naming_the_flags() {
    let output = within(
        Command::new(env!("CARGO_BIN_EXE_waypoint"))
            .args(["--controller", "http://127.0.0.1:15012"])
            .args(["--gateway", "test/waypoint", "--token-file", "/nonexistent"])
            .args(["--identity", &id("waypoint").to_string()])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--controller http://127.0.0.1:15012")
            && stderr.contains("--controller-plaintext")
            && stderr.contains("--controller-ca-file"),
        "{stderr}"
    );
}
