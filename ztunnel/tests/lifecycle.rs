//! Enrolling and unenrolling a pod in real network namespaces: fail closed without ztunnel,
//! idempotent apply, clean removal, and errors that name the namespace. Needs root and `nft`.

mod support;

use std::fs::File;
use std::io::ErrorKind;
use std::net::SocketAddr;

use ambit_ztunnel::inpod::{PodNetns, RedirectConfig, apply, bind_listeners, remove};
use anyhow::{Result, ensure};
use support::{
    APP_PORT, Bed, accept_captured, app_connect, bounded, echo_at, expect_direct, pod_netns, run_ok,
};

/// What `remove` must restore: the nftables ruleset, policy rules and routing tables.
async fn network_state(pod: &ambit_localnet::Pod) -> Result<Vec<String>> {
    let netns = pod.netns();
    Ok(vec![
        run_ok(netns, "nft", &["list", "ruleset"]).await?,
        run_ok(netns, "ip", &["-4", "rule", "show"]).await?,
        run_ok(netns, "ip", &["-6", "rule", "show"]).await?,
        run_ok(netns, "ip", &["-4", "route", "show", "table", "all"]).await?,
        run_ok(netns, "ip", &["-6", "route", "show", "table", "all"]).await?,
    ])
}

#[tokio::test]
async fn without_listeners_enrolled_traffic_is_refused_never_bypassed() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-failclosed").await?;
        let b_app = SocketAddr::from((bed.b.ip(), APP_PORT));
        let a_app = SocketAddr::from((bed.a.ip(), APP_PORT));
        let echo_b = echo_at(bed.b.netns(), b_app, b"b:")?;
        let echo_a = echo_at(bed.a.netns(), a_app, b"a:")?;
        let a = pod_netns(&bed.a)?;
        // Rules in place, but no ztunnel listening in the pod.
        apply(&a, &RedirectConfig::default()).await?;

        // Outbound from the enrolled pod: refused, B never sees it.
        let err = app_connect(bed.a.netns(), b_app).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert_eq!(echo_b.count(), 0);

        // Inbound to the enrolled pod's app: refused as well.
        let err = app_connect(bed.b.netns(), a_app).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert_eq!(echo_a.count(), 0);

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn apply_is_idempotent_and_remove_restores_plain_networking() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-remove").await?;
        let b_app = SocketAddr::from((bed.b.ip(), APP_PORT));
        let echo = echo_at(bed.b.netns(), b_app, b"b:")?;
        let before = network_state(&bed.a).await?;
        let a = pod_netns(&bed.a)?;

        apply(&a, &RedirectConfig::default()).await?;
        apply(&a, &RedirectConfig::default()).await?;
        let ruleset = run_ok(bed.a.netns(), "nft", &["list", "ruleset"]).await?;
        assert_eq!(ruleset.matches("table inet ambit").count(), 1, "{ruleset}");
        let rules = run_ok(bed.a.netns(), "ip", &["-4", "rule", "show"]).await?;
        assert_eq!(
            rules.matches("fwmark 0x111/0xfff lookup 100").count(),
            1,
            "{rules}"
        );
        let local = run_ok(bed.a.netns(), "ip", &["route", "show", "table", "100"]).await?;
        ensure!(local.contains("local default dev lo"), "{local}");

        // Re-enrolling with other settings replaces the table rather than adding to it.
        let no_dns = RedirectConfig {
            capture_dns: false,
            ..RedirectConfig::default()
        };
        apply(&a, &no_dns).await?;
        let table = run_ok(bed.a.netns(), "nft", &["list", "table", "inet", "ambit"]).await?;
        ensure!(
            !table.contains("15053") && table.contains("15001"),
            "{table}"
        );

        {
            let listeners = bind_listeners(&a)?;
            let _app = app_connect(bed.a.netns(), b_app).await?;
            let (_, _, original) = accept_captured(&listeners.outbound, "outbound").await?;
            assert_eq!(original, b_app);
            assert_eq!(echo.count(), 0);
        }

        remove(&a).await?;
        expect_direct(bed.a.netns(), b_app, b"b:").await?;
        assert_eq!(echo.count(), 1);
        let after = network_state(&bed.a).await?;
        ensure!(
            !after[0].contains("ambit"),
            "table left behind: {}",
            after[0]
        );
        assert_eq!(after, before, "pod networking differs after remove");

        // Removing again, or from a pod never enrolled, is fine.
        remove(&a).await?;
        remove(&pod_netns(&bed.b)?).await?;
        assert_eq!(network_state(&bed.a).await?, before);

        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn listeners_can_be_reopened_after_ztunnel_drops_them() -> Result<()> {
    bounded(async {
        let bed = Bed::new("ip-reopen").await?;
        let b_app = SocketAddr::from((bed.b.ip(), APP_PORT));
        let _echo = echo_at(bed.b.netns(), b_app, b"b:")?;
        let a = pod_netns(&bed.a)?;
        apply(&a, &RedirectConfig::default()).await?;
        for round in 0..2 {
            let listeners = bind_listeners(&a)?;
            let mut app = app_connect(bed.a.netns(), b_app).await?;
            let (mut captured, _, original) =
                accept_captured(&listeners.outbound, "outbound").await?;
            assert_eq!(original, b_app, "round {round}");
            // Close from ztunnel's side first so it holds the TIME_WAIT, like a restart would.
            drop(listeners);
            tokio::io::AsyncWriteExt::shutdown(&mut captured).await?;
            drop(captured);
            let mut rest = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut app, &mut rest).await?;
        }
        bed.teardown().await
    })
    .await
}

#[tokio::test]
async fn errors_name_the_namespace() -> Result<()> {
    let err = PodNetns::open("/var/run/netns/ambit-no-such-pod").unwrap_err();
    assert!(err.is_netns());
    assert_eq!(err.io_error_kind(), Some(ErrorKind::NotFound));
    assert!(
        err.to_string().contains("/var/run/netns/ambit-no-such-pod"),
        "{err}"
    );

    // A file that is not a network namespace is refused when entered.
    let not_netns = PodNetns::from_file(File::open("/dev/null")?, "fake-pod");
    let err = apply(&not_netns, &RedirectConfig::default())
        .await
        .unwrap_err();
    assert!(err.is_netns(), "{err}");
    assert!(err.to_string().contains("fake-pod"), "{err}");
    let err = bind_listeners(&not_netns).unwrap_err();
    assert!(err.to_string().contains("fake-pod"), "{err}");
    Ok(())
}
