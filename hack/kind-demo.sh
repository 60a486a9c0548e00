#!/usr/bin/env bash
# Dockyard end to end on a local kind cluster:
#   1. create a kind cluster            6. wait for the TrainingRun, set the MLflow alias
#   2. build the operator and runtime      "champion", wait for the ModelDeployment to be Ready
#      images                           7. port-forward the router
#   3. kind load them                   8. send 200 V2 inference requests
#   4. helm install the chart           9. print the observed split per variant
#   5. apply manifests/examples/
#
# Needs: docker, kind, kubectl, helm, curl. Run from anywhere:
#   hack/kind-demo.sh
# Settings (environment): CLUSTER_NAME (dockyard), NAMESPACE (dockyard: operator + MLflow),
# WORKLOAD_NAMESPACE (default: where the examples run), REQUESTS (200), LOCAL_PORT (8088).
# An existing kind cluster of that name is reused.
set -euo pipefail
set -o errtrace  # the ERR trap below also fires inside functions and subshells

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_NAME="${CLUSTER_NAME:-dockyard}"
NAMESPACE="${NAMESPACE:-dockyard}"
WORKLOAD_NAMESPACE="${WORKLOAD_NAMESPACE:-default}"
REQUESTS="${REQUESTS:-200}"
LOCAL_PORT="${LOCAL_PORT:-8088}"
RELEASE=dockyard
MODEL=iris-classifier
TRAINING_RUN=iris-rf
MODEL_DEPLOYMENT=iris
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "${ROOT}/charts/dockyard/Chart.yaml")"
OPERATOR_IMAGE="ghcr.io/dockyard-dev/dockyard-operator:${VERSION}"
RUNTIME_IMAGE="ghcr.io/dockyard-dev/dockyard-runtime:${VERSION}"

log() { printf '\n== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm curl; do
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} is not installed"
done
[ -n "${VERSION}" ] || die "cannot read appVersion from charts/dockyard/Chart.yaml"
[ -f "${ROOT}/manifests/examples/00-iris-data.yaml" ] \
  || die "manifests/examples/00-iris-data.yaml is missing (generate it with hack/make-iris-configmap.py)"

PF_PID=""
cleanup() {
  if [ -n "${PF_PID}" ]; then
    kill "${PF_PID}" 2>/dev/null || true
  fi
}
trap cleanup EXIT

on_failure() {
  printf '\nThe demo failed. Current state:\n' >&2
  kubectl get dockyard -A -o wide >&2 || true
  kubectl -n "${NAMESPACE}" logs "deploy/${RELEASE}-operator" --tail=50 >&2 || true
}
trap on_failure ERR

log "1/9 kind cluster ${CLUSTER_NAME}"
if kind get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  echo "reusing the existing cluster ${CLUSTER_NAME}"
else
  kind create cluster --name "${CLUSTER_NAME}" --wait 120s
fi
kubectl config use-context "kind-${CLUSTER_NAME}" >/dev/null

log "2/9 build ${OPERATOR_IMAGE} and ${RUNTIME_IMAGE}"
docker build -f "${ROOT}/operator/Dockerfile" --target operator -t "${OPERATOR_IMAGE}" "${ROOT}"
docker build -f "${ROOT}/operator/Dockerfile" --target runtime -t "${RUNTIME_IMAGE}" "${ROOT}"

log "3/9 kind load"
kind load docker-image --name "${CLUSTER_NAME}" "${OPERATOR_IMAGE}" "${RUNTIME_IMAGE}"

log "4/9 helm install ${RELEASE} into ${NAMESPACE}"
# IfNotPresent (the chart default) makes the nodes use the images kind just loaded.
helm upgrade --install "${RELEASE}" "${ROOT}/charts/dockyard" \
  --namespace "${NAMESPACE}" --create-namespace \
  --set images.pullPolicy=IfNotPresent \
  --wait --timeout 10m
kubectl -n "${NAMESPACE}" rollout status "deploy/${RELEASE}-mlflow" --timeout=5m
kubectl -n "${NAMESPACE}" rollout status "deploy/${RELEASE}-operator" --timeout=5m

log "5/9 apply manifests/examples/ in ${WORKLOAD_NAMESPACE}"
kubectl get namespace "${WORKLOAD_NAMESPACE}" >/dev/null 2>&1 \
  || kubectl create namespace "${WORKLOAD_NAMESPACE}"
kubectl -n "${WORKLOAD_NAMESPACE}" apply -f "${ROOT}/manifests/examples/"

log "6/9 wait for TrainingRun ${TRAINING_RUN} to succeed"
kubectl -n "${WORKLOAD_NAMESPACE}" wait --for=jsonpath='{.status.phase}'=Succeeded \
  "trainingrun/${TRAINING_RUN}" --timeout=20m
TRAINED_VERSION="$(kubectl -n "${WORKLOAD_NAMESPACE}" get "trainingrun/${TRAINING_RUN}" \
  -o jsonpath='{.status.modelVersion}')"
[ -n "${TRAINED_VERSION}" ] || die "TrainingRun ${TRAINING_RUN} reports no modelVersion"
echo "registered ${MODEL} version ${TRAINED_VERSION} (alias challenger)"

# The example A/B test sends 80% to alias "champion": on a fresh registry point it at the
# version just trained. Runs inside the MLflow Pod, against its own REST API, as its admin
# (the container has the admin credential from the chart's Secret; nothing is printed).
echo "setting alias champion -> version ${TRAINED_VERSION}"
kubectl -n "${NAMESPACE}" exec "deploy/${RELEASE}-mlflow" -c mlflow -- \
  python -c 'import os, sys
os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"]
os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
from mlflow import MlflowClient
MlflowClient("http://localhost:5000").set_registered_model_alias(sys.argv[1], "champion", sys.argv[2])' \
  "${MODEL}" "${TRAINED_VERSION}"

log "   wait for ModelDeployment ${MODEL_DEPLOYMENT} to be Ready"
kubectl -n "${WORKLOAD_NAMESPACE}" wait --for=condition=Ready \
  "modeldeployment/${MODEL_DEPLOYMENT}" --timeout=15m
kubectl -n "${WORKLOAD_NAMESPACE}" get dockyard

log "7/9 port-forward the router"
# status.endpoint is the router's in-cluster URL: http://<service>.<namespace>.svc...:<port>
ENDPOINT="$(kubectl -n "${WORKLOAD_NAMESPACE}" get "modeldeployment/${MODEL_DEPLOYMENT}" \
  -o jsonpath='{.status.endpoint}')"
[ -n "${ENDPOINT}" ] || die "ModelDeployment ${MODEL_DEPLOYMENT} reports no status.endpoint"
HOSTPORT="${ENDPOINT#*://}"
HOSTPORT="${HOSTPORT%%/*}"
ROUTER_SERVICE="${HOSTPORT%%.*}"
ROUTER_PORT=80
if [[ "${HOSTPORT}" == *:* ]]; then
  ROUTER_PORT="${HOSTPORT##*:}"
fi
kubectl -n "${WORKLOAD_NAMESPACE}" port-forward "svc/${ROUTER_SERVICE}" "${LOCAL_PORT}:${ROUTER_PORT}" >/dev/null &
PF_PID=$!
for _ in $(seq 1 30); do
  if curl -s -o /dev/null "http://127.0.0.1:${LOCAL_PORT}/"; then
    break
  fi
  sleep 1
done

log "8/9 send ${REQUESTS} V2 inference requests"
URL="http://127.0.0.1:${LOCAL_PORT}/v2/models/${MODEL}/infer"
PAYLOAD='{"parameters": {"content_type": "pd"}, "inputs": [
  {"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": [5.9]},
  {"name": "sepal_width", "shape": [1], "datatype": "FP64", "data": [3.0]},
  {"name": "petal_length", "shape": [1], "datatype": "FP64", "data": [5.1]},
  {"name": "petal_width", "shape": [1], "datatype": "FP64", "data": [1.8]}]}'
declare -A SPLIT=()
FAILED=0
for i in $(seq 1 "${REQUESTS}"); do
  # A distinct user per request: sticky routing by X-User-Id then follows the weights.
  if headers="$(curl -sS -f -o /dev/null -D - -H 'Content-Type: application/json' \
      -H "X-User-Id: demo-user-${i}" -d "${PAYLOAD}" "${URL}")"; then
    variant="$(printf '%s\n' "${headers}" | tr -d '\r' \
      | awk -F': ' 'tolower($1) == "x-dockyard-variant" {print $2}')"
    variant="${variant:-unknown}"
    SPLIT["${variant}"]=$(( ${SPLIT["${variant}"]:-0} + 1 ))
  else
    FAILED=$((FAILED + 1))
  fi
done

log "9/9 observed split (configured: champion 80 / challenger 20)"
for variant in "${!SPLIT[@]}"; do
  count="${SPLIT[${variant}]}"
  printf '  %-12s %4d requests  %5.1f%%\n' "${variant}" "${count}" \
    "$(awk -v c="${count}" -v n="${REQUESTS}" 'BEGIN {print 100 * c / n}')"
done
printf '  %-12s %4d requests\n' "failed" "${FAILED}"
[ "${FAILED}" -lt "${REQUESTS}" ] || die "every request failed"

cat <<EOF

Done. Explore:
  kubectl -n ${WORKLOAD_NAMESPACE} get dockyard
  kubectl -n ${WORKLOAD_NAMESPACE} describe modeldeployment ${MODEL_DEPLOYMENT}
  kubectl -n ${NAMESPACE} port-forward svc/${RELEASE}-mlflow 5000:5000   # MLflow UI (user admin)
  kubectl -n ${NAMESPACE} get secret ${RELEASE}-mlflow-auth -o jsonpath='{.data.admin-password}' | base64 -d
  kind delete cluster --name ${CLUSTER_NAME}                              # clean up
EOF
