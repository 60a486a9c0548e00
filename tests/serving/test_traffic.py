"""The real traffic test: everything as the operator deploys it, on the real control plane.

Path under test, end to end and unmodified: a real MLflow server -> `dockyard train` registers
two versions (aliases ``champion`` and ``challenger``) -> the operator reconciles a
ModelDeployment -> the real Deployment/ReplicaSet controllers and the node agent start, per
variant, a Pod whose ``fetch-model`` init container downloads the version and whose MLServer
(or seldon-core) container serves it -> the builtin router Deployment runs nginx with the
ConfigMap the operator rendered, naming the variants by their Service DNS names, resolved by
CoreDNS -> requests from this machine go to the router Service's ClusterIP through kube-proxy.
Nothing is re-rendered or port-forwarded.

Every response is checked to be a real prediction from the variant its header names: the
router's ``X-Dockyard-Model-Version`` must equal the ``model_version`` MLServer itself reports
in the body (seldon: ``meta.tags.version``).
"""

from __future__ import annotations

import collections
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from dockyard.analysis import AnalysisTarget, Prometheus, analyse
from dockyard.api.rollout import RolloutMetric
from tests.plugins.kube import KubeCluster, KubeEnv, scratch_namespace
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess
from tests.plugins.prometheus import PrometheusServer
from tests.runtime.helpers import (
    IRIS_SAMPLE_ROWS,
    IRIS_SPECIES,
    seldon_payload,
    train_and_register,
    v2_infer_payload,
)

pytestmark = [pytest.mark.serving, pytest.mark.integration]

MODEL = "iris-ab-traffic"
WEIGHTS = {"champion": 80, "challenger": 20}
CLIENT_THREADS = 8


@dataclass
class Deployed:
    """A Ready ModelDeployment and the router Service URL clients use."""

    env: KubeEnv
    name: str
    url: str
    versions: dict[str, str]

    def patch(self, spec: dict[str, Any]) -> None:
        self.env.patch("ModelDeployment", self.name, {"spec": spec})


def model_deployment(name: str, runtime: str, *, sticky: bool) -> dict[str, Any]:
    router: dict[str, Any] = {"type": "builtin", "allowVariantForcing": True}  # the tests force variants
    if sticky:
        router["sticky"] = {"header": "X-User-Id"}
    return {
        "apiVersion": "dockyard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "modelName": MODEL,
            "runtime": runtime,
            "variants": [{"name": n, "alias": n, "weight": w} for n, w in WEIGHTS.items()],
            "router": router,
        },
    }


def wait_serving(env: KubeEnv, name: str, generation_check: bool = True, timeout: float = 300) -> dict[str, Any]:
    """Ready, at the current generation, and the router's rollout finished (every router Pod
    runs the current template, so no request can reach an old config)."""

    def ok(md: dict[str, Any]) -> bool:
        st = md.get("status") or {}
        if st.get("phase") != "Ready" or (generation_check and st.get("observedGeneration") != md["metadata"]["generation"]):
            return False
        router = env.get("Deployment", f"{name}-router") or {}
        rst = router.get("status") or {}
        want = (router.get("spec") or {}).get("replicas", 1)
        return (rst.get("observedGeneration") == router.get("metadata", {}).get("generation")
                and rst.get("updatedReplicas") == want and rst.get("readyReplicas") == want
                and rst.get("replicas") == want)

    return env.wait_for_object("ModelDeployment", name, ok, timeout=timeout)


def wait_reachable(env: KubeEnv, url: str, timeout: float = 60) -> None:
    """The router answers through its Service: kube-proxy has caught up with the endpoints
    (it does so asynchronously after the Pod turns Ready; a client would retry the same way)."""

    def answers() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    env.wait_for(answers, timeout=timeout, interval=0.2, message=f"{url} answering")


@pytest.fixture(scope="module")
def serving_env(
    kube_cluster: KubeCluster, mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KubeEnv, dict[str, str]]]:
    """A namespace with an operator watching it, and the two versions registered."""
    if kube_cluster.kind != "controlplane":
        pytest.skip("sends traffic to ClusterIPs from this machine: needs the local control plane")
    work = tmp_path_factory.mktemp("traffic")
    trees = {"champion": 5, "challenger": 25}
    with ThreadPoolExecutor(2) as pool:
        futures = {
            v: pool.submit(train_and_register, mlflow_server.uri, MODEL, n_estimators=n, alias=v,
                           workdir=work / v, experiment_name=f"traffic-test-{v}")
            for v, n in trees.items()
        }
        versions = {v: f.result() for v, f in futures.items()}
    assert versions["champion"] != versions["challenger"]
    with scratch_namespace(kube_cluster, "traffic", work) as env:
        operator = OperatorProcess(kube_cluster.operator_kubeconfig(), mlflow_server.uri, work / "operator",
                                   namespaces=[env.namespace]).start()
        try:
            yield env, versions
        finally:
            operator.stop()


def deploy(env: KubeEnv, versions: dict[str, str], name: str, runtime: str, *, sticky: bool) -> Deployed:
    env.apply(model_deployment(name, runtime, sticky=sticky))
    md = wait_serving(env, name)
    svc = env.get("Service", name)
    assert svc is not None
    assert md["status"]["endpoint"] == f"http://{name}.{env.namespace}.svc.cluster.local"
    port = svc["spec"]["ports"][0]["port"]
    url = f"http://{svc['spec']['clusterIP']}:{port}"
    settle(env, name)
    wait_reachable(env, url)
    deployed = Deployed(env, name, url, versions)
    wait_answering(deployed, runtime)
    return deployed


def wait_answering(d: Deployed, runtime: str, timeout: float = 90) -> None:
    """Each variant answers a real prediction through the router (a model server can turn Ready
    before its first prediction goes through on a loaded machine): the condition a client
    would retry on before counting."""
    path = "/api/v1.0/predictions" if runtime == "seldon" else f"/v2/models/{MODEL}/infer"
    body = seldon_payload() if runtime == "seldon" else v2_infer_payload()

    def answers(variant: str) -> bool:
        try:
            r = requests.post(f"{d.url}{path}", json=body, headers={"X-Dockyard-Variant": variant}, timeout=10)
        except requests.RequestException:
            return False
        return r.status_code == 200

    for variant in d.versions:
        d.env.wait_for(lambda v=variant: answers(v), timeout=timeout, interval=0.5,
                       message=f"variant {variant} answering through {d.url}")


def settle(env: KubeEnv, name: str) -> None:
    """The router Service and every variant Service reach only their current Pods, so a
    count of who answered measures the router's rule and not a rollout in flight."""
    for svc in env.list("Service", label_selector=f"app.kubernetes.io/instance={name}"):
        env.wait_service_settled(svc["metadata"]["name"])


def ready_router_url(env: KubeEnv, name: str, timeout: float = 300) -> str:
    """Once the ModelDeployment `name` is Ready: its router Service's URL, settled on the current
    Pods and answering from this machine."""
    md = env.wait_for_object("ModelDeployment", name, lambda m: (m.get("status") or {}).get("phase") == "Ready",
                             timeout=timeout)
    svc = env.get("Service", name)
    assert svc is not None and md["status"]["endpoint"]
    url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    settle(env, name)
    wait_reachable(env, url)
    return url


@pytest.fixture(scope="module")
def mlserver(serving_env: tuple[KubeEnv, dict[str, str]]) -> Deployed:
    env, versions = serving_env
    return deploy(env, versions, "iris", "mlserver", sticky=False)


# -- clients -----------------------------------------------------------------------------------

_local = threading.local()


def session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def v2_infer(d: Deployed, headers: dict[str, str] | None = None) -> str:
    """One V2 inference through the router; returns the variant after checking the answer."""
    r = session().post(f"{d.url}/v2/models/{MODEL}/infer", json=v2_infer_payload(), headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    variant = r.headers["X-Dockyard-Variant"]
    assert variant in d.versions, variant
    assert r.headers["X-Dockyard-Model-Version"] == d.versions[variant]
    body = r.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == d.versions[variant], "the header names a variant that did not answer"
    (output,) = body["outputs"]
    assert len(output["data"]) == len(IRIS_SAMPLE_ROWS)
    assert set(output["data"]) <= set(IRIS_SPECIES)
    assert output["data"][0] == "setosa"  # every forest gets the first iris right
    return variant


def seldon_predict(d: Deployed, headers: dict[str, str] | None = None) -> str:
    r = session().post(f"{d.url}/api/v1.0/predictions", json=seldon_payload(), headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    variant = r.headers["X-Dockyard-Variant"]
    assert variant in d.versions, variant
    assert r.headers["X-Dockyard-Model-Version"] == d.versions[variant]
    body = r.json()
    assert body["meta"]["tags"]["variant"] == variant
    assert body["meta"]["tags"]["version"] == d.versions[variant]
    predictions = body["data"]["ndarray"]
    assert len(predictions) == len(IRIS_SAMPLE_ROWS)
    assert set(predictions) <= set(IRIS_SPECIES)
    return variant


def fire(call: Callable[[], str], n: int) -> collections.Counter[str]:
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return collections.Counter(pool.map(lambda _: call(), range(n)))


def share(counts: collections.Counter[str], variant: str) -> float:
    return 100.0 * counts[variant] / sum(counts.values())


# -- MLServer ------------------------------------------------------------------------------------


def test_weighted_split_2000_requests(mlserver: Deployed) -> None:
    counts = fire(lambda: v2_infer(mlserver), 2000)
    assert sum(counts.values()) == 2000
    # 80/20 over 2000 independent draws: sd = 0.89 points, so +-3 points is 3.4 sd.
    assert abs(share(counts, "champion") - 80.0) <= 3.0, counts
    assert abs(share(counts, "challenger") - 20.0) <= 3.0, counts


def test_force_header(mlserver: Deployed) -> None:
    for variant in WEIGHTS:
        forced = fire(lambda v=variant: v2_infer(mlserver, {"X-Dockyard-Variant": v}), 40)
        assert forced == {variant: 40}
    ignored = fire(lambda: v2_infer(mlserver, {"X-Dockyard-Variant": "no-such-variant"}), 100)
    assert sum(ignored.values()) == 100 and ignored["champion"] > ignored["challenger"]


@pytest.fixture(scope="module")
def sticky(mlserver: Deployed) -> Deployed:
    """The same ModelDeployment switched to sticky routing: only the router rolls out."""
    before = {v: (mlserver.env.get("Deployment", f"iris-{v}") or {})["metadata"]["resourceVersion"] for v in WEIGHTS}
    mlserver.patch({"router": {"type": "builtin", "sticky": {"header": "X-User-Id"}}})
    wait_serving(mlserver.env, mlserver.name)
    settle(mlserver.env, mlserver.name)
    wait_reachable(mlserver.env, mlserver.url)
    after = {v: (mlserver.env.get("Deployment", f"iris-{v}") or {})["metadata"]["resourceVersion"] for v in WEIGHTS}
    assert after == before, "a router change must not touch the variant Deployments"
    return mlserver


def test_sticky_user_always_gets_the_same_variant(sticky: Deployed) -> None:
    def user_variants(user: int) -> set[str]:
        return {v2_infer(sticky, {"X-User-Id": f"user-{user}"}) for _ in range(5)}

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        per_user = dict(zip(range(50), pool.map(user_variants, range(50)), strict=True))
    assert all(len(v) == 1 for v in per_user.values()), per_user
    assigned = collections.Counter(next(iter(v)) for v in per_user.values())
    assert set(assigned) == {"champion", "challenger"}, assigned  # P(all 50 on champion) = 0.8^50 ~ 1e-5


def test_sticky_router_without_the_header_splits_at_random(sticky: Deployed) -> None:
    counts = fire(lambda: v2_infer(sticky), 400)
    # 400 draws: sd 2 points; 4 sd.
    assert abs(share(counts, "champion") - 80.0) <= 8.0, counts


# -- seldon runtime (short) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seldon(serving_env: tuple[KubeEnv, dict[str, str]]) -> Deployed:
    pytest.importorskip("seldon_core", reason="the opt-in seldon extra is not installed")
    env, versions = serving_env
    return deploy(env, versions, "iris-seldon", "seldon", sticky=True)


def test_seldon_runtime_split_and_headers(seldon: Deployed) -> None:
    n = 200
    counts = fire(lambda: seldon_predict(seldon), n)
    # 200 draws at 80/20: sd = sqrt(0.8*0.2/200) = 2.83 points; +-10 points is 3.5 sd
    # (two-sided p ~ 4e-4), tight enough to catch a broken split (e.g. 50/50 is 10.6 sd off).
    tolerance = 10.0
    assert tolerance >= 3.5 * 100 * math.sqrt(0.8 * 0.2 / n)
    assert abs(share(counts, "champion") - 80.0) <= tolerance, counts
    assert seldon_predict(seldon, {"X-Dockyard-Variant": "challenger"}) == "challenger"
    same = {seldon_predict(seldon, {"X-User-Id": "alice"}) for _ in range(5)}
    assert len(same) == 1


# -- shadow variants -------------------------------------------------------------------------------

SHADOW_SHARE = 50


@dataclass
class Shadowed:
    deployed: Deployed  # clients may only ever see champion
    prometheus: PrometheusServer
    shadow_version: str

    def shadow_target(self, interval: int) -> AnalysisTarget:
        return AnalysisTarget(namespace=self.deployed.env.namespace, name=self.deployed.name, model=MODEL,
                              variant="challenger", version=self.shadow_version, interval_seconds=interval,
                              scrape_interval_seconds=1)

    def shadow_count(self) -> float:
        """V2 inference requests the shadow's MLServer counted itself, as Prometheus last scraped
        them (exact counter values, no window): the series the built-in analysis reads."""
        sel = (f'namespace="{self.deployed.env.namespace}", modeldeployment="{self.deployed.name}", '
               f'variant="challenger", method="POST", path=~".*/infer"')
        return sum(float(x["value"][1]) for x in self.prometheus.query(f"rest_server_requests_total{{{sel}}}"))


@pytest.fixture(scope="module")
def shadowed(serving_env: tuple[KubeEnv, dict[str, str]], prometheus: PrometheusServer) -> Shadowed:
    """champion live; challenger a 50 % shadow (its declared weight 5 ignored); ``gone`` a 100 %
    shadow with no Pods, so every copy to it fails (on this cluster's kube-proxy a connection to
    a Service without endpoints goes unanswered until the relay's 1 s connect timeout)."""
    env, versions = serving_env
    name = "iris-shadow"
    env.apply({
        "apiVersion": "dockyard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "modelName": MODEL,
            "variants": [
                {"name": "champion", "alias": "champion", "weight": 1},
                {"name": "challenger", "alias": "challenger", "weight": 5, "shadow": SHADOW_SHARE},
                {"name": "gone", "alias": "challenger", "shadow": 100, "replicas": 0},
            ],
            "router": {"allowVariantForcing": True},  # forcing a shadow's name must still reach champion
        },
    })
    wait_serving(env, name)
    for svc in (name, f"{name}-champion", f"{name}-challenger"):  # `gone` has no Pods to settle
        env.wait_service_settled(svc)
    router = env.get("Service", name)
    assert router is not None
    url = f"http://{router['spec']['clusterIP']}:{router['spec']['ports'][0]['port']}"
    wait_reachable(env, url)
    deployed = Deployed(env, name, url, {"champion": versions["champion"]})
    wait_answering(deployed, "mlserver")
    return Shadowed(deployed, prometheus, versions["challenger"])


async def test_shadow_gets_its_share_is_analysable_and_never_answers_clients(shadowed: Shadowed) -> None:
    deployed = shadowed.deployed
    before = shadowed.shadow_count()
    started = time.monotonic()
    # nginx reads a client's next request on a keep-alive connection only once the previous
    # one's mirrors are done: through the relay that is at once, whatever the `gone` shadow does
    # (sent straight to it, each of these would wait for its 1 s connect timeout).
    with requests.Session() as s:
        sequential = []
        for _ in range(20):
            t = time.monotonic()
            r = s.post(f"{deployed.url}/v2/models/{MODEL}/infer", json=v2_infer_payload(), timeout=30)
            sequential.append(time.monotonic() - t)
            assert r.status_code == 200 and r.headers["X-Dockyard-Variant"] == "champion"
    assert statistics.median(sequential) < 0.5, sequential
    n = 400
    # v2_infer checks each answer: 200, a real prediction, from champion (the only variant in
    # deployed.versions) by header and by the version MLServer puts in the body.
    counts = fire(lambda: v2_infer(deployed), n)
    forced = fire(lambda: v2_infer(deployed, {"X-Dockyard-Variant": "challenger"}), 20)
    assert counts == {"champion": n} and forced == {"champion": 20}
    # 50 % of 440 mirrored: sd 10.5 requests; +-45 is 4.3 sd. Counted by the shadow's own
    # MLServer; copies still in flight when we look only add.
    expected = (20 + n + 20) * SHADOW_SHARE / 100
    deployed.env.wait_for(lambda: shadowed.shadow_count() - before >= expected - 45, timeout=60, interval=0.5,
                          message="Prometheus counting the shadow's mirrored requests")
    assert shadowed.shadow_count() - before <= expected + 45
    # The shadow's metrics are any variant's: the rollout's built-in analysis reads them.
    window = int(time.monotonic() - started) + 5
    prom = Prometheus(shadowed.prometheus.url)
    try:
        results = await analyse(prom, [RolloutMetric(name="success", builtin="successRate", min=0.99),
                                       RolloutMetric(name="p99", builtin="latencyP99", max=5)],
                                shadowed.shadow_target(window), 100)
    finally:
        await prom.close()
    assert [(r.name, r.result) for r in results] == [("success", "Passed"), ("p99", "Passed")], results
    assert results[0].value == 1.0 and results[1].value is not None and results[1].value > 0
