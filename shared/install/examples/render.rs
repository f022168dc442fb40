//! `cargo run -p ambit-install --example render -- CHART_DIR [-f VALUES.yaml]... [-n NAMESPACE]`:
//! prints the chart's manifests as `helm template` would, until `ambit install --dry-run`
//! exposes the same function.

use std::path::PathBuf;

use ambit_install::{Release, render_chart, to_yaml_stream};
use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let chart = PathBuf::from(
        args.next()
            .context("usage: render CHART_DIR [-f VALUES]... [-n NS]")?,
    );
    let mut values = Vec::new();
    let mut namespace = "ambit-system".to_owned();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "-f" => values.push(PathBuf::from(value)),
            "-n" => namespace = value,
            other => bail!("unknown flag {other}"),
        }
    }
    let release = Release {
        name: "ambit".to_owned(),
        namespace,
    };
    let manifests = render_chart(&chart, &values, &release)?;
    print!("{}", to_yaml_stream(&manifests)?);
    Ok(())
}
