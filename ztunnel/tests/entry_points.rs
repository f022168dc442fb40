//! The ways into and out of the real `ztunnel` binary that the other suites drive only in
//! process (root, netns test bed): a pod's DNS queries captured to the DNS proxy (UDP and TCP),
//! SOCKS5 on the node's loopback carried through the mesh as an enrolled pod, and the SIGTERM
//! drain (open connections keep working, new ones are refused, exit once they end).

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ambit_identity::{CaOptions, CertificateAuthority};
use anyhow::{Context, Result, bail, ensure};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use support::ztunnel::{
    Ztunnel, enroll, exchange, start_ztunnel, start_ztunnel_with, workload_yaml,
};
use support::{APP_PORT, Bed, app_connect, bounded, echo_at, plain_ip, read_exact, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Any address works as the pod's resolver: every DNS packet leaving the pod is captured.
const RESOLVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 53)), 53);
const SOCKS5: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15080);

/// Both pods enrolled, and a Service `web.demo` (VIP:80 → pod b:APP_PORT).
fn config(bed: &Bed) -> String {
    format!(
        "workloads:\n{}{}services:\n  - name: web\n    namespace: demo\n    vips: [{VIP}]\n    ports: [{{port: 80, targetPort: {APP_PORT}}}]\n    endpoints: {{uid-b: {{}}}}\n",
        workload_yaml(&bed.a, "uid-a"),
        workload_yaml(&bed.b, "uid-b"),
    )
}

fn prepare(bed: &Bed, name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ambit-{name}-{}", bed.cluster.prefix()));
    std::fs::create_dir_all(&dir)?;
    let ca = CertificateAuthority::generate("cluster.local", CaOptions::default())?;
    ambit_ztunnel::certs::write_ca(&ca, &dir.join("ca"))?;
    std::fs::write(dir.join("config.yaml"), config(bed))?;
    Ok(dir)
}

fn log(dir: &Path, node: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{node}.log"))).unwrap_or_default()
}

fn query(id: u16, name: &str, kind: RecordType) -> Result<Message> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name)?, kind));
    Ok(message)
}

fn a_records(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn check_reply(reply: &Message, id: u16) -> Result<()> {
    ensure!(
        reply.metadata.message_type == MessageType::Response && reply.metadata.id == id,
        "not the reply to query {id}: {reply}"
    );
    ensure!(
        reply.metadata.response_code == ResponseCode::NoError,
        "query {id}: {reply}"
    );
    Ok(())
}

/// Asks over UDP from a plain app socket inside `pod`.
async fn ask_udp_from(pod: &ambit_localnet::Pod, message: &Message) -> Result<Message> {
    let socket = pod
        .netns()
        .run_in(|| std::net::UdpSocket::bind("0.0.0.0:0"))??;
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    socket.send_to(&message.to_vec()?, RESOLVER).await?;
    let mut buffer = vec![0; 4096];
    let (len, from) = within("a DNS reply over UDP", socket.recv_from(&mut buffer)).await??;
    // The reply must look like it came from the address the pod asked.
    ensure!(from == RESOLVER, "reply from {from}, asked {RESOLVER}");
    let reply = Message::from_vec(&buffer[..len])?;
    check_reply(&reply, message.metadata.id)?;
    Ok(reply)
}

/// Asks over TCP (length-prefixed) from a plain app socket inside `pod`.
async fn ask_tcp_from(pod: &ambit_localnet::Pod, message: &Message) -> Result<Message> {
    let mut stream = app_connect(pod.netns(), RESOLVER).await?;
    let bytes = message.to_vec()?;
    let len = u16::try_from(bytes.len())?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&bytes).await?;
    let len = u16::from_be_bytes(
        read_exact(&mut stream, 2)
            .await?
            .try_into()
            .map_err(|_| anyhow::anyhow!("short length prefix"))?,
    );
    let reply = Message::from_vec(&read_exact(&mut stream, usize::from(len)).await?)?;
    check_reply(&reply, message.metadata.id)?;
    Ok(reply)
}

#[tokio::test]
async fn a_pods_dns_queries_are_answered_by_its_ztunnel_over_udp_and_tcp() -> Result<()> {
    bounded(async {
        let bed = Bed::new("zt-dns").await?;
        let dir = prepare(&bed, "zt-dns")?;
        let zt_a = start_ztunnel(&bed.cluster.node("a").context("node a")?, &dir).await?;
        enroll(&zt_a, &bed.a, "uid-a").await?;

        // Every form the pod's search path (namespace demo) turns into the service's name.
        for (id, name) in [
            (1, "web.demo.svc.cluster.local."),
            (2, "web.demo."),
            (3, "web."),
        ] {
            let reply = ask_udp_from(&bed.a, &query(id, name, RecordType::A)?).await?;
            ensure!(
                a_records(&reply) == vec![VIP],
                "{name} over UDP: {reply}\n{}",
                log(&dir, "a")
            );
        }
        let reply = ask_tcp_from(
            &bed.a,
            &query(4, "web.demo.svc.cluster.local.", RecordType::A)?,
        )
        .await?;
        ensure!(a_records(&reply) == vec![VIP], "over TCP: {reply}");

        // And the name then carries traffic: VIP → pod b over HBONE.
        let zt_b = start_ztunnel(&bed.cluster.node("b").context("node b")?, &dir).await?;
        enroll(&zt_b, &bed.b, "uid-b").await?;
        let _echo = echo_at(
            bed.b.netns(),
            SocketAddr::from((bed.b.ip(), APP_PORT)),
            b"hello from b",
        )?;
        let got = exchange(&bed.a, SocketAddr::from((VIP, 80)), 12).await?;
        ensure!(
            got == b"hello from b",
            "through the resolved VIP: got {got:?}"
        );
        drop((zt_a, zt_b));
        bed.teardown().await
    })
    .await
}

/// SOCKS5 greeting (no authentication) then CONNECT to `target`; returns the reply code.
async fn socks5_connect(stream: &mut TcpStream, target: &[u8]) -> Result<u8> {
    stream.write_all(&[5, 1, 0]).await?;
    let chosen = read_exact(stream, 2).await?;
    ensure!(chosen == [5, 0], "method selection {chosen:?}");
    let mut request = vec![5, 1, 0];
    request.extend_from_slice(target);
    stream.write_all(&request).await?;
    // VER REP RSV ATYP, then a bound address of ATYP's length and a port.
    let head = read_exact(stream, 4).await?;
    ensure!(head[0] == 5, "reply version {head:?}");
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => bail!("reply address type {other}"),
    };
    read_exact(stream, rest).await?;
    Ok(head[1])
}

fn ipv4_target(addr: SocketAddr) -> Result<Vec<u8>> {
    let IpAddr::V4(ip) = addr.ip() else {
        bail!("IPv4 only");
    };
    let mut target = vec![1];
    target.extend_from_slice(&ip.octets());
    target.extend_from_slice(&addr.port().to_be_bytes());
    Ok(target)
}

fn name_target(name: &str, port: u16) -> Result<Vec<u8>> {
    let mut target = vec![3, u8::try_from(name.len())?];
    target.extend_from_slice(name.as_bytes());
    target.extend_from_slice(&port.to_be_bytes());
    Ok(target)
}

#[tokio::test]
async fn socks5_on_the_node_goes_through_the_mesh_as_the_named_pod() -> Result<()> {
    bounded(async {
        let bed = Bed::new("zt-socks").await?;
        let dir = prepare(&bed, "zt-socks")?;
        let node_a = bed.cluster.node("a").context("node a")?;
        let zt_a =
            start_ztunnel_with(&node_a, &dir, "debug", &["--socks5-workload", "demo/a"]).await?;
        let zt_b = start_ztunnel(&bed.cluster.node("b").context("node b")?, &dir).await?;
        enroll(&zt_a, &bed.a, "uid-a").await?;
        enroll(&zt_b, &bed.b, "uid-b").await?;
        let backend = SocketAddr::from((bed.b.ip(), APP_PORT));
        let echo = echo_at(bed.b.netns(), backend, b"hello from b")?;

        // By pod IP, and by service name (resolved through the mesh's names, port 80 → VIP).
        for target in [
            ipv4_target(backend)?,
            name_target("web.demo.svc.cluster.local", 80)?,
        ] {
            let mut stream =
                within("connecting to SOCKS5", node_a.netns().connect_tcp(SOCKS5)).await??;
            let code = socks5_connect(&mut stream, &target).await?;
            ensure!(code == 0, "CONNECT refused with {code}\n{}", log(&dir, "a"));
            let greeting = read_exact(&mut stream, 12).await?;
            ensure!(greeting == b"hello from b", "got {greeting:?}");
            stream.write_all(b"ping").await?;
            ensure!(read_exact(&mut stream, 4).await? == b"ping", "echo");
        }
        ensure!(echo.count() == 2, "backend accepted {}", echo.count());
        for peer in echo.peers() {
            ensure!(
                plain_ip(peer) == IpAddr::V4(bed.a.ip()),
                "the backend sees pod a as the source, got {peer}"
            );
        }
        // Carried over HBONE with pod a's identity, like the pod's own traffic.
        ensure!(
            log(&dir, "a").contains(&format!("route=Hbone {{ next_hop: {}:15008", bed.b.ip())),
            "SOCKS5 traffic must go over HBONE"
        );

        // A name outside the mesh is not resolved for SOCKS clients: host unreachable (4).
        let mut stream =
            within("connecting to SOCKS5", node_a.netns().connect_tcp(SOCKS5)).await??;
        let code = socks5_connect(&mut stream, &name_target("example.com", 80)?).await?;
        ensure!(code == 4, "unknown name answered {code}");
        drop((zt_a, zt_b));
        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn sigterm_keeps_open_connections_refuses_new_ones_and_exits_when_they_end() -> Result<()> {
    bounded(async {
        let bed = Bed::new("zt-drain").await?;
        let dir = prepare(&bed, "zt-drain")?;
        // A grace period far longer than the test's waits: an exit seen within them was
        // caused by the last connection ending, not by the deadline.
        let zt_a = start_ztunnel_with(
            &bed.cluster.node("a").context("node a")?,
            &dir,
            "debug",
            &["--drain-seconds", "300"],
        )
        .await?;
        let zt_b = start_ztunnel(&bed.cluster.node("b").context("node b")?, &dir).await?;
        enroll(&zt_a, &bed.a, "uid-a").await?;
        enroll(&zt_b, &bed.b, "uid-b").await?;
        let backend = SocketAddr::from((bed.b.ip(), APP_PORT));
        let _echo = echo_at(bed.b.netns(), backend, b"hello from b")?;

        let mut open = app_connect(bed.a.netns(), backend).await?;
        ensure!(
            read_exact(&mut open, 12).await? == b"hello from b",
            "greeting"
        );
        zt_a.terminate().await?;
        within("the drain to start", async {
            while !log(&dir, "a").contains("draining") {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await?;

        // The open connection still carries data both ways.
        for round in 0..3u8 {
            let message = [b'p', b'i', b'n', b'0' + round];
            open.write_all(&message).await?;
            ensure!(
                read_exact(&mut open, 4).await? == message,
                "round {round} during the drain"
            );
        }
        // A new connection from the pod is refused: captured, and nothing serves it.
        let fresh = exchange(&bed.a, backend, 12).await;
        ensure!(
            !matches!(&fresh, Ok(got) if !got.is_empty()),
            "a new connection during the drain reached the backend: {fresh:?}"
        );

        // Closing the last connection lets ztunnel finish.
        open.shutdown().await?;
        let mut rest = Vec::new();
        let _ = within("the close", open.read_to_end(&mut rest)).await?;
        drop(open);
        let status = wait_exit(zt_a).await?;
        ensure!(
            status.success(),
            "ztunnel exited with {status}\n{}",
            log(&dir, "a")
        );
        drop(zt_b);
        bed.teardown().await
    })
    .await
}

async fn wait_exit(ztunnel: Ztunnel) -> Result<std::process::ExitStatus> {
    ztunnel.wait().await
}
