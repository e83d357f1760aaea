#!/usr/bin/env bash
# The Debian packages the tests need: ss (iproute2) to check what listens, and R
# (r-base-core) to test the workspace image's Renviron.site with a real R. The local
# cluster's image registry (docker-registry) and what kube-router's NetworkPolicy
# firewall drives (ipset, iptables).
set -euo pipefail

missing=()
command -v ss >/dev/null || missing+=(iproute2)
command -v Rscript >/dev/null || missing+=(r-base-core)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v ipset >/dev/null || missing+=(ipset)
command -v iptables >/dev/null || missing+=(iptables)
((${#missing[@]})) || exit 0

sudo=()
((EUID == 0)) || sudo=(sudo)
echo "[system] installing ${missing[*]} with apt-get" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
