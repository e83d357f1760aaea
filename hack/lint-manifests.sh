#!/usr/bin/env bash
# Scans what the project installs and what a workspace becomes with two scanners
# we did not write: checkov (PyPI) and kube-score (Go module, hack/kube-score),
# both pinned and cached under ~/.cache/rspark-operator. Scanned: the kustomize
# base (the operator, the snapshot gateway and retention) and each sample
# workspace as the operator renders it (devtools/render.py).
# Findings left are suppressed by name below; docs/security.md says why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RSPARK_CACHE:-$HOME/.cache/rspark-operator}"
UV_VERSION=0.13.8
CHECKOV_VERSION=3.3.30
UV="$CACHE/uv-$UV_VERSION/bin/uv"
export UV_CACHE_DIR="$CACHE/uv"
TOOLS="$CACHE/lint-manifests-checkov-$CHECKOV_VERSION"

# Suppressed by name; docs/security.md ("Scanners") says why for each.
CHECKOV_SKIPS=(
  CKV_K8S_11  # CPU limits
  CKV_K8S_15  # image pull policy Always
  CKV_K8S_43  # images by digest (overlays pin digests)
  CKV_K8S_8   # liveness probe on the workspace pod
  CKV_K8S_22  # read-only root filesystem (the IDE container)
  CKV_K8S_23  # root containers (the IDE's init)
  CKV_K8S_25  # added capabilities (the IDE's init)
  CKV_K8S_40  # uid 10000 or more (Rocker's uid 1000 owns the home)
  CKV_K8S_35  # Secrets as environment variables (RStudio's PASSWORD, restic's)
  CKV_K8S_38  # the operator's token (it is an API client)
)
KUBE_SCORE_SKIPS=(
  container-image-pull-policy                       # as CKV_K8S_15
  container-security-context-user-group-id          # as CKV_K8S_40
  container-security-context-readonlyrootfilesystem # as CKV_K8S_22
  container-ephemeral-storage-request-and-limit     # the IDE's scratch space
  pod-probes-identical                              # the operator's one endpoint
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
# Offline: no policy download, no mapping of check ids from the vendor's API.
BC_SKIP_MAPPING=TRUE "$TOOLS/bin/checkov" --quiet --compact --skip-download \
  --framework kubernetes --directory "$out" --skip-check "$skip_checks"

ignores=()
for test in "${KUBE_SCORE_SKIPS[@]}"; do ignores+=(--ignore-test "$test"); done
# CPU limits: as CKV_K8S_11.
"$ROOT/.local/bin/kube-score" score --output-format ci --ignore-container-cpu-limit \
  --enable-optional-test container-seccomp-profile "${ignores[@]}" \
  "$out"/base/*.yaml "$out"/workspaces/*.yaml | { grep -v '^\[OK\]' || true; }

rendered=("$out"/workspaces/*.yaml)
echo "lint-manifests: checkov $CHECKOV_VERSION and kube-score clean on the base and" \
  "${#rendered[@]} rendered workspaces"
