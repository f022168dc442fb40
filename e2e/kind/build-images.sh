#!/usr/bin/env bash
# Builds the four images from images/*/Dockerfile and the sample apps' image
# (e2e/samples/Dockerfile), and loads them into the kind nodes.
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

# The samples name this image as is (e2e/samples and e2e/kind/samples).
log "building $SAMPLE_APPS_IMAGE"
DOCKER_BUILDKIT=1 docker build -f "$REPO_ROOT/e2e/samples/Dockerfile" -t "$SAMPLE_APPS_IMAGE" "$REPO_ROOT"
log "loading $SAMPLE_APPS_IMAGE into $CLUSTER_NAME"
kind load docker-image --name "$CLUSTER_NAME" "$SAMPLE_APPS_IMAGE"
