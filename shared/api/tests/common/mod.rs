//! Shared test helpers: model objects, a real gRPC server on 127.0.0.1:0, bounded waits.
// Each test binary uses a different subset; helpers panic on setup failures.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ambit_api::server::{self, CaServer, ServerTransport};
use ambit_api::{ConfigServer, ControllerEndpoint, MeshResource, Snapshot};
use ambit_model::{Service, ServiceSpec, Workload, WorkloadSpec};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running control-plane server.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Serves on a fresh port.
    pub async fn start(config: Option<ConfigServer>, ca: Option<CaServer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, config, ca)
    }

    /// Serves on `addr` (to restart on the same port).
    pub async fn start_at(addr: SocketAddr, config: Option<ConfigServer>) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::on(listener, config, None)
    }

    fn on(listener: TcpListener, config: Option<ConfigServer>, ca: Option<CaServer>) -> Self {
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(listener, ServerTransport::Plaintext, config, ca, async {
                let _ = signal.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            shutdown: Some(shutdown),
            task,
        }
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// The plaintext endpoint of [`uri`](Self::uri), for the proxies' clients.
    pub fn endpoint(&self) -> ControllerEndpoint {
        ControllerEndpoint::plaintext(self.uri()).unwrap()
    }

    /// Graceful shutdown; returns once the server has stopped.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server did not stop in time")
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `pred` holds for the watched value, bounded by [`WAIT`].
pub async fn wait_for<T>(rx: &mut watch::Receiver<T>, what: &str, pred: impl FnMut(&T) -> bool) {
    tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("sender dropped");
}

/// Waits until `check` holds on the server's client table or counters.
pub async fn wait_for_server(
    server: &ConfigServer,
    what: &str,
    mut check: impl FnMut(&ConfigServer) -> bool,
) {
    let mut changes = server.status_changes();
    tokio::time::timeout(WAIT, async {
        loop {
            changes.borrow_and_update();
            if check(server) {
                return;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

pub fn workload(name: &str, node: &str) -> MeshResource {
    workload_with_label(name, node, "v1")
}

pub fn workload_with_label(name: &str, node: &str, version: &str) -> MeshResource {
    Workload::new(WorkloadSpec {
        uid: format!("uid-{name}"),
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        service_account: name.to_owned(),
        node: node.to_owned(),
        ips: vec!["10.244.0.10".parse().unwrap()],
        labels: [("version".to_owned(), version.to_owned())]
            .into_iter()
            .collect(),
        ..WorkloadSpec::default()
    })
    .unwrap()
    .into()
}

pub fn service(name: &str) -> MeshResource {
    Service::new(ServiceSpec {
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        vips: vec!["10.96.0.20".parse().unwrap()],
        ..ServiceSpec::default()
    })
    .unwrap()
    .into()
}

pub fn snapshot(resources: &[MeshResource]) -> Snapshot {
    Snapshot::from_resources(resources).unwrap()
}
