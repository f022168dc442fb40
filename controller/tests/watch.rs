//! The folder source sees files written after it started.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ambit_controller::Source;
use ambit_controller::local::FolderSource;
use ambit_controller::objects::Kind;

const POD: &str =
    "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {containers: []}\n";

#[tokio::test]
async fn a_written_file_yields_a_new_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    )
    .unwrap();
    let mut source = FolderSource::new(dir.path(), Duration::from_millis(50)).unwrap();
    let first = source.next_snapshot().await.unwrap();
    assert_eq!(first.resources.len(), 1);

    std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();
    // Wait for the snapshot that has the pod; intermediate ones (a partly written file) may
    // come first.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let snapshot = source.next_snapshot().await.unwrap();
            if snapshot.resources.pods().count() == 1 {
                return snapshot;
            }
        }
    })
    .await
    .expect("no snapshot with the new pod within 10 s");
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    assert_eq!(
        seen.resources.iter().map(|r| r.kind()).collect::<Vec<_>>(),
        [Kind::Namespace, Kind::Pod]
    );

    std::fs::remove_file(dir.path().join("pod.yaml")).unwrap();
    let after_delete = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let snapshot = source.next_snapshot().await.unwrap();
            if snapshot.resources.pods().count() == 0 {
                return snapshot;
            }
        }
    })
    .await
    .expect("no snapshot without the pod within 10 s");
    assert_eq!(after_delete.resources.len(), 1);
}

#[tokio::test]
async fn reading_the_folder_is_not_a_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();
    let debounce = Duration::from_millis(20);
    let mut source = FolderSource::new(dir.path(), debounce).unwrap();
    source.next_snapshot().await.unwrap();
    // The source's own reread opens and reads every file; if that counted as a change, the
    // next snapshot would follow right after the debounce, and again after every reread.
    let _ = std::fs::read_to_string(dir.path().join("pod.yaml")).unwrap();
    let idle = tokio::time::timeout(debounce * 25, source.next_snapshot()).await;
    assert!(
        idle.is_err(),
        "a snapshot came with nothing changed: the folder is reread in a loop"
    );
    // A real change still comes through.
    std::fs::write(
        dir.path().join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    )
    .unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(10), source.next_snapshot())
        .await
        .expect("no snapshot after a write")
        .unwrap();
    assert!(!changed.resources.is_empty());
}
