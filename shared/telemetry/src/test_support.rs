//! Helpers shared by the unit tests: a capturing log writer and a metrics-text reader.

use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Collects everything a subscriber writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

pub(crate) struct CapturedWriter(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = CapturedWriter;

    fn make_writer(&'w self) -> Self::Writer {
        CapturedWriter(self.0.clone())
    }
}

impl io::Write for CapturedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The value of the one sample of `name` whose labels include every `(key, value)` in
/// `labels`; `None` if there is none. Panics if several samples match.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((label_text, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let pairs = label_pairs(label_text);
        let matches = labels
            .iter()
            .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v));
        if matches {
            assert!(
                found.is_none(),
                "several samples of {name} match {labels:?}"
            );
            found = Some(value.trim().parse().unwrap());
        }
    }
    found
}

/// `k="v",k2="v2"` into pairs (values in these tests contain no quotes or commas).
pub(crate) fn label_pairs(text: &str) -> Vec<(String, String)> {
    text.split("\",")
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once("=\"").unwrap();
            (k.to_owned(), v.trim_end_matches('"').to_owned())
        })
        .collect()
}
