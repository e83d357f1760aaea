#!/usr/bin/env bash
# `make e2e-kind`: the whole path on a real cluster, where Docker and kind exist.
#   kind cluster + ingress-nginx + MinIO, build and load the three images, deploy
#   manifests/base, create a workspace, wait for RStudio at its URL, write a file
#   in the home, delete the pod, wait for the new one, check the file is there.
# Needs: docker (running), kind, kubectl, curl, and internet access for the
# ingress-nginx manifest and the base images. KEEP_CLUSTER=1 keeps the cluster.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${E2E_CLUSTER:-rspark-e2e}"
TAG="${IMAGE_TAG:-e2e}"
REGISTRY="${IMAGE_REGISTRY:-ghcr.io/rspark-dev}"
INGRESS_NGINX_VERSION=controller-v1.12.1
NAMESPACE=e2e
WORKSPACE=alice
HOST="$WORKSPACE-$NAMESPACE.rspark.localhost"

say() { echo "[e2e-kind] $*"; }
for tool in docker kind kubectl curl; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is required" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "e2e-kind: no Docker engine answers" >&2; exit 1; }

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
IMAGE_REGISTRY="$REGISTRY" IMAGE_TAG="$TAG" bash "$ROOT/hack/images.sh"
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
kubectl -n "$NAMESPACE" exec "$WORKSPACE" -c rstudio -- \
  su rstudio -c "echo $marker > /home/rstudio/e2e.txt"
old_uid="$(kubectl -n "$NAMESPACE" get pod "$WORKSPACE" -o jsonpath='{.metadata.uid}')"
kubectl -n "$NAMESPACE" delete pod "$WORKSPACE" --wait=true
for _ in $(seq 1 120); do
  uid="$(kubectl -n "$NAMESPACE" get pod "$WORKSPACE" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)"
  [[ -n "$uid" && "$uid" != "$old_uid" ]] && break
  sleep 5
done
kubectl -n "$NAMESPACE" wait "pod/$WORKSPACE" --for=condition=Ready --timeout=600s
kubectl -n "$NAMESPACE" wait "rsw/$WORKSPACE" --for=jsonpath='{.status.phase}'=Running --timeout=600s
found="$(kubectl -n "$NAMESPACE" exec "$WORKSPACE" -c rstudio -- cat /home/rstudio/e2e.txt)"
[[ "$found" == "$marker" ]] || { echo "e2e-kind: home lost the file ($found)" >&2; exit 1; }
kubectl -n "$NAMESPACE" get rsw "$WORKSPACE" -o wide
say "passed"
