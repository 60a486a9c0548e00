"""Rollout analysis against a real Prometheus scraping real MLServer Pods.

A ModelDeployment made by the operator serves two versions of a model-from-code
(tests/data/models/latency_model.py): `fast` answers at once, `slow` sleeps 300 ms per predict.
Requests go straight to the Pods (the metrics count what the servers saw, whatever routed
them); a request with a negative petal_width makes predict raise, which MLServer answers 500.
Prometheus scrapes every second with the chart PodMonitor's relabelling (tests/plugins/prometheus.py).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from dockyard.analysis import (
    AnalysisTarget,
    Prometheus,
    PrometheusUnavailable,
    analyse,
    builtin_query,
    render_query,
    request_count_query,
)
from dockyard.api.rollout import RolloutMetric
from tests.plugins.kube import KubeCluster, KubeEnv, scratch_namespace
from tests.plugins.mlflow_server import MlflowServer, free_port
from tests.plugins.operator import OperatorProcess
from tests.plugins.prometheus import PrometheusServer

pytestmark = [pytest.mark.serving, pytest.mark.integration]

MODEL = "analysis-latency"
MODEL_FILE = Path(__file__).resolve().parents[1] / "data" / "models" / "latency_model.py"
DELAYS = {"fast": 0.0, "slow": 0.3}
INTERVAL = 10  # seconds: the analysis window (the test Prometheus scrapes every second)
FAST_REQUESTS = 40
SLOW_OK, SLOW_FAILING = 16, 4


def register(mlflow_uri: str, delay: float) -> str:
    """Log the model-from-code with this delay and register it; the new version."""
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    try:
        mlflow.set_experiment("analysis-tests")
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_FILE),
                                           model_config={"delay_seconds": delay}, registered_model_name=MODEL)
        return str(info.registered_model_version)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def payload(petal_width: float = 0.2) -> dict[str, Any]:
    return {"parameters": {"content_type": "pd"}, "inputs": [
        {"name": "petal_length", "shape": [1], "datatype": "FP64", "data": [1.4]},
        {"name": "petal_width", "shape": [1], "datatype": "FP64", "data": [petal_width]},
    ]}


@dataclass
class Served:
    env: KubeEnv
    prometheus: PrometheusServer
    versions: dict[str, str]  # variant -> model version
    pods: dict[str, str]  # variant -> http://podIP:8080

    def target(self, variant: str, interval: int = INTERVAL) -> AnalysisTarget:
        return AnalysisTarget(namespace=self.env.namespace, name="lat", model=MODEL, variant=variant,
                              version=self.versions[variant], interval_seconds=interval, scrape_interval_seconds=1)

    def infer(self, variant: str, petal_width: float = 0.2) -> int:
        r = requests.post(f"{self.pods[variant]}/v2/models/{MODEL}/infer", json=payload(petal_width), timeout=30)
        return r.status_code

    def raw_total(self, variant: str) -> float:
        """The counters' exact sum as last scraped (no window, no extrapolation)."""
        sel = f'namespace="{self.env.namespace}", variant="{variant}", path=~".*/infer"'
        return sum(float(s["value"][1]) for s in self.prometheus.query(f"rest_server_requests_total{{{sel}}}"))


def wait_scraped(served: Served, variant: str, total: int) -> None:
    served.env.wait_for(lambda: served.raw_total(variant) == total, timeout=30, interval=0.2,
                        message=f"Prometheus has scraped {total} requests of {variant}")


@pytest.fixture(scope="module")
def served(kube_cluster: KubeCluster, mlflow_server: MlflowServer, prometheus: PrometheusServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The deployment after a known burst of traffic, fully scraped."""
    work = tmp_path_factory.mktemp("analysis")
    versions = {variant: register(mlflow_server.uri, delay) for variant, delay in DELAYS.items()}
    with scratch_namespace(kube_cluster, "analysis", work) as env:
        operator = OperatorProcess(kube_cluster.operator_kubeconfig(), mlflow_server.uri, work / "operator",
                                   namespaces=[env.namespace]).start()
        try:
            env.apply({"apiVersion": "dockyard.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "lat"},
                       "spec": {"modelName": MODEL, "variants": [
                           {"name": v, "version": versions[v], "weight": 50} for v in DELAYS]}})
            env.wait_for_object("ModelDeployment", "lat", lambda o: (o.get("status") or {}).get("phase") == "Ready",
                                timeout=300)
            pods = {}
            for variant in DELAYS:
                (pod,) = env.wait_for(lambda v=variant: [
                    p for p in env.list("Pod", label_selector=f"dockyard.dev/owner=lat,dockyard.dev/variant={v}")
                    if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")], timeout=60)
                pods[variant] = f"http://{pod['status']['podIP']}:8080"
            s = Served(env, prometheus, versions, pods)
            # One request of each kind first, so every series exists before the counted burst
            # (increase() cannot count what happened before a series' first sample).
            env.wait_for(lambda: s.infer("fast") == 200, timeout=60, interval=0.5, message="fast answering")
            assert s.infer("slow") == 200 and s.infer("slow", petal_width=-1) == 500
            wait_scraped(s, "fast", 1)
            wait_scraped(s, "slow", 2)
            # ...and until the series span the whole analysis window, so increase() has samples
            # at both ends of it (it extrapolates otherwise).
            env.wait_for(lambda: prometheus.query(
                f'min(count_over_time(rest_server_requests_total{{namespace="{env.namespace}"}}[{INTERVAL}s]))'
                f' >= {INTERVAL - 1}'), timeout=60, interval=0.5, message="series as old as the window")
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda _: s.infer("fast"), range(FAST_REQUESTS)))
                codes += list(pool.map(lambda _: s.infer("slow"), range(SLOW_OK)))
                failing = list(pool.map(lambda _: s.infer("slow", petal_width=-1), range(SLOW_FAILING)))
            assert codes == [200] * (FAST_REQUESTS + SLOW_OK) and failing == [500] * SLOW_FAILING
            wait_scraped(s, "fast", 1 + FAST_REQUESTS)
            wait_scraped(s, "slow", 2 + SLOW_OK + SLOW_FAILING)
            yield s
        finally:
            operator.stop()


async def run_analysis(url: str, metrics: list[RolloutMetric], target: AnalysisTarget,
                       min_requests: int = 0, timeout: float = 10.0) -> list[Any]:
    prom = Prometheus(url, timeout=timeout)
    try:
        return await analyse(prom, metrics, target, min_requests)
    finally:
        await prom.close()


async def scalar(url: str, promql: str) -> float | None:
    prom = Prometheus(url)
    try:
        return await prom.query_scalar(promql)
    finally:
        await prom.close()


async def test_builtin_metrics_of_a_healthy_and_a_slow_failing_variant(served: Served) -> None:
    metrics = [RolloutMetric(name="success", builtin="successRate", min=0.99),
               RolloutMetric(name="p99", builtin="latencyP99", max=0.25)]
    # The healthy variant's tail is the machine's: on two loaded cores (a CI run) its p99 has
    # reached 0.7 s, so it is judged against 1 s; the slow one below against 0.25 s.
    relaxed = [metrics[0], RolloutMetric(name="p99", builtin="latencyP99", max=1.0)]
    fast = await run_analysis(served.prometheus.url, relaxed, served.target("fast"), min_requests=20)
    assert [(r.name, r.result) for r in fast] == [("success", "Passed"), ("p99", "Passed")], fast
    assert fast[0].value == 1.0
    assert fast[1].value is not None and 0 < fast[1].value < 1.0, fast[1]
    slow = await run_analysis(served.prometheus.url, metrics, served.target("slow"), min_requests=10)
    assert [r.result for r in slow] == ["Failed", "Failed"], slow
    assert slow[0].value == pytest.approx(SLOW_OK / (SLOW_OK + SLOW_FAILING), abs=0.02)
    assert slow[0].message == f"success = {slow[0].value:.4g} below min 0.99"
    # 300 ms lands in MLServer's (0.25, 0.5] bucket; histogram_quantile interpolates within it.
    assert slow[1].value is not None and 0.3 <= slow[1].value <= 0.5, slow[1]
    assert slow[1].message is not None and slow[1].message.startswith("p99 = ") and "above max 0.25" in slow[1].message


async def test_request_count_counts_the_burst(served: Served) -> None:
    fast = await scalar(served.prometheus.url, request_count_query(served.target("fast")))
    slow = await scalar(served.prometheus.url, request_count_query(served.target("slow")))
    # increase() extrapolates by up to a scrape interval over a 10 s window: at most ~12 % over.
    assert fast is not None and FAST_REQUESTS <= round(fast) <= FAST_REQUESTS * 1.15, fast
    assert slow is not None and SLOW_OK + SLOW_FAILING <= round(slow) <= (SLOW_OK + SLOW_FAILING) * 1.15, slow
    other = AnalysisTarget(**{**served.target("fast").__dict__, "version": "999"})
    assert await scalar(served.prometheus.url, request_count_query(other)) is None, "another version's requests"


async def test_too_few_requests_are_inconclusive(served: Served) -> None:
    metrics = [RolloutMetric(name="success", builtin="successRate", min=0.99),
               RolloutMetric(name="p99", builtin="latencyP99", max=0.25)]
    results = await run_analysis(served.prometheus.url, metrics, served.target("slow"), min_requests=1000)
    assert [r.result for r in results] == ["Inconclusive", "Inconclusive"]
    assert results[0].message is not None
    assert re.fullmatch(rf"\d+ requests in {INTERVAL}s < minRequests 1000", results[0].message), results[0].message


async def test_custom_template_renders_and_evaluates(served: Served) -> None:
    template = ('sum(increase(rest_server_requests_total{namespace="{{namespace}}", modeldeployment="{{name}}", '
                'variant="{{ variant }}", model_version=\'{{version}}\', status_code="500"}[{{interval}}]))')
    target = served.target("slow")
    assert f'variant="slow", model_version=\'{served.versions["slow"]}\'' in render_query(template, target)
    metric = RolloutMetric(name="errors", query=template, max=0)
    (result,) = await run_analysis(served.prometheus.url, [metric], target, min_requests=1)
    assert result.result == "Failed" and result.value is not None
    assert SLOW_FAILING <= round(result.value) <= SLOW_FAILING * 1.3, result


async def test_refused_and_ambiguous_queries_are_errors_and_thresholds_apply(served: Served) -> None:
    target = served.target("fast")
    metrics = [
        RolloutMetric(name="syntax", query="sum(rate(", min=0),
        RolloutMetric(name="many", query='rest_server_requests_total{namespace="{{namespace}}"}', min=0),
        RolloutMetric(name="low", query="vector(0.5)", min=0.99),
        RolloutMetric(name="high", query="scalar(vector(2))", min=0, max=1),
        RolloutMetric(name="nan", query="vector(0) / 0", min=0),
        RolloutMetric(name="ok", query="vector(1)", min=1, max=1),
    ]
    got = {r.name: r for r in await run_analysis(served.prometheus.url, metrics, target, min_requests=0)}
    assert got["syntax"].result == "Error" and "bad_data" in (got["syntax"].message or ""), got["syntax"]
    assert got["many"].result == "Error" and "series" in (got["many"].message or ""), got["many"]
    assert (got["low"].result, got["low"].message) == ("Failed", "low = 0.5 below min 0.99")
    assert (got["high"].result, got["high"].message) == ("Failed", "high = 2 above max 1")
    assert (got["nan"].result, got["nan"].value) == ("Inconclusive", None)
    assert (got["ok"].result, got["ok"].value) == ("Passed", 1.0)


@pytest.mark.parametrize("quote", ['"', "'"])
async def test_hostile_values_cannot_leave_the_string_literal(served: Served, quote: str) -> None:
    """`absent(...)` is 1 when the selector matches nothing, i.e. when the whole value stayed a
    label value; a value that broke out would add `or vector(5)`, and absent() would be empty."""
    hostile = f'x{quote}}} or vector(5) or up{{a={quote}\\'
    target = AnalysisTarget(namespace=hostile, name=hostile, model=hostile, variant=hostile, version=hostile,
                            interval_seconds=5, scrape_interval_seconds=1)
    template = f"absent(up{{namespace={quote}{{{{namespace}}}}{quote}, variant={quote}{{{{variant}}}}{quote}}})"
    assert await scalar(served.prometheus.url, render_query(template, target)) == 1.0
    for kind in ("successRate", "latencyP99"):
        assert await scalar(served.prometheus.url, builtin_query(kind, target)) is None


async def test_prometheus_down_raises_promptly() -> None:
    metrics = [RolloutMetric(name="success", builtin="successRate", min=0.99)]
    target = AnalysisTarget(namespace="ns", name="md", model="m", variant="v", version="1", interval_seconds=30)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(PrometheusUnavailable, match="ClientConnectorError"):
        await run_analysis(f"http://127.0.0.1:{free_port()}", metrics, target, min_requests=10)
    assert loop.time() - start < 2
    # A Prometheus that accepts the connection and never answers: the timeout, not a hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
        start = loop.time()
        with pytest.raises(PrometheusUnavailable, match="Timeout"):
            await run_analysis(f"http://127.0.0.1:{silent.getsockname()[1]}", metrics, target, timeout=0.5)
        assert loop.time() - start < 2
        for conn in accepted:
            conn.close()
