#!/usr/bin/env bash
# Deploys the sample apps into an ambient namespace and waits until they are ready (the
# readiness probes pass only if kubelet probes are SNATed and exempt from capture).
set -euo pipefail
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require kubectl

kctl create namespace "$SAMPLE_NAMESPACE" --dry-run=client -o yaml | kctl apply -f -
log "labelling $SAMPLE_NAMESPACE for ambient mode"
kctl label namespace "$SAMPLE_NAMESPACE" istio.io/dataplane-mode=ambient --overwrite
kctl -n "$SAMPLE_NAMESPACE" apply -f "$KIND_DIR/samples/apps.yaml"
kctl -n "$SAMPLE_NAMESPACE" wait --for=condition=Available deployment --all --timeout "${WAIT_SECONDS}s"
kctl -n "$SAMPLE_NAMESPACE" wait --for=condition=Ready pod --all --timeout "${WAIT_SECONDS}s"
