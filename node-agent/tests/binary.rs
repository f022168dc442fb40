//! The `ambit-node-agent` binary's edges: flag validation and the missing Kubernetes
//! configuration are reported before anything is bound. (The agent itself is tested through
//! its run function in `agent.rs`, against a mocked API server.)

#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);

async fn agent(args: &[&str], home: &std::path::Path) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_ambit-node-agent"))
        .args(args)
        .env_clear()
        .env("HOME", home)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, child).await.unwrap().unwrap()
}

fn temp_home(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ambit-na-bin-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn invalid_flags_are_refused_naming_the_flag() {
    let home = temp_home("flags");
    let listen = format!("--listen={}", home.join("cni.sock").display());
    for (args, flag) in [
        (
            vec!["--node=Node_1", &listen, "--ztunnel-socket=/run/z.sock"],
            "--node",
        ),
        (
            vec![
                "--node=node-1",
                "--listen=cni.sock",
                "--ztunnel-socket=/run/z.sock",
            ],
            "--listen",
        ),
        (vec!["--node=node-1", &listen], "--ztunnel-socket"),
    ] {
        let output = agent(&args, &home).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    // Nothing was bound for the refused runs.
    assert!(!home.join("cni.sock").exists());
    std::fs::remove_dir_all(&home).unwrap();
}

#[tokio::test]
async fn without_a_kubernetes_configuration_it_says_so() {
    let home = temp_home("nokube");
    let listen = format!("--listen={}", home.join("cni.sock").display());
    let output = agent(
        &[
            "--node=node-1",
            &listen,
            "--ztunnel-socket=/run/ambit-test/z.sock",
        ],
        &home,
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Kubernetes client configuration"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}
