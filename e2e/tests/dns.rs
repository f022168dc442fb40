//! ztunnel's DNS proxy seen from a pod (root, local mesh): raw queries sent over UDP to the
//! pod's resolver (the `nameserver` of its `resolv.conf`, captured by ztunnel) answer a
//! Service's full name and the short forms a search path makes (`<svc>`, `<svc>.<ns>`) with
//! the Service's VIP, another namespace's Service by `<svc>.<ns>`, and never an unknown name
//! with a VIP; the libc resolver inside the pod (`getent`, through the search path) agrees.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ambit_e2e::{apply, bounded, eventually, mesh, pod, within};
use ambit_localmesh::LocalMesh;
use ambit_localnet::Pod;
use anyhow::{Context, Result, bail, ensure};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: near, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: far, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: near}
spec: {selector: {app: echo}, ports: [{name: http, port: 8000, targetPort: 8000}]}
---
apiVersion: v1
kind: Service
metadata: {name: remote, namespace: far}
spec: {selector: {app: remote}, ports: [{name: http, port: 9000, targetPort: 9000}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: near}
spec: {nodeName: node-1, containers: [{name: client, command: [sleep, infinity]}]}
"#;

/// How long one query may wait for its answer: an unknown name is forwarded upstream, and
/// ztunnel answers SERVFAIL after its 2 s upstream timeout when nothing upstream answers (as
/// in a cluster of network namespaces).
const QUERY_WAIT: Duration = Duration::from_secs(5);

/// The cluster IP the mesh gave Service `namespace/name`.
async fn vip(mesh: &LocalMesh, namespace: &str, name: &str) -> Result<Ipv4Addr> {
    mesh.services()
        .await
        .into_iter()
        .find(|s| s.namespace == namespace && s.name == name)
        .and_then(|s| s.cluster_ip)
        .with_context(|| format!("service {namespace}/{name} has no cluster IP"))
}

/// The `nameserver` of the pod's `resolv.conf` (what `ip netns exec` shows it as
/// `/etc/resolv.conf`).
fn pod_nameserver(pod: &Pod) -> Result<SocketAddr> {
    let path = format!("/etc/netns/{}/resolv.conf", pod.netns().name());
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let server: IpAddr = text
        .lines()
        .find_map(|line| line.strip_prefix("nameserver "))
        .with_context(|| format!("{path} names no nameserver"))?
        .trim()
        .parse()?;
    Ok(SocketAddr::new(server, 53))
}

/// Sends an A query for `name` from inside `pod` over UDP; the IPv4 addresses answered, or
/// `None` when nothing answered in time.
async fn resolve(
    pod: &Pod,
    server: SocketAddr,
    name: &str,
    id: u16,
) -> Result<Option<Vec<Ipv4Addr>>> {
    let socket = pod
        .netns()
        .run_in(|| std::net::UdpSocket::bind("0.0.0.0:0"))??;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let mut query = Message::query();
    query.metadata.id = id;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    socket.send_to(&query.to_vec()?, server).await?;
    let mut buffer = vec![0; 4096];
    let len = match tokio::time::timeout(QUERY_WAIT, socket.recv(&mut buffer)).await {
        Ok(received) => received?,
        Err(_) => return Ok(None),
    };
    let reply = Message::from_vec(&buffer[..len])?;
    ensure!(
        reply.metadata.message_type == MessageType::Response && reply.metadata.id == id,
        "not the reply to query {id}: {reply}"
    );
    Ok(Some(
        reply
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
    ))
}

/// What the pod's libc resolver makes of `name` (search path and all), via `getent`.
async fn getent(pod: &Pod, name: &str) -> Result<Vec<Ipv4Addr>> {
    let output = within(
        "getent",
        pod.netns()
            .command("getent")
            .args(["ahostsv4", name])
            .output(),
    )
    .await??;
    if !output.status.success() {
        bail!(
            "getent ahostsv4 {name} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect())
}

#[tokio::test]
async fn the_dns_proxy_answers_service_names_and_their_short_forms() -> Result<()> {
    bounded(async {
        let mesh = mesh("dns", 1).await?;
        apply(&mesh, "app.yaml", APP).await?;
        let client = pod(&mesh, "near", "client")?;
        let server = pod_nameserver(&client)?;
        let echo = vip(&mesh, "near", "echo").await?;
        let remote = vip(&mesh, "far", "remote").await?;

        eventually("the full name resolves to the VIP", || async {
            let answer = resolve(&client, server, "echo.near.svc.cluster.local.", 1).await?;
            Ok(answer == Some(vec![echo]))
        })
        .await?;
        let expected = [
            ("echo.near.", echo),
            ("echo.", echo),
            ("echo.near.svc.", echo),
            ("remote.far.", remote),
            ("remote.far.svc.cluster.local.", remote),
        ];
        for (id, (name, vip)) in (2..).zip(expected) {
            let answer = resolve(&client, server, name, id).await?;
            ensure!(
                answer == Some(vec![vip]),
                "{name} resolves to {vip}: {answer:?}"
            );
        }
        // A short name only stands for a Service of the pod's own namespace, and an unknown
        // name is no Service at all: no VIP either way (whatever upstream makes of them).
        for (id, name) in (20..).zip(["remote.", "nothing-here.near.svc.cluster.local."]) {
            // The proxy still answers (upstream's answer, or SERVFAIL when it has none).
            let answer = resolve(&client, server, name, id)
                .await?
                .with_context(|| format!("no answer at all for {name}"))?;
            ensure!(
                answer.iter().all(|ip| *ip != echo && *ip != remote),
                "{name} must not resolve to a VIP: {answer:?}"
            );
        }

        // The pod's own resolver library, walking the search path from a short name.
        for (name, vip) in [("echo", echo), ("echo.near", echo), ("remote.far", remote)] {
            let addresses = getent(&client, name).await?;
            ensure!(
                addresses.contains(&vip),
                "getent {name} gives {vip}: {addresses:?}"
            );
        }
        mesh.down().await?;
        Ok(())
    })
    .await
}
