#!/usr/bin/env bash
# The whole kind e2e run: cluster, images, charts, samples, scenarios, teardown.
# KEEP_CLUSTER=1 keeps the cluster for debugging; SKIP_BUILD=1 reuses loaded images.
set -euo pipefail
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    log "keeping cluster $CLUSTER_NAME (kubectl --context kind-$CLUSTER_NAME)"
  else
    "$KIND_DIR/teardown.sh"
  fi
}
trap cleanup EXIT

"$KIND_DIR/create-cluster.sh"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  "$KIND_DIR/build-images.sh"
fi
"$KIND_DIR/install.sh"
"$KIND_DIR/deploy-samples.sh"
"$KIND_DIR/scenarios.sh"
