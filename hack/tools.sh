#!/usr/bin/env bash
# Builds, once per pinned version, every binary the local cluster and the tests
# need, and links them into .local/bin. Each tool is a Go wrapper module under
# hack/<tool>/ whose go.mod pins it; binaries are cached under
# ~/.cache/rspark-operator/tools/<tool>/<hash of go.mod>/, so changing a pin
# rebuilds and a second run only links.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RSPARK_CACHE:-$HOME/.cache/rspark-operator}"
BIN="$ROOT/.local/bin"
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-mod=mod
export CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$BIN"

log() { printf '[tools] %s\n' "$*" >&2; }

# build TOOL LDFLAGS NAME=PACKAGE...: build each PACKAGE of hack/TOOL as NAME.
build() {
  local tool="$1" ldflags="$2" mod="$ROOT/hack/$1"
  shift 2
  local dir
  dir="$CACHE/tools/$tool/$(sha256sum "$mod/go.mod" | cut -c1-12)"
  if [[ ! -f "$dir/.complete" ]]; then
    log "building $tool (${*%%=*}) into $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    if (($# == 1)); then
      (cd "$mod" && go build -trimpath -ldflags "-s -w $ldflags" -o "$dir/${1%%=*}" "${1#*=}")
    else
      # One go build links the binaries side by side; each NAME must be its
      # package's last element (the name go build gives it).
      (cd "$mod" && go build -trimpath -ldflags "-s -w $ldflags" -o "$dir/" "${@#*=}")
    fi
    local spec
    for spec in "$@"; do
      [[ -x "$dir/${spec%%=*}" ]] || { log "$tool: go build made no ${spec%%=*}"; exit 1; }
    done
    touch "$dir/.complete"
  fi
  for spec in "$@"; do ln -sfn "$dir/${spec%%=*}" "$BIN/${spec%%=*}"; done
}

# module_version TOOL MODULE: the version hack/TOOL/go.mod pins for MODULE.
module_version() { (cd "$ROOT/hack/$1" && go list -m -f '{{.Version}}' "$2"); }

build_kube() {
  local version minor vpkg=k8s.io/component-base/version
  version="$(module_version kube k8s.io/kubernetes)"
  minor="${version#v1.}" && minor="${minor%%.*}"
  log "Kubernetes $version (a cold build takes tens of minutes on 2 cores)"
  build kube "-X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
    kubectl=k8s.io/kubernetes/cmd/kubectl \
    kubelet=k8s.io/kubernetes/cmd/kubelet \
    kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
}

# helm's own Makefile stamps its version and the Kubernetes version it assumes
# offline (`helm template`, `helm lint`): client-go v0.N is Kubernetes 1.N.
build_helm() {
  local version kube minor pkg=helm.sh/helm/v3/pkg
  version="$(module_version helm helm.sh/helm/v3)"
  kube="$(module_version helm k8s.io/client-go)" && minor="${kube#v0.}" && minor="${minor%%.*}"
  build helm "-X helm.sh/helm/v3/internal/version.version=$version \
-X $pkg/chartutil.k8sVersionMajor=1 -X $pkg/chartutil.k8sVersionMinor=$minor \
-X $pkg/lint/rules.k8sVersionMajor=1 -X $pkg/lint/rules.k8sVersionMinor=$minor" \
    helm=helm.sh/helm/v3/cmd/helm
}

# build_versioned TOOL MODULE VERSION_VAR NAME=PACKAGE: build with VERSION_VAR set to the
# version hack/TOOL/go.mod pins for MODULE (what the binary prints as its version).
build_versioned() {
  local version
  version="$(module_version "$1" "$2")"
  build "$1" "-X $3=$version" "$4"
}

# build_tool TOOL: build (once) and link one tool.
build_tool() {
  local tool="$1"
  case "$tool" in
    kube) build_kube ;;
    etcd) build etcd "" etcd=go.etcd.io/etcd/server/v3 ;;
    kwok) build kwok "" kwok=sigs.k8s.io/kwok/cmd/kwok kwokctl=sigs.k8s.io/kwok/cmd/kwokctl ;;
    restic) build restic "" restic=github.com/restic/restic/cmd/restic ;;
    # The snapshot gateway of the local cluster (devtools/gateway.py): hack/rclone/main.go.
    rclone) build_versioned rclone github.com/rclone/rclone github.com/rclone/rclone/fs.Version rclone=. ;;
    helm) build_helm ;;
    coredns) build coredns "" coredns=github.com/coredns/coredns ;;
    traefik)
      build_versioned traefik github.com/traefik/traefik/v3 \
        github.com/traefik/traefik/v3/pkg/version.Version traefik=github.com/traefik/traefik/v3/cmd/traefik
      ;;
    kube-router)
      build_versioned kube-router github.com/cloudnativelabs/kube-router/v2 \
        github.com/cloudnativelabs/kube-router/v2/pkg/version.Version \
        kube-router=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
      ;;
    # Not for the cluster: the monitoring overlay's rules (tests/integration/test_monitoring.py).
    promtool)
      build_versioned promtool github.com/prometheus/prometheus \
        github.com/prometheus/common/version.Version promtool=github.com/prometheus/prometheus/cmd/promtool
      ;;
    # Not a host process: make images-local puts it into the sign-in proxy's image.
    oauth2-proxy)
      build_versioned oauth2-proxy github.com/oauth2-proxy/oauth2-proxy/v7 \
        github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION \
        oauth2-proxy=github.com/oauth2-proxy/oauth2-proxy/v7
      ;;
    # Not for the cluster: make lint (hack/lint-manifests.sh).
    kube-score) build kube-score "" kube-score=github.com/zegl/kube-score/cmd/kube-score ;;
    *) log "unknown tool $tool"; exit 2 ;;
  esac
}

# Two tools at a time: one tool's downloads and links overlap another's compiling
# on 2 cores (go build shares its module and build caches safely between processes).
LANES=2

main() {
  local tool tools=("$@") running=0
  ((${#tools[@]})) || tools=(kube etcd kwok restic rclone helm coredns traefik kube-router promtool)
  trap 'jobs -p | xargs -r kill 2>/dev/null' EXIT
  for tool in "${tools[@]}"; do
    if ((running == LANES)); then
      wait -n
      running=$((running - 1))
    fi
    build_tool "$tool" &
    running=$((running + 1))
  done
  while ((running > 0)); do
    wait -n
    running=$((running - 1))
  done
}

main "$@"
