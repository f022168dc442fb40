//! IPv4 prefixes and the address plan of a cluster.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The underlay network shared by all nodes; lives only inside the underlay netns.
pub(crate) const UNDERLAY_CIDR: Ipv4Cidr =
    Ipv4Cidr::new_unchecked(Ipv4Addr::new(172, 18, 0, 0), 16);
/// Highest node index: node `k` uses `172.18.0.(k+1)` and `10.244.k.0/24`.
pub(crate) const MAX_NODE_INDEX: u8 = 253;
/// Pod host numbers inside a node's /24 (`.1` is the node's pod gateway).
pub(crate) const POD_HOSTS: std::ops::RangeInclusive<u8> = 2..=254;

/// An IPv4 network: address and prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The network `network/prefix_len`; fails if the prefix is over 32 or host bits are set.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, Error> {
        if prefix_len > 32 {
            return Err(Error::invalid(format!("prefix length /{prefix_len}")));
        }
        let cidr = Self::new_unchecked(network, prefix_len);
        if cidr.network != network {
            return Err(Error::invalid(format!(
                "network {network}/{prefix_len}: host bits are set"
            )));
        }
        Ok(cidr)
    }

    const fn new_unchecked(network: Ipv4Addr, prefix_len: u8) -> Self {
        let masked = network.to_bits() & mask(prefix_len);
        Self {
            network: Ipv4Addr::from_bits(masked),
            prefix_len,
        }
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True if `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.to_bits() & mask(self.prefix_len) == self.network.to_bits()
    }

    /// The address `host` positions after the network address, if it stays inside.
    pub fn host(&self, host: u32) -> Option<Ipv4Addr> {
        let ip = Ipv4Addr::from_bits(self.network.to_bits().checked_add(host)?);
        self.contains(ip).then_some(ip)
    }
}

/// The pod network of node `index`: `10.244.<index>.0/24`.
pub(crate) fn node_pod_cidr(index: u8) -> Ipv4Cidr {
    Ipv4Cidr::new_unchecked(Ipv4Addr::new(10, 244, index, 0), 24)
}

/// The underlay address of node `index`: `172.18.0.<index + 1>` (`.1` is the underlay bridge).
pub(crate) fn node_underlay_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 18, 0, index.saturating_add(1))
}

/// The underlay bridge's own address, the same in every cluster (each has its own underlay
/// netns); public so a service started in the underlay can be named before the cluster exists.
pub const UNDERLAY_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);

/// The underlay bridge's own address.
pub(crate) fn underlay_gateway() -> Ipv4Addr {
    UNDERLAY_GATEWAY
}

const fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len as u32)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = || Error::invalid(format!("IPv4 network {text:?}"));
        let (ip, len) = text.split_once('/').ok_or_else(invalid)?;
        let ip = ip.parse().map_err(|_| invalid())?;
        let len = len.parse().map_err(|_| invalid())?;
        Self::new(ip, len)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        text.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(cidr: Ipv4Cidr) -> Self {
        cidr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_displays_and_round_trips_through_json() {
        let cidr: Ipv4Cidr = "10.244.3.0/24".parse().unwrap();
        assert_eq!(cidr.network(), Ipv4Addr::new(10, 244, 3, 0));
        assert_eq!(cidr.prefix_len(), 24);
        assert_eq!(cidr.to_string(), "10.244.3.0/24");
        let json = serde_json::to_string(&cidr).unwrap();
        assert_eq!(json, "\"10.244.3.0/24\"");
        assert_eq!(serde_json::from_str::<Ipv4Cidr>(&json).unwrap(), cidr);
    }

    #[test]
    fn rejects_host_bits_bad_lengths_and_garbage() {
        assert!(
            "10.244.3.1/24"
                .parse::<Ipv4Cidr>()
                .unwrap_err()
                .is_invalid()
        );
        assert!("10.244.3.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.244.3.0".parse::<Ipv4Cidr>().is_err());
        assert!("ten/8".parse::<Ipv4Cidr>().is_err());
        assert!(serde_json::from_str::<Ipv4Cidr>("\"1.2.3.4/8\"").is_err());
    }

    #[test]
    fn contains_and_host_respect_the_prefix() {
        let cidr = node_pod_cidr(7);
        assert_eq!(cidr.to_string(), "10.244.7.0/24");
        assert!(cidr.contains(Ipv4Addr::new(10, 244, 7, 200)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 244, 8, 1)));
        assert_eq!(cidr.host(1), Some(Ipv4Addr::new(10, 244, 7, 1)));
        assert_eq!(cidr.host(256), None);
        let all = Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn node_addresses_stay_in_the_underlay_and_off_the_gateway() {
        for index in 1..=MAX_NODE_INDEX {
            let ip = node_underlay_ip(index);
            assert!(UNDERLAY_CIDR.contains(ip));
            assert_ne!(ip, underlay_gateway());
        }
        assert_eq!(node_underlay_ip(1), Ipv4Addr::new(172, 18, 0, 2));
    }
}
