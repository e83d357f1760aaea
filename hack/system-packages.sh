#!/usr/bin/env bash
# The Debian packages the tests need: ss (iproute2) to check what listens, and R
# (r-base-core) to test the workspace image's Renviron.site with a real R.
# `make images-local` (devtools/images.py): mmdebstrap (the Debian bases), buildah
# (builds the Dockerfiles without a daemon), skopeo (pushes), busybox-static (the
# pause image), and docker-registry (the registry its tests push to).
set -euo pipefail

missing=()
command -v ss >/dev/null || missing+=(iproute2)
command -v Rscript >/dev/null || missing+=(r-base-core)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v buildah >/dev/null || missing+=(buildah)
command -v skopeo >/dev/null || missing+=(skopeo)
dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
command -v docker-registry >/dev/null || missing+=(docker-registry)
((${#missing[@]})) || exit 0

sudo=()
((EUID == 0)) || sudo=(sudo)
echo "[system] installing ${missing[*]} with apt-get" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
