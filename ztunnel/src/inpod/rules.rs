//! The nftables ruleset installed in each enrolled pod's network namespace (pure text).
//!
//! Semantics follow Istio's in-pod (ambient) iptables rules, in one `inet` table of our own so
//! that both IP families share the rules and unenrolling deletes exactly what we added:
//!
//! | hook | rule |
//! |---|---|
//! | prerouting, mangle | a packet carrying ztunnel's mark `0x539` gives its connection the connmark `0x111` |
//! | prerouting, nat | TCP from the probe source `169.254.7.127` (v6: `fd16:9254:7127:1337:ffff:ffff:ffff:ffff`) is left alone |
//! | prerouting, nat | other TCP, not to loopback, not to 15008, not marked → redirect to 15006 |
//! | output, route | a connection with connmark `0x111` restores it as packet mark (policy routing sends it back to ztunnel) |
//! | output, nat | TCP to the probe source is left alone |
//! | output, nat | DNS: UDP 53 not via `lo`, TCP 53 not to loopback, not marked → redirect to 15053 (if DNS capture is on) |
//! | output, nat | TCP with mark `0x111` is left alone; traffic leaving via `lo` is left alone |
//! | output, nat | other TCP, not to loopback, not marked → redirect to 15001 |
//! | raw | with DNS capture, ztunnel's upstream DNS queries and their answers use conntrack zone 1 |
//!
//! Marks are compared under the mask `0xfff`, as Istio does, so other users of the upper mark
//! bits are not disturbed. Only the first packet of a connection goes through the nat hooks,
//! so replies on connections ztunnel accepted are never redirected again.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{
    CONNECTION_MARK, DNS_PORT, HBONE_PORT, INBOUND_PLAINTEXT_PORT, MARK_MASK, OUTBOUND_PORT,
    ZTUNNEL_MARK,
};

/// The nftables family and name of our table in each pod namespace.
pub const TABLE: &str = "inet ambit";
/// The source address kubelet probes get after SNAT on the node (Istio's default).
pub const PROBE_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);
/// The IPv6 source address of kubelet probes after SNAT (Istio's default).
pub const PROBE_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(
    0xfd16, 0x9254, 0x7127, 0x1337, 0xffff, 0xffff, 0xffff, 0xffff,
);
/// The conntrack zone for ztunnel's upstream DNS traffic, apart from the pod's own queries.
const DNS_CONNTRACK_ZONE: u16 = 1;

/// What varies between pods' rulesets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    /// Redirect DNS (UDP and TCP port 53) to ztunnel's DNS proxy on 15053.
    pub capture_dns: bool,
    /// IPv4 source of kubelet probes, exempt from capture.
    pub probe_source_v4: Ipv4Addr,
    /// IPv6 source of kubelet probes, exempt from capture.
    pub probe_source_v6: Ipv6Addr,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            capture_dns: true,
            probe_source_v4: PROBE_SOURCE_V4,
            probe_source_v6: PROBE_SOURCE_V6,
        }
    }
}

/// An `nft -f` script that atomically replaces our table with the ruleset for `config`.
///
/// Creating the table before deleting it makes the script valid whether or not the table
/// already exists, so applying twice is the same as applying once; the whole file is one
/// transaction, so the pod never runs with half a ruleset.
pub fn replace_script(config: &RedirectConfig) -> String {
    format!(
        "add table {TABLE}\ndelete table {TABLE}\n{}",
        ruleset(config)
    )
}

/// An `nft -f` script that deletes our table if present and succeeds if it is not.
pub fn delete_script() -> String {
    format!("add table {TABLE}\ndelete table {TABLE}\n")
}

/// The table definition for `config`, as `nft list table` would show it.
pub fn ruleset(config: &RedirectConfig) -> String {
    let marked = format!("meta mark & {MARK_MASK:#x} == {ZTUNNEL_MARK:#x}");
    let unmarked = format!("meta mark & {MARK_MASK:#x} != {ZTUNNEL_MARK:#x}");
    let conn_marked = format!("meta mark & {MARK_MASK:#x} == {CONNECTION_MARK:#x}");
    let probe4 = config.probe_source_v4;
    let probe6 = config.probe_source_v6;

    let mut table = Table::default();

    if config.capture_dns {
        let chain = table.chain("prerouting_raw", "filter hook prerouting priority raw");
        chain.rule(format!(
            "udp sport 53 {unmarked} ct zone set {DNS_CONNTRACK_ZONE}"
        ));
    }

    let chain = table.chain(
        "prerouting_mangle",
        "filter hook prerouting priority mangle",
    );
    chain.rule(format!(
        "{marked} ct mark set ct mark & {:#x} | {CONNECTION_MARK:#x}",
        !MARK_MASK
    ));

    let chain = table.chain("prerouting_nat", "nat hook prerouting priority dstnat");
    chain.rule(format!("ip saddr {probe4} meta l4proto tcp accept"));
    chain.rule(format!("ip6 saddr {probe6} meta l4proto tcp accept"));
    for loopback in ["ip daddr != 127.0.0.1", "ip6 daddr != ::1"] {
        chain.rule(format!(
            "{loopback} tcp dport != {HBONE_PORT} {unmarked} redirect to :{INBOUND_PLAINTEXT_PORT}"
        ));
    }

    if config.capture_dns {
        let chain = table.chain("output_raw", "filter hook output priority raw");
        chain.rule(format!(
            "udp dport 53 {marked} ct zone set {DNS_CONNTRACK_ZONE}"
        ));
    }

    // A `route` chain, because changing the mark there makes the kernel route the packet again,
    // which is what sends replies to spoofed sources back through `lo` to ztunnel.
    let chain = table.chain("output_route", "route hook output priority mangle");
    chain.rule(format!(
        "ct mark & {MARK_MASK:#x} == {CONNECTION_MARK:#x} meta mark set ct mark"
    ));

    // nft accepts the `dstnat` keyword only on prerouting; -100 is its value.
    let chain = table.chain("output_nat", "nat hook output priority -100");
    chain.rule(format!("ip daddr {probe4} meta l4proto tcp accept"));
    chain.rule(format!("ip6 daddr {probe6} meta l4proto tcp accept"));
    if config.capture_dns {
        chain.rule(format!(
            "oifname != \"lo\" udp dport 53 {unmarked} redirect to :{DNS_PORT}"
        ));
        for loopback in ["ip daddr != 127.0.0.1", "ip6 daddr != ::1"] {
            chain.rule(format!(
                "{loopback} tcp dport 53 {unmarked} redirect to :{DNS_PORT}"
            ));
        }
    }
    chain.rule(format!("meta l4proto tcp {conn_marked} accept"));
    // The app talking to itself by pod IP goes out through `lo`: not mesh traffic.
    chain.rule("oifname \"lo\" accept".to_owned());
    for loopback in ["ip daddr != 127.0.0.1", "ip6 daddr != ::1"] {
        chain.rule(format!(
            "{loopback} meta l4proto tcp {unmarked} redirect to :{OUTBOUND_PORT}"
        ));
    }

    table.render()
}

/// A table being rendered: chains in hook order, each with its rules.
#[derive(Debug, Default)]
struct Table {
    chains: Vec<Chain>,
}

#[derive(Debug)]
struct Chain {
    name: &'static str,
    hook: &'static str,
    rules: Vec<String>,
}

impl Table {
    fn chain(&mut self, name: &'static str, hook: &'static str) -> &mut Chain {
        self.chains.push(Chain {
            name,
            hook,
            rules: Vec::new(),
        });
        let last = self.chains.len() - 1;
        &mut self.chains[last]
    }

    fn render(&self) -> String {
        let mut out = format!("table {TABLE} {{\n");
        for chain in &self.chains {
            let _ = writeln!(out, "\tchain {} {{", chain.name);
            let _ = writeln!(out, "\t\ttype {}; policy accept;", chain.hook);
            for rule in &chain.rules {
                let _ = writeln!(out, "\t\t{rule}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }
}

impl Chain {
    fn rule(&mut self, rule: String) {
        self.rules.push(rule);
    }
}

#[cfg(test)]
mod tests;
