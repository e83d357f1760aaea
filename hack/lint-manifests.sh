#!/usr/bin/env bash
# Scans what the project installs and what a workspace becomes with two scanners
# we did not write: checkov (PyPI) and kube-score (Go module, hack/kube-score),
# both pinned and cached under ~/.cache/rspark-operator. Scanned: the kustomize
# base and each sample workspace as the operator renders it (devtools/render.py).
# Findings left are suppressed by name below; docs/security.md says why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RSPARK_CACHE:-$HOME/.cache/rspark-operator}"
UV_VERSION=0.13.8
CHECKOV_VERSION=3.3.30
UV="$CACHE/uv-$UV_VERSION/bin/uv"
export UV_CACHE_DIR="$CACHE/uv"
TOOLS="$CACHE/lint-manifests-checkov-$CHECKOV_VERSION"

# checkov: each suppression is explained in docs/security.md ("Scanners").
CHECKOV_SKIPS=(
)
# kube-score: each suppression is explained in docs/security.md ("Scanners").
KUBE_SCORE_SKIPS=(
)

if [[ ! -x "$TOOLS/bin/checkov" ]]; then
  [[ -x "$UV" ]] || bash "$ROOT/hack/venv.sh"
  "$UV" venv --quiet --allow-existing --python python3 "$TOOLS"
  "$UV" pip install --quiet --python "$TOOLS/bin/python" "checkov==$CHECKOV_VERSION"
fi
bash "$ROOT/hack/tools.sh" kube kube-score

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir "$out/base" "$out/workspaces"
"$ROOT/.local/bin/kubectl" kustomize "$ROOT/manifests/base" > "$out/base/base.yaml"
(cd "$ROOT" && .local/venv/bin/python -m devtools.render "$out/workspaces")

skip_checks="$(IFS=,; echo "${CHECKOV_SKIPS[*]}")"
"$TOOLS/bin/checkov" --quiet --compact --framework kubernetes --directory "$out" \
  ${skip_checks:+--skip-check "$skip_checks"}

ignores=()
for test in "${KUBE_SCORE_SKIPS[@]}"; do ignores+=(--ignore-test "$test"); done
"$ROOT/.local/bin/kube-score" score --output-format ci "${ignores[@]}" \
  "$out"/base/*.yaml "$out"/workspaces/*.yaml

echo "lint-manifests: checkov $CHECKOV_VERSION and kube-score clean on the base and" \
  "$(ls "$out/workspaces" | wc -l) rendered workspaces"
