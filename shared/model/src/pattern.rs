//! The value syntax of AuthorizationPolicy fields: Istio wildcards, IP blocks and ports.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One string pattern in Istio's syntax: `exact`, `prefix*`, `*suffix`, or `*` (any non-empty
/// value). Istio allows a single `*`, only at the start or the end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StringMatch {
    /// The value must equal this string.
    Exact(String),
    /// `abc*`: the value must start with `abc`.
    Prefix(String),
    /// `*abc`: the value must end with `abc`.
    Suffix(String),
    /// `*`: the value must be present (non-empty).
    Present,
}

/// Why a string is not a valid Istio pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

impl StringMatch {
    /// Parses a pattern; `a*b`, `**`, `*a*` and the empty string are refused.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError("value must not be empty".to_owned()));
        }
        if pattern == "*" {
            return Ok(Self::Present);
        }
        let stars = pattern.matches('*').count();
        if stars == 0 {
            return Ok(Self::Exact(pattern.to_owned()));
        }
        if stars == 1 {
            if let Some(suffix) = pattern.strip_prefix('*') {
                return Ok(Self::Suffix(suffix.to_owned()));
            }
            if let Some(prefix) = pattern.strip_suffix('*') {
                return Ok(Self::Prefix(prefix.to_owned()));
            }
        }
        Err(PatternError(format!(
            "{pattern:?} is not a valid pattern: a single '*' is allowed, only at the start or the end"
        )))
    }

    /// Whether `value` matches. An empty value (an absent attribute) matches nothing, not even
    /// `*` or a pattern that would accept the empty string.
    pub fn matches(&self, value: &str) -> bool {
        if value.is_empty() {
            return false;
        }
        match self {
            Self::Exact(exact) => value == exact,
            Self::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => value.ends_with(suffix.as_str()),
            Self::Present => true,
        }
    }

    /// Like [`matches`](Self::matches) but ignoring ASCII case, as Istio does for hosts.
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        if value.is_empty() {
            return false;
        }
        let (value, pattern) = (value.as_bytes(), self.literal().as_bytes());
        match self {
            Self::Exact(_) => value.eq_ignore_ascii_case(pattern),
            Self::Prefix(_) => {
                value.len() >= pattern.len() && value[..pattern.len()].eq_ignore_ascii_case(pattern)
            }
            Self::Suffix(_) => {
                value.len() >= pattern.len()
                    && value[value.len() - pattern.len()..].eq_ignore_ascii_case(pattern)
            }
            Self::Present => true,
        }
    }

    fn literal(&self) -> &str {
        match self {
            Self::Exact(s) | Self::Prefix(s) | Self::Suffix(s) => s,
            Self::Present => "",
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(s) => f.write_str(s),
            Self::Prefix(s) => write!(f, "{s}*"),
            Self::Suffix(s) => write!(f, "*{s}"),
            Self::Present => f.write_str("*"),
        }
    }
}

impl TryFrom<String> for StringMatch {
    type Error = PatternError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<StringMatch> for String {
    fn from(value: StringMatch) -> Self {
        value.to_string()
    }
}

/// Parses an Istio IP block: a single address (`10.0.0.1`, `fd00::1`) or a CIDR
/// (`10.0.0.0/8`, `fd00::/64`).
pub fn parse_ip_block(value: &str) -> Result<IpNet, PatternError> {
    if value.contains('/') {
        value
            .parse::<IpNet>()
            .map_err(|_| PatternError(format!("{value:?} is not a valid CIDR block")))
    } else {
        value
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| PatternError(format!("{value:?} is not a valid IP address or CIDR block")))
    }
}

/// Parses a port as written in Istio policies (a decimal string, 1–65535).
pub fn parse_port(value: &str) -> Result<u16, PatternError> {
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err(PatternError(format!(
            "{value:?} is not a valid port (a number from 1 to 65535)"
        ))),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_pattern_forms() {
        assert_eq!(StringMatch::parse("*").unwrap(), StringMatch::Present);
        assert_eq!(
            StringMatch::parse("ns/*").unwrap(),
            StringMatch::Prefix("ns/".into())
        );
        assert_eq!(
            StringMatch::parse("*/sa/x").unwrap(),
            StringMatch::Suffix("/sa/x".into())
        );
        assert_eq!(
            StringMatch::parse("exact").unwrap(),
            StringMatch::Exact("exact".into())
        );
        for bad in ["", "a*b", "**", "*a*", "a**"] {
            assert!(StringMatch::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn matches_by_kind_and_never_on_empty() {
        let cases = [
            ("*", "x", true),
            ("*", "", false),
            ("foo*", "foobar", true),
            ("foo*", "barfoo", false),
            ("*foo", "barfoo", true),
            ("*foo", "foobar", false),
            ("foo", "foo", true),
            ("foo", "fo", false),
            ("foo", "foo2", false),
        ];
        for (pattern, value, expected) in cases {
            let m = StringMatch::parse(pattern).unwrap();
            assert_eq!(m.matches(value), expected, "{pattern:?} vs {value:?}");
            assert_eq!(m.to_string(), pattern);
        }
        let host = StringMatch::parse("*.Example.com").unwrap();
        assert!(host.matches_ignore_case("api.example.COM"));
        assert!(!host.matches_ignore_case("example.org"));
        assert!(
            StringMatch::parse("API*")
                .unwrap()
                .matches_ignore_case("api.x")
        );
        assert!(
            !StringMatch::parse("api")
                .unwrap()
                .matches_ignore_case("apis")
        );
    }

    #[test]
    fn ip_blocks_and_ports() {
        assert!(
            parse_ip_block("10.0.0.1")
                .unwrap()
                .contains(&"10.0.0.1".parse::<IpAddr>().unwrap())
        );
        assert_eq!(parse_ip_block("fd00::1").unwrap().prefix_len(), 128);
        assert_eq!(parse_ip_block("10.0.0.0/8").unwrap().prefix_len(), 8);
        for bad in ["10.0.0.0/33", "10.0.0", "x", "", "fd00::/129"] {
            assert!(parse_ip_block(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_port("8080").unwrap(), 8080);
        for bad in ["0", "65536", "-1", "http", ""] {
            assert!(parse_port(bad).is_err(), "{bad:?} accepted");
        }
    }
}
