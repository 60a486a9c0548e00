"""Unit tests for dockyard.builders.serving: variant Deployments/Services and the child list."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.builders.serving import (
    build_variant_deployment,
    build_variant_service,
    desired_serving_children,
    router_endpoint,
    router_kind_for,
    variant_endpoint,
)
from dockyard.config import OperatorConfig
from dockyard.labels import (
    CONFIG_HASH_ANNOTATION,
    MODEL_VERSION_LABEL,
    SPEC_HASH_ANNOTATION,
    content_hash,
)
from tests.serving.golden import assert_golden_yaml

OWNER: dict[str, Any] = {
    "apiVersion": "dockyard.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "0b9c6d1e-0000-4000-8000-000000000001"},
}
CFG = OperatorConfig()
RESOLVED = {"champion": "3", "challenger": "4"}


def make_spec(**overrides: Any) -> ModelDeploymentSpec:
    body: dict[str, Any] = {
        "modelName": "iris-classifier",
        "variants": [
            {
                "name": "champion",
                "alias": "champion",
                "weight": 80,
                "replicas": 2,
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            },
            {"name": "challenger", "alias": "challenger", "weight": 20},
        ],
        "router": {"type": "builtin", "sticky": {"header": "X-User-Id"}},
    }
    body.update(overrides)
    return ModelDeploymentSpec.model_validate(body)


def by_name(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def assert_hash_stamped(obj: dict[str, Any]) -> None:
    clone = copy.deepcopy(obj)
    stamped = clone["metadata"]["annotations"].pop(SPEC_HASH_ANNOTATION)
    if not clone["metadata"]["annotations"]:
        del clone["metadata"]["annotations"]
    # stamp_spec_hash hashes the object with an (empty or not) annotations dict present.
    clone["metadata"].setdefault("annotations", {})
    assert stamped == content_hash(clone), obj["metadata"]["name"]


def assert_no_shared_objects(obj: Any) -> None:
    """No dict/list appears twice in the tree: mutating one field must never change another."""
    seen: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, (dict, list)):
            assert id(node) not in seen, f"shared object: {node!r:.80}"
            seen.add(id(node))
            for child in node.values() if isinstance(node, dict) else node:
                walk(child)

    walk(obj)


# -- variant Deployment ------------------------------------------------------------------------


# Every field of a variant Deployment is in the golden files (builtin-mlserver-sticky.yaml for the
# mlserver runtime, gateway-seldon-runtime.yaml for seldon with a credentials Secret); here only
# what they do not show.


def test_variant_deployment_takes_the_spec_image_and_the_service_account() -> None:
    spec = make_spec(runtime="seldon", image="registry.example/dockyard-runtime:custom")
    cfg = OperatorConfig(mlflow_credentials_secret="mlflow-creds", service_account="serving")
    dep = build_variant_deployment(OWNER, spec, spec.variants[1], "4", cfg)
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "serving"
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert server["image"] == init["image"] == "registry.example/dockyard-runtime:custom"


def test_gpu_goes_to_the_server_not_the_init_container() -> None:
    spec = make_spec(
        variants=[
            {
                "name": "gpu",
                "version": "1",
                "weight": 1,
                "resources": {"limits": {"memory": "4Gi"}, "gpus": 1},
            }
        ]
    )
    dep = build_variant_deployment(OWNER, spec, spec.variants[0], "1", CFG)
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "4Gi", "nvidia.com/gpu": "1"}
    assert pod["initContainers"][0]["resources"]["limits"] == {"memory": "4Gi"}


def test_variant_service_selects_the_deployment_pods() -> None:
    spec = make_spec()
    dep = build_variant_deployment(OWNER, spec, spec.variants[0], "3", CFG)
    svc = build_variant_service(OWNER, spec, spec.variants[0], CFG)
    assert svc["metadata"]["name"] == "iris-champion"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 8080, "http"),
        ("grpc", 8081, "grpc"),
        ("metrics", 8082, "metrics"),
    ]
    assert MODEL_VERSION_LABEL not in svc["metadata"]["labels"]
    assert svc["metadata"]["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]
    assert_hash_stamped(svc)


def test_endpoints() -> None:
    assert variant_endpoint("ml", "iris", "champion", CFG) == "http://iris-champion.ml.svc.cluster.local:8080"
    assert (
        variant_endpoint("ml", "iris", "b", OperatorConfig(cluster_domain="k8s.internal"), "seldon")
        == "http://iris-b.ml.svc.k8s.internal:9000"
    )
    with pytest.raises(ValueError):
        variant_endpoint("ml", "iris", "a;b", CFG)
    assert router_endpoint("ml", "iris", make_spec(), CFG) == "http://iris.ml.svc.cluster.local"
    assert router_endpoint("ml", "iris", make_spec(router={"type": "gateway"}), CFG) is None


def test_router_kind_for() -> None:
    assert router_kind_for(make_spec()) is None
    assert router_kind_for(make_spec(router={"type": "gateway"})) == (
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
    )
    assert router_kind_for(make_spec(router={"type": "istio"})) == (
        "networking.istio.io/v1",
        "VirtualService",
    )
    assert router_kind_for(make_spec(router={"type": "seldon"})) == (
        "machinelearning.seldon.io/v1",
        "SeldonDeployment",
    )


# -- the complete child list -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("router", "expected"),
    [
        (
            "builtin",
            [
                ("Deployment", "iris-champion"),
                ("Service", "iris-champion"),
                ("Deployment", "iris-challenger"),
                ("Service", "iris-challenger"),
                ("ConfigMap", "iris-router"),
                ("Deployment", "iris-router"),
                ("Service", "iris"),
            ],
        ),
        (
            "gateway",
            [
                ("Deployment", "iris-champion"),
                ("Service", "iris-champion"),
                ("Deployment", "iris-challenger"),
                ("Service", "iris-challenger"),
                ("HTTPRoute", "iris"),
            ],
        ),
        (
            "istio",
            [
                ("Deployment", "iris-champion"),
                ("Service", "iris-champion"),
                ("Deployment", "iris-challenger"),
                ("Service", "iris-challenger"),
                ("Service", "iris"),
                ("VirtualService", "iris"),
            ],
        ),
        ("seldon", [("SeldonDeployment", "iris")]),
    ],
)
def test_desired_children_per_router(router: str, expected: list[tuple[str, str]]) -> None:
    spec = make_spec(router={"type": router})
    uris = {
        "champion": "s3://mlflow/1/aaa/artifacts/model",
        "challenger": "s3://mlflow/1/bbb/artifacts/model",
    }
    children = desired_serving_children(OWNER, spec, RESOLVED, CFG, model_uris=uris)
    assert [(o["kind"], o["metadata"]["name"]) for o in children] == expected
    for obj in children:
        assert obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["ownerReferences"][0]["name"] == "iris"
        assert_hash_stamped(obj)
    assert_no_shared_objects(children)
    # Deterministic: building twice gives the same objects.
    assert children == desired_serving_children(OWNER, spec, RESOLVED, CFG, model_uris=uris)


def test_resolved_versions_are_required_and_checked() -> None:
    spec = make_spec()
    with pytest.raises(ValueError, match="challenger"):
        desired_serving_children(OWNER, spec, {"champion": "3"}, CFG)
    with pytest.raises(ValueError, match="model version"):
        desired_serving_children(OWNER, spec, {"champion": "3", "challenger": "4; rm -rf /"}, CFG)
    with pytest.raises(ValueError, match="model URI"):
        desired_serving_children(OWNER, make_spec(router={"type": "seldon"}), RESOLVED, CFG)


def test_weight_change_rolls_only_the_router() -> None:
    before = by_name(desired_serving_children(OWNER, make_spec(), RESOLVED, CFG))
    spec = make_spec()
    spec.variants[0].weight, spec.variants[1].weight = 50, 50
    after = by_name(desired_serving_children(OWNER, spec, RESOLVED, CFG))
    for key in [
        ("Deployment", "iris-champion"),
        ("Deployment", "iris-challenger"),
        ("Service", "iris-champion"),
        ("Service", "iris-challenger"),
        ("Service", "iris"),
    ]:
        assert after[key] == before[key], key
        assert (
            after[key]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
            == before[key]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        )
    old_cm, new_cm = before[("ConfigMap", "iris-router")], after[("ConfigMap", "iris-router")]
    assert "80.00% champion;" in old_cm["data"]["nginx.conf"]
    assert "50.00% champion;" in new_cm["data"]["nginx.conf"]
    old_hash = before[("Deployment", "iris-router")]["spec"]["template"]["metadata"]["annotations"]
    new_hash = after[("Deployment", "iris-router")]["spec"]["template"]["metadata"]["annotations"]
    assert old_hash[CONFIG_HASH_ANNOTATION] == content_hash(old_cm["data"]["nginx.conf"])
    assert new_hash[CONFIG_HASH_ANNOTATION] == content_hash(new_cm["data"]["nginx.conf"])
    assert old_hash[CONFIG_HASH_ANNOTATION] != new_hash[CONFIG_HASH_ANNOTATION]


def test_alias_move_rolls_only_that_variant() -> None:
    spec = make_spec()
    before = by_name(desired_serving_children(OWNER, spec, RESOLVED, CFG))
    after = by_name(desired_serving_children(OWNER, spec, {"champion": "3", "challenger": "5"}, CFG))
    assert after[("Deployment", "iris-champion")] == before[("Deployment", "iris-champion")]
    assert after[("Service", "iris-challenger")] == before[("Service", "iris-challenger")]
    changed = after[("Deployment", "iris-challenger")]
    assert changed != before[("Deployment", "iris-challenger")]
    assert changed["spec"]["template"]["metadata"]["labels"][MODEL_VERSION_LABEL] == "5"
    assert changed["spec"]["selector"] == before[("Deployment", "iris-challenger")]["spec"]["selector"]
    # The router's version header changes with it.
    assert "\\challenger 5;" in after[("ConfigMap", "iris-router")]["data"]["nginx.conf"]


def test_replica_change_touches_only_that_deployment() -> None:
    before = by_name(desired_serving_children(OWNER, make_spec(), RESOLVED, CFG))
    spec = make_spec()
    spec.variants[1].replicas = 5
    after = by_name(desired_serving_children(OWNER, spec, RESOLVED, CFG))
    assert [k for k in after if after[k] != before[k]] == [("Deployment", "iris-challenger")]


# -- golden files (reviewed YAML) ---------------------------------------------------------------


def test_golden_builtin_mlserver_sticky() -> None:
    assert_golden_yaml(
        "builtin-mlserver-sticky.yaml", desired_serving_children(OWNER, make_spec(), RESOLVED, CFG)
    )


def test_golden_gateway_seldon_runtime() -> None:
    spec = make_spec(
        runtime="seldon",
        router={
            "type": "gateway",
            "gateway": {
                "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
                "hostnames": ["iris.example.com"],
            },
        },
    )
    cfg = OperatorConfig(mlflow_credentials_secret="mlflow-creds")
    assert_golden_yaml("gateway-seldon-runtime.yaml", desired_serving_children(OWNER, spec, RESOLVED, cfg))


def test_golden_istio() -> None:
    spec = make_spec(
        router={"type": "istio", "allowVariantForcing": True, "limits": {"timeoutSeconds": 30}},
        variants=[
            {"name": "a", "version": "1", "weight": 1},
            {"name": "b", "version": "2", "weight": 1},
            {"name": "c", "version": "3", "weight": 1},
            {"name": "off", "version": "1", "weight": 0, "replicas": 1},
        ],
    )
    children = desired_serving_children(OWNER, spec, {"a": "1", "b": "2", "c": "3", "off": "1"}, CFG)
    router_objs = [o for o in children if o["kind"] == "VirtualService" or o["metadata"]["name"] == "iris"]
    assert_golden_yaml("istio.yaml", router_objs)


def test_golden_seldon_router() -> None:
    spec = make_spec(router={"type": "seldon"})
    uris = {"champion": "s3://mlflow/1/aaa/artifacts/model", "challenger": "gs://models/iris/4"}
    assert_golden_yaml(
        "seldon-router.yaml", desired_serving_children(OWNER, spec, RESOLVED, CFG, model_uris=uris)
    )


def test_operator_upgrade_restarts_no_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's version labels the objects, never a Pod template: a template change would
    roll every model server and router on each operator upgrade."""
    import dockyard.labels

    def templates(version: str) -> dict[tuple[str, str], Any]:
        monkeypatch.setattr(dockyard.labels, "__version__", version)
        children = desired_serving_children(OWNER, make_spec(), RESOLVED, CFG)
        return {k: o["spec"]["template"] for k, o in by_name(children).items() if o["kind"] == "Deployment"}

    old, new = templates("1.0.0"), templates("1.1.0")
    assert old and old == new
    router = next(o for o in desired_serving_children(OWNER, make_spec(), RESOLVED, CFG) if o["kind"] == "Deployment")
    assert router["metadata"]["labels"]["app.kubernetes.io/version"] == "1.1.0"


GPU_NODES: dict[str, Any] = {
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "serving", "effect": "NoExecute", "tolerationSeconds": 60},
    ],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
            ]
        }
    },
}


def _gpu_and_cpu_variants(router: str) -> ModelDeploymentSpec:
    return make_spec(
        router={"type": router},
        variants=[
            {"name": "gpu", "version": "1", "weight": 1, "resources": {"gpus": 1}, **GPU_NODES},
            {"name": "cpu", "version": "2", "weight": 1},
        ],
    )


def test_each_variant_pod_goes_where_its_variant_says() -> None:
    spec = _gpu_and_cpu_variants("builtin")
    gpu = build_variant_deployment(OWNER, spec, spec.variants[0], "1", CFG)["spec"]["template"]["spec"]
    cpu = build_variant_deployment(OWNER, spec, spec.variants[1], "2", CFG)["spec"]["template"]["spec"]
    assert {k: gpu[k] for k in GPU_NODES} == GPU_NODES
    assert not GPU_NODES.keys() & cpu.keys()


def test_seldon_predictor_pods_go_where_their_variant_says() -> None:
    spec = _gpu_and_cpu_variants("seldon")
    uris = {"gpu": "s3://m/1", "cpu": "s3://m/2"}
    (sdep,) = desired_serving_children(OWNER, spec, {"gpu": "1", "cpu": "2"}, CFG, model_uris=uris)
    pods = {p["name"]: p["componentSpecs"][0]["spec"] for p in sdep["spec"]["predictors"]}
    assert {k: pods["gpu"][k] for k in GPU_NODES} == GPU_NODES
    assert not GPU_NODES.keys() & pods["cpu"].keys()
