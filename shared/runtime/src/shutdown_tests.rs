use std::time::Duration;

use tokio::time::{Instant, timeout};

use super::*;

const BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn trigger_drains_then_stops() {
    let shutdown = Shutdown::without_signals(Duration::from_secs(30));
    let trigger = shutdown.trigger();
    let mut watch = shutdown.watch();
    assert!(!watch.is_draining());
    let run = tokio::spawn(shutdown.run());
    trigger.start();
    trigger.start();
    timeout(BOUND, watch.draining()).await.unwrap();
    let report = timeout(BOUND, run).await.unwrap().unwrap();
    assert_eq!(report.reason, ShutdownReason::Requested);
    assert!(report.unfinished.is_empty());
    assert!(watch.is_draining());
    assert!(watch.is_stopped());
    timeout(BOUND, watch.stopped()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn waits_for_tracked_tasks_to_finish() {
    let shutdown = Shutdown::without_signals(Duration::from_secs(30));
    let watch = shutdown.watch();
    let guard = watch.track("inbound");
    let mut task_watch = watch.clone();
    let task = tokio::spawn(async move {
        task_watch.draining().await;
        // The task needs a while to wind down, within the grace period.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(guard);
    });
    let started = Instant::now();
    shutdown.trigger().start();
    let report = shutdown.run().await;
    assert!(report.unfinished.is_empty(), "{report:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
    assert!(watch.is_stopped());
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn grace_period_bounds_the_wait() {
    let shutdown = Shutdown::without_signals(Duration::from_secs(10));
    let watch = shutdown.watch();
    let _stuck = watch.track("stuck");
    let finished = watch.track("finished");
    drop(finished);
    shutdown.trigger().start();
    let started = Instant::now();
    let report = shutdown.run().await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(report.unfinished, ["stuck"]);
    assert!(watch.is_stopped());
}

#[tokio::test]
async fn never_watch_does_not_drain() {
    let mut watch = DrainWatch::never();
    assert!(!watch.is_draining());
    tokio::select! {
        () = watch.draining() => panic!("drained"),
        () = tokio::task::yield_now() => {}
    }
}
