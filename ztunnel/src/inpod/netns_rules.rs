//! Installing and removing the redirection in a pod's namespace (`nft`, `ip rule`, `ip route`).
//!
//! Commands are spawned from a thread that has entered the pod's namespace, so they act on
//! the pod, never on the node. The nftables part is one atomic `nft -f -` transaction.

use std::io::Write as _;
use std::process::{Command, Stdio};

use tracing::{debug, info};

use super::error::{Error, Result};
use super::netns::PodNetns;
use super::rules::{self, RedirectConfig};
use super::{CONNECTION_MARK, MARK_MASK, ROUTE_RULE_PRIORITY, ROUTE_TABLE};

const NFT: &str = "nft";
const IP: &str = "ip";
/// Present and "0" when the namespace's loopback has IPv6, read from inside the namespace.
const LO_IPV6_DISABLED: &str = "/proc/sys/net/ipv6/conf/lo/disable_ipv6";

/// How `ip route del` reports a route that is not there: IPv4 says ESRCH, IPv6 ENOENT, and
/// iproute2 itself complains when the table was never created.
const ROUTE_ABSENT: &[&str] = &[
    "No such process",
    "No such file or directory",
    "FIB table does not exist",
];

/// One IP family's policy routing: marked replies are routed to `lo`, i.e. back to ztunnel.
#[derive(Debug, Clone, Copy)]
struct Family {
    flag: &'static str,
    everything: &'static str,
}

const IPV4: Family = Family {
    flag: "-4",
    everything: "0.0.0.0/0",
};
const IPV6: Family = Family {
    flag: "-6",
    everything: "::/0",
};

/// Installs (or replaces) the redirection rules for `config` inside `netns`.
///
/// Idempotent: enrolling an enrolled pod again replaces its table in one transaction. The
/// policy route comes first, so the rules never run without it.
pub async fn apply(netns: &PodNetns, config: &RedirectConfig) -> Result<()> {
    let script = rules::replace_script(config);
    let target = netns.clone();
    blocking(netns, move || {
        target.run_in(|| {
            for family in families(target.name()) {
                add_policy_route(target.name(), family)?;
            }
            run(target.name(), NFT, &["-f", "-"], Some(&script), &[])
        })?
    })
    .await?;
    info!(netns = netns.name(), "in-pod redirection installed");
    Ok(())
}

/// Removes everything [`apply`] installed from `netns`; removing twice is fine.
///
/// Only our table, ip rule and route are deleted; the pod's own networking is left as it was.
pub async fn remove(netns: &PodNetns) -> Result<()> {
    let target = netns.clone();
    blocking(netns, move || {
        target.run_in(|| {
            run(
                target.name(),
                NFT,
                &["-f", "-"],
                Some(&rules::delete_script()),
                &[],
            )?;
            for family in families(target.name()) {
                delete_policy_route(target.name(), family)?;
            }
            Ok(())
        })?
    })
    .await?;
    info!(netns = netns.name(), "in-pod redirection removed");
    Ok(())
}

/// The families to configure; must run inside the namespace (it reads its sysctl).
fn families(netns: &str) -> Vec<Family> {
    match std::fs::read_to_string(LO_IPV6_DISABLED) {
        Ok(value) if value.trim() == "0" => vec![IPV4, IPV6],
        other => {
            debug!(
                netns,
                ?other,
                "IPv6 unavailable on lo; IPv4 policy routing only"
            );
            vec![IPV4]
        }
    }
}

fn add_policy_route(netns: &str, family: Family) -> Result<()> {
    let table = ROUTE_TABLE.to_string();
    let route = [
        family.flag,
        "route",
        "replace",
        "local",
        family.everything,
        "dev",
        "lo",
        "table",
        &table,
    ];
    run(netns, IP, &route, None, &[])?;
    let rule = rule_args(family, "add");
    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
    // The kernel refuses an identical rule with EEXIST: it is already in place.
    run(netns, IP, &rule, None, &["File exists"])
}

fn delete_policy_route(netns: &str, family: Family) -> Result<()> {
    let rule = rule_args(family, "del");
    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
    run(netns, IP, &rule, None, &["No such file or directory"])?;
    let table = ROUTE_TABLE.to_string();
    let route = [
        family.flag,
        "route",
        "del",
        "local",
        family.everything,
        "dev",
        "lo",
        "table",
        &table,
    ];
    run(netns, IP, &route, None, ROUTE_ABSENT)
}

fn rule_args(family: Family, verb: &str) -> Vec<String> {
    vec![
        family.flag.to_owned(),
        "rule".to_owned(),
        verb.to_owned(),
        "fwmark".to_owned(),
        format!("{CONNECTION_MARK:#x}/{MARK_MASK:#x}"),
        "pref".to_owned(),
        ROUTE_RULE_PRIORITY.to_string(),
        "lookup".to_owned(),
        ROUTE_TABLE.to_string(),
    ]
}

/// Runs `program args` (in the calling thread's namespace), feeding `stdin` if given.
///
/// A failure whose stderr contains one of `tolerated` counts as success.
fn run(
    netns: &str,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    tolerated: &[&str],
) -> Result<()> {
    let shown = format!("{program} {}", args.join(" "));
    debug!(netns, command = %shown, "running");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::io(netns, format!("starting `{shown}`"), source))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| Error::io(netns, format!("writing to `{shown}`"), source))?;
        // Dropping the pipe closes it, so the program sees the end of its input.
    }
    let output = child
        .wait_with_output()
        .map_err(|source| Error::io(netns, format!("waiting for `{shown}`"), source))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if tolerated.iter().any(|text| stderr.contains(text)) {
        debug!(netns, command = %shown, %stderr, "tolerated failure");
        return Ok(());
    }
    Err(Error::command(netns, shown, output.status, &output.stderr))
}

/// Runs namespace work on tokio's blocking pool; it spawns processes and waits for them.
async fn blocking<T, F>(netns: &PodNetns, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(Error::io(
            netns.name(),
            "in-pod rules task",
            std::io::Error::other(err),
        )),
    }
}
