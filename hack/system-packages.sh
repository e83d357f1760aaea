#!/usr/bin/env bash
# The Debian packages the tests and the local cluster need: ss (iproute2) to check
# what listens; R (r-base-core) to test the workspace image's Renviron.site with a
# real R; and for the real nodes: containerd and runc (the container runtime),
# containernetworking-plugins (CNI bridge + host-local), iptables (kube-proxy and
# the kubelet write their rules with it; nft lets the cluster-down test read the
# nftables rule set), conntrack, busybox-static (the pause and
# test image), openssl (node certificates), nsenter (util-linux); the local
# cluster's image registry (docker-registry) and what kube-router's NetworkPolicy
# firewall drives (ipset).
# `make images-local` (devtools/images.py): mmdebstrap (the Debian bases), buildah
# (builds the Dockerfiles without a daemon) and skopeo (pushes).
# The end-to-end tests' browser: chromium and its chromedriver (Selenium drives it).
set -euo pipefail

missing=()
need() { command -v "$1" >/dev/null || [[ -x "$3" ]] || missing+=("$2"); }
need ss iproute2 ""
need Rscript r-base-core ""
need containerd containerd ""
need runc runc ""
need bridge containernetworking-plugins /usr/lib/cni/bridge
need iptables iptables ""
need nft nftables ""
need conntrack conntrack ""
# The image needs a static busybox (the busybox package's is dynamic).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
  missing+=(busybox-static)
need openssl openssl ""
need nsenter util-linux ""
need mmdebstrap mmdebstrap ""
need buildah buildah ""
need skopeo skopeo ""
need docker-registry docker-registry ""
need ipset ipset ""
need chromium chromium ""
need chromedriver chromium-driver ""
((${#missing[@]})) || exit 0

sudo=()
((EUID == 0)) || sudo=(sudo)
echo "[system] installing ${missing[*]} with apt-get" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
