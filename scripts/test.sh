#!/usr/bin/env bash
# Runs every test of the workspace. Needs root: the end-to-end tests build network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root: the tests create network namespaces and veth pairs" >&2
  exit 1
fi
./scripts/install-prereqs.sh

# The fuzz targets are built (not run) so they never rot; a short run is `scripts/fuzz.sh`.
./scripts/fuzz.sh build

# Every binary first: the end-to-end tests (e2e/, cli/) start the controller, ztunnels,
# waypoints and sample apps from the build directory.
cargo build --workspace --bins --locked

cargo nextest run --workspace --locked --profile ci
