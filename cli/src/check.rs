//! `ambit check`: can this machine run local mode?
//!
//! Every check runs for real: a scratch network namespace is created, a veth pair is made
//! inside it and forwarding is switched on there (what `ambit local up` does for each node),
//! then the namespace is deleted. Nothing in the host namespace is changed.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Output;

use ambit_localnet::Netns;

use crate::table::Table;

/// The ports ztunnel and local mode use (15001..=15021, 15080).
pub fn default_ports() -> Vec<u16> {
    (15001..=15021).chain([15080]).collect()
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Good.
    Ok,
    /// Not run because an earlier check failed (e.g. not root).
    Skip,
    /// Local mode will not work.
    Fail,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked.
    pub name: &'static str,
    /// How it went.
    pub status: Status,
    /// What was found, or how to fix it.
    pub detail: String,
}

/// All rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// In the order they ran.
    pub results: Vec<CheckResult>,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// TCP ports that must be free on the host.
    pub ports: Vec<u16>,
}

/// Deletes the scratch namespace however the checks end.
#[derive(Debug)]
struct ScratchNetns {
    netns: Netns,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skip => "skip",
            Self::Fail => "FAIL",
        }
    }
}

impl CheckResult {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
        }
    }
}

impl CheckReport {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.results
            .iter()
            .any(|result| result.status == Status::Fail)
    }

    /// The report as a table, with a verdict line.
    pub fn render(&self) -> String {
        let mut table = Table::new(&["CHECK", "STATUS", "DETAIL"]);
        for result in &self.results {
            table.row(vec![
                result.name.to_owned(),
                result.status.as_str().to_owned(),
                result.detail.clone(),
            ]);
        }
        let mut out = table.render();
        out.push_str(if self.failed() {
            "\nsome checks failed: local mode will not work on this machine\n"
        } else {
            "\nall checks passed\n"
        });
        out
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        if let Err(error) = ip(&["netns", "del", self.netns.name()]) {
            eprintln!(
                "warning: could not delete scratch namespace {}: {error}",
                self.netns.name()
            );
        }
    }
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            ports: default_ports(),
        }
    }
}

/// Runs every check. Blocking: it runs `ip` and `nft` and switches namespaces.
pub fn run(options: &CheckOptions) -> CheckReport {
    let mut results = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    results.push(if root {
        CheckResult::new("root", Status::Ok, "running as uid 0")
    } else {
        CheckResult::new(
            "root",
            Status::Fail,
            format!(
                "running as uid {}; local mode needs root (sudo ambit …)",
                nix::unistd::geteuid()
            ),
        )
    });
    results.push(check_nftables(root));
    results.extend(check_namespaces(root));
    results.push(check_ports(&options.ports));
    CheckReport { results }
}

fn check_nftables(root: bool) -> CheckResult {
    const NAME: &str = "nftables";
    if !root {
        return CheckResult::new(NAME, Status::Skip, "needs root");
    }
    match run_command("nft", &["list", "tables"]) {
        Ok(output) => {
            let tables = String::from_utf8_lossy(&output.stdout).lines().count();
            CheckResult::new(
                NAME,
                Status::Ok,
                format!("`nft list tables` works ({tables} tables)"),
            )
        }
        Err(error) => CheckResult::new(
            NAME,
            Status::Fail,
            format!("{error}; install nftables and load nf_tables (modprobe nf_tables)"),
        ),
    }
}

/// Network namespace, veth pair and forwarding, in that order: each needs the one before.
fn check_namespaces(root: bool) -> Vec<CheckResult> {
    const NETNS: &str = "netns";
    const VETH: &str = "veth";
    const FORWARDING: &str = "ip forwarding";
    if !root {
        return [NETNS, VETH, FORWARDING]
            .into_iter()
            .map(|name| CheckResult::new(name, Status::Skip, "needs root"))
            .collect();
    }
    let name = format!("ambit-check-{}", std::process::id());
    if let Err(error) = ip(&["netns", "add", &name]) {
        let mut results = vec![CheckResult::new(
            NETNS,
            Status::Fail,
            format!("{error}; the kernel needs CONFIG_NET_NS and iproute2 must be installed"),
        )];
        for skipped in [VETH, FORWARDING] {
            results.push(CheckResult::new(
                skipped,
                Status::Skip,
                "needs a network namespace",
            ));
        }
        return results;
    }
    let scratch = ScratchNetns {
        netns: Netns::new(name.clone()),
    };
    let mut results = vec![CheckResult::new(
        NETNS,
        Status::Ok,
        format!("created and deleted {name}"),
    )];
    results.push(
        match ip(&[
            "-n", &name, "link", "add", "chk0", "type", "veth", "peer", "name", "chk1",
        ]) {
            Ok(_) => CheckResult::new(
                VETH,
                Status::Ok,
                "veth pair created in the scratch namespace",
            ),
            Err(error) => CheckResult::new(
                VETH,
                Status::Fail,
                format!("{error}; the kernel needs the veth module (modprobe veth)"),
            ),
        },
    );
    results.push(check_forwarding(&scratch.netns));
    drop(scratch);
    results
}

/// Local mode switches forwarding on inside each node namespace, never in the host's, so
/// that is what is tried here; the host's setting is only reported.
fn check_forwarding(netns: &Netns) -> CheckResult {
    const NAME: &str = "ip forwarding";
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let host = std::fs::read_to_string(PATH)
        .map(|value| value.trim().to_owned())
        .unwrap_or_else(|_| "unreadable".to_owned());
    let attempt = netns.run_in(|| {
        std::fs::write(PATH, "1")?;
        std::fs::read_to_string(PATH)
    });
    match attempt {
        Ok(Ok(value)) if value.trim() == "1" => CheckResult::new(
            NAME,
            Status::Ok,
            format!("can be enabled per namespace (host ip_forward={host})"),
        ),
        Ok(Ok(value)) => CheckResult::new(
            NAME,
            Status::Fail,
            format!(
                "wrote 1 to {PATH} in a namespace but read back {:?}",
                value.trim()
            ),
        ),
        Ok(Err(error)) => CheckResult::new(
            NAME,
            Status::Fail,
            format!("writing {PATH} in a namespace: {error} (is /proc/sys read-only?)"),
        ),
        Err(error) => CheckResult::new(
            NAME,
            Status::Fail,
            format!("entering the namespace: {error}"),
        ),
    }
}

/// Ports are bound on all IPv4 addresses, as ztunnel's listeners would be.
fn check_ports(ports: &[u16]) -> CheckResult {
    const NAME: &str = "free ports";
    let mut busy = Vec::new();
    let mut refused = Vec::new();
    for port in ports {
        match TcpListener::bind((Ipv4Addr::UNSPECIFIED, *port)) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                busy.push(port.to_string())
            }
            Err(error) => refused.push(format!("{port} ({})", describe_io_error(&error))),
        }
    }
    let range = describe_ports(ports);
    if busy.is_empty() && refused.is_empty() {
        return CheckResult::new(NAME, Status::Ok, format!("{range} free"));
    }
    let mut problems = Vec::new();
    if !busy.is_empty() {
        problems.push(format!(
            "in use: {} (stop what listens there: ss -ltnp)",
            busy.join(",")
        ));
    }
    if !refused.is_empty() {
        problems.push(format!("cannot bind: {}", refused.join(",")));
    }
    CheckResult::new(
        NAME,
        Status::Fail,
        format!("{} (of {range})", problems.join("; ")),
    )
}

fn describe_io_error(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    }
}

fn describe_ports(ports: &[u16]) -> String {
    let default = default_ports();
    if ports == default.as_slice() {
        "15001-15021,15080".to_owned()
    } else {
        let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
        list.join(",")
    }
}

fn ip(args: &[&str]) -> Result<Output, String> {
    run_command("ip", args)
}

fn run_command(program: &str, args: &[&str]) -> Result<Output, String> {
    let line = format!("`{program} {}`", args.join(" "));
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("{line}: {error}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("{line} failed: {}", stderr.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_is_reported_busy_and_a_released_one_free() {
        let holder = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = holder.local_addr().unwrap().port();
        let result = check_ports(&[port]);
        assert_eq!(result.status, Status::Fail);
        assert!(
            result.detail.contains(&format!("in use: {port}")),
            "{}",
            result.detail
        );
        drop(holder);
        assert_eq!(check_ports(&[port]).status, Status::Ok);
    }

    #[test]
    fn the_report_fails_when_any_row_fails() {
        let mut report = CheckReport {
            results: vec![CheckResult::new("root", Status::Ok, "uid 0")],
        };
        assert!(!report.failed());
        assert!(report.render().ends_with("all checks passed\n"));
        report
            .results
            .push(CheckResult::new("veth", Status::Fail, "no veth"));
        assert!(report.failed());
        let text = report.render();
        assert!(text.contains("veth   FAIL    no veth"), "{text}");
        assert!(text.contains("some checks failed"), "{text}");
    }

    #[test]
    fn the_default_ports_are_ztunnels() {
        let ports = default_ports();
        assert_eq!(ports.len(), 22);
        assert_eq!(ports.first(), Some(&15001));
        assert!(ports.contains(&15021) && ports.contains(&15080) && !ports.contains(&15022));
        assert_eq!(describe_ports(&ports), "15001-15021,15080");
    }
}
