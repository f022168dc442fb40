#!/usr/bin/env bash
# Shared settings and helpers of the kind scripts; sourced, not run.
# shellcheck disable=SC2034  # variables are used by the scripts that source this file

KIND_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$KIND_DIR/../.." && pwd)

CLUSTER_NAME=${CLUSTER_NAME:-ambit-e2e}
AMBIT_NAMESPACE=${AMBIT_NAMESPACE:-ambit-system}
# Fixed: the samples name it (principals, namespaces of policies).
SAMPLE_NAMESPACE=shop
IMAGE_REGISTRY=${IMAGE_REGISTRY:-ghcr.io/ambit-mesh}
IMAGE_TAG=${IMAGE_TAG:-dev}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.2.1}
# Seconds to wait for rollouts and pods.
WAIT_SECONDS=${WAIT_SECONDS:-300}

# The sample apps (echo-server, load, tcp-echo); the sample YAML names it.
SAMPLE_APPS_IMAGE=ambit/sample-apps:dev
# Where the waypoints export spans (the tracing row deploys the collector there).
OTLP_ENDPOINT=http://otel-collector.observability.svc:4317

IMAGES=(
  "controller:ambit-controller"
  "ztunnel:ztunnel"
  "waypoint:waypoint"
  "cni-installer:ambit-cni-installer"
)

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

require() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is required (see e2e/kind/README.md)"
  done
}

kctl() { kubectl --context "kind-$CLUSTER_NAME" "$@"; }
