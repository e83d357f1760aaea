#!/usr/bin/env bash
# `make deploy`: apply a kustomization (default manifests/base) to the current
# kubectl context. The CRDs go first and must be Established before the
# ClusterKopfPeering object that uses one of them can be applied.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KUSTOMIZATION="${1:-$ROOT/manifests/base}"
KUBECTL="${KUBECTL:-kubectl}"

"$KUBECTL" apply --server-side --force-conflicts -k "$ROOT/crds"
"$KUBECTL" wait --for=condition=Established --timeout=60s \
  crd/rstudioworkspaces.rspark.dev crd/sparkprofiles.rspark.dev \
  crd/clusterkopfpeerings.kopf.dev crd/kopfpeerings.kopf.dev
"$KUBECTL" apply --server-side --force-conflicts -k "$KUSTOMIZATION"
