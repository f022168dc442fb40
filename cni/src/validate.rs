//! Field validators shared by the protocol decoder and the CNI plugin.
//!
//! Each returns a short reason on failure; callers prefix the field name so the message says
//! which field was wrong.

use std::path::{Component, Path};

/// Longest pod UID accepted. Kubernetes UIDs are 36-character UUIDs; local mode may use others.
pub(crate) const MAX_UID_LEN: usize = 128;
/// Longest netns path accepted (Linux `PATH_MAX`).
pub(crate) const MAX_PATH_LEN: usize = 4096;
/// Longest container ID accepted; runtimes use 64 hex characters.
pub(crate) const MAX_CONTAINER_ID_LEN: usize = 256;

/// A pod UID: 1..=128 characters from `[A-Za-z0-9._-]`.
pub(crate) fn uid(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_UID_LEN {
        return Err(format!(
            "is {} bytes long, the limit is {MAX_UID_LEN}",
            value.len()
        ));
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "contains {c:?}; allowed are letters, digits, '-', '_', '.'"
        )),
        None => Ok(()),
    }
}

/// An RFC 1123 label (Kubernetes namespace names): 1..=63 lowercase alphanumerics or '-',
/// starting and ending with an alphanumeric.
pub(crate) fn dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 63 {
        return Err(format!(
            "is {} characters long, an RFC 1123 label allows 63",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "contains {c:?}; an RFC 1123 label allows lowercase letters, digits and '-'"
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err("must start and end with a lowercase letter or digit".into());
    }
    Ok(())
}

/// An RFC 1123 subdomain (Kubernetes pod and service account names): at most 253 characters,
/// dot-separated labels.
pub(crate) fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 253 {
        return Err(format!(
            "is {} characters long, an RFC 1123 subdomain allows 253",
            value.len()
        ));
    }
    for label in value.split('.') {
        dns_label(label).map_err(|reason| format!("label {label:?} {reason}"))?;
    }
    Ok(())
}

/// An absolute filesystem path without `..` components or NUL bytes.
pub(crate) fn absolute_path(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_PATH_LEN {
        return Err(format!(
            "is {} bytes long, the limit is {MAX_PATH_LEN}",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if !value.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if Path::new(value)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err("must not contain '..'".into());
    }
    Ok(())
}

/// A CNI container ID: an alphanumeric, then alphanumerics, '_', '.' or '-' (CNI spec).
pub(crate) fn container_id(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    match chars.next() {
        None => return Err("must not be empty".into()),
        Some(first) if !first.is_ascii_alphanumeric() => {
            return Err(format!(
                "starts with {first:?}; it must start with a letter or digit"
            ));
        }
        Some(_) => {}
    }
    if value.len() > MAX_CONTAINER_ID_LEN {
        return Err(format!(
            "is {} bytes long, the limit is {MAX_CONTAINER_ID_LEN}",
            value.len()
        ));
    }
    match chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        Some(c) => Err(format!(
            "contains {c:?}; allowed are letters, digits, '_', '.', '-'"
        )),
        None => Ok(()),
    }
}

/// A CNI interface name: non-empty, under 16 bytes, not `.`/`..`, no '/', ':' or whitespace.
pub(crate) fn ifname(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() >= 16 {
        return Err(format!(
            "is {} bytes long, it must be under 16",
            value.len()
        ));
    }
    if value == "." || value == ".." {
        return Err("must not be '.' or '..'".into());
    }
    match value
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
    {
        Some(c) => Err(format!("contains {c:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids() {
        assert!(uid("3f1c2a9e-5b7d-4c1e-9a2b-0123456789ab").is_ok());
        assert!(uid("").is_err());
        assert!(uid(&"a".repeat(MAX_UID_LEN)).is_ok());
        assert!(uid(&"a".repeat(MAX_UID_LEN + 1)).is_err());
        assert!(uid("a/b").is_err());
        assert!(uid("a b").is_err());
    }

    #[test]
    fn labels_and_subdomains() {
        assert!(dns_label("default").is_ok());
        assert!(dns_label("a-1").is_ok());
        assert!(dns_label("-a").is_err());
        assert!(dns_label("a-").is_err());
        assert!(dns_label("Default").is_err());
        assert!(dns_label("a.b").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_subdomain("web-0.v1").is_ok());
        assert!(dns_subdomain("a..b").is_err());
        assert!(dns_subdomain(".a").is_err());
        assert!(dns_subdomain(&format!("{}.{}", "a".repeat(63), "b".repeat(63))).is_ok());
        assert!(dns_subdomain(&vec!["a".repeat(63); 4].join(".")).is_err());
    }

    #[test]
    fn paths() {
        assert!(absolute_path("/var/run/netns/cni-1234").is_ok());
        assert!(absolute_path("/proc/42/ns/net").is_ok());
        assert!(absolute_path("var/run/netns/x").is_err());
        assert!(absolute_path("/var/run/../etc/passwd").is_err());
        assert!(absolute_path("/a/..").is_err());
        assert!(absolute_path("/a\0b").is_err());
        assert!(absolute_path("").is_err());
    }

    #[test]
    fn container_ids_and_ifnames() {
        assert!(container_id("0123abcd").is_ok());
        assert!(container_id("a_b.c-d").is_ok());
        assert!(container_id("_a").is_err());
        assert!(container_id("a/b").is_err());
        assert!(container_id("").is_err());
        assert!(ifname("eth0").is_ok());
        assert!(ifname("").is_err());
        assert!(ifname("..").is_err());
        assert!(ifname("eth 0").is_err());
        assert!(ifname("a:b").is_err());
        assert!(ifname(&"e".repeat(16)).is_err());
    }
}
