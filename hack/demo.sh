#!/usr/bin/env bash
# Dockyard's whole loop on this machine, with nothing but this repository:
# a real Kubernetes control plane (built from the Go module proxy on first use), the node
# agent, the Helm chart (operator + embedded MLflow), the examples, training, registration,
# serving and real inference traffic through the router. Leaves everything running.
#
#   bash hack/demo.sh            # needs root (Pod network namespaces)
#   hack/controlplane.sh down    # stop and clean up
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "hack/demo.sh needs root: Pods get their own network namespaces" >&2; exit 1; }

echo "== 0/4 prerequisites"
missing=()
for tool in nginx nft conntrack ip nsenter; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages for: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nginx-light nftables conntrack iproute2 util-linux >/dev/null
  # The package starts a system nginx on :80; the router Pods run their own.
  { command -v systemctl >/dev/null && systemctl stop nginx; } >/dev/null 2>&1 || pkill -x nginx || true
fi
command -v go >/dev/null 2>&1 || { echo "Go is needed to build the control plane (https://go.dev/dl)" >&2; exit 1; }
[ -x .venv/bin/python ] || bash hack/dev-install.sh

hack/controlplane.sh up
exec .venv/bin/python -m tests.localcluster.demo "$@"
