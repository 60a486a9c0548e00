// Third-party CRDs the operator creates objects of (HTTPRoute, VirtualService), taken from the
// projects' own published Go modules so the local cluster validates against their real schemas.
// Only downloaded (go mod download), never built.
module dockyard.dev/hack/controlplane/crds

go 1.25.0

require (
	istio.io/api v1.32.0
	sigs.k8s.io/gateway-api v1.6.3
)
