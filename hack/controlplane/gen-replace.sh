#!/usr/bin/env bash
# Pins k8s.io/kubernetes at $KUBE_VERSION in go.mod and generates one
# `replace k8s.io/<staging> => k8s.io/<staging> v0.N.M` per staging module that release's
# own go.mod replaces with a local path (./staging/src/...), which `go` cannot follow
# from the module proxy. Run it when changing the pinned release; commit go.mod/go.sum.
set -euo pipefail
cd "$(dirname "$0")"
KUBE_VERSION="${KUBE_VERSION:-$(cat KUBE_VERSION)}"
staging_version="v0.${KUBE_VERSION#v1.}"

modfile="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -f "$modfile" ] || { echo "no go.mod for k8s.io/kubernetes@${KUBE_VERSION}" >&2; exit 1; }

# Drop replaces of a previous release, then write the ones of this release.
for old in $(go mod edit -json | sed -n 's/^[[:space:]]*"Path": "\(k8s\.io\/[^"]*\)",$/\1/p' | sort -u); do
  [ "$old" = k8s.io/kubernetes ] && continue
  go mod edit -dropreplace="$old" 2>/dev/null || true
done
sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$modfile" | while read -r mod; do
  go mod edit -replace="${mod}=${mod}@${staging_version}"
done
go mod edit -require="k8s.io/kubernetes@${KUBE_VERSION}"
echo "$KUBE_VERSION" > KUBE_VERSION
go mod tidy
