#!/usr/bin/env bash
# Checks are small functions run through `expect`/`eventually`, which shellcheck cannot follow:
# shellcheck disable=SC2317
#
# The local end-to-end suite's scenario list (e2e/tests/*.rs), run against the kind cluster
# through `kubectl exec` of the sample clients. One row per scenario; each row applies its
# own YAML from samples/ and removes it (and undoes what else it changed) when it ends, so
# rows are independent and can run alone.
#
#   scenarios.sh               every row
#   scenarios.sh ROW...        the rows named
#   scenarios.sh --list        the row names, one a line (needs no cluster)
#
# Each row prints PASS or FAIL; the script exits non-zero if any failed.
set -euo pipefail
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The rows, in the order they run. shared/install/tests/scripts.rs keeps the table that maps
# each to the local test it mirrors; a row added here and not there (or the reverse) fails it.
ROWS=(
  probes-pass
  mtls-on-the-wire
  strict-vs-permissive
  l4-authorization
  l7-policy-without-waypoint-denies
  waypoint-on-demand
  use-waypoint-precedence
  l7-deny-method-path
  header-route-v2
  canary-90-10
  retries-mask-failures
  timeout-504
  fault-delay-abort
  outlier-ejection
  dns-proxy
  namespace-label-live
  tracing-otlp
  prometheus-istio-metrics
  control-plane-tls
  controller-killed
  ztunnel-killed
)

SHOP=$SAMPLE_NAMESPACE
SERVER="http://server.$SHOP.svc.cluster.local"
# W3C trace context the tracing row sends (the same ids as the local test).
TRACE_ID=4bf92f3577b34da6a3ce929d0e0e4736
CLIENT_SPAN=00f067aa0ba902b7

# --- helpers --------------------------------------------------------------------------------

# Commands a row registers to undo what it changed; run in reverse order when the row ends.
DEFERRED=()
defer() { DEFERRED+=("$*"); }
run_deferred() {
  local i
  for ((i = ${#DEFERRED[@]} - 1; i >= 0; i--)); do
    eval "${DEFERRED[i]}" || log "cleanup failed: ${DEFERRED[i]}"
  done
}

# expect WHAT COMMAND...: runs a check, logs its outcome; a failed check ends the row.
expect() {
  local what=$1
  shift
  if "$@"; then
    log "  ok: $what"
  else
    log "  NOT: $what"
    return 1
  fi
}

# not COMMAND...: succeeds when the command fails.
not() { ! "$@"; }

# Pipelines end in `grep PATTERN >/dev/null`, not `grep -q`: -q stops reading at the first
# match, and with pipefail the writer's SIGPIPE would fail the pipeline.

# holds FILTER [jq args...]: the JSON on stdin satisfies the jq FILTER. No input (kubectl
# failed) does not: `jq -e` alone would succeed on it.
holds() {
  local filter=$1 json
  shift
  json=$(cat)
  [ -n "$json" ] && jq -e "$@" "$filter" >/dev/null <<<"$json"
}

# Retries a check while config propagates (policies, routes and enrollment are eventually
# consistent): at most EVENTUALLY_TRIES (30) tries, 2 s apart.
eventually() {
  local try
  for try in $(seq 1 "${EVENTUALLY_TRIES:-30}"); do
    if "$@"; then return 0; fi
    if [ "$try" -lt "${EVENTUALLY_TRIES:-30}" ]; then sleep 2; fi
  done
  return 1
}

# apply_sample NAME: applies samples/NAME.yaml (namespace shop unless an object names one),
# waits for its Deployments, and removes it when the row ends.
apply_sample() {
  local file="$KIND_DIR/samples/$1.yaml"
  kctl -n "$SHOP" apply -f "$file" >&2
  defer delete_sample "$1"
  # Only the file's own Deployments: others (a waypoint being removed) are not waited for.
  # (custom-columns: one line per object whether the file holds one object or a List).
  local objects kind namespace name
  objects=$(kctl -n "$SHOP" get -f "$file" --no-headers \
    -o custom-columns=KIND:.kind,NAMESPACE:.metadata.namespace,NAME:.metadata.name)
  while read -r kind namespace name; do
    if [ "$kind" = Deployment ]; then
      kctl -n "$namespace" wait --for=condition=Available "deployment/$name" \
        --timeout "${WAIT_SECONDS}s" >&2
    fi
  done <<<"$objects"
}
delete_sample() {
  kctl -n "$SHOP" delete -f "$KIND_DIR/samples/$1.yaml" --ignore-not-found --wait \
    --timeout "${WAIT_SECONDS}s" >&2
}

# with_waypoint [SERVICE...]: the namespace waypoint (samples/waypoint.yaml) deployed on demand
# and used by the Services named; both undone when the row ends.
with_waypoint() {
  # Runs after the Gateway's removal: its Deployment goes by garbage collection, and the next
  # row's Gateway of the same name must not race it.
  defer kctl -n "$SHOP" wait --for=delete deployment/waypoint --timeout "${WAIT_SECONDS}s" '>&2'
  apply_sample waypoint
  kctl -n "$SHOP" wait --for=condition=Programmed gateway/waypoint --timeout "${WAIT_SECONDS}s" >&2
  kctl -n "$SHOP" rollout status deployment/waypoint --timeout "${WAIT_SECONDS}s" >&2
  local service
  for service in "$@"; do
    kctl -n "$SHOP" label service "$service" istio.io/use-waypoint=waypoint --overwrite >&2
    defer kctl -n "$SHOP" label service "$service" istio.io/use-waypoint- '>&2'
  done
}

# report NAMESPACE DEPLOYMENT URL N [load args...]: the JSON report of N GETs of URL from the
# `load` container of the deployment's pod.
report() {
  local namespace=$1 from=$2 url=$3 requests=$4
  shift 4
  kctl -n "$namespace" exec "deploy/$from" -c load -- \
    load get "$url" -n "$requests" --json --timeout 5s "$@" 2>/dev/null
}

# answered NAMESPACE DEPLOYMENT URL N STATUS [load args...]: all N answered with STATUS.
answered() {
  local requests=$4 status=$5
  # shellcheck disable=SC2016  # $status, $version and $n are jq's
  report "$1" "$2" "$3" "$4" "${@:6}" \
    | holds '(.statuses[$status] // 0) == $n and .transportErrors == 0' \
      --arg status "$status" --argjson n "$requests"
}

# refused NAMESPACE DEPLOYMENT URL: none of 3 requests got any answer (closed or reset).
refused() {
  report "$1" "$2" "$3" 3 | holds '.transportErrors == 3'
}

# unserved NAMESPACE DEPLOYMENT URL: none of 3 requests was answered 200.
unserved() {
  report "$1" "$2" "$3" 3 | holds '(.statuses["200"] // 0) == 0'
}

# from_version NAMESPACE DEPLOYMENT URL N VERSION [load args...]: all N answered 200 by VERSION.
from_version() {
  local requests=$4 version=$5
  # shellcheck disable=SC2016  # $status, $version and $n are jq's
  report "$1" "$2" "$3" "$4" "${@:6}" \
    | holds '(.statuses["200"] // 0) == $n and (.versions[$version] // 0) == $n' \
      --arg version "$version" --argjson n "$requests"
}

# curl_status METHOD URL: the status curl (the shop client's curl container) got, 000 if none.
curl_status() {
  kctl -n "$SHOP" exec deploy/client -c curl -- \
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X "$1" "$2" || true
}

pod_of() { kctl -n "$1" get pod -l "$2" -o jsonpath='{.items[0].metadata.name}'; }
pod_ip() { kctl -n "$1" get pod -l "$2" -o jsonpath='{.items[0].status.podIP}'; }
service_ip() { kctl -n "$1" get service "$2" -o jsonpath='{.spec.clusterIP}'; }
node_of() { kctl -n "$1" get pod -l "$2" -o jsonpath='{.items[0].spec.nodeName}'; }

# --- rows -----------------------------------------------------------------------------------

row_probes_pass() {
  # Readiness probes come from the kubelet; they pass only if the node SNATs them to the
  # probe source that the pods' redirection leaves alone.
  all_ready() {
    local pods pod
    pods=$(kctl -n "$SHOP" get pods -l 'app in (client,denied,server)' \
      -o jsonpath='{.items[*].metadata.name}')
    [ -n "$pods" ] || return 1
    for pod in $pods; do
      kctl -n "$SHOP" get pod "$pod" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' \
        | grep True >/dev/null || return 1
    done
  }
  expect "every pod of apps.yaml is Ready" all_ready
  expect "client reaches server over the mesh" eventually answered "$SHOP" client "$SERVER/" 5 200
}

# What it proves: the bytes between the client's node and the server's node are the HBONE
# (mTLS) connection to the server pod's port 15008, and never the request or the answer.
row_mtls_on_the_wire() {
  apply_sample mtls-on-the-wire
  local url="http://wire-server.$SHOP.svc.cluster.local/" secret=SECRET-PAYLOAD-4242
  local server_ip
  server_ip=$(pod_ip "$SHOP" app=wire-server)
  expect "client and server are on different nodes" \
    test "$(node_of "$SHOP" app=client)" != "$(node_of "$SHOP" app=wire-server)"
  expect "the client reaches the server" eventually answered "$SHOP" client "$url" 3 200
  capture() { kctl -n "$SHOP" logs deploy/wire-capture 2>/dev/null; }
  listening() { capture | grep 'listening on' >/dev/null; }
  expect "tcpdump listens on the server node's eth0" eventually listening
  expect "the secret round-trips" \
    answered "$SHOP" client "$url?secret=$secret" 1 200 -H "x-secret:$secret"
  hbone_lines() { capture | grep -cF "$server_ip.15008" || true; }
  saw_hbone() { [ "$(hbone_lines)" -gt 0 ]; }
  expect "the capture saw the HBONE connection to $server_ip:15008" eventually saw_hbone
  # tcpdump prints in order: once a later request shows up, the secret's packets are printed.
  local before
  before=$(hbone_lines)
  more_lines() {
    answered "$SHOP" client "$url" 1 200 && [ "$(hbone_lines)" -gt "$before" ]
  }
  expect "the capture is past the secret's packets" eventually more_lines
  in_clear() { capture | grep -F "$secret" >/dev/null; }
  expect "the payload never crossed the wire in clear" not in_clear
}

row_strict_vs_permissive() {
  apply_sample strict-vs-permissive
  expect "PERMISSIVE (default) accepts a plaintext client outside the mesh" \
    eventually answered legacy client "$SERVER/" 3 200
  apply_sample strict-vs-permissive.strict
  expect "STRICT refuses the plaintext client" eventually unserved legacy client "$SERVER/"
  expect "mesh traffic passes STRICT" answered "$SHOP" client "$SERVER/" 5 200
}

row_l4_authorization() {
  apply_sample l4-authorization
  local port80="http://l4-server.$SHOP.svc.cluster.local/"
  local port81="http://l4-server.$SHOP.svc.cluster.local:81/"
  expect "client and denied reach the server" eventually answered "$SHOP" denied "$port80" 3 200
  expect "client reaches the server" answered "$SHOP" client "$port80" 3 200
  expect "the friend namespace reaches the server" eventually answered friend client "$port80" 3 200
  expect "the stranger namespace reaches the server" eventually answered stranger client "$port80" 3 200

  apply_sample l4-authorization.deny-principal
  expect "DENY by principal refuses denied" eventually refused "$SHOP" denied "$port80"
  expect "other principals pass" answered "$SHOP" client "$port80" 3 200
  delete_sample l4-authorization.deny-principal
  expect "denied passes again without the policy" eventually answered "$SHOP" denied "$port80" 3 200

  apply_sample l4-authorization.allow-principal-port
  expect "ALLOW by principal refuses another principal" eventually refused "$SHOP" denied "$port80"
  expect "the allowed principal passes on the allowed port" answered "$SHOP" client "$port80" 3 200
  expect "a port outside the rule is refused" eventually refused "$SHOP" client "$port81"
  delete_sample l4-authorization.allow-principal-port

  apply_sample l4-authorization.allow-namespace
  expect "ALLOW by namespace refuses another namespace" eventually refused stranger client "$port80"
  expect "the allowed namespace passes" answered friend client "$port80" 3 200
}

row_l7_policy_without_waypoint_denies() {
  expect "the server answers" eventually answered "$SHOP" client "$SERVER/" 3 200
  apply_sample l7-policy-without-waypoint-denies
  expect "an L7 DENY with no waypoint denies every connection" \
    eventually unserved "$SHOP" client "$SERVER/"
  delete_sample l7-policy-without-waypoint-denies
  expect "served again without the policy" eventually answered "$SHOP" client "$SERVER/" 3 200
}

row_waypoint_on_demand() {
  with_waypoint server
  expect "the controller deployed the waypoint for the Gateway" \
    kctl -n "$SHOP" get deployment/waypoint service/waypoint
  expect "the server answers through the waypoint" \
    eventually answered "$SHOP" client "$SERVER/" 10 200
  # The waypoint counts the requests it proxied (its metrics port, through the API server).
  waypoint_counted() {
    local pod
    pod=$(pod_of "$SHOP" gateway.networking.k8s.io/gateway-name=waypoint)
    kctl get --raw "/api/v1/namespaces/$SHOP/pods/$pod:15020/proxy/metrics" \
      | grep '^istio_requests_total{' | grep -F "destination_service=\"server.$SHOP.svc.cluster.local\"" \
      | grep -F 'reporter="waypoint"' >/dev/null
  }
  expect "the requests went through the waypoint (its istio_requests_total)" \
    eventually waypoint_counted
}

row_use_waypoint_precedence() {
  apply_sample use-waypoint-precedence
  local gateway
  for gateway in wp-ns wp-svc wp-pod; do
    kctl -n prec wait --for=condition=Programmed "gateway/$gateway" --timeout "${WAIT_SECONDS}s" >&2
    kctl -n prec rollout status "deployment/$gateway" --timeout "${WAIT_SECONDS}s" >&2
  done
  local plain bound
  plain="http://$(pod_ip prec role=plain):8000"
  bound="http://$(pod_ip prec role=bound):8000"
  # statuses BASE EXPECTED PATH...: the statuses of one GET per path equal EXPECTED.
  statuses() {
    local base=$1 expected=$2 path got=()
    shift 2
    for path in "$@"; do
      got+=("$(report prec client "$base$path" 1 | jq -r '(.statuses | keys)[0] // "none"')")
    done
    [ "${got[*]}" = "$expected" ]
  }
  expect "the namespace's waypoint serves the unlabelled pod" \
    eventually statuses "$plain" "200 200 403" /via-pod /via-svc /via-ns
  expect "the pod's own waypoint serves the labelled pod" \
    eventually statuses "$bound" "403 200 200" /via-pod /via-svc /via-ns
  expect "the service's waypoint serves the service" \
    eventually statuses "http://echo.prec.svc.cluster.local:8000" "403 200 200" /via-svc /via-pod /via-ns
}

row_l7_deny_method_path() {
  with_waypoint server
  expect "the server answers through the waypoint" eventually answered "$SHOP" client "$SERVER/" 5 200
  apply_sample l7-deny-method-path
  expect "the waypoint denies /admin with 403" eventually answered "$SHOP" client "$SERVER/admin/x" 3 403
  is_status() { [ "$(curl_status "$1" "$2")" = "$3" ]; }
  expect "the waypoint denies DELETE with 403" eventually is_status DELETE "$SERVER/" 403
  expect "other paths are still served" answered "$SHOP" client "$SERVER/" 5 200
  expect "other methods are still served" is_status POST "$SERVER/" 200
}

row_header_route_v2() {
  with_waypoint server
  apply_sample header-route-v2
  expect "end-user: jason goes to v2" eventually from_version "$SHOP" client "$SERVER/" 10 v2 -H end-user:jason
  expect "everything else goes to v1" from_version "$SHOP" client "$SERVER/" 10 v1
}

row_canary_90_10() {
  with_waypoint server
  apply_sample canary-90-10
  # Without the route the waypoint balances over 2 v1 pods and 1 v2 pod (about 33 of 100 to
  # v2, sd 4.7); with it about 10 (sd 3): 20 tells them apart.
  split_applies() {
    report "$SHOP" client "$SERVER/" 100 | holds '(.versions.v2 // 0) < 20'
  }
  expect "the canary split applies" eventually split_applies
  # 90/10 over 200 requests, within a generous tolerance (binomial sd is about 4).
  local split
  split=$(report "$SHOP" client "$SERVER/" 200)
  log "  split: $(jq -c '{statuses, versions}' <<<"$split")"
  expect "every request answered" holds '.statuses["200"] == 200 and .transportErrors == 0' <<<"$split"
  expect "only v1 and v2" holds '(.versions.v1 // 0) + (.versions.v2 // 0) == 200' <<<"$split"
  expect "about 10 % to v2 (5 to 40 of 200)" \
    holds '(.versions.v2 // 0) >= 5 and (.versions.v2 // 0) <= 40' <<<"$split"
}

row_retries_mask_failures() {
  with_waypoint
  apply_sample retries-mask-failures
  local flaky="http://flaky.$SHOP.svc.cluster.local/"
  fails_half() {
    report "$SHOP" client "$flaky" 100 | holds '(.statuses["200"] // 0) <= 75'
  }
  expect "flaky fails about half of its requests" eventually fails_half
  apply_sample retries-mask-failures.retry
  expect "retries apply" eventually answered "$SHOP" client "$flaky" 20 200
  masked() {
    report "$SHOP" client "$flaky" 100 | holds '(.statuses["200"] // 0) >= 97'
  }
  expect "retries mask the failures (97 of 100 or more succeed)" masked
}

row_timeout_504() {
  with_waypoint server
  apply_sample timeout-504
  expect "a slow answer times out with 504" \
    eventually answered "$SHOP" client "$SERVER/?delay=1s" 2 504
  expect "fast answers still pass" answered "$SHOP" client "$SERVER/" 5 200
}

row_fault_delay_abort() {
  with_waypoint server
  apply_sample fault-delay-abort
  expect "the abort fault answers 418" eventually answered "$SHOP" client "$SERVER/" 5 418 -H x-fault:yes
  delayed() {
    report "$SHOP" client "$SERVER/" 3 -H x-delay:yes \
      | holds '.statuses["200"] == 3 and .latencyMs.min >= 1000'
  }
  expect "requests with x-delay: yes wait at least 1 s" eventually delayed
  undelayed() {
    report "$SHOP" client "$SERVER/" 5 | holds '.statuses["200"] == 5 and .latencyMs.max < 1000'
  }
  expect "requests without the header are not delayed" undelayed
}

row_outlier_ejection() {
  with_waypoint
  apply_sample outlier-ejection
  local echo="http://echo-outlier.$SHOP.svc.cluster.local/"
  both_answer() {
    report "$SHOP" client "$echo" 20 \
      | holds '(.statuses["200"] // 0) > 0 and (.statuses["500"] // 0) > 0'
  }
  expect "both endpoints answer, the bad one with 500" eventually both_answer
  apply_sample outlier-ejection.detect
  expect "the failing endpoint is ejected: every request succeeds" \
    eventually from_version "$SHOP" client "$echo" 20 good
  returns() { report "$SHOP" client "$echo" 10 | holds '(.statuses["500"] // 0) > 0'; }
  expect "the ejected endpoint returns after baseEjectionTime" eventually returns
}

row_dns_proxy() {
  apply_sample dns-proxy
  local server_vip remote_vip
  server_vip=$(service_ip "$SHOP" server)
  remote_vip=$(service_ip far remote)
  # resolves NAME VIP: getent in the client's pod gives VIP for NAME. Names ending with a dot
  # skip the search list: only ztunnel's DNS proxy answers `server.` (kube-dns does not).
  resolves() {
    kctl -n "$SHOP" exec deploy/client -c load -- getent ahostsv4 "$1" 2>/dev/null \
      | awk '{print $1}' | grep -x "$2" >/dev/null
  }
  expect "the full name resolves to the VIP" eventually resolves "server.$SHOP.svc.cluster.local" "$server_vip"
  expect "server. (the pod's namespace) resolves to the VIP" resolves server. "$server_vip"
  expect "server.$SHOP. resolves to the VIP" resolves "server.$SHOP." "$server_vip"
  expect "remote.far. resolves to the other namespace's VIP" resolves remote.far. "$remote_vip"
  # not_to NAME VIP: getent ran and found NAME unknown (exit 2) or gave other addresses; a
  # failed exec is no evidence either way.
  not_to() {
    local addresses code=0
    addresses=$(kctl -n "$SHOP" exec deploy/client -c load -- getent ahostsv4 "$1" 2>/dev/null) \
      || code=$?
    case $code in
      0) ! awk '{print $1}' <<<"$addresses" | grep -x "$2" >/dev/null ;;
      2) true ;;
      *) false ;;
    esac
  }
  expect "remote. (not the pod's namespace) does not resolve to it" not_to remote. "$remote_vip"
  expect "a name that is no Service resolves to no VIP" \
    not_to "nothing-here.$SHOP.svc.cluster.local." "$server_vip"
}

row_namespace_label_live() {
  apply_sample namespace-label-live
  defer kctl label namespace live istio.io/dataplane-mode=ambient --overwrite '>&2'
  expect "the enrolled client passes (mTLS identity of namespace live)" \
    eventually answered live client "$SERVER/" 3 200
  kctl label namespace live istio.io/dataplane-mode- >&2
  expect "label removed: the client is unenrolled live and refused (plaintext)" \
    eventually unserved live client "$SERVER/"
  kctl label namespace live istio.io/dataplane-mode=ambient --overwrite >&2
  expect "label back: the client is enrolled again and passes" \
    eventually answered live client "$SERVER/" 3 200
}

row_tracing_otlp() {
  apply_sample tracing-otlp
  with_waypoint server
  local answer parent
  # The echo server answers with the headers it received, traceparent included.
  traced_answer() {
    answer=$(kctl -n "$SHOP" exec deploy/client -c load -- load once "$SERVER/items" --timeout 5s \
      -H "traceparent:00-$TRACE_ID-$CLIENT_SPAN-01" 2>/dev/null) || return 1
    parent=$(jq -r '.headers.traceparent // empty' <<<"$answer" 2>/dev/null)
    [ -n "$parent" ]
  }
  expect "the backend received a traceparent" eventually traced_answer
  log "  backend traceparent: $parent"
  expect "with the client's trace id" test "$(cut -d- -f2 <<<"$parent")" = "$TRACE_ID"
  expect "and the waypoint's span as parent (not the client's)" \
    test "$(cut -d- -f3 <<<"$parent")" != "$CLIENT_SPAN"
  collected() { kctl -n observability logs deploy/otel-collector 2>/dev/null | grep -F "$TRACE_ID" >/dev/null; }
  expect "a span of the trace reached the OTLP collector" eventually collected
}

row_prometheus_istio_metrics() {
  apply_sample prometheus-istio-metrics
  with_waypoint server
  # series PROMQL: the instant query has at least one series (through the API server's
  # service proxy).
  series() {
    local encoded
    encoded=$(jq -rn --arg q "$1" '$q | @uri')
    kctl get --raw \
      "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy/api/v1/query?query=$encoded" \
      | holds '.data.result | length > 0'
  }
  traffic_and_series() {
    answered "$SHOP" client "$SERVER/" 20 200 && series "$1"
  }
  expect "ztunnel targets are up" eventually series 'up{namespace="ambit-system",pod=~"ztunnel-.*"} == 1'
  expect "istio_requests_total from the waypoint for client -> server, mTLS" \
    eventually traffic_and_series "istio_requests_total{reporter=\"waypoint\",response_code=\"200\",destination_service=\"server.$SHOP.svc.cluster.local\",source_principal=\"cluster.local/ns/$SHOP/sa/client\",connection_security_policy=\"mutual_tls\"}"
  expect "ztunnel reports TCP connections" \
    eventually traffic_and_series 'istio_tcp_connections_opened_total{reporter=~"source|destination"}'
}

# The control plane speaks TLS: the controller published the mesh roots as the ConfigMap
# ztunnel and the waypoints mount to verify it, says it serves gRPC over TLS, and the mesh
# runs on the config fetched that way.
row_control_plane_tls() {
  roots_published() {
    kctl -n "$AMBIT_NAMESPACE" get configmap ambit-ca-root-cert \
      -o 'jsonpath={.data.root-cert\.pem}' | grep 'BEGIN CERTIFICATE' >/dev/null
  }
  expect "the controller published its roots (ConfigMap ambit-ca-root-cert)" \
    eventually roots_published
  serves_tls() {
    kctl -n "$AMBIT_NAMESPACE" logs deployment/ambit-controller | grep 'gRPC serves TLS' >/dev/null
  }
  expect "the controller serves gRPC over TLS" eventually serves_tls
  expect "the server answers, the proxies configured over TLS" \
    eventually answered "$SHOP" client "$SERVER/" 5 200
}

row_controller_killed() {
  expect "the server answers" eventually answered "$SHOP" client "$SERVER/" 5 200
  defer kctl -n "$AMBIT_NAMESPACE" rollout status deployment/ambit-controller \
    --timeout "${WAIT_SECONDS}s" '>&2'
  defer kctl -n "$AMBIT_NAMESPACE" scale deployment/ambit-controller --replicas=1 '>&2'
  kctl -n "$AMBIT_NAMESPACE" scale deployment/ambit-controller --replicas=0 >&2
  # Not `kubectl wait --for=delete -l`: it fails when no pod matches any more.
  no_controller() {
    [ -z "$(kctl -n "$AMBIT_NAMESPACE" get pods -l app.kubernetes.io/name=ambit-controller -o name)" ]
  }
  expect "the controller's pods are gone" eventually no_controller
  local round
  for round in 1 2 3; do
    expect "traffic keeps flowing on the last config without the controller ($round)" \
      answered "$SHOP" client "$SERVER/" 10 200
  done
}

# Deterministic: the ztunnel DaemonSet is kept off the client's node by a node label (after
# one rollout that adds the affinity), rather than racing a pod restart.
row_ztunnel_killed() {
  expect "the server answers" eventually answered "$SHOP" client "$SERVER/" 5 200
  local node ztunnel
  node=$(node_of "$SHOP" app=client)
  kctl -n "$AMBIT_NAMESPACE" patch daemonset/ztunnel --type strategic -p \
    '{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"ambit-e2e/no-ztunnel","operator":"DoesNotExist"}]}]}}}}}}' >&2
  # Registered only now: undo must return to the template before the patch, not an older one.
  defer kctl -n "$AMBIT_NAMESPACE" rollout status daemonset/ztunnel --timeout "${WAIT_SECONDS}s" '>&2'
  defer kctl -n "$AMBIT_NAMESPACE" rollout undo daemonset/ztunnel '>&2'
  defer kctl label node "$node" ambit-e2e/no-ztunnel- '>&2'
  kctl -n "$AMBIT_NAMESPACE" rollout status daemonset/ztunnel --timeout "${WAIT_SECONDS}s" >&2
  expect "served after ztunnel's rollout" eventually answered "$SHOP" client "$SERVER/" 5 200
  ztunnel=$(kctl -n "$AMBIT_NAMESPACE" get pod -l app.kubernetes.io/name=ztunnel \
    --field-selector "spec.nodeName=$node" -o jsonpath='{.items[0].metadata.name}')
  kctl label node "$node" ambit-e2e/no-ztunnel=true >&2
  kctl -n "$AMBIT_NAMESPACE" wait --for=delete "pod/$ztunnel" --timeout "${WAIT_SECONDS}s" >&2
  expect "with ztunnel gone the enrolled client fails closed (no answer at all)" \
    refused "$SHOP" client "$SERVER/"
  kctl label node "$node" ambit-e2e/no-ztunnel- >&2
  kctl -n "$AMBIT_NAMESPACE" rollout status daemonset/ztunnel --timeout "${WAIT_SECONDS}s" >&2
  expect "ztunnel back: served again" eventually answered "$SHOP" client "$SERVER/" 5 200
}

# --- runner ---------------------------------------------------------------------------------

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${ROWS[@]}"
  exit 0
fi

selected=("$@")
if [ "${#selected[@]}" -eq 0 ]; then
  selected=("${ROWS[@]}")
fi
for row in "${selected[@]}"; do
  [[ " ${ROWS[*]} " == *" $row "* ]] || fail "no row $row (scenarios.sh --list)"
done
require kubectl jq

passed=0
failed=()
for row in "${selected[@]}"; do
  log "row $row"
  # A subshell per row: errexit ends the row at its first failed step, and its EXIT trap
  # undoes what the row changed whether it passed or not.
  set +e
  (
    set -e
    trap run_deferred EXIT
    "row_${row//-/_}"
  )
  status=$?
  set -e
  if [ "$status" -eq 0 ]; then
    printf 'PASS %s\n' "$row"
    passed=$((passed + 1))
  else
    printf 'FAIL %s\n' "$row"
    failed+=("$row")
  fi
done

printf '%d passed, %d failed%s\n' "$passed" "${#failed[@]}" "${failed[*]:+: ${failed[*]}}"
[ "${#failed[@]}" -eq 0 ]
