#!/usr/bin/env bash
# `make e2e-kind`: the whole path on a real cluster, where Docker and kind exist.
#   kind cluster + ingress-nginx + MinIO, build and load the images, deploy
#   manifests/base, create a workspace, wait for RStudio at its URL, write a file
#   in the home, delete the pod, wait for the new one, check the file is there;
#   then delete the pod AND its claim (a lost volume), wait for the agent to
#   restore the home from the last snapshot (HomeRestored=True, reason Restored),
#   check the file again.
# Needs: docker (running), kind >= 0.29.0, kubectl, curl, and internet access for
# the ingress-nginx manifest and the base images. KEEP_CLUSTER=1 keeps the cluster.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${E2E_CLUSTER:-rspark-e2e}"
TAG="${IMAGE_TAG:-e2e}"
REGISTRY="${IMAGE_REGISTRY:-ghcr.io/rspark-dev}"
INGRESS_NGINX_VERSION=controller-v1.12.1
# hack/e2e-kind/kind.yaml pins kindest/node v1.33.1 by the digest that kind
# v0.29.0's release lists (v0.28.0 was the first with a v1.33 image; v0.29.0
# rebuilt it with containerd 2.1.1 for CVE-2025-47290). kind supports a node
# image only from the release that built it onwards.
KIND_MIN_VERSION=0.29.0
NAMESPACE=e2e
WORKSPACE=alice
CLAIM="$WORKSPACE-home"
HOST="$WORKSPACE-$NAMESPACE.rspark.localhost"

say() { echo "[e2e-kind] $*"; }
fail() { echo "e2e-kind: $*" >&2; exit 1; }
for tool in docker kind kubectl curl; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done
docker info >/dev/null 2>&1 || fail "no Docker engine answers"

# `kind version` prints e.g. "kind v0.29.0 go1.24.2 linux/amd64".
kind_version="$(kind version | awk '{print $2}')"
kind_version="${kind_version#v}"
kind_version="${kind_version%%[-+]*}"
if [[ ! "$kind_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  [[ "$(printf '%s\n%s\n' "$KIND_MIN_VERSION" "$kind_version" | sort -V | head -n1)" != "$KIND_MIN_VERSION" ]]; then
  fail "kind $KIND_MIN_VERSION or newer is needed for the pinned kindest/node v1.33.1 image; found '$(kind version)'"
fi

# Polls until a command's output equals the expected value.
wait_for() {
  local what="$1" expected="$2" tries="$3"
  shift 3
  local got=""
  for _ in $(seq 1 "$tries"); do
    got="$("$@" 2>/dev/null || true)"
    [[ "$got" == "$expected" ]] && return 0
    sleep 5
  done
  fail "timed out waiting for $what (last: '$got')"
}
field() { kubectl -n "$NAMESPACE" get "$1" -o "jsonpath=$2"; }
restored_reason() {
  field "rsw/$WORKSPACE" '{.status.conditions[?(@.type=="HomeRestored")].status}/{.status.conditions[?(@.type=="HomeRestored")].reason}'
}
# Waits for a new pod (another uid), Ready, and the workspace Running.
wait_for_new_pod() {
  local old_uid="$1" uid=""
  for _ in $(seq 1 120); do
    uid="$(field "pod/$WORKSPACE" '{.metadata.uid}' 2>/dev/null || true)"
    [[ -n "$uid" && "$uid" != "$old_uid" ]] && break
    sleep 5
  done
  [[ -n "$uid" && "$uid" != "$old_uid" ]] || fail "no new pod replaced $old_uid"
  kubectl -n "$NAMESPACE" wait "pod/$WORKSPACE" --for=condition=Ready --timeout=900s
  kubectl -n "$NAMESPACE" wait "rsw/$WORKSPACE" --for=jsonpath='{.status.phase}'=Running --timeout=600s
}
home_file() { kubectl -n "$NAMESPACE" exec "$WORKSPACE" -c ide -- cat /home/rstudio/e2e.txt; }

cleanup() {
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then kind delete cluster --name "$CLUSTER"; fi
}
trap cleanup EXIT

say "cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --config "$ROOT/hack/e2e-kind/kind.yaml" --wait 120s
kubectl config use-context "kind-$CLUSTER"

say "ingress-nginx $INGRESS_NGINX_VERSION and MinIO"
kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX_VERSION/deploy/static/provider/kind/deploy.yaml"
kubectl apply -f "$ROOT/hack/e2e-kind/minio.yaml"

say "images $REGISTRY/{rstudio,agent,operator}:$TAG"
# The Spark executor image (images/spark) is not built here: this path starts no Spark job.
IMAGE_REGISTRY="$REGISTRY" IMAGE_TAG="$TAG" bash "$ROOT/hack/images.sh" rspark agent operator
for name in rstudio agent operator; do
  kind load docker-image --name "$CLUSTER" "$REGISTRY/$name:$TAG"
done

say "operator"
bash "$ROOT/hack/deploy.sh" "$ROOT/manifests/base"
kubectl -n rspark-system set image deploy/rspark-operator "operator=$REGISTRY/operator:$TAG"
kubectl -n rspark-system set env deploy/rspark-operator \
  "RSPARK_WORKSPACE_IMAGE=$REGISTRY/rstudio:$TAG" \
  "RSPARK_AGENT_IMAGE=$REGISTRY/agent:$TAG" \
  RSPARK_INGRESS_CLASS=nginx \
  RSPARK_SNAPSHOT_REPOSITORY_BASE=s3:http://minio.rspark-e2e-s3.svc:9000/rspark
kubectl -n rspark-system rollout status deploy/rspark-operator --timeout=300s
kubectl -n ingress-nginx wait --for=condition=Ready pod \
  -l app.kubernetes.io/component=controller --timeout=300s
kubectl -n rspark-e2e-s3 rollout status deploy/minio --timeout=300s

say "workspace $NAMESPACE/$WORKSPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" create secret generic rspark-s3-credentials \
  --from-literal=AWS_ACCESS_KEY_ID=rspark-e2e \
  --from-literal=AWS_SECRET_ACCESS_KEY=rspark-e2e-secret \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f "$ROOT/manifests/samples/workspace.yaml"
kubectl -n "$NAMESPACE" wait "rsw/$WORKSPACE" --for=jsonpath='{.status.phase}'=Running --timeout=900s

say "RStudio at http://$HOST/"
for _ in $(seq 1 120); do
  code="$(curl -s -o /dev/null -w '%{http_code}' --resolve "$HOST:80:127.0.0.1" "http://$HOST/" || true)"
  [[ "$code" == 200 || "$code" == 302 ]] && break
  sleep 5
done
[[ "$code" == 200 || "$code" == 302 ]] || { echo "e2e-kind: RStudio answered $code" >&2; exit 1; }

say "a file in the home survives the pod"
marker="e2e-$(date +%s)"
written_at="$(date +%s)"
kubectl -n "$NAMESPACE" exec "$WORKSPACE" -c ide -- \
  su rstudio -c "echo $marker > /home/rstudio/e2e.txt"
old_uid="$(field "pod/$WORKSPACE" '{.metadata.uid}')"
kubectl -n "$NAMESPACE" delete pod "$WORKSPACE" --wait=true
wait_for_new_pod "$old_uid"
found="$(home_file)"
[[ "$found" == "$marker" ]] || fail "home lost the file ($found)"

say "a lost volume comes back from the last snapshot"
# The stopping pod's agent took a last snapshot; make sure one holds the file.
for _ in $(seq 1 120); do
  last="$(field "rsw/$WORKSPACE" '{.status.lastSnapshot.time}' || true)"
  [[ -n "$last" && "$(date -d "$last" +%s)" -ge "$written_at" ]] && break
  sleep 5
done
[[ -n "$last" && "$(date -d "$last" +%s)" -ge "$written_at" ]] ||
  fail "no snapshot after the file was written (last: '$last')"
old_uid="$(field "pod/$WORKSPACE" '{.metadata.uid}')"
old_claim="$(field "pvc/$CLAIM" '{.metadata.uid}')"
# The claim stays (Terminating) until its pod is gone; then the operator creates
# both again and the agent finds an empty home.
kubectl -n "$NAMESPACE" delete pvc "$CLAIM" --wait=false
kubectl -n "$NAMESPACE" delete pod "$WORKSPACE" --wait=true
claim_replaced() {
  local uid
  uid="$(field "pvc/$CLAIM" '{.metadata.uid}')"
  [[ -n "$uid" && "$uid" != "$old_claim" ]] && echo yes
}
wait_for "a new claim $CLAIM" yes 120 claim_replaced
wait_for_new_pod "$old_uid"
wait_for "HomeRestored=True reason Restored" "True/Restored" 120 restored_reason
found="$(home_file)"
[[ "$found" == "$marker" ]] || fail "the restored home lacks the file ($found)"
kubectl -n "$NAMESPACE" get rsw "$WORKSPACE" -o wide
say "passed"
