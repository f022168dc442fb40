//! SIGTERM starts the drain. Alone in its own test binary: the signal goes to the whole
//! process.

use std::time::Duration;

use ambit_runtime::{Shutdown, ShutdownReason};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[tokio::test]
async fn sigterm_drains_and_stops() {
    let shutdown = Shutdown::new(Duration::from_secs(5)).unwrap();
    let mut watch = shutdown.watch();
    let run = tokio::spawn(shutdown.run());
    // The handler is installed by `Shutdown::new`, so the signal cannot kill the process.
    kill(Pid::this(), Signal::SIGTERM).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.reason, ShutdownReason::Terminate);
    assert!(watch.is_draining());
    tokio::time::timeout(Duration::from_secs(10), watch.stopped())
        .await
        .unwrap();
}
