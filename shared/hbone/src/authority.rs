//! Strict parsing of the HBONE `:authority`: `ip:port`, `[ipv6]:port` or `hostname:port`.
//!
//! The authority names the destination a proxy will open a TCP connection to, so anything
//! that is not exactly one of those three forms is refused rather than guessed at.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Longest authority accepted: a 253-byte hostname, ':' and a five-digit port, with slack.
const MAX_AUTHORITY_LEN: usize = 270;
/// RFC 1035: a hostname is at most 253 characters written without the trailing dot.
const MAX_HOSTNAME_LEN: usize = 253;
/// RFC 1035: a label is at most 63 characters.
const MAX_LABEL_LEN: usize = 63;

/// Where a CONNECT stream asks to be connected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An IP address and port, the usual form (`10.0.0.7:8080`, `[fd00::7]:8080`).
    Socket(SocketAddr),
    /// A hostname and port; the name is lowercased and never empty.
    Host {
        /// The hostname: dot-separated labels of letters, digits and '-'.
        name: String,
        /// The destination port, never zero.
        port: u16,
    },
}

/// Why an `:authority` is not a valid HBONE target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    #[error("authority is empty")]
    Empty,
    #[error("authority is {0} bytes long, more than the {MAX_AUTHORITY_LEN} allowed")]
    TooLong(usize),
    #[error("authority contains {0:?}: only a host and a port are allowed")]
    InvalidCharacter(char),
    #[error("authority has no port")]
    MissingPort,
    #[error("port {port:?} is invalid: {reason}")]
    InvalidPort { port: String, reason: &'static str },
    #[error("authority has an empty host")]
    EmptyHost,
    #[error("IPv6 address must be written in brackets, as [addr]:port")]
    UnbracketedIpv6,
    #[error("{0:?} is not a valid IPv6 address")]
    InvalidIpv6(String),
    #[error("{0:?} is not a valid IPv4 address")]
    InvalidIpv4(String),
    #[error("hostname {name:?} is invalid: {reason}")]
    InvalidHostname { name: String, reason: &'static str },
}

impl Target {
    /// The destination port.
    pub fn port(&self) -> u16 {
        match self {
            Target::Socket(addr) => addr.port(),
            Target::Host { port, .. } => *port,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Written by hand so an IPv6 scope id, meaningless to the peer, is never sent.
            Target::Socket(SocketAddr::V4(addr)) => write!(f, "{}:{}", addr.ip(), addr.port()),
            Target::Socket(SocketAddr::V6(addr)) => write!(f, "[{}]:{}", addr.ip(), addr.port()),
            Target::Host { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

impl FromStr for Target {
    type Err = AuthorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::Socket(addr)
    }
}

/// Parses an HBONE `:authority`. Never panics, whatever the input.
pub fn parse(authority: &str) -> Result<Target, AuthorityError> {
    if authority.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if authority.len() > MAX_AUTHORITY_LEN {
        return Err(AuthorityError::TooLong(authority.len()));
    }
    // Userinfo, paths, queries, whitespace and non-ASCII all show up here first, which gives
    // a clearer error than a failed hostname or address parse would.
    if let Some(bad) = authority
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')))
    {
        return Err(AuthorityError::InvalidCharacter(bad));
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| AuthorityError::InvalidIpv6(authority.to_owned()))?;
        let ip = Ipv6Addr::from_str(inside)
            .map_err(|_| AuthorityError::InvalidIpv6(inside.to_owned()))?;
        let port = match after.strip_prefix(':') {
            Some(port) => parse_port(port)?,
            None if after.is_empty() => return Err(AuthorityError::MissingPort),
            None => return Err(AuthorityError::InvalidIpv6(authority.to_owned())),
        };
        return Ok(Target::Socket(SocketAddr::new(IpAddr::V6(ip), port)));
    }
    if authority.contains(['[', ']']) {
        return Err(AuthorityError::InvalidCharacter(
            if authority.contains('[') { '[' } else { ']' },
        ));
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(AuthorityError::MissingPort);
    };
    if host.contains(':') {
        return Err(AuthorityError::UnbracketedIpv6);
    }
    if host.is_empty() {
        return Err(AuthorityError::EmptyHost);
    }
    let port = parse_port(port)?;
    // A name whose last label is all digits can only be meant as an IPv4 address (no
    // top-level domain is numeric), so it must be a valid one.
    let last_label = host.rsplit('.').next().unwrap_or(host);
    if !last_label.is_empty() && last_label.bytes().all(|b| b.is_ascii_digit()) {
        let ip =
            Ipv4Addr::from_str(host).map_err(|_| AuthorityError::InvalidIpv4(host.to_owned()))?;
        return Ok(Target::Socket(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    validate_hostname(host)?;
    Ok(Target::Host {
        name: host.to_ascii_lowercase(),
        port,
    })
}

/// Decimal 1..=65535, digits only, no sign, no leading zeros.
fn parse_port(port: &str) -> Result<u16, AuthorityError> {
    let invalid = |reason| AuthorityError::InvalidPort {
        port: port.to_owned(),
        reason,
    };
    if port.is_empty() {
        return Err(AuthorityError::MissingPort);
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("only digits are allowed"));
    }
    if port == "0" {
        return Err(invalid("port 0 cannot be connected to"));
    }
    if port.starts_with('0') {
        return Err(invalid("leading zeros are not allowed"));
    }
    // At most five digits here would still allow 99999, so parse with the range check.
    port.parse::<u16>()
        .map_err(|_| invalid("it is larger than 65535"))
}

fn validate_hostname(name: &str) -> Result<(), AuthorityError> {
    let invalid = |reason| AuthorityError::InvalidHostname {
        name: name.to_owned(),
        reason,
    };
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(invalid("it is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("it has an empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(invalid("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid("only letters, digits and '-' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label must start and end with a letter or digit"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
