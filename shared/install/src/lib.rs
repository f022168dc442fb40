//! Renders Ambit's Helm charts without the Helm binary, and checks what they produce.
//!
//! - [`template`]: a Go `text/template` interpreter for the documented subset the charts use.
//! - [`chart`]: a chart directory + values files → manifests (what `helm template` does):
//!   values merged as Helm merges them, validated against `values.schema.json`, every
//!   template rendered and split into YAML documents.
//!
//! This is the engine behind `ambit install --dry-run -f values.yaml`. The charts in
//! `charts/` are written to this subset; `charts/README.md` states the limits.
#![forbid(unsafe_code)]

pub mod chart;
pub mod template;

pub use chart::{Chart, InstallError, Manifest, Release, render_chart, to_yaml_stream};
pub use template::{TemplateError, TemplateSet};
