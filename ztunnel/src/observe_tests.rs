use ambit_hbone::copy_bidirectional;
use ambit_telemetry::SecurityPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn labels() -> TrafficLabels {
    let mut labels = TrafficLabels::new(Reporter::Destination);
    labels.source =
        WorkloadLabels::default().with_spiffe_principal("spiffe://cluster.local/ns/demo/sa/a");
    labels.destination.workload = Some("b".to_owned());
    labels.connection_security_policy = SecurityPolicy::MutualTls;
    labels
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

#[tokio::test]
async fn a_connection_is_live_until_dropped_and_its_bytes_reach_the_metrics() {
    let mut registry = MetricsRegistry::new();
    let telemetry = Telemetry::new(&mut registry);
    let tracked = telemetry.open(labels(), addr(1000), addr(7000));
    assert_eq!(telemetry.live().len(), 1);

    // A real copy loop updates the tracked counters: 5 bytes client→server, 3 back.
    let (mut client, proxy_a) = tokio::io::duplex(64);
    let (proxy_b, mut server) = tokio::io::duplex(64);
    let copy = async {
        let (mut a, mut b) = (proxy_a, proxy_b);
        copy_bidirectional(&mut a, &mut b, tracked.counters()).await
    };
    let peers = async {
        client.write_all(b"hello").await.unwrap();
        let mut got = [0; 5];
        server.read_exact(&mut got).await.unwrap();
        server.write_all(b"bye").await.unwrap();
        let mut back = [0; 3];
        client.read_exact(&mut back).await.unwrap();

        let dump = telemetry.live().dump();
        let entry = &dump["connections"][0];
        assert_eq!(entry["bytesClientToServer"], 5);
        assert_eq!(entry["bytesServerToClient"], 3);
        assert_eq!(entry["srcIdentity"], "cluster.local/ns/demo/sa/a");
        assert_eq!(entry["direction"], "inbound");
        drop((client, server));
    };
    let (copied, ()) = tokio::join!(copy, peers);
    copied.unwrap();

    let open_text = registry.encode().unwrap();
    assert!(open_text.contains("istio_tcp_connections_opened_total{reporter=\"destination\""));
    assert!(!open_text.contains("istio_tcp_connections_closed_total{"));
    drop(tracked);
    assert!(telemetry.live().is_empty());
    let text = registry.encode().unwrap();
    let line = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .to_owned()
    };
    assert!(line("istio_tcp_connections_closed_total").ends_with(" 1"));
    assert!(line("istio_tcp_received_bytes_total").ends_with(" 5"));
    assert!(line("istio_tcp_sent_bytes_total").ends_with(" 3"));
    assert!(
        line("istio_tcp_connections_closed_total")
            .contains("connection_security_policy=\"mutual_tls\"")
    );
}

#[test]
fn failure_flags_label_the_close() {
    let mut registry = MetricsRegistry::new();
    let telemetry = Telemetry::new(&mut registry);
    let mut tracked = telemetry.open(labels(), addr(1000), addr(7000));
    tracked.fail(ResponseFlags::DENIED, "denied by policy");
    drop(tracked);
    let text = registry.encode().unwrap();
    let closed = text
        .lines()
        .find(|line| line.starts_with("istio_tcp_connections_closed_total"))
        .unwrap();
    assert!(closed.contains("response_flags=\"DENY\""), "{closed}");
    let opened = text
        .lines()
        .find(|line| line.starts_with("istio_tcp_connections_opened_total"))
        .unwrap();
    assert!(opened.contains("response_flags=\"-\""), "{opened}");
}
