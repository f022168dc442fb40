//! The parts of `resolv.conf` the DNS proxy needs: upstream `nameserver`s and `search` domains.
//!
//! Parsed the forgiving way the C library does: unknown keywords and unreadable values are
//! skipped (with a debug log), never fatal, so one odd line cannot leave pods without DNS.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::Path;

use tracing::debug;

/// Port of a `nameserver`; resolv.conf has no way to name another.
const DNS_PORT: u16 = 53;

/// Upstream resolvers and search domains from a `resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses, port 53, in file order.
    pub nameservers: Vec<SocketAddr>,
    /// Domains of the last `search` (or `domain`) line, without trailing dots.
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Parses the text of a `resolv.conf`.
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            // Comments start with '#' or ';', at the start of a line or after a value.
            let mut words = line
                .split_whitespace()
                .take_while(|word| !word.starts_with(['#', ';']));
            match words.next() {
                Some("nameserver") => match words.next().and_then(parse_nameserver) {
                    Some(address) => conf.nameservers.push(address),
                    None => debug!(line, "skipping an unreadable nameserver line"),
                },
                // The last of `search` and `domain` wins, as in the C library.
                Some("search") | Some("domain") => {
                    conf.search = words
                        .map(|domain| domain.trim_end_matches('.'))
                        .filter(|domain| !domain.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                _ => {}
            }
        }
        conf
    }

    /// Reads and parses the `resolv.conf` at `path`.
    pub fn read(path: impl AsRef<Path>) -> io::Result<Self> {
        std::fs::read_to_string(path).map(|text| Self::parse(&text))
    }
}

/// An address `nameserver` takes: IPv4, or IPv6 with an optional numeric `%scope`.
fn parse_nameserver(value: &str) -> Option<SocketAddr> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let (ip, scope) = value.split_once('%')?;
    let ip = ip.parse().ok()?;
    let scope = scope.parse().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope)))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

    use super::ResolvConf;

    #[test]
    fn kubernetes_pod_resolv_conf() {
        let conf = ResolvConf::parse(
            "search bookinfo.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\n\
             options ndots:5\n",
        );
        assert_eq!(
            conf.nameservers,
            vec!["10.96.0.10:53".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            conf.search,
            [
                "bookinfo.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
    }

    #[test]
    fn comments_blank_lines_and_unknown_keywords_are_skipped() {
        let conf = ResolvConf::parse(
            "# generated\n\n; another comment\n  nameserver   192.0.2.1   # primary\n\
             sortlist 130.155.160.0/255.255.240.0\nnameserver 2001:db8::53\n\
             options rotate timeout:1\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert!(conf.search.is_empty());
    }

    #[test]
    fn unreadable_nameservers_are_skipped() {
        let conf = ResolvConf::parse(
            "nameserver\nnameserver dns.example\nnameserver 300.1.1.1\n\
             nameserver fe80::1%eth0\nnameserver fe80::1%2\nnameserver 192.0.2.7\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                SocketAddr::V6(SocketAddrV6::new(
                    "fe80::1".parse::<Ipv6Addr>().unwrap(),
                    53,
                    0,
                    2
                )),
                "192.0.2.7:53".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn last_search_or_domain_line_wins() {
        let conf = ResolvConf::parse("search a.example. b.example\ndomain c.example\n");
        assert_eq!(conf.search, ["c.example"]);
        let conf = ResolvConf::parse("domain c.example\nsearch a.example. b.example\n");
        assert_eq!(conf.search, ["a.example", "b.example"]);
    }

    #[test]
    fn reads_a_file() {
        let path = std::env::temp_dir().join(format!("ambit-resolv-{}.conf", std::process::id()));
        std::fs::write(&path, "nameserver 127.0.0.53\nsearch lan\n").unwrap();
        let conf = ResolvConf::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(conf.nameservers, vec!["127.0.0.53:53".parse().unwrap()]);
        assert_eq!(conf.search, ["lan"]);
        assert!(ResolvConf::read(path).is_err());
    }
}
