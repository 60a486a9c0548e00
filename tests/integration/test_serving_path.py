"""Serving path: ModelDeployment -> variant Deployments/Services + router, on the real control
plane (the node agent runs the fetch-model init containers, MLServer and nginx for real).

Model versions are trained and registered for real in the MLflow server; the operator
resolves them through the MLflow proxy (which counts its calls).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.test_training_path import cond, example, phase
from tests.mlflowproxy import MlflowProxy
from tests.plugins.kube import KubeEnv, has_condition
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess
from tests.runtime.helpers import train_and_register

pytestmark = pytest.mark.integration

_REGISTERED: dict[str, list[str]] = {}


def registered(mlflow: MlflowServer, model: str, count: int) -> list[str]:
    """`count` real versions of `model` (trained once per session and reused)."""
    have = _REGISTERED.setdefault(model, [])
    while len(have) < count:
        have.append(train_and_register(mlflow.uri, model, n_estimators=3 + len(have)))
    return have[:count]


def md(model: str, variants: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(example("iris"))
    if doc["kind"] != "ModelDeployment":
        doc = {
            "apiVersion": "dockyard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {},
        }
    doc["spec"] = {"modelName": model, "variants": variants, **spec}
    return doc


def ready(kube: KubeEnv, name: str = "iris", timeout: float = 60, extra: Any = None) -> dict[str, Any]:
    return kube.wait_for_object(
        "ModelDeployment",
        name,
        lambda o: (
            phase(o) == "Ready"
            and (o["status"].get("observedGeneration") == o["metadata"]["generation"])
            and (extra is None or extra(o))
        ),
        timeout=timeout,
    )


def rv(kube: KubeEnv, kind: str, name: str) -> str:
    obj = kube.get(kind, name)
    assert obj is not None, f"{kind} {name} missing"
    return str(obj["metadata"]["resourceVersion"])


@pytest.fixture
def model(kube: KubeEnv, mlflow_server: MlflowServer) -> str:
    name = "serve-iris"
    registered(mlflow_server, name, 3)
    return name


def test_example_reaches_ready_with_children(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer, model: str
) -> None:
    client = mlflow_server.client()
    client.set_registered_model_alias(model, "champion", "1")
    client.set_registered_model_alias(model, "challenger", "2")
    doc = example("iris", "ModelDeployment")
    doc["spec"]["modelName"] = model
    # The plain A/B path: with its rollout section, challenger's version 2 would be a canary
    # (tests/serving/test_rollout.py).
    del doc["spec"]["rollout"]
    kube.apply(doc)
    got = ready(kube)
    st = got["status"]
    assert {v["name"]: v["resolvedVersion"] for v in st["variants"]} == {"champion": "1", "challenger": "2"}
    assert st["weights"] == "champion=80,challenger=20"
    assert st["endpoint"] == f"http://iris.{kube.namespace}.svc.cluster.local"
    for c in ("ModelsResolved", "VariantsReady", "RouterReady", "Ready"):
        assert cond(got, c)["status"] == "True", c
    for name in ("iris-champion", "iris-challenger", "iris-router"):
        dep = kube.get("Deployment", name)
        assert dep is not None
        assert dep["metadata"]["ownerReferences"][0]["uid"] == got["metadata"]["uid"]
    champion = kube.get("Deployment", "iris-champion")
    assert champion is not None
    assert champion["metadata"]["labels"]["dockyard.dev/model-version"] == "1"
    assert champion["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    for name in ("iris-champion", "iris-challenger", "iris"):
        assert kube.get("Service", name) is not None
    config = kube.get("ConfigMap", "iris-router")
    assert config is not None and "split_clients" in next(iter(config["data"].values()))


def test_weight_change_touches_only_the_router(
    kube: KubeEnv, operator: OperatorProcess, model: str
) -> None:
    kube.apply(
        md(model, [{"name": "a", "version": "1", "weight": 80}, {"name": "b", "version": "2", "weight": 20}])
    )
    ready(kube)
    before = {n: rv(kube, "Deployment", n) for n in ("iris-a", "iris-b")}
    router_before = kube.get("Deployment", "iris-router")
    config_before = kube.get("ConfigMap", "iris-router")
    kube.apply(
        md(model, [{"name": "a", "version": "1", "weight": 50}, {"name": "b", "version": "2", "weight": 50}])
    )
    ready(kube, extra=lambda o: o["status"]["weights"] == "a=50,b=50")
    assert {n: rv(kube, "Deployment", n) for n in ("iris-a", "iris-b")} == before
    config_after = kube.get("ConfigMap", "iris-router")
    assert config_before is not None and config_after is not None
    assert config_after["data"] != config_before["data"]
    router_after = kube.get("Deployment", "iris-router")
    assert router_before is not None and router_after is not None
    key = "dockyard.dev/config-hash"
    assert (
        router_after["spec"]["template"]["metadata"]["annotations"][key]
        != router_before["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_alias_move_rolls_only_that_variant(
    kube: KubeEnv, operator: OperatorProcess, mlflow_server: MlflowServer, model: str
) -> None:
    client = mlflow_server.client()
    alias = f"cand-{kube.namespace[-6:]}"
    client.set_registered_model_alias(model, alias, "2")
    kube.apply(
        md(
            model,
            [
                {"name": "stable", "version": "1", "weight": 90},
                {"name": "cand", "alias": alias, "weight": 10},
            ],
            aliasRefreshInterval="1s",
        )
    )
    ready(kube)
    stable_rv = rv(kube, "Deployment", "iris-stable")
    client.set_registered_model_alias(model, alias, "3")
    got = ready(
        kube,
        timeout=30,
        extra=lambda o: (
            {v["name"]: v["resolvedVersion"] for v in o["status"]["variants"]} == {"stable": "1", "cand": "3"}
        ),
    )
    cand = kube.get("Deployment", "iris-cand")
    assert cand is not None and cand["metadata"]["labels"]["dockyard.dev/model-version"] == "3"
    assert "--version" in cand["spec"]["template"]["spec"]["initContainers"][0]["command"] + cand["spec"][
        "template"
    ]["spec"]["initContainers"][0].get("args", [])
    assert rv(kube, "Deployment", "iris-stable") == stable_rv
    events = [e for e in kube.list("Event") if e.get("reason") == "VersionChanged"]
    assert any("2 -> 3" in e["message"] for e in events), events
    assert got["status"]["variants"][1]["modelUri"] == f"models:/{model}/3"


def test_add_scale_and_remove_variants(
    kube: KubeEnv, operator: OperatorProcess, model: str
) -> None:
    base = [{"name": "a", "version": "1", "weight": 1}, {"name": "b", "version": "2", "weight": 1}]
    kube.apply(md(model, base))
    ready(kube)
    kube.apply(md(model, [*base, {"name": "c", "version": "3", "weight": 2, "replicas": 3}]))
    ready(kube, extra=lambda o: len(o["status"]["variants"]) == 3)
    c = kube.get("Deployment", "iris-c")
    assert c is not None and c["spec"]["replicas"] == 3
    kube.apply(md(model, [base[0], {"name": "c", "version": "3", "weight": 2, "replicas": 3}]))
    ready(kube, extra=lambda o: [v["name"] for v in o["status"]["variants"]] == ["a", "c"])
    kube.wait_for_deleted("Deployment", "iris-b")
    kube.wait_for_deleted("Service", "iris-b")
    assert kube.get("Deployment", "iris-a") is not None


def test_delete_removes_children(kube: KubeEnv, operator: OperatorProcess, model: str) -> None:
    kube.apply(md(model, [{"name": "a", "version": "1", "weight": 1}]))
    ready(kube)
    kube.delete("ModelDeployment", "iris")
    kube.wait_for_deleted("ModelDeployment", "iris")
    for kind, name in (
        ("Deployment", "iris-a"),
        ("Deployment", "iris-router"),
        ("Service", "iris"),
        ("ConfigMap", "iris-router"),
    ):
        kube.wait_for_deleted(kind, name, timeout=30)
    assert operator.alive() and operator.error_lines() == []


def test_recreated_under_the_same_name_serves_its_own_version(
    kube: KubeEnv, operator: OperatorProcess, model: str
) -> None:
    """A deleted ModelDeployment's state goes with it: a new one under the same name, at the same
    generation, pinned to another version, resolves and serves that version."""
    kube.apply(md(model, [{"name": "a", "version": "1", "weight": 1}]))
    ready(kube)
    kube.delete("ModelDeployment", "iris")
    kube.wait_for_deleted("ModelDeployment", "iris")
    kube.wait_for_deleted("Deployment", "iris-a", timeout=30)
    kube.apply(md(model, [{"name": "a", "version": "2", "weight": 1}]))
    got = ready(kube)
    assert got["status"]["variants"][0]["resolvedVersion"] == "2"
    variant = kube.get("Deployment", "iris-a")
    assert variant is not None and variant["metadata"]["labels"]["dockyard.dev/model-version"] == "2"


def test_hand_edits_to_children_are_reverted(kube: KubeEnv, operator: OperatorProcess, model: str) -> None:
    """Level-based: a variant scaled and a router config edited by hand (another field manager)
    are put back to what the spec says, without a spec change."""
    import subprocess

    kube.apply(md(model, [{"name": "a", "version": "1", "weight": 1}]))
    ready(kube)
    config = kube.get("ConfigMap", "iris-router")
    assert config is not None
    conf_key, conf = next(iter(config["data"].items()))

    def kubectl(*args: str) -> None:
        subprocess.run(["kubectl", f"--kubeconfig={kube.kubeconfig}", "-n", kube.namespace, *args],
                       check=True, capture_output=True, timeout=60)

    kubectl("patch", "configmap", "iris-router", "--type=merge", "-p",
            json.dumps({"data": {conf_key: "events {}\n"}}))
    kubectl("scale", "deployment/iris-a", "--replicas=3")
    kube.wait_for_object("Deployment", "iris-a", lambda d: d["spec"]["replicas"] == 1
                         and d["metadata"]["generation"] > 1, timeout=30)
    kube.wait_for_object("ConfigMap", "iris-router", lambda c: c["data"][conf_key] == conf, timeout=30)
    assert operator.error_lines() == []


def test_unknown_alias_and_version_are_reported(
    kube: KubeEnv, operator: OperatorProcess, model: str
) -> None:
    kube.apply(md(model, [{"name": "a", "alias": "nobody-set-this", "weight": 1}]))
    got = kube.wait_for_object(
        "ModelDeployment", "iris", lambda o: cond(o, "Ready").get("reason") == "AliasNotFound", timeout=30
    )
    assert cond(got, "ModelsResolved")["status"] == "False"
    kube.apply(md(model, [{"name": "a", "version": "999", "weight": 1}]))
    kube.wait_for_object(
        "ModelDeployment",
        "iris",
        lambda o: cond(o, "Ready").get("reason") == "ModelVersionNotFound",
        timeout=30,
    )
    assert kube.get("Deployment", "iris-a") is None


def test_missing_router_crd_is_reported(
    kube: KubeEnv, operator: OperatorProcess, model: str
) -> None:
    if kube.cluster.kind == "kubeconfig":
        pytest.skip("deletes the HTTPRoute CRD for the duration of the test: not on someone else's cluster")
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/httproutes.gateway.networking.k8s.io"
    saved = kube.cluster.request("GET", crd_path)
    kube.cluster.request("DELETE", crd_path)
    kube.wait_for(lambda: not _exists(kube, crd_path), timeout=60, message="HTTPRoute CRD deleted")
    try:
        kube.apply(
            md(
                model,
                [{"name": "a", "version": "1", "weight": 1}],
                router={"type": "gateway", "gateway": {"parentRefs": [{"name": "gw"}]}},
            )
        )
        got = kube.wait_for_object(
            "ModelDeployment",
            "iris",
            lambda o: cond(o, "Ready").get("reason") == "RouterUnavailable",
            timeout=30,
        )
        assert "HTTPRoute" in cond(got, "Ready")["message"]
        assert cond(got, "RouterReady")["status"] == "False"
        assert operator.alive()
    finally:
        # Keep the annotations: groups under *.k8s.io need api-approved.kubernetes.io.
        saved["metadata"] = {k: saved["metadata"][k] for k in ("name", "annotations", "labels")
                             if k in saved["metadata"]}
        saved.pop("status", None)
        kube.cluster.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", saved)
        kube.wait_for(lambda: has_condition(kube.cluster.request("GET", crd_path), "Established"), timeout=60,
                      message="HTTPRoute CRD back")


def _exists(kube: KubeEnv, path: str) -> bool:
    try:
        kube.cluster.request("GET", path)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


@pytest.mark.parametrize("router", ["gateway", "istio"])
def test_mesh_routers_emit_weighted_routes(
    router: str, kube: KubeEnv, operator: OperatorProcess, model: str
) -> None:
    spec_router: dict[str, Any] = {"type": router}
    if router == "gateway":
        spec_router["gateway"] = {
            "parentRefs": [{"name": "gw", "namespace": "infra"}],
            "hostnames": ["iris.example.com"],
        }
    kube.apply(
        md(
            model,
            [{"name": "a", "version": "1", "weight": 3}, {"name": "b", "version": "2", "weight": 1}],
            router=spec_router,
        )
    )
    ready(kube)
    kind = "HTTPRoute" if router == "gateway" else "VirtualService"
    route = kube.get(kind, "iris")
    assert route is not None
    text = str(route["spec"])
    assert "iris-a" in text and "iris-b" in text


def test_seldon_router_hands_serving_to_one_seldondeployment(
    kube: KubeEnv, operator: OperatorProcess, model: str
) -> None:
    kube.apply(
        md(
            model,
            [{"name": "a", "version": "1", "weight": 3}, {"name": "b", "version": "2", "weight": 1}],
            router={"type": "seldon"},
        )
    )
    sdep = kube.wait_for_object("SeldonDeployment", "iris", timeout=60)
    traffic = {p["name"]: p["traffic"] for p in sdep["spec"]["predictors"]}
    assert traffic == {"a": 75, "b": 25}
    waiting = kube.wait_for_object(
        "ModelDeployment", "iris", lambda o: cond(o, "RouterReady").get("status") == "False", timeout=30
    )
    assert "not available" in cond(waiting, "RouterReady")["message"]
    assert kube.get("Deployment", "iris-a") is None, "Seldon runs the servers: no Dockyard Deployments"
    # Seldon's controller is not installed here (its module is not on the proxy): report what
    # it reports when the predictors are up, and the operator must notice on its next look.
    kube.patch("SeldonDeployment", "iris", {"status": {"state": "Available"}}, subresource="status")
    ready(kube, timeout=120)


def test_router_switches_prune_the_old_router(kube: KubeEnv, operator: OperatorProcess, model: str) -> None:
    """builtin -> istio -> gateway -> seldon -> builtin: each switch removes what the previous
    router created, so no old route keeps sending live traffic."""
    variants = [{"name": "a", "version": "1", "weight": 1}]
    gateway = {"type": "gateway", "gateway": {"parentRefs": [{"name": "gw", "namespace": "infra"}]}}
    kube.apply(md(model, variants))
    ready(kube)
    assert kube.get("ConfigMap", "iris-router") is not None
    steps: list[tuple[dict[str, Any], str, list[tuple[str, str]]]] = [
        ({"type": "istio"}, "VirtualService", [("Deployment", "iris-router"), ("ConfigMap", "iris-router")]),
        (gateway, "HTTPRoute", [("VirtualService", "iris")]),
        ({"type": "seldon"}, "SeldonDeployment", [("HTTPRoute", "iris")]),
        ({"type": "builtin"}, "ConfigMap", [("SeldonDeployment", "iris")]),
    ]
    for router, new_kind, gone in steps:
        kube.apply(md(model, variants, router=router))
        kube.wait_for_object(new_kind, "iris-router" if new_kind == "ConfigMap" else "iris", timeout=60)
        for kind, name in gone:
            kube.wait_for_deleted(kind, name, timeout=60)
    ready(kube)
    assert kube.get("Deployment", "iris-a") is not None


def test_steady_state_makes_no_writes_and_no_mlflow_calls(
    kube: KubeEnv, operator: OperatorProcess, mlflow_proxy: MlflowProxy, model: str
) -> None:
    kube.require_faults()
    kube.apply(
        md(model, [{"name": "a", "version": "1", "weight": 1}, {"name": "b", "version": "2", "weight": 1}])
    )
    ready(kube)
    # Events are posted in the background: the window opens once the Ready one has landed.
    kube.wait_for(lambda: any(e.get("reason") == "Ready" for e in kube.list("Event")), timeout=30,
                  message="the Ready Event")
    api_before, mlflow_before = kube.counters.snapshot(), mlflow_proxy.snapshot()
    time.sleep(3.0)  # observation window: proving that nothing happens has nothing to poll for
    assert {k: v for k, v in kube.counters.writes(api_before).items() if v} == {}
    assert mlflow_proxy.calls_since(mlflow_before) == {}
    operator.restart()
    ready(kube)
    api_before, mlflow_before = kube.counters.snapshot(), mlflow_proxy.snapshot()
    time.sleep(3.0)
    assert {k: v for k, v in kube.counters.writes(api_before).items() if v} == {}
    assert mlflow_proxy.calls_since(mlflow_before) == {}


def test_metrics_endpoint_shows_reconciles_phases_and_weights(kube: KubeEnv,
                                                              operator: OperatorProcess, model: str) -> None:
    kube.apply(md(model, [{"name": "a", "version": "1", "weight": 3}, {"name": "b", "version": "2", "weight": 1}]))
    ready(kube)
    ns = kube.namespace

    def scraped() -> str | None:
        text = operator.metrics()
        return text if 'dockyard_resources{kind="ModelDeployment",phase="Ready"} 1.0' in text else None

    text = kube.wait_for(scraped, timeout=30, message="Ready gauge")
    assert 'dockyard_reconcile_total{kind="ModelDeployment",result="success"}' in text
    assert 'dockyard_reconcile_duration_seconds_bucket{kind="ModelDeployment",le="0.1"}' in text
    assert f'dockyard_variant_weight{{model_version="1",name="iris",namespace="{ns}",variant="a"}} 75.0' in text
    assert f'dockyard_variant_weight{{model_version="2",name="iris",namespace="{ns}",variant="b"}} 25.0' in text
    assert "# TYPE dockyard_mlflow_request_errors_total counter" in text
