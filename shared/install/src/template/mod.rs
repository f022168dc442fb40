//! A Go `text/template` interpreter for the subset Helm charts commonly use.
//!
//! Supported: text and `{{ }}` actions with `{{-`/`-}}` trimming and `/* */` comments;
//! pipelines with `|`; fields (`.a.b`), variables (`$x`, `$x.a`, `$`), declarations (`:=`)
//! and assignment (`=`); string (`"…"`, `` `…` ``), number, boolean and nil literals;
//! parenthesized sub-pipelines; `if`/`else if`/`else`, `range` (lists and maps in key order,
//! with one or two variables, and `else`), `with`/`else`, `define`, `template`; the functions
//! in [`funcs::NAMES`] and `.Files.Get`. Anything else (methods, `block`, `break`, sprig
//! functions not listed) is a parse or execution error naming the file and line, never a
//! silently different output.
//!
//! Differences from Go: a missing map key is nil (Helm's behaviour), reading a field of nil or
//! of a scalar is an error, nil prints as the empty string, printing a map or list is an
//! error (use `toYaml`), numbers print as JSON numbers.

use std::collections::BTreeMap;

use serde_json::Value;

mod exec;
mod funcs;
mod lexer;
mod parser;

pub use funcs::NAMES as FUNCTIONS;

/// A template that failed to parse or to execute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template}:{line}: {message}")]
pub struct TemplateError {
    /// The file or `define` name.
    pub template: String,
    /// 1-based line of the action.
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

/// A set of parsed templates whose `define`s are visible to each other (as in one Helm chart).
#[derive(Debug, Default)]
pub struct TemplateSet {
    bodies: BTreeMap<String, Vec<parser::Node>>,
    defines: BTreeMap<String, Vec<parser::Node>>,
    files: BTreeMap<String, String>,
}

impl TemplateError {
    fn new(template: &str, line: usize, message: impl Into<String>) -> Self {
        Self {
            template: template.to_owned(),
            line,
            message: message.into(),
        }
    }
}

impl TemplateSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `source` and adds it under `name`; its `define`s join the set's (a later
    /// definition of the same name replaces the earlier, as in Go).
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), TemplateError> {
        let parsed = parser::parse(name, lexer::lex(name, source)?)?;
        self.bodies.insert(name.to_owned(), parsed.body);
        self.defines.extend(parsed.defines);
        Ok(())
    }

    /// Makes a file readable through `.Files.Get "path"`.
    pub fn add_file(&mut self, path: &str, content: String) {
        self.files.insert(path.to_owned(), content);
    }

    /// Names of the templates added.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.bodies.keys().map(String::as_str)
    }

    /// Executes the template `name` with `data` as dot and `$`.
    pub fn render(&self, name: &str, data: &Value) -> Result<String, TemplateError> {
        let body = self
            .bodies
            .get(name)
            .ok_or_else(|| TemplateError::new(name, 0, "no such template"))?;
        let mut executor = exec::Executor::new(self, &self.files, name, data.clone(), 0);
        let mut out = String::new();
        executor.run(body, data, &mut out)?;
        Ok(out)
    }

    /// Executes the `define`d template `name` (what `include` does).
    pub fn render_define(&self, name: &str, data: &Value) -> Result<String, TemplateError> {
        let executor = exec::Executor::new(self, &self.files, name, data.clone(), 0);
        executor.include(name, data.clone(), 0)
    }
}

#[cfg(test)]
mod tests;
