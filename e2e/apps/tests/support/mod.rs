//! Starting sample apps on 127.0.0.1 for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use ambit_sample_apps::client::{Client, Protocol, Target};
use ambit_sample_apps::echo::{EchoConfig, EchoServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// Every network wait in these tests is bounded by this.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);

/// Starts an in-process echo server; it stops when the test's runtime ends.
pub(crate) async fn echo(config: EchoConfig) -> SocketAddr {
    let server = EchoServer::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener));
    addr
}

/// A client for `http://addr{path}`.
pub(crate) fn client(addr: SocketAddr, path: &str, protocol: Protocol) -> Client {
    let target = Target::parse(&format!("http://{addr}{path}")).unwrap();
    Client::new(target, protocol, LIMIT)
}

/// An address nothing listens on (bound, then released).
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Runs one of the crate's binaries as a server and waits for its `listening on` line.
pub(crate) async fn spawn_server(program: &str, args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("server printed nothing in time")
        .unwrap()
        .expect("server exited before listening");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

/// Runs a binary to completion and returns (exit code, stdout, stderr).
pub(crate) async fn run(program: &str, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(LIMIT, Command::new(program).args(args).output())
        .await
        .expect("command did not finish in time")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
