"""The shadow forms of the HTTPRoute and the VirtualService, as the routers render them, meet the
real API server's schemas for those kinds (the Gateway API and Istio CRDs the local control
plane installs): server-side dry-run with strict field validation, so an unknown or misspelt
field is an error rather than silently pruned."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.config import OperatorConfig
from dockyard.routers import gateway, istio
from tests.plugins.kube import KubeEnv

pytestmark = pytest.mark.integration

VERSIONS = {"a": "1", "b": "2", "dark": "3", "all": "4"}


def spec(router: dict[str, Any]) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({
        "modelName": "iris",
        "variants": [
            {"name": "a", "version": "1", "weight": 3},
            {"name": "b", "version": "2", "weight": 1},
            {"name": "dark", "version": "3", "shadow": 10},
            {"name": "all", "version": "4", "shadow": 100},
        ],
        "router": router,
    })


def dry_run(kube: KubeEnv, obj: dict[str, Any]) -> dict[str, Any]:
    owner = obj["metadata"]
    path = kube.cluster.path(obj["kind"], owner["namespace"], api_version=obj["apiVersion"])
    return kube.cluster.request("POST", path, obj, {"dryRun": "All", "fieldValidation": "Strict"})


def test_shadow_routes_pass_the_apiserver_schemas(kube: KubeEnv) -> None:
    owner = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "ModelDeployment",
             "metadata": {"name": "iris", "namespace": kube.namespace, "uid": "0b9c6d1e-0000-4000-8000-00000000abcd"}}
    cfg = OperatorConfig()
    gw = spec({"type": "gateway", "gateway": {"parentRefs": [{"name": "gw", "namespace": "infra"}]}})
    (route,) = gateway.build_router_objects(owner, gw, VERSIONS, cfg)
    stored = dry_run(kube, route)
    assert [f["requestMirror"]["percent"] for f in stored["spec"]["rules"][0]["filters"]] == [10, 100]
    (_, vs) = istio.build_router_objects(owner, spec({"type": "istio"}), VERSIONS, cfg)
    stored = dry_run(kube, vs)
    assert [m["percentage"]["value"] for m in stored["spec"]["http"][-1]["mirrors"]] == [10, 100]
