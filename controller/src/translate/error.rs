//! [`TranslateError`] and the collector the passes share.

use std::fmt;

use ambit_model::ModelError;

/// One object (or one binding of an object) that could not be translated: which object, which
/// field, and why. [`is_not_translated`](Self::is_not_translated) marks objects of kinds whose
/// translation is not written yet (a warning: nothing is wrong with them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub struct TranslateError {
    kind: String,
    namespace: String,
    name: String,
    field: String,
    message: String,
    not_translated: bool,
}

/// Collects errors during one translation.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<TranslateError>);

impl TranslateError {
    /// The object's kind (`Pod`, `Service`, `Gateway`, …).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The object's namespace (empty for Namespaces).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The field path inside the object (empty when the whole object is meant).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the object is of a kind that is recognised but not translated yet.
    pub fn is_not_translated(&self) -> bool {
        self.not_translated
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (false, _) => write!(f, " {}/{}", self.namespace, self.name)?,
            (true, false) => write!(f, " {}", self.name)?,
            (true, true) => {}
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Errors {
    pub(crate) fn push(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push(TranslateError {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            field: field.into(),
            message: message.into(),
            not_translated: false,
        });
    }

    pub(crate) fn not_translated(&mut self, kind: &str, namespace: &str, name: &str, why: &str) {
        self.0.push(TranslateError {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            field: String::new(),
            message: format!("not yet translated: {why}"),
            not_translated: true,
        });
    }

    /// A model constructor refused what the translation built from object `kind ns/name`.
    pub(crate) fn model(&mut self, kind: &str, namespace: &str, name: &str, err: &ModelError) {
        self.push(kind, namespace, name, err.field(), err.reason());
    }

    pub(crate) fn into_sorted(mut self) -> Vec<TranslateError> {
        self.0.sort();
        self.0.dedup();
        self.0
    }
}
