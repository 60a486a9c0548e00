#!/usr/bin/env bash
# A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy, CoreDNS) plus the node agent, on this machine, no Docker.
#
#   hack/controlplane.sh build   # build the binaries from the Go module proxy (cached by version)
#   hack/controlplane.sh up      # start everything; prints the kubeconfig
#   hack/controlplane.sh env     # eval "$(hack/controlplane.sh env)": KUBECONFIG and kubectl on PATH
#   hack/controlplane.sh status  # JSON: server, kubeconfig, pids
#   hack/controlplane.sh down    # stop and clean up
#
# `up` needs root (Pod network namespaces). State lives in $DOCKYARD_CLUSTER_DIR
# (default /tmp/dockyard-cluster); binaries in $DOCKYARD_CACHE_DIR (default ~/.cache/dockyard).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run 'bash hack/dev-install.sh' first (needs .venv)" >&2; exit 1; }
exec "$PY" -m tests.localcluster "$@"
