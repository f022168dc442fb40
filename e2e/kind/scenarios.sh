#!/usr/bin/env bash
# The scenario list, run against the kind cluster through `kubectl exec` of the sample
# clients. Each scenario prints PASS or FAIL; the script exits non-zero if any failed.
set -euo pipefail
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require kubectl

passed=0
failed=0

ns() { kctl -n "$SAMPLE_NAMESPACE" "$@"; }

# http_code FROM PATH [curl args...]: the HTTP status, or 000 if the connection failed.
http_code() {
  local from=$1 path=$2
  shift 2
  ns exec "deploy/$from" -- curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    "$@" "http://server$path" || true
}

# body FROM PATH [curl args...]
body() {
  local from=$1 path=$2
  shift 2
  ns exec "deploy/$from" -- curl -s --max-time 5 "$@" "http://server$path"
}

check() {
  local name=$1
  shift
  if "$@"; then
    printf 'PASS %s\n' "$name"
    passed=$((passed + 1))
  else
    printf 'FAIL %s\n' "$name"
    failed=$((failed + 1))
  fi
}

# Retries a check while config propagates (policies and routes are eventually consistent).
eventually() {
  local _
  for _ in $(seq 1 30); do
    if "$@"; then return 0; fi
    sleep 2
  done
  return 1
}

is_code() { [ "$(http_code "$1" "$2" "${@:4}")" = "$3" ]; }
from_version() { body "$1" /hostname "${@:3}" | grep -q "^server-$2-"; }

all_ready() {
  # Readiness probes come from the kubelet; they pass only if the node SNATs them to the
  # probe source that the pods' redirection leaves alone.
  local pod
  for pod in $(ns get pods -o jsonpath='{.items[*].metadata.name}'); do
    ns get pod "$pod" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' \
      | grep -q True || return 1
  done
}

log "scenario: pods are ready (kubelet probes reach ambient pods)"
check "probes-pass" all_ready

log "scenario: client reaches server over the mesh"
check "mtls-connectivity" eventually is_code client /hostname 200

log "scenario: L4 deny by identity"
ns apply -f "$KIND_DIR/samples/deny-denied.yaml"
check "l4-deny-denied" eventually is_code denied /hostname 000
check "l4-allow-others" is_code client /hostname 200
ns delete -f "$KIND_DIR/samples/deny-denied.yaml"
check "l4-deny-removed" eventually is_code denied /hostname 200

log "scenario: waypoint on demand"
ns apply -f "$KIND_DIR/samples/waypoint.yaml"
check "waypoint-programmed" ns wait --for=condition=Programmed gateway/waypoint --timeout "${WAIT_SECONDS}s"
ns label service server istio.io/use-waypoint=waypoint --overwrite
ns apply -f "$KIND_DIR/samples/l7.yaml"
check "l7-canary-header" eventually from_version client v2 -H "x-version: v2"
check "l7-default-route" eventually from_version client v1
check "l7-path-deny" eventually is_code client /shell 403
check "l7-other-path-allowed" is_code client /hostname 200

printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
