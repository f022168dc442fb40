//! `ambit demo` through the real binary (root): every step must behave and the exit code must
//! say so. It finds the other binaries beside itself, as `cargo build --workspace` leaves them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_passes_every_step_and_leaves_nothing_running() {
    let output = Command::new(env!("CARGO_BIN_EXE_ambit"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    for step in 1..=7 {
        assert!(
            stdout.contains(&format!("\n{step}. ")),
            "step {step}: {stdout}"
        );
    }
    assert_eq!(stdout.matches("   ok (").count(), 7, "{stdout}");
    assert!(
        stdout.contains("every step behaved as expected"),
        "{stdout}"
    );
}
