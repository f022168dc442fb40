#!/usr/bin/env bash
# Uninstalls the charts (so the CNI installer's cleanup runs) and deletes the kind cluster.
set -euo pipefail
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require kind

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  if command -v helm >/dev/null 2>&1; then
    for release in ambit-ztunnel ambit-controller ambit-base; do
      helm uninstall "$release" --kube-context "kind-$CLUSTER_NAME" \
        --namespace "$AMBIT_NAMESPACE" --wait 2>/dev/null || true
    done
  fi
  log "deleting cluster $CLUSTER_NAME"
  kind delete cluster --name "$CLUSTER_NAME"
else
  log "no cluster $CLUSTER_NAME"
fi
