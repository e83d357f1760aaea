#!/usr/bin/env bash
# `make deploy`: apply a kustomization (default manifests/base) to the current
# kubectl context with your own kubectl (KUBECTL, else the first kubectl on
# PATH). It builds nothing and installs nothing; it refuses a kubectl more than
# one minor version away from the cluster's (Kubernetes' supported skew).
# The CRDs go first and must be Established before the ClusterKopfPeering
# object that uses one of them can be applied.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KUSTOMIZATION="${1:-$ROOT/manifests/base}"
KUBECTL="${KUBECTL:-kubectl}"

fail() { printf 'deploy: %s\n' "$*" >&2; exit 1; }

command -v "$KUBECTL" >/dev/null ||
  fail "no '$KUBECTL' on PATH: install kubectl within one minor version of your cluster, or set KUBECTL=/path/to/kubectl"

# `kubectl version -o json` names the client's gitVersion first, the server's after
# (its warnings, on stderr, hold no gitVersion).
if ! version_json="$("$KUBECTL" version -o json 2>&1)"; then
  context="$("$KUBECTL" config current-context 2>/dev/null || echo none)"
  fail "cannot read the cluster's version with $KUBECTL (context $context): $(tail -n 1 <<<"$version_json")"
fi
mapfile -t versions < <(grep -o '"gitVersion": *"v[0-9]*\.[0-9]*' <<<"$version_json" | sed 's/.*"v//')
((${#versions[@]} == 2)) || fail "cannot read client and server versions from '$KUBECTL version -o json'"
client_minor="${versions[0]#*.}" server_minor="${versions[1]#*.}"
skew=$((client_minor - server_minor))
if ((${versions[0]%%.*} != ${versions[1]%%.*} || skew > 1 || skew < -1)); then
  fail "kubectl ${versions[0]} and the cluster's Kubernetes ${versions[1]} are more than one minor version apart (kubectl supports +-1): use a kubectl 1.$((server_minor - 1)) to 1.$((server_minor + 1)) (KUBECTL=/path/to/kubectl)"
fi

"$KUBECTL" apply --server-side --force-conflicts -k "$ROOT/crds"
"$KUBECTL" wait --for=condition=Established --timeout=60s \
  crd/rstudioworkspaces.rspark.dev crd/sparkprofiles.rspark.dev \
  crd/clusterkopfpeerings.kopf.dev crd/kopfpeerings.kopf.dev
"$KUBECTL" apply --server-side --force-conflicts -k "$KUSTOMIZATION"
