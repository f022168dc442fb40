#!/usr/bin/env bash
# Installs the Gateway API CRDs and the Ambit charts with the locally built images.
set -euo pipefail
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require kubectl helm

log "Gateway API CRDs $GATEWAY_API_VERSION (a prerequisite, as for Istio ambient)"
kctl apply --server-side -f \
  "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"

images=(
  --set "image.tag=$IMAGE_TAG" --set "image.pullPolicy=Never"
)
helm_install() {
  local release=$1 chart=$2
  shift 2
  log "helm upgrade --install $release"
  helm upgrade --install "$release" "$REPO_ROOT/charts/$chart" \
    --kube-context "kind-$CLUSTER_NAME" --namespace "$AMBIT_NAMESPACE" --create-namespace \
    --wait --timeout "${WAIT_SECONDS}s" "$@"
}

helm_install ambit-base ambit-base
helm_install ambit-controller ambit-controller "${images[@]}" \
  --set "image.repository=$IMAGE_REGISTRY/ambit-controller" \
  --set "waypoint.image.repository=$IMAGE_REGISTRY/waypoint" \
  --set "waypoint.image.tag=$IMAGE_TAG" --set "waypoint.image.pullPolicy=Never" \
  --set "waypoint.tracing.otlpEndpoint=$OTLP_ENDPOINT" --set-string "waypoint.tracing.sampling=1"
helm_install ambit-ztunnel ambit-ztunnel "${images[@]}" \
  --set "image.repository=$IMAGE_REGISTRY/ztunnel" \
  --set "installerImage.repository=$IMAGE_REGISTRY/ambit-cni-installer" \
  --set "installerImage.tag=$IMAGE_TAG" --set "installerImage.pullPolicy=Never"

for workload in deployment/ambit-controller daemonset/ztunnel daemonset/ambit-node; do
  kctl -n "$AMBIT_NAMESPACE" rollout status "$workload" --timeout "${WAIT_SECONDS}s"
done
