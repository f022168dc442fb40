//! The local folder source: every `*.yaml`/`*.yml` file of one folder (not recursive), each
//! holding one or more `---`-separated Kubernetes objects, the same YAML a cluster would take.
//!
//! Files are read in name order and documents in file order, so "first" is well defined: when
//! two documents declare the same kind, namespace and name, the first is kept and the second is
//! reported. Every problem becomes a [`SourceError`] and skips only the object it is about.

mod error;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use error::Category;
pub(crate) use error::ObjectContext;
pub use error::SourceError;
pub use watch::{FolderSource, WatchError};

use crate::objects::{Kind, Resource, ResourceKey, Resources, UntranslatedObject};
use crate::source::Snapshot;

/// The namespace `kubectl apply` uses when an object names none.
const DEFAULT_NAMESPACE: &str = "default";

/// An object read from a file, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedResource {
    /// The file.
    pub file: PathBuf,
    /// The 0-based document index inside the file.
    pub document_index: usize,
    /// The object.
    pub resource: Resource,
}

/// Why one document was refused.
struct DocumentError {
    category: Category,
    object: ObjectContext,
    field: Option<String>,
    message: String,
}

/// Reads every YAML file of `dir` into one snapshot.
pub fn load_dir(dir: &Path) -> Snapshot {
    load_dir_with(dir, &mut ParsedFiles::default())
}

/// What each file parsed to, kept between rereads of a watched folder: parsing is most of
/// the cost of a reread, and one change usually touches one file of many.
#[derive(Debug, Default)]
pub struct ParsedFiles {
    files: BTreeMap<PathBuf, ParsedFile>,
    /// Files parsed so far (not reused), for tests and debug logs.
    parses: usize,
}

impl ParsedFiles {
    /// How many files were parsed rather than reused since this was created.
    pub fn parses(&self) -> usize {
        self.parses
    }
}

#[derive(Debug)]
struct ParsedFile {
    /// The whole text: a reused parse must be of exactly these bytes (comparing contents
    /// rather than mtimes, which can be equal for two quick writes).
    text: String,
    resources: Vec<LocatedResource>,
    errors: Vec<SourceError>,
}

/// Like [`load_dir`], reusing the parse of every file whose text did not change since the
/// last call with the same `parsed`, and forgetting files that are gone.
pub fn load_dir_with(dir: &Path, parsed: &mut ParsedFiles) -> Snapshot {
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            errors.push(SourceError::io(dir, format!("cannot read folder: {err}")));
            return Snapshot {
                resources: Resources::new(),
                errors,
            };
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| is_yaml_file(path))
        .collect();
    files.sort();
    let mut located = Vec::new();
    let mut kept = BTreeMap::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let entry = match parsed.files.remove(&file) {
                    Some(previous) if previous.text == text => previous,
                    _ => {
                        parsed.parses += 1;
                        let (resources, errors) = parse_file(&file, &text);
                        ParsedFile {
                            text,
                            resources,
                            errors,
                        }
                    }
                };
                located.extend(entry.resources.iter().cloned());
                errors.extend(entry.errors.iter().cloned());
                kept.insert(file, entry);
            }
            Err(err) => errors.push(SourceError::io(&file, format!("cannot read file: {err}"))),
        }
    }
    parsed.files = kept;
    let (resources, duplicates) = collect(located);
    errors.extend(duplicates);
    Snapshot { resources, errors }
}

/// Whether `path` names a file the folder source reads.
pub fn is_yaml_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// Builds one set from objects in order; later duplicates are refused with an error naming
/// both places.
pub fn collect(located: Vec<LocatedResource>) -> (Resources, Vec<SourceError>) {
    let mut resources = Resources::new();
    let mut origins: BTreeMap<ResourceKey, (PathBuf, usize)> = BTreeMap::new();
    let mut errors = Vec::new();
    for item in located {
        let key = item.resource.key();
        if let Some((first_file, first_index)) = origins.get(&key) {
            let object = context_of(&key);
            errors.push(SourceError::in_document(
                Category::Duplicate,
                &item.file,
                item.document_index,
                &object,
                None,
                format!(
                    "duplicate of the object in {} document {first_index}; the first one is kept",
                    first_file.display()
                ),
            ));
            continue;
        }
        origins.insert(key, (item.file, item.document_index));
        // Cannot fail: the key was just checked to be new.
        let _ = resources.insert(item.resource);
    }
    (resources, errors)
}

/// Parses the documents of one file. Each bad document is reported and skipped.
pub fn parse_file(file: &Path, text: &str) -> (Vec<LocatedResource>, Vec<SourceError>) {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (document_index, (first_line, body)) in split_documents(text).into_iter().enumerate() {
        // Errors must give line numbers of the whole file, which the parser reports when the
        // document is padded with the lines before it. Padding every document made a big
        // file quadratic to read (6 s for 10 000 pods), so only a failed one is re-parsed so.
        let parsed = match parse_document(&body) {
            Err(err) if err.category == Category::MalformedYaml && first_line > 0 => {
                parse_document(&format!("{}{body}", "\n".repeat(first_line)))
            }
            parsed => parsed,
        };
        match parsed {
            Ok(Some(resource)) => resources.push(LocatedResource {
                file: file.to_owned(),
                document_index,
                resource,
            }),
            Ok(None) => {}
            Err(err) => errors.push(SourceError::in_document(
                err.category,
                file,
                document_index,
                &err.object,
                err.field,
                err.message,
            )),
        }
    }
    (resources, errors)
}

/// Splits a YAML stream at `---` lines; returns each document's first line (0-based) and text.
/// Splitting by hand, rather than with the parser's multi-document reader, keeps the documents
/// after a malformed one: the parser cannot resume after a syntax error.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut ended = false;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t") {
            documents.push((start, std::mem::take(&mut current)));
            start = number;
            ended = false;
            // Content after the marker (`--- {a: 1}`) belongs to the new document; the marker
            // is replaced by spaces to keep column numbers.
            current.push_str(&" ".repeat(3));
            current.push_str(&line[3..]);
            current.push('\n');
            continue;
        }
        if trimmed == "..." {
            ended = true;
            continue;
        }
        if !ended {
            current.push_str(line);
        }
        current.push('\n');
    }
    documents.push((start, current));
    // A stream that starts with `---` has no document before it.
    if documents.len() > 1 && is_blank(&documents[0].1) && text_starts_with_marker(text) {
        documents.remove(0);
    }
    documents
}

fn text_starts_with_marker(text: &str) -> bool {
    text.lines()
        .find(|line| !is_blank(line))
        .is_some_and(|line| line.trim_end() == "---" || line.starts_with("--- "))
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    })
}

/// One document → one resource; `Ok(None)` for an empty document.
fn parse_document(text: &str) -> Result<Option<Resource>, Box<DocumentError>> {
    let mut value: Value = serde_yaml_ng::from_str(text).map_err(|err| {
        Box::new(DocumentError {
            category: Category::MalformedYaml,
            object: ObjectContext::default(),
            field: None,
            message: format!("malformed YAML: {err}"),
        })
    })?;
    let Some(mapping) = value.as_mapping_mut() else {
        if value.is_null() {
            return Ok(None);
        }
        return Err(Box::new(DocumentError {
            category: Category::InvalidObject,
            object: ObjectContext::default(),
            field: None,
            message: "a document must be a mapping (a Kubernetes object)".into(),
        }));
    };
    let mut object = ObjectContext::default();
    let invalid = |object: &ObjectContext, field: &str, message: String| {
        Box::new(DocumentError {
            category: Category::InvalidObject,
            object: object.clone(),
            field: Some(field.to_owned()),
            message,
        })
    };
    let kind_name = string_field(mapping, "kind");
    object.kind = kind_name.clone();
    let api_version = string_field(mapping, "apiVersion")
        .ok_or_else(|| invalid(&object, "apiVersion", "is required".into()))?;
    let kind_name = kind_name.ok_or_else(|| invalid(&object, "kind", "is required".into()))?;
    let metadata = match mapping.get_mut("metadata") {
        Some(Value::Mapping(metadata)) => metadata,
        _ => return Err(invalid(&object, "metadata", "is required".into())),
    };
    object.name = string_field(metadata, "name");
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        object.namespace = string_field(metadata, "namespace");
        return Err(Box::new(DocumentError {
            category: Category::UnknownKind,
            object,
            field: None,
            message: format!("unknown kind {kind_name:?} of apiVersion {api_version:?}"),
        }));
    };
    if kind.is_namespaced() {
        if string_field(metadata, "namespace").is_none() {
            metadata.insert("namespace".into(), DEFAULT_NAMESPACE.into());
        }
        object.namespace = string_field(metadata, "namespace");
    }
    if object.name.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(&object, "metadata.name", "is required".into()));
    }
    let resource = decode_resource(kind, value).map_err(|(field, message)| {
        Box::new(DocumentError {
            category: Category::InvalidObject,
            object: object.clone(),
            field,
            message,
        })
    })?;
    Ok(Some(resource))
}

/// Decodes the typed object and runs the validation the kind has on its own.
fn decode_resource(kind: Kind, value: Value) -> Result<Resource, (Option<String>, String)> {
    let resource = match kind {
        Kind::Namespace => Resource::Namespace(decode(value)?),
        Kind::Pod => Resource::Pod(decode(value)?),
        Kind::Service => Resource::Service(decode(value)?),
        Kind::EndpointSlice => Resource::EndpointSlice(decode(value)?),
        Kind::ServiceAccount => Resource::ServiceAccount(decode(value)?),
        Kind::AuthorizationPolicy => {
            let policy: Box<crate::objects::AuthorizationPolicy> = decode(value)?;
            policy
                .to_model()
                .map_err(|err| (Some(err.field().to_owned()), err.reason().to_owned()))?;
            Resource::AuthorizationPolicy(policy)
        }
        Kind::PeerAuthentication => {
            let policy: Box<crate::objects::PeerAuthentication> = decode(value)?;
            policy
                .to_model()
                .map_err(|err| (Some(err.field().to_owned()), err.reason().to_owned()))?;
            Resource::PeerAuthentication(policy)
        }
        Kind::Gateway => Resource::Gateway(decode(value)?),
        Kind::HttpRoute => {
            let route: Box<crate::objects::HttpRoute> = decode(value)?;
            route
                .to_model()
                .map_err(|err| (Some(err.field().to_owned()), err.reason().to_owned()))?;
            Resource::HttpRoute(route)
        }
        other => Resource::Untranslated(other, decode::<UntranslatedObject>(value)?),
    };
    Ok(resource)
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<Box<T>, (Option<String>, String)> {
    serde_path_to_error::deserialize(value)
        .map(Box::new)
        .map_err(|err| (Some(err.path().to_string()), err.inner().to_string()))
}

fn string_field(mapping: &Mapping, key: &str) -> Option<String> {
    mapping.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn context_of(key: &ResourceKey) -> ObjectContext {
    ObjectContext {
        kind: Some(key.kind.as_str().to_owned()),
        namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
        name: Some(key.name.clone()),
    }
}

#[cfg(test)]
mod tests;
