use super::*;

/// The rules of `chain` in `text`, one string per rule, in order.
fn rules_of(text: &str, chain: &str) -> Vec<String> {
    let start = format!("\tchain {chain} {{");
    let mut lines = text.lines().skip_while(|line| *line != start);
    assert!(lines.next().is_some(), "chain {chain} missing in:\n{text}");
    lines
        .take_while(|line| *line != "\t}")
        .skip(1) // the `type … hook …` line
        .map(|line| line.trim().to_owned())
        .collect()
}

fn hook_of(text: &str, chain: &str) -> String {
    let start = format!("\tchain {chain} {{");
    let mut lines = text.lines().skip_while(|line| *line != start).skip(1);
    lines.next().unwrap().trim().to_owned()
}

fn position(rules: &[String], needle: &str) -> usize {
    rules
        .iter()
        .position(|rule| rule.contains(needle))
        .unwrap_or_else(|| panic!("no rule containing {needle:?} in {rules:#?}"))
}

#[test]
fn one_inet_table_with_chains_on_the_right_hooks() {
    let text = ruleset(&RedirectConfig::default());
    assert!(text.starts_with("table inet ambit {\n"), "{text}");
    assert!(text.ends_with("}\n"));
    let expected = [
        ("prerouting_raw", "filter hook prerouting priority raw"),
        (
            "prerouting_mangle",
            "filter hook prerouting priority mangle",
        ),
        ("prerouting_nat", "nat hook prerouting priority dstnat"),
        ("output_raw", "filter hook output priority raw"),
        ("output_route", "route hook output priority mangle"),
        ("output_nat", "nat hook output priority -100"),
    ];
    for (chain, hook) in expected {
        assert_eq!(
            hook_of(&text, chain),
            format!("type {hook}; policy accept;"),
            "{chain}"
        );
    }
    assert_eq!(text.matches("\tchain ").count(), expected.len());
}

#[test]
fn inbound_goes_to_15006_except_hbone_probes_and_marked() {
    let text = ruleset(&RedirectConfig::default());
    let rules = rules_of(&text, "prerouting_nat");
    assert_eq!(
        rules,
        [
            "ip saddr 169.254.7.127 meta l4proto tcp accept",
            "ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff meta l4proto tcp accept",
            "ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006",
            "ip6 daddr != ::1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006",
        ]
    );
}

#[test]
fn marked_packets_set_the_connmark_and_replies_restore_it() {
    let text = ruleset(&RedirectConfig::default());
    assert_eq!(
        rules_of(&text, "prerouting_mangle"),
        ["meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111"]
    );
    assert_eq!(
        rules_of(&text, "output_route"),
        ["ct mark & 0xfff == 0x111 meta mark set ct mark"]
    );
}

#[test]
fn outbound_order_dns_then_exemptions_then_15001() {
    let text = ruleset(&RedirectConfig::default());
    let rules = rules_of(&text, "output_nat");
    let probe = position(&rules, "ip daddr 169.254.7.127 meta l4proto tcp accept");
    let probe6 = position(&rules, "ip6 daddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff");
    let dns_udp = position(
        &rules,
        "oifname != \"lo\" udp dport 53 meta mark & 0xfff != 0x539 redirect to :15053",
    );
    let dns_tcp = position(&rules, "ip daddr != 127.0.0.1 tcp dport 53");
    let dns_tcp6 = position(&rules, "ip6 daddr != ::1 tcp dport 53");
    let connmarked = position(&rules, "meta l4proto tcp meta mark & 0xfff == 0x111 accept");
    let lo = position(&rules, "oifname \"lo\" accept");
    let out4 = position(
        &rules,
        "ip daddr != 127.0.0.1 meta l4proto tcp meta mark & 0xfff != 0x539 redirect to :15001",
    );
    let out6 = position(
        &rules,
        "ip6 daddr != ::1 meta l4proto tcp meta mark & 0xfff != 0x539 redirect to :15001",
    );
    assert!(probe < dns_udp && probe6 < dns_udp);
    assert!(dns_udp < connmarked && dns_tcp < connmarked && dns_tcp6 < connmarked);
    assert!(connmarked < lo && lo < out4 && out4 < out6);
    assert_eq!(out6, rules.len() - 1, "the 15001 redirect comes last");
    assert!(rules[dns_tcp].ends_with("redirect to :15053"));
}

#[test]
fn dns_capture_off_removes_every_dns_rule() {
    let config = RedirectConfig {
        capture_dns: false,
        ..RedirectConfig::default()
    };
    let text = ruleset(&config);
    assert!(!text.contains("15053"), "{text}");
    assert!(!text.contains("dport 53") && !text.contains("sport 53"));
    assert!(!text.contains("_raw"), "no conntrack-zone chains: {text}");
    // Everything else is unchanged.
    let with_dns = ruleset(&RedirectConfig::default());
    assert_eq!(
        rules_of(&text, "prerouting_nat"),
        rules_of(&with_dns, "prerouting_nat")
    );
    assert!(text.contains("redirect to :15001"));
}

#[test]
fn dns_conntrack_zones_split_ztunnel_upstream_queries() {
    let text = ruleset(&RedirectConfig::default());
    assert_eq!(
        rules_of(&text, "output_raw"),
        ["udp dport 53 meta mark & 0xfff == 0x539 ct zone set 1"]
    );
    assert_eq!(
        rules_of(&text, "prerouting_raw"),
        ["udp sport 53 meta mark & 0xfff != 0x539 ct zone set 1"]
    );
}

#[test]
fn probe_sources_are_configurable() {
    let config = RedirectConfig {
        probe_source_v4: Ipv4Addr::new(169, 254, 9, 9),
        probe_source_v6: "fd00::9".parse().unwrap(),
        ..RedirectConfig::default()
    };
    let text = ruleset(&config);
    assert!(text.contains("ip saddr 169.254.9.9 meta l4proto tcp accept"));
    assert!(text.contains("ip daddr 169.254.9.9 meta l4proto tcp accept"));
    assert!(text.contains("ip6 saddr fd00::9 meta l4proto tcp accept"));
    assert!(text.contains("ip6 daddr fd00::9 meta l4proto tcp accept"));
    assert!(!text.contains("169.254.7.127"));
}

#[test]
fn scripts_replace_and_delete_only_our_table() {
    let config = RedirectConfig::default();
    let replace = replace_script(&config);
    assert!(
        replace.starts_with("add table inet ambit\ndelete table inet ambit\ntable inet ambit {")
    );
    assert!(replace.ends_with(&ruleset(&config)));
    assert_eq!(
        delete_script(),
        "add table inet ambit\ndelete table inet ambit\n"
    );
    // Nothing outside our table: no flush of the whole ruleset, no other tables.
    for script in [replace, delete_script()] {
        assert!(!script.contains("flush ruleset"));
        assert_eq!(
            script.matches("table ").count(),
            script.matches("table inet ambit").count()
        );
    }
}
