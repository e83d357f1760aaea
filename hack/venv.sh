#!/usr/bin/env bash
# Creates .local/venv with the locked Python dependencies and the project
# (editable). uv itself is pinned and kept in ~/.cache/rspark-operator.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RSPARK_CACHE:-$HOME/.cache/rspark-operator}"
UV_VERSION=0.13.8
UV="$CACHE/uv-$UV_VERSION/bin/uv"
export UV_CACHE_DIR="$CACHE/uv"
VENV="$ROOT/.local/venv"

if [[ ! -x "$UV" ]]; then
  python3 -m venv "$CACHE/uv-$UV_VERSION"
  "$CACHE/uv-$UV_VERSION/bin/pip" install --quiet "uv==$UV_VERSION"
fi
stamp="$VENV/.lock-$(sha256sum "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  [[ -x "$VENV/bin/python" ]] || "$UV" venv --quiet --python python3 "$VENV"
  "$UV" pip sync --quiet --python "$VENV/bin/python" "$ROOT/requirements.lock"
  "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps -e "$ROOT"
  rm -f "$VENV"/.lock-* && touch "$stamp"
fi
