//! The process-wide logger. Alone in its own test binary: it installs a global subscriber.

#[test]
fn installs_once_and_controls_the_global_filter() {
    let handle = ambit_telemetry::init_logging("info", true).unwrap();
    // `RUST_LOG` may be set by whoever runs the tests; either way the handle reports a filter.
    assert!(!handle.level().unwrap().is_empty());

    handle.set_level("warn").unwrap();
    assert!(tracing::enabled!(tracing::Level::WARN));
    assert!(!tracing::enabled!(tracing::Level::INFO));
    handle.set_level("debug").unwrap();
    assert!(tracing::enabled!(tracing::Level::DEBUG));
    assert!(!tracing::enabled!(tracing::Level::TRACE));

    let second = ambit_telemetry::init_logging("info", false);
    assert!(second.is_err(), "a second global logger must be refused");
}
