//! The shell scripts (kind e2e, CNI installer) parse, pass shellcheck where it is installed,
//! and the kind samples are valid objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use ambit_install::Manifest;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scripts() -> Vec<PathBuf> {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(repo().join("e2e/kind"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    scripts.push(repo().join("images/cni-installer/install-cni.sh"));
    scripts
}

#[test]
fn every_script_parses_and_is_executable() {
    let scripts = scripts();
    assert!(scripts.len() >= 8, "{scripts:?}");
    for script in scripts {
        let output = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&script).unwrap().permissions(),
        );
        assert!(mode & 0o111 != 0, "{} is not executable", script.display());
    }
}

#[test]
fn scripts_pass_shellcheck_when_it_is_installed() {
    let Ok(version) = Command::new("shellcheck").arg("--version").output() else {
        eprintln!("shellcheck not installed: only `bash -n` checked the scripts");
        return;
    };
    assert!(version.status.success());
    let output = Command::new("shellcheck")
        .arg("-x")
        .current_dir(repo())
        .args(scripts())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn kind_samples_are_valid_objects() {
    let dir = repo().join("e2e/kind/samples");
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(document).unwrap();
            let manifest = Manifest {
                template: path.display().to_string(),
                object,
            };
            match manifest.kind() {
                // Custom kinds: checked by the controller's own parsers, not k8s-openapi.
                "AuthorizationPolicy" | "Gateway" | "HTTPRoute" => {}
                _ => support::check_typed(&manifest).unwrap(),
            }
            kinds.push(manifest.kind().to_owned());
        }
    }
    for kind in [
        "Deployment",
        "Service",
        "AuthorizationPolicy",
        "Gateway",
        "HTTPRoute",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} sample");
    }
}
