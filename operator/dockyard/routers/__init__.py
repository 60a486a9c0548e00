"""Traffic routers of a ModelDeployment: pure renderers from the validated spec.

* :mod:`.builtin` - nginx ConfigMap + Deployment + Service (default, any cluster);
* :mod:`.gateway` - Gateway API ``HTTPRoute`` with weighted ``backendRefs``;
* :mod:`.istio` - Istio ``VirtualService`` with weighted destinations (+ the ``<md>`` Service);
* :mod:`.seldon` - a ``SeldonDeployment`` with one predictor per variant.

:mod:`.common` holds the names, ports, weight normalisation and string checks they share.
"""

from __future__ import annotations

# Foreign kinds a router needs installed in the cluster (None: only core kinds).
ROUTER_KINDS: dict[str, tuple[str, str] | None] = {
    "builtin": None,
    "gateway": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    "istio": ("networking.istio.io/v1", "VirtualService"),
    "seldon": ("machinelearning.seldon.io/v1", "SeldonDeployment"),
}
