//! [`SourceError`]: one object (or file) a source could not use, and where it is.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem found while reading objects. The object (or whole file, for IO errors) was skipped;
/// everything else still applies. Says where: file, document index (0-based, counting every
/// `---`-separated document including empty ones), object kind/namespace/name when known, and
/// the field path inside the object (`spec.rules[0].from[0].source.ipBlocks[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    file: PathBuf,
    document_index: Option<usize>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    field: Option<String>,
    message: String,
    category: Category,
}

/// What went wrong, for the predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    Io,
    MalformedYaml,
    UnknownKind,
    InvalidObject,
    Duplicate,
}

/// What is known about the object a [`SourceError`] is about.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectContext {
    pub(crate) kind: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
}

impl SourceError {
    pub(crate) fn io(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            document_index: None,
            kind: None,
            namespace: None,
            name: None,
            field: None,
            message: message.into(),
            category: Category::Io,
        }
    }

    pub(crate) fn in_document(
        category: Category,
        file: &Path,
        document_index: usize,
        object: &ObjectContext,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_owned(),
            document_index: Some(document_index),
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            field: field.filter(|f| !f.is_empty() && f != "."),
            message: message.into(),
            category,
        }
    }

    /// An object read from the Kubernetes API (no file: the "file" is the API's name).
    pub(crate) fn api_object(
        object: &ObjectContext,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: PathBuf::from("kubernetes-api"),
            document_index: None,
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            field: field.filter(|f| !f.is_empty() && f != "."),
            message: message.into(),
            category: Category::InvalidObject,
        }
    }

    /// The file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The 0-based index of the document inside the file (`None` for file-level errors).
    pub fn document_index(&self) -> Option<usize> {
        self.document_index
    }

    /// The object's kind, if it could be read.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// The object's namespace, if it could be read.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The object's name, if it could be read.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The path of the offending field inside the object, if there is one.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The file could not be read.
    pub fn is_io(&self) -> bool {
        self.category == Category::Io
    }

    /// The document is not valid YAML.
    pub fn is_malformed_yaml(&self) -> bool {
        self.category == Category::MalformedYaml
    }

    /// The apiVersion/kind is not one the controller knows.
    pub fn is_unknown_kind(&self) -> bool {
        self.category == Category::UnknownKind
    }

    /// The object does not match its schema or fails validation.
    pub fn is_invalid_object(&self) -> bool {
        self.category == Category::InvalidObject
    }

    /// Another object with the same kind, namespace and name came first.
    pub fn is_duplicate(&self) -> bool {
        self.category == Category::Duplicate
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(index) = self.document_index {
            write!(f, " document {index}")?;
        }
        if let Some(kind) = &self.kind {
            write!(f, ": {kind}")?;
            match (&self.namespace, &self.name) {
                (Some(ns), Some(name)) => write!(f, " {ns}/{name}")?,
                (None, Some(name)) => write!(f, " {name}")?,
                _ => {}
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
