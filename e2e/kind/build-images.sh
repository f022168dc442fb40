#!/usr/bin/env bash
# Builds the four images from images/*/Dockerfile and loads them into the kind nodes.
set -euo pipefail
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require docker kind

for image in "${IMAGES[@]}"; do
  dir=${image%%:*}
  name=${image#*:}
  ref="$IMAGE_REGISTRY/$name:$IMAGE_TAG"
  log "building $ref"
  DOCKER_BUILDKIT=1 docker build -f "$REPO_ROOT/images/$dir/Dockerfile" -t "$ref" "$REPO_ROOT"
  log "loading $ref into $CLUSTER_NAME"
  kind load docker-image --name "$CLUSTER_NAME" "$ref"
done
