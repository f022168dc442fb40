//! The one error type of the model: which object, which field, and why.

use std::fmt;

/// A model object failed validation. Names the object (`kind namespace/name`) and the field path
/// (`spec.rules[0].from[1].source.principals[2]`), so a user can find the mistake in their YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {object}: {field}: {reason}")]
pub struct ModelError {
    kind: &'static str,
    object: ObjectName,
    field: String,
    reason: String,
}

/// `namespace/name` of the object, or just the name for cluster-scoped things.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectName {
    namespace: String,
    name: String,
}

impl ModelError {
    pub(crate) fn new(
        kind: &'static str,
        namespace: &str,
        name: &str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            object: ObjectName {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The kind of the invalid object, e.g. `AuthorizationPolicy`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The namespace of the invalid object (may be empty if it was missing).
    pub fn namespace(&self) -> &str {
        &self.object.namespace
    }

    /// The name of the invalid object (may be empty if it was missing).
    pub fn name(&self) -> &str {
        &self.object.name
    }

    /// The path of the invalid field inside the object.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the field is invalid.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{:?}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Collects the context of one object so validation code reads `ctx.err(field, reason)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorContext<'a> {
    pub(crate) kind: &'static str,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
}

impl ErrorContext<'_> {
    pub(crate) fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ModelError {
        ModelError::new(self.kind, self.namespace, self.name, field, reason)
    }

    /// Checks the object's own name and namespace, which every namespaced object needs.
    pub(crate) fn check_metadata(&self) -> Result<(), ModelError> {
        check_dns_label(self.namespace).map_err(|reason| self.err("namespace", reason))?;
        check_dns_subdomain(self.name).map_err(|reason| self.err("name", reason))
    }
}

/// RFC 1123 label (Kubernetes namespaces, service names): lowercase alphanumerics and '-'.
pub(crate) fn check_dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > 63 {
        return Err(format!("{value:?} is longer than 63 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || value.starts_with('-')
        || value.ends_with('-')
    {
        return Err(format!(
            "{value:?} is not a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain (most Kubernetes object names): dot-separated labels, at most 253 bytes.
pub(crate) fn check_dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > 253 {
        return Err(format!("{value:?} is longer than 253 characters"));
    }
    for label in value.split('.') {
        check_dns_label(label).map_err(|_| format!("{value:?} is not a DNS subdomain"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_object_and_field() {
        let err = ModelError::new("Service", "shop", "cart", "ports[1].port", "must not be 0");
        assert_eq!(
            err.to_string(),
            "Service shop/cart: ports[1].port: must not be 0"
        );
        assert_eq!(err.field(), "ports[1].port");
        assert_eq!(err.namespace(), "shop");
        assert_eq!(err.name(), "cart");
    }

    #[test]
    fn dns_names() {
        assert!(check_dns_label("a-1").is_ok());
        assert!(check_dns_label("").is_err());
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label("A").is_err());
        assert!(check_dns_label("a.b").is_err());
        assert!(check_dns_subdomain("a.b-c").is_ok());
        assert!(check_dns_subdomain("a..b").is_err());
    }
}
