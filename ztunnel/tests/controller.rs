//! ztunnel fed by a controller (root, netns test bed): an in-test gRPC server with the config
//! distribution and the CA runs inside node a's namespace; both real ztunnels subscribe for
//! their node and get their pods' certificates from it with a bootstrap token.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ambit_api::server::{
    Caller, HostedIdentities, ScopeAccess, ServerTls, ServerTransport, StaticTokens,
};
use ambit_api::{CaServer, ConfigServer, ConfigServerOptions, MeshResource, ScopeKey, Snapshot};
use ambit_identity::{CaOptions, CertificateAuthority, SpiffeId, Validity};
use ambit_localnet::{Node, Pod};
use ambit_model::{AuthorizationPolicy, Workload};
use anyhow::{Context, Result, ensure};
use support::ztunnel::{Ztunnel, enroll, exchange, http_get, start_ztunnel_with_controller};
use support::{APP_PORT, Bed, bounded, echo_at, within};
use tokio::sync::oneshot;

/// The controller's gRPC server, serving in a node's namespace.
struct TestController {
    config: ConfigServer,
    ca: CaServer,
    /// `--controller` and its TLS flags, as ztunnel is given them.
    args: Vec<String>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestController {
    /// Serves TLS on `node`'s underlay address, with a serving certificate for that address
    /// from its CA, whose root it writes into `dir`. Node `a` holds `demo/a`'s identity, node
    /// `b` `demo/b`'s; each node's token is `token-<node>`.
    fn start(node: &Node, dir: &Path) -> Result<Self> {
        let authority = CertificateAuthority::generate("cluster.local", CaOptions::default())?;
        let serving = authority.issue_server_certificate(
            &[],
            &[node.underlay_ip().into()],
            Validity::starting_now(Duration::from_secs(3600)),
        )?;
        let tls = ServerTls::new(serving.chain, serving.key)?;
        let roots = dir.join("controller-root.pem");
        std::fs::write(&roots, authority.root_pem())?;
        let bundle = authority.trust_bundle()?;
        let tokens = Arc::new(StaticTokens::new());
        for name in ["a", "b"] {
            tokens.insert(format!("token-{name}"), Caller::Node(name.to_owned()), None);
        }
        let hosts = HostedIdentities::new(|node, id: &SpiffeId| {
            id.namespace() == "demo" && id.service_account() == node
        });
        let ca = CaServer::new(
            Arc::new(authority),
            &bundle,
            tokens.clone(),
            Arc::new(hosts),
        );
        // As the controller does: the config stream takes the CA's tokens, and a node gets
        // only its own scope.
        let config = ConfigServer::new(
            ConfigServerOptions::default().with_debounce(Duration::from_millis(10)),
        )
        .with_authenticator(tokens, ScopeAccess::new(|_: &str, _: &str| None));
        let listener = node
            .netns()
            .bind_tcp(SocketAddr::from((node.underlay_ip(), 0)))?;
        let args = vec![
            "--controller".to_owned(),
            format!("https://{}", listener.local_addr()?),
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
        let task = tokio::spawn(async move {
            if let Err(err) = served.await {
                eprintln!("test controller failed: {err}");
            }
        });
        Ok(Self {
            config,
            ca,
            args,
            stop: Some(stop),
            task,
        })
    }

    /// Publishes the same resources to both nodes' scopes.
    fn publish(&self, resources: &[MeshResource]) -> Result<()> {
        for node in ["a", "b"] {
            let snapshot = Snapshot::from_resources(resources)?;
            self.config.publish(ScopeKey::node(node), snapshot);
        }
        Ok(())
    }

    /// Stops serving; returns once the server is gone.
    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.config.shutdown();
        within("controller shutdown", &mut self.task).await??;
        Ok(())
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn workload(pod: &Pod, uid: &str) -> Result<MeshResource> {
    let yaml = support::ztunnel::workload_yaml(pod, uid);
    let yaml = yaml.trim_start().trim_start_matches("- ");
    let workload: Workload = serde_yaml_ng::from_str(yaml).context("workload yaml")?;
    Ok(workload.into())
}

fn deny_demo() -> Result<MeshResource> {
    let policy: AuthorizationPolicy = serde_yaml_ng::from_str(
        "{name: deny-demo, namespace: demo, spec: {action: DENY, rules: [{from: [{source: {namespaces: [demo]}}]}]}}",
    )?;
    Ok(policy.into())
}

fn write_token(dir: &Path, node: &str, token: &str) -> Result<std::path::PathBuf> {
    let path = dir.join(format!("token-file-{node}"));
    std::fs::write(&path, format!("{token}\n"))?;
    Ok(path)
}

async fn start_pair(bed: &Bed, dir: &Path, controller: &[String]) -> Result<(Ztunnel, Ztunnel)> {
    let node_a = bed.cluster.node("a").context("node a")?;
    let node_b = bed.cluster.node("b").context("node b")?;
    let zt_a =
        start_ztunnel_with_controller(&node_a, dir, controller, &write_token(dir, "a", "token-a")?)
            .await?;
    let zt_b =
        start_ztunnel_with_controller(&node_b, dir, controller, &write_token(dir, "b", "token-b")?)
            .await?;
    Ok((zt_a, zt_b))
}

/// Retries `exchange` until it returns what `want` accepts (config pushes are asynchronous).
async fn eventually(from: &Pod, to: SocketAddr, what: &str, want: fn(&[u8]) -> bool) -> Result<()> {
    within(what, async {
        loop {
            if let Ok(got) = exchange(from, to, 12).await
                && want(&got)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test]
async fn config_and_certificates_from_the_controller_and_last_config_kept_without_it() -> Result<()>
{
    bounded(async {
        let bed = Bed::new("zt-ctl").await?;
        let dir = std::env::temp_dir().join(format!("ambit-zt-ctl-{}", bed.cluster.prefix()));
        std::fs::create_dir_all(&dir)?;
        let node_a = bed.cluster.node("a").context("node a")?;
        let controller = TestController::start(&node_a, &dir)?;
        controller.publish(&[workload(&bed.a, "uid-a")?, workload(&bed.b, "uid-b")?])?;
        let (zt_a, zt_b) = start_pair(&bed, &dir, &controller.args).await?;
        enroll(&zt_a, &bed.a, "uid-a").await?;
        enroll(&zt_b, &bed.b, "uid-b").await?;
        ensure!(
            controller.ca.stats().signed >= 2,
            "both pods' certificates come from the controller's CA: {:?}",
            controller.ca.stats()
        );

        // Both ztunnels verify each other's certificates against the bundle the CA handed
        // out: traffic flowing proves the chain and the bundle match.
        let server = SocketAddr::from((bed.b.ip(), APP_PORT));
        let echo = echo_at(bed.b.netns(), server, b"hello from b")?;
        let got = exchange(&bed.a, server, 12).await?;
        ensure!(got == b"hello from b", "through the mesh: got {got:?}");
        let ready = http_get(
            node_a.netns(),
            SocketAddr::from((node_a.underlay_ip(), 15021)),
            "/healthz/ready",
        )
        .await;
        ensure!(ready.is_ok(), "ztunnel a is ready: {ready:?}");

        // A DENY pushed by the controller applies without a restart.
        controller.publish(&[
            workload(&bed.a, "uid-a")?,
            workload(&bed.b, "uid-b")?,
            deny_demo()?,
        ])?;
        eventually(&bed.a, server, "DENY from the controller", |got| {
            got.is_empty()
        })
        .await?;

        // Lifted again, then the controller goes away: the last config stays in force.
        controller.publish(&[workload(&bed.a, "uid-a")?, workload(&bed.b, "uid-b")?])?;
        eventually(&bed.a, server, "DENY lifted", |got| got == b"hello from b").await?;
        controller.stop().await?;
        for _ in 0..3 {
            let got = exchange(&bed.a, server, 12).await?;
            ensure!(
                got == b"hello from b",
                "without the controller: got {got:?}"
            );
        }
        drop((zt_a, zt_b, echo));
        bed.teardown().await?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_rejected_token_leaves_the_pod_unenrolled_and_ztunnel_not_ready() -> Result<()> {
    bounded(async {
        let bed = Bed::new("zt-ctl-tok").await?;
        let dir = std::env::temp_dir().join(format!("ambit-zt-ctl-tok-{}", bed.cluster.prefix()));
        std::fs::create_dir_all(&dir)?;
        let node_a = bed.cluster.node("a").context("node a")?;
        let controller = TestController::start(&node_a, &dir)?;
        controller.publish(&[workload(&bed.a, "uid-a")?])?;
        let token_file = write_token(&dir, "a", "not-a-token")?;
        let zt_a =
            start_ztunnel_with_controller(&node_a, &dir, &controller.args, &token_file).await?;

        let refused = enroll(&zt_a, &bed.a, "uid-a").await;
        let message = format!("{:#}", refused.err().context("enrollment must fail")?);
        ensure!(message.contains("certificate"), "clear error: {message}");
        let ready = http_get(
            node_a.netns(),
            SocketAddr::from((node_a.underlay_ip(), 15021)),
            "/healthz/ready",
        )
        .await;
        ensure!(ready.is_err(), "not ready without certificates: {ready:?}");
        ensure!(
            controller.ca.stats().unauthenticated >= 1,
            "the CA saw the bad token: {:?}",
            controller.ca.stats()
        );
        let log = std::fs::read_to_string(dir.join("a.log"))?;
        ensure!(
            log.contains("Unauthenticated"),
            "ztunnel logs why the CA refused"
        );
        drop(zt_a);
        controller.stop().await?;
        bed.teardown().await?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    })
    .await
}
