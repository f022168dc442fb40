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
    let child = Command::new(env!("CARGO_BIN_EXE_ambit"))
        .arg("check")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let scratch = format!("ambit-check-{}", child.id());
    let output = child.wait_with_output().unwrap();
    let code = output.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
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
    // Its scratch namespace is gone whatever happened (other tests run checks concurrently,
    // so only this process's is looked for).
    assert!(!std::path::Path::new("/run/netns").join(&scratch).exists());
    if statuses[2] == "ok" {
        assert!(
            stdout.contains(&format!("created and deleted {scratch}")),
            "{stdout}"
        );
    }
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
    let args = ["install", "-f", "values.yaml"];
    let (code, stdout, stderr) = ambit(&args);
    assert_eq!(code, 2, "{args:?}");
    assert!(stdout.is_empty(), "{args:?} printed {stdout}");
    assert!(
        stderr.contains("is not implemented yet"),
        "{args:?}: {stderr}"
    );
}

#[test]
fn check_without_root_fails_and_skips_what_needs_root() {
    // `setpriv` (util-linux) drops to nobody without a login shell; the suite runs as root.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ambit"))
        .args(["check", "--ports", "1"])
        .output()
        .expect("setpriv from util-linux is needed to run ambit as an unprivileged user");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("root           FAIL    running as uid 65534"),
        "{stdout}"
    );
    for name in ["nftables", "netns", "veth", "ip forwarding"] {
        let line = stdout.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(
            line.contains("skip") && line.contains("needs root"),
            "{line}"
        );
    }
    // Port 1 is privileged: an unprivileged bind is refused, and said so.
    assert!(
        stdout.contains("cannot bind: 1 (permission denied)"),
        "{stdout}"
    );
}
