//! In-pod redirection in real network namespaces: what the rules capture and what they leave
//! alone. Needs root (CI runs as root) and `nft`.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ambit_ztunnel::inpod::{
    HBONE_PORT, RedirectConfig, apply, bind_listeners, bind_udp, connect_marked,
    connect_marked_from,
};
use anyhow::{Result, ensure};
use support::{
    APP_PORT, Bed, accept_captured, app_connect, bounded, echo_at, expect_direct, plain_ip,
    pod_netns, read_exact, run_ok, within,
};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn outbound_app_traffic_lands_on_15001_and_marked_sockets_pass() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-outbound").await?;
        let b_app = SocketAddr::from((bed.b.ip(), APP_PORT));
        let echo = echo_at(bed.b.netns(), b_app, b"b:")?;
        let a = pod_netns(&bed.a)?;
        apply(&a, &RedirectConfig::default()).await?;
        let listeners = bind_listeners(&a)?;

        // The app's connection never reaches B: it lands on ztunnel's 15001 inside A.
        let mut app = app_connect(bed.a.netns(), b_app).await?;
        let (mut captured, peer, original) =
            accept_captured(&listeners.outbound, "outbound capture").await?;
        assert_eq!(original, b_app);
        assert_eq!(plain_ip(peer), IpAddr::V4(bed.a.ip()));
        app.write_all(b"hello").await?;
        assert_eq!(read_exact(&mut captured, 5).await?, b"hello");
        assert_eq!(echo.count(), 0, "captured traffic must not reach B");

        // Ztunnel's own (marked) socket from inside A goes straight to B.
        let mut direct = connect_marked(&a, b_app).await?;
        assert_eq!(read_exact(&mut direct, 2).await?, b"b:");
        assert_eq!(echo.count(), 1);
        assert_eq!(echo.peers()[0].ip(), IpAddr::V4(bed.a.ip()));

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn inbound_goes_to_15006_but_hbone_port_is_direct() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-inbound").await?;
        let b_app = SocketAddr::from((bed.b.ip(), APP_PORT));
        let echo = echo_at(bed.b.netns(), b_app, b"b:")?;
        let b = pod_netns(&bed.b)?;
        apply(&b, &RedirectConfig::default()).await?;
        let listeners = bind_listeners(&b)?;

        let mut client = app_connect(bed.a.netns(), b_app).await?;
        let (mut captured, peer, original) =
            accept_captured(&listeners.inbound_plaintext, "inbound capture").await?;
        assert_eq!(
            original, b_app,
            "original destination of the inbound connection"
        );
        assert_eq!(
            plain_ip(peer),
            IpAddr::V4(bed.a.ip()),
            "client address kept"
        );
        client.write_all(b"in").await?;
        assert_eq!(read_exact(&mut captured, 2).await?, b"in");
        assert_eq!(
            echo.count(),
            0,
            "inbound plaintext must not reach the app directly"
        );

        // HBONE is addressed to 15008 and reaches that listener itself, not 15006.
        let hbone = SocketAddr::from((bed.b.ip(), HBONE_PORT));
        let _client = app_connect(bed.a.netns(), hbone).await?;
        let (stream, peer) = within("hbone accept", listeners.hbone.accept()).await??;
        assert_eq!(plain_ip(stream.local_addr()?), IpAddr::V4(bed.b.ip()));
        assert_eq!(stream.local_addr()?.port(), HBONE_PORT);
        assert_eq!(plain_ip(peer), IpAddr::V4(bed.a.ip()));

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn kubelet_probe_address_is_exempt_both_ways() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-probe").await?;
        let probe = Ipv4Addr::new(169, 254, 7, 127);
        let node_b = bed.cluster.node("b").unwrap();
        // Kubelet's probes reach the pod from the node, SNATed to the probe address.
        run_ok(
            node_b.netns(),
            "ip",
            &["addr", "add", "169.254.7.127/32", "dev", "cbr0"],
        )
        .await?;
        let b_app = SocketAddr::from((bed.b.ip(), APP_PORT));
        let echo = echo_at(bed.b.netns(), b_app, b"b:")?;
        let node_echo = echo_at(node_b.netns(), SocketAddr::from((probe, 9000)), b"node:")?;
        let b = pod_netns(&bed.b)?;
        apply(&b, &RedirectConfig::default()).await?;
        let listeners = bind_listeners(&b)?;

        // Probe → pod: reaches the app directly.
        let socket = node_b.netns().tcp_socket(b_app)?;
        socket.bind(SocketAddr::from((probe, 0)))?;
        let mut stream = within("probe connect", socket.connect(b_app)).await??;
        assert_eq!(read_exact(&mut stream, 2).await?, b"b:");
        assert_eq!(echo.count(), 1);
        assert_eq!(echo.peers()[0].ip(), IpAddr::V4(probe));

        // Pod → probe address: not captured either.
        expect_direct(bed.b.netns(), SocketAddr::from((probe, 9000)), b"node:").await?;
        assert_eq!(node_echo.count(), 1);

        // Any other source is still captured (the exemption is for the probe address only).
        let _other = app_connect(bed.a.netns(), b_app).await?;
        let (_, peer, _) = accept_captured(&listeners.inbound_plaintext, "inbound").await?;
        assert_eq!(plain_ip(peer), IpAddr::V4(bed.a.ip()));
        assert_eq!(echo.count(), 1);

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn loopback_traffic_inside_the_pod_is_untouched() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-loopback").await?;
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 7100));
        let other_loopback = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 7100));
        let own_ip = SocketAddr::from((bed.a.ip(), 7100));
        run_ok(bed.a.netns(), "ip", &["link", "set", "lo", "up"]).await?;
        let local_echo = echo_at(bed.a.netns(), local, b"lo:")?;
        let other_echo = echo_at(bed.a.netns(), other_loopback, b"lo2:")?;
        let own_echo = echo_at(bed.a.netns(), own_ip, b"own:")?;
        let a = pod_netns(&bed.a)?;
        apply(&a, &RedirectConfig::default()).await?;
        let _listeners = bind_listeners(&a)?;

        expect_direct(bed.a.netns(), local, b"lo:").await?;
        expect_direct(bed.a.netns(), other_loopback, b"lo2:").await?;
        // The app calling itself by pod IP goes through `lo`: neither 15001 nor 15006.
        expect_direct(bed.a.netns(), own_ip, b"own:").await?;
        assert_eq!(
            (local_echo.count(), other_echo.count(), own_echo.count()),
            (1, 1, 1)
        );

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn dns_to_any_address_lands_on_15053_and_ztunnel_queries_pass() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-dns").await?;
        // A resolver in pod B answers whatever it receives, prefixed with "answer:".
        let b_dns = SocketAddr::from((bed.b.ip(), 53));
        let upstream = bed
            .b
            .netns()
            .run_in(|| std::net::UdpSocket::bind(b_dns))??;
        let upstream_task = std::thread::spawn(move || -> std::io::Result<()> {
            let mut buf = [0; 512];
            upstream.set_read_timeout(Some(support::TEST_TIMEOUT))?;
            let (len, from) = upstream.recv_from(&mut buf)?;
            let mut reply = b"answer:".to_vec();
            reply.extend_from_slice(&buf[..len]);
            upstream.send_to(&reply, from)?;
            Ok(())
        });
        let a = pod_netns(&bed.a)?;
        apply(&a, &RedirectConfig::default()).await?;
        let listeners = bind_listeners(&a)?;

        // UDP to a resolver address that exists nowhere: lands on 15053.
        let resolver = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 10), 53));
        let app = bed
            .a
            .netns()
            .run_in(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
        app.set_nonblocking(true)?;
        let app = tokio::net::UdpSocket::from_std(app)?;
        app.send_to(b"query-1", resolver).await?;
        let mut buf = [0; 64];
        let (len, from) =
            within("dns udp capture", listeners.dns_udp.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..len], b"query-1");
        assert_eq!(plain_ip(from), IpAddr::V4(bed.a.ip()));
        // The reply goes back to the app as if the resolver had answered.
        listeners.dns_udp.send_to(b"reply-1", from).await?;
        let (len, replier) = within("dns udp reply", app.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..len], b"reply-1");
        assert_eq!(replier, resolver);

        // TCP DNS is captured too.
        let _tcp = app_connect(bed.a.netns(), resolver).await?;
        let (_stream, peer) = within("dns tcp capture", listeners.dns_tcp.accept()).await??;
        assert_eq!(plain_ip(peer), IpAddr::V4(bed.a.ip()));

        // Ztunnel's own upstream query (marked) leaves the pod and its answer comes back.
        let proxy = bind_udp(&a, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        proxy.send_to(b"upstream", b_dns).await?;
        let (len, from) = within("upstream answer", proxy.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..len], b"answer:upstream");
        assert_eq!(from, b_dns);
        upstream_task.join().unwrap()?;

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn dns_capture_can_be_turned_off() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-nodns").await?;
        let b_dns = SocketAddr::from((bed.b.ip(), 53));
        let echo = echo_at(bed.b.netns(), b_dns, b"dns:")?;
        let a = pod_netns(&bed.a)?;
        let config = RedirectConfig {
            capture_dns: false,
            ..RedirectConfig::default()
        };
        apply(&a, &config).await?;
        let listeners = bind_listeners(&a)?;

        // TCP to port 53 is now ordinary outbound traffic: 15001, not 15053.
        let _app = app_connect(bed.a.netns(), b_dns).await?;
        let (_stream, _, original) = accept_captured(&listeners.outbound, "outbound").await?;
        assert_eq!(original, b_dns);
        assert_eq!(echo.count(), 0);
        let ruleset = run_ok(bed.a.netns(), "nft", &["list", "table", "inet", "ambit"]).await?;
        ensure!(!ruleset.contains("15053"), "{ruleset}");

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn replies_to_a_spoofed_client_address_return_to_ztunnel() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-origsrc").await?;
        let b_app = SocketAddr::from((bed.b.ip(), APP_PORT));
        let echo = echo_at(bed.b.netns(), b_app, b"b:")?;
        let b = pod_netns(&bed.b)?;
        apply(&b, &RedirectConfig::default()).await?;
        let _listeners = bind_listeners(&b)?;

        // Ztunnel hands an inbound connection to the app under the client's address (A's),
        // which pod B does not own. The app's replies must come back to ztunnel through the
        // connection mark and policy route, not leave towards A.
        let client = SocketAddr::from((bed.a.ip(), 0));
        let mut stream = within(
            "transparent connect",
            connect_marked_from(&b, client, b_app),
        )
        .await??;
        assert_eq!(read_exact(&mut stream, 2).await?, b"b:");
        stream.write_all(b"spoofed").await?;
        assert_eq!(read_exact(&mut stream, 7).await?, b"spoofed");
        assert_eq!(
            echo.peers()[0].ip(),
            IpAddr::V4(bed.a.ip()),
            "app sees the client"
        );

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn ipv6_is_captured_both_ways_with_its_original_destination() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-v6").await?;
        // Localnet pods are IPv4-only; give pod A and a neighbour on the same bridge IPv6
        // addresses (no DAD, so they are usable at once).
        let c = bed.cluster.add_pod("a", "demo", "c").await?;
        let a_ip: Ipv6Addr = "fd00:a::2".parse()?;
        let c_ip: Ipv6Addr = "fd00:a::3".parse()?;
        for (pod, ip) in [(&bed.a, "fd00:a::2/64"), (&c, "fd00:a::3/64")] {
            run_ok(
                pod.netns(),
                "ip",
                &["-6", "addr", "add", ip, "dev", "eth0", "nodad"],
            )
            .await?;
        }
        let c_app = SocketAddr::from((c_ip, APP_PORT));
        let a_app = SocketAddr::from((a_ip, APP_PORT));
        let c_echo = echo_at(c.netns(), c_app, b"c:")?;
        let a_echo = echo_at(bed.a.netns(), a_app, b"a:")?;
        let a = pod_netns(&bed.a)?;
        apply(&a, &RedirectConfig::default()).await?;
        let listeners = bind_listeners(&a)?;
        assert!(listeners.dns_udp_v6.is_some() && listeners.dns_tcp_v6.is_some());

        // Outbound over IPv6 → 15001, original destination via IP6T_SO_ORIGINAL_DST.
        let _app = app_connect(bed.a.netns(), c_app).await?;
        let (_, peer, original) = accept_captured(&listeners.outbound, "v6 outbound").await?;
        assert_eq!(original, c_app);
        assert_eq!(peer.ip(), IpAddr::V6(a_ip));
        assert_eq!(c_echo.count(), 0);

        // Ztunnel's marked socket reaches C directly.
        let mut direct = connect_marked(&a, c_app).await?;
        assert_eq!(read_exact(&mut direct, 2).await?, b"c:");

        // Inbound over IPv6 → 15006.
        let _client = app_connect(c.netns(), a_app).await?;
        let (_, peer, original) =
            accept_captured(&listeners.inbound_plaintext, "v6 inbound").await?;
        assert_eq!(original, a_app);
        assert_eq!(peer.ip(), IpAddr::V6(c_ip));
        assert_eq!(a_echo.count(), 0);

        bed.teardown().await
    })
    .await
}
