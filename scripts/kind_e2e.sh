#!/usr/bin/env bash
# End-to-end test on a local kind cluster: Kubeflow Pipelines (standalone), the Kubeflow
# Training Operator and Katib, kubetrade's images and manifests, then one real pipeline
# run submitted with `kubetrade submit --wait`. Needs docker, kind, kubectl, make and the
# project's virtualenv (make setup). About 30-60 minutes on first run; only the CPU base
# image is built and loaded (kind runs no GPUs; the CUDA trainer image is not needed). Steps, in order (docs/cluster.md):
#   1 preflight   2 kind cluster   3 KFP + Training Operator + Katib   4 images
#   5 manifests/overlays/kind   6 compile   7 port-forward KFP   8 submit --wait
#   9 every PyTorchJob Succeeded   (cleanup trap: stop port-forward, dump state on failure)
#
#   scripts/kind_e2e.sh                  # create (or reuse) the cluster, run, keep the cluster
#   KEEP_CLUSTER=0 scripts/kind_e2e.sh   # delete the cluster at the end, pass or fail
#   SKIP_IMAGES=1 scripts/kind_e2e.sh    # reuse images already loaded into the cluster
#
# Every version is pinned and can be overridden from the environment.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"

CLUSTER_NAME="${CLUSTER_NAME:-kubetrade}"
KIND_CONFIG="${KIND_CONFIG:-manifests/kind/cluster.yaml}"
KFP_VERSION="${KFP_VERSION:-2.16.1}" # >= 2.14.0: dsl.Collected (kubetrade compile --kfp-version)
TRAINING_OPERATOR_VERSION="${TRAINING_OPERATOR_VERSION:-v1.9.0}"
KATIB_VERSION="${KATIB_VERSION:-v0.19.0}"
IMAGE_TAG="${IMAGE_TAG:-0.1.0}"
SKIP_IMAGES="${SKIP_IMAGES:-0}"
# The same names the Makefile builds and components/images.py compiles into the pipeline.
export KUBETRADE_BASE_IMAGE="${KUBETRADE_BASE_IMAGE:-kubetrade/base:${IMAGE_TAG}}"
# The CPU pipeline package (kubetrade compile without --gpu) names only the base image, and
# the kind overlay's cluster profile runs trainer pods and Katib trials on it too.
NAMESPACE="kubeflow" # manifests/overlays/kind puts kubetrade next to KFP standalone
PIPELINE_PACKAGE="${PIPELINE_PACKAGE:-pipelines/compiled/kubetrade_training.yaml}"
KFP_PORT="${KFP_PORT:-8080}"
KEEP_CLUSTER="${KEEP_CLUSTER:-1}"
VENV="${VENV:-.venv}"
KUBETRADE="${KUBETRADE:-${VENV}/bin/kubetrade}"

PORT_FORWARD_PID=""

log() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  local status=$?
  if [[ -n "${PORT_FORWARD_PID}" ]]; then
    kill "${PORT_FORWARD_PID}" 2>/dev/null || true
  fi
  if [[ ${status} -ne 0 ]]; then
    printf '\nFAILED (exit %s). Cluster state for debugging:\n' "${status}" >&2
    kubectl get pods -A -o wide 2>/dev/null | grep -v -E 'Running|Completed' >&2 || true
    kubectl -n "${NAMESPACE}" get pytorchjobs,experiments,trials 2>/dev/null >&2 || true
  fi
  if [[ "${KEEP_CLUSTER}" == "0" ]]; then
    kind delete cluster --name "${CLUSTER_NAME}" || true
  fi
  exit "${status}"
}
trap cleanup EXIT

require() {
  local tool
  for tool in "$@"; do
    command -v "${tool}" >/dev/null 2>&1 || die "'${tool}' is not installed (needed: $*)"
  done
}

wait_rollout() { # namespace, then deployment/statefulset names
  local ns="$1"
  shift
  local target
  for target in "$@"; do
    kubectl -n "${ns}" rollout status "${target}" --timeout=15m
  done
}

# --------------------------------------------------------------------------- 1 preflight
log "1/9 preflight"
require docker kind kubectl make curl
docker info >/dev/null 2>&1 || die "the Docker engine is not running"
[[ -x "${KUBETRADE}" ]] || die "${KUBETRADE} not found; run 'make setup' first"
# the pipeline needs KFP >= 2.14.0 (dsl.Collected); say so now, not after the installs
"${VENV}/bin/python" -c 'import sys
from kubetrade.errors import ConfigError
from kubetrade.k8s.versions import check_kfp_version
try:
    check_kfp_version(sys.argv[1])
except ConfigError as exc:
    sys.exit(f"ERROR: KFP_VERSION={sys.argv[1]}: {exc}")' "${KFP_VERSION}"

# --------------------------------------------------------------------------- 2 cluster
if kind get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  log "2/9 reusing kind cluster ${CLUSTER_NAME}"
else
  log "2/9 creating kind cluster ${CLUSTER_NAME} (${KIND_CONFIG})"
  kind create cluster --name "${CLUSTER_NAME}" --config "${KIND_CONFIG}" --wait 5m
fi
kubectl config use-context "kind-${CLUSTER_NAME}"

# --------------------------------------------------------------------------- 3 Kubeflow
log "3/9 installing Kubeflow Pipelines ${KFP_VERSION} (standalone)"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=${KFP_VERSION}"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=${KFP_VERSION}"

log "installing Kubeflow Training Operator ${TRAINING_OPERATOR_VERSION}"
kubectl apply --server-side -k \
  "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=${TRAINING_OPERATOR_VERSION}"

log "installing Katib ${KATIB_VERSION}"
kubectl apply --server-side -k \
  "github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=${KATIB_VERSION}"

log "waiting for KFP, the Training Operator and Katib"
kubectl wait --for condition=established --timeout=120s \
  crd/pytorchjobs.kubeflow.org crd/experiments.kubeflow.org crd/trials.kubeflow.org
wait_rollout kubeflow deployment/ml-pipeline deployment/ml-pipeline-ui \
  deployment/training-operator deployment/katib-controller deployment/katib-db-manager

# --------------------------------------------------------------------------- 4 images
if [[ "${SKIP_IMAGES}" == "1" ]]; then
  log "4/9 SKIP_IMAGES=1: using the images already loaded into ${CLUSTER_NAME}"
else
  log "4/9 building ${KUBETRADE_BASE_IMAGE} and loading it into kind"
  # images/base/Dockerfile only: nothing on kind uses the trainer (CUDA) image
  make image-base IMAGE_TAG="${IMAGE_TAG}"
  make kind-load IMAGE_TAG="${IMAGE_TAG}" KIND_CLUSTER="${CLUSTER_NAME}"
fi

# --------------------------------------------------------------------------- 5 kubetrade
log "5/9 applying manifests/overlays/kind"
kubectl apply -k manifests/overlays/kind
wait_rollout "${NAMESPACE}" statefulset/kubetrade-postgres deployment/kubetrade-minio \
  deployment/kubetrade-redis deployment/kubetrade-mlflow

# --------------------------------------------------------------------------- 6 pipeline
# Always recompiled: the package must name the images built above (KUBETRADE_*_IMAGE).
log "6/9 compiling the pipeline to ${PIPELINE_PACKAGE}"
"${KUBETRADE}" compile --kfp-version "${KFP_VERSION}" --output "${PIPELINE_PACKAGE}"

log "7/9 port-forwarding the KFP API to localhost:${KFP_PORT}"
kubectl -n kubeflow port-forward svc/ml-pipeline-ui "${KFP_PORT}:80" >/dev/null 2>&1 &
PORT_FORWARD_PID=$!
for _ in $(seq 1 30); do
  if curl -fsS "http://localhost:${KFP_PORT}/apis/v2beta1/healthz" >/dev/null 2>&1; then
    break
  fi
  sleep 2
done
curl -fsS "http://localhost:${KFP_PORT}/apis/v2beta1/healthz" >/dev/null ||
  die "KFP API did not answer on localhost:${KFP_PORT}"

log "8/9 submitting ${PIPELINE_PACKAGE} and waiting for it (fails unless SUCCEEDED)"
"${KUBETRADE}" submit "${PIPELINE_PACKAGE}" --host "http://localhost:${KFP_PORT}" --wait

log "9/9 checking that the train step ran a PyTorchJob and that every PyTorchJob succeeded"
kubectl -n "${NAMESPACE}" get pytorchjobs -o \
  jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.status.conditions[-1:].type}{"\n"}{end}' |
  tee /dev/stderr |
  awk -F'\t' 'NF == 2 { n++; if ($2 != "Succeeded") bad = 1 } END { exit (bad || n == 0) }'

log "kind e2e passed"
