//! The `ambit` binary's verbs end to end: `check` runs for real, unbuilt verbs refuse clearly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Helpers outside #[test] fns panic on purpose.

use std::process::Command;

fn ambit(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ambit"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_prints_every_row_and_its_exit_code_matches_the_rows() {
    let (code, stdout, stderr) = ambit(&["check"]);
    let mut statuses = Vec::new();
    for name in [
        "root",
        "nftables",
        "netns",
        "veth",
        "ip forwarding",
        "free ports",
    ] {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&format!("{name}  ")))
            .unwrap_or_else(|| panic!("no {name} row in\n{stdout}{stderr}"));
        let status = line[name.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        assert!(["ok", "skip", "FAIL"].contains(&status.as_str()), "{line}");
        statuses.push(status);
    }
    let failed = statuses.iter().any(|status| status == "FAIL");
    assert_eq!(code, if failed { 1 } else { 0 }, "{stdout}");
    // The scratch namespace is gone whatever happened.
    let leftovers = std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|entry| {
                    entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with("ambit-check-")
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0);
}

#[test]
fn check_fails_on_a_busy_port() {
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let (code, stdout, _) = ambit(&["check", "--ports", &port]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(&format!("in use: {port}")), "{stdout}");
    assert!(stdout.contains("some checks failed"), "{stdout}");
}

#[test]
fn unbuilt_verbs_exit_2_and_say_so() {
    for args in [
        &["local", "up"][..],
        &["local", "apply", "-f", "x.yaml"],
        &["local", "exec", "default/curl", "--", "true"],
        &["local", "down"],
        &["demo"],
        &["waypoint", "apply", "-n", "bookinfo"],
        &["waypoint", "list"],
        &["install", "--dry-run", "-f", "values.yaml"],
    ] {
        let (code, stdout, stderr) = ambit(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(stdout.is_empty(), "{args:?} printed {stdout}");
        assert!(
            stderr.contains("is not implemented yet"),
            "{args:?}: {stderr}"
        );
    }
}
