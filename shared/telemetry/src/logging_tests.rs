use super::*;
use crate::test_support::Captured;

#[test]
fn level_change_takes_effect() {
    let captured = Captured::default();
    let (subscriber, handle) = subscriber("info", false, captured.clone()).unwrap();
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!("first debug");
        tracing::info!("first info");
        handle.set_level("debug").unwrap();
        tracing::debug!("second debug");
        assert_eq!(handle.level().unwrap(), "debug");
    });
    let text = captured.text();
    assert!(!text.contains("first debug"), "{text}");
    assert!(text.contains("first info"), "{text}");
    assert!(text.contains("second debug"), "{text}");
}

#[test]
fn per_target_directives() {
    let captured = Captured::default();
    let (subscriber, handle) = subscriber("warn", true, captured.clone()).unwrap();
    handle.set_level("warn,chatty=trace").unwrap();
    tracing::subscriber::with_default(subscriber, || {
        tracing::trace!(target: "chatty", "from chatty");
        tracing::info!(target: "quiet", "from quiet");
    });
    let text = captured.text();
    assert!(text.contains("from chatty"), "{text}");
    assert!(!text.contains("from quiet"), "{text}");
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["target"], "chatty");
}

#[test]
fn invalid_filter_is_rejected_and_old_one_kept() {
    let (_subscriber, handle) = subscriber("info", false, Captured::default()).unwrap();
    let err = handle.set_level("info,foo=loud").unwrap_err();
    assert!(err.is_invalid_filter(), "{err}");
    assert!(err.to_string().contains("foo=loud"), "{err}");
    assert_eq!(handle.level().unwrap(), "info");
    assert!(subscriber("=", false, Captured::default()).is_err());
}

#[test]
fn handle_reports_a_dropped_subscriber() {
    let (subscriber, handle) = subscriber("info", false, Captured::default()).unwrap();
    drop(subscriber);
    let err = handle.set_level("debug").unwrap_err();
    assert!(!err.is_invalid_filter());
}
