#!/usr/bin/env bash
# Builds or runs the fuzz targets in fuzz/.
#   scripts/fuzz.sh build            build every target (CI does this)
#   scripts/fuzz.sh run [SECONDS]    run every target for SECONDS each (default 60)
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them,
# so no second toolchain has to be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
# Keep fuzz builds (sanitizer flags) apart from the main target dir so neither invalidates the other.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}-fuzz"

mode="${1:-build}"
targets=$(cargo fuzz list --fuzz-dir fuzz)
case "$mode" in
  build)
    cargo fuzz build --fuzz-dir fuzz --dev
    ;;
  run)
    seconds="${2:-60}"
    for target in $targets; do
      echo "== fuzzing $target for ${seconds}s"
      cargo fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds"
    done
    ;;
  *)
    echo "usage: scripts/fuzz.sh build | run [SECONDS]" >&2
    exit 2
    ;;
esac
