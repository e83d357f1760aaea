#!/usr/bin/env bash
# `make images`: build the images with Docker, from the repository root.
#   IMAGE_REGISTRY (default ghcr.io/rspark-dev) and IMAGE_TAG (default 0.1.0) name
#   them as the operator's default settings expect: rstudio (the workspace), agent,
#   spark (the Spark executors), and operator; then the JupyterLab workspace
#   (jupyterlab) on its Debian Spark executor image (spark-debian), and Spark's
#   Connect server (spark-connect) on that image too.
#   `bash hack/images.sh [DIR...]` builds only the named directories of images/.
# Without a running Docker engine it says so and fails: nothing is built.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${IMAGE_REGISTRY:-ghcr.io/rspark-dev}"
TAG="${IMAGE_TAG:-0.1.0}"
DOCKER="${DOCKER:-docker}"

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  echo "make images: '$DOCKER' is not installed; no image was built." >&2
  echo "  The Dockerfiles are still linted by 'make lint-images'." >&2
  exit 1
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "make images: no Docker engine answers ('$DOCKER info' fails); no image was built." >&2
  echo "  The Dockerfiles are still linted by 'make lint-images'." >&2
  exit 1
fi

export DOCKER_BUILDKIT=1
# directory under images/ -> image name (the workspace image is "rstudio").
# Arguments, if any, pick some of the directories (hack/e2e-kind.sh needs three).
for pair in rspark:rstudio agent:agent spark:spark operator:operator spark-debian:spark-debian jupyterlab:jupyterlab spark-connect:spark-connect; do
  dir="${pair%%:*}" name="${pair##*:}"
  if (($#)) && [[ " $* " != *" $dir "* ]]; then continue; fi
  echo "==> $REGISTRY/$name:$TAG (images/$dir)"
  args=()
  # The JupyterLab image and the Spark Connect server's are built on the Debian
  # executor image built before them.
  [[ "$dir" != jupyterlab && "$dir" != spark-connect ]] ||
    args=(--build-arg "SPARK_IMAGE=$REGISTRY/spark-debian:$TAG")
  "$DOCKER" build -f "$ROOT/images/$dir/Dockerfile" -t "$REGISTRY/$name:$TAG" "${args[@]}" "$ROOT"
done
