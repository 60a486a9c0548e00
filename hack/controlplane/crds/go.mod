// Third-party CRDs the operator creates objects of (HTTPRoute, VirtualService) or that its
// training backends need (TrainJob, RayJob and the kinds they refer to), taken from the
// projects' own published Go modules so the local cluster validates against their real schemas.
// Only downloaded (go mod download), never built.
module dockyard.dev/hack/controlplane/crds

go 1.25.0

require (
	github.com/kubeflow/trainer/v2 v2.3.0
	github.com/ray-project/kuberay/ray-operator v1.6.2
	istio.io/api v1.32.0
	sigs.k8s.io/gateway-api v1.6.3
	sigs.k8s.io/jobset v0.12.0
)
