"""Benchmark (not a test): CPU per analysis interval with 50 ModelDeployments rolling out at once.

    .venv/bin/python bench/rollout_analysis.py [--deployments 50] [--interval 30] [--intervals 4]
        [--scrape-interval 10] [--idle 60] [--router gateway|builtin] [--operator-ref HEAD]

What is real:

* the operator: the `dockyard operator` process (from the working tree, or from a git ref with
  --operator-ref, so that uncommitted edits in a shared tree are not what is measured), its
  real reconcile of every ModelDeployment (rollout state machine, analysis, children, status,
  Events), under the chart's RBAC, through the harness's counting proxy (bench/_harness.py);
* the Kubernetes API: the local control plane (kube-apiserver, etcd, controller-manager,
  scheduler), reused if running (else started and stopped, as the other benches do). The
  real Deployment/ReplicaSet controllers and scheduler place and roll every Pod;
* MLflow: a real `mlflow server` (sqlite) with one registered model per ModelDeployment
  (versions 1 and 2, alias `champion` -> 1), behind the counting proxy; the registrations are
  made directly (a run and two versions per model), not through TrainingRuns;
* Prometheus: Debian's /usr/bin/prometheus 2.42, scraping every --scrape-interval seconds one
  target per serving Pod of the bench namespace, found by HTTP service discovery from the
  cluster's Pod list and relabelled by the chart's own serving PodMonitor (as
  tests/plugins/prometheus.py does), so every series carries the Pod's real `namespace`,
  `modeldeployment`, `variant`, `model_version` and `pod`; every analysis runs the operator's
  real PromQL (request count, successRate, latencyP99) through Prometheus's HTTP API.

What is a stand-in, and why:

* no serving process runs. 100 MLServer Pods (~200 MB and real CPU each) do not fit the 2-core
  machine, and the local cluster's one node takes 110 Pods and 2 CPUs, shared with whatever
  else runs there. The variant Pods go to a Node of the benchmark's own
  (bench/_instant_node.py: registered for the run, tainted so that only these Pods, through
  their spec.variants[].nodeSelector and tolerations, land there), whose stand-in kubelet marks
  each Pod Running and Ready at once, as the node agent's instant mode does;
* the router is `gateway` by default: an HTTPRoute per ModelDeployment, no Pods (the chart's
  RBAC rendered with routers.gateway on). `--router builtin` (the default router type) adds an
  nginx Deployment per ModelDeployment on the cluster's node (instant mode), rolled at every
  step; each requests 50m CPU plus a surge Pod per roll, so only ~15 fit that node's 2 CPUs;
* what the targets serve: the discovered address of every serving Pod is replaced by one
  exporter process (bench/_mlserver_exporter.py, `?pod=<name>`) answering MLServer 1.7.1's
  metric families and labels (captured from a real MLServer) with counters that follow a fixed
  stream per Pod: --rps inference requests/s, 0.1 % answered 500, log-normal latency (p99
  ~50 ms), plus the kubelet's health probes. The stream does not follow the step's weight. It
  passes the default checks (successRate >= 0.99, latencyP99 <= 0.5 s), so every due analysis
  passes and moves its rollout one step (router re-applied, status written, an Event): the
  full per-interval work of a rollout that goes well.

Sequence: --deployments ModelDeployments (stable variant following `champion`, candidate
`canary` pinned to version 1, default metrics, --steps steps every --interval seconds) are
created and converge to Ready with rollout phase Idle; an idle window of --idle seconds
measures the baseline (alias refresh every 60 s, Prometheus scraping, nothing analysed); then
every canary is patched to version 2 at once (a GitOps-style rollout start), and once all are
Progressing the rollout window runs for --intervals analysis intervals. Per interval it prints
the CPU seconds of the operator, Prometheus, the exporter, the cluster processes and the
instant node, the checks by outcome (the operator's dockyard_rollout_analysis_total), and the
queries the operator sent to Prometheus (through a timing proxy: count, p50/p99 latency as the
operator sees it); then per window the totals, per interval and per analysis, the operator's
API requests, reconciles and MLflow calls, and Prometheus's own query-engine quantiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import requests
import yaml
from _harness import (
    BENCH_IDENTITY_NAMESPACE,
    CHART_OPERATOR_ENV,
    GROUP,
    REPO,
    WRITE_VERBS,
    CpuSample,
    Mlflow,
    Stack,
    bench_target,
    cleanup,
    collection,
    cpu_report,
    fmt_counts,
    get_json,
    kube_request,
    loadavg,
    percentile,
    print_header,
    proc_cpu,
    proc_mem_mb,
    reconcile_stats,
    session,
    split_requests,
    thread_cpu,
    wait_quiet,
    workdir,
)
from aiohttp import web

from tests.plugins.mlflow_server import free_port
from tests.plugins.operator import OperatorProcess
from tests.plugins.prometheus import (
    PROMETHEUS,
    HttpServiceDiscovery,
    chart_serving_podmonitor,
    pod_targets,
    scrape_config_from_podmonitor,
)
from tests.processes import stop_process

EXPORTER = Path(__file__).resolve().parent / "_mlserver_exporter.py"
INSTANT_NODE = Path(__file__).resolve().parent / "_instant_node.py"
NODE_TAINT_KEY = "dockyard.dev/bench-node"  # as bench/_instant_node.py taints its Node
MODEL_META_LABEL = "__meta_kubernetes_pod_label_dockyard_dev_model"
POD_META_LABEL = "__meta_kubernetes_pod_name"
CANARY, STABLE = "canary", "stable"
GATEWAY_RELEASE = "dockyard-bench-gw"  # the chart's RBAC with routers.gateway on, for --router gateway
ROLLOUT_EVENT_REASONS = ("RolloutStarted", "RolloutStep", "CheckFailed", "RolledBack", "Promoted")


# -- the synthetic targets and a real Prometheus ----------------------------------------------

class PodDiscovery(HttpServiceDiscovery):
    """HTTP service discovery for Prometheus: the bench namespace's Pods (listed from the API on
    every refresh, as tests/plugins/prometheus.py does cluster-wide), each container port with the
    meta labels of kubernetes_sd_configs role pod, but addressed to the stand-in exporter with
    the Pod's name (and registered model) as URL parameters."""

    def __init__(self, api_url: str, namespace: str, exporter: str) -> None:
        self.pods_url = f"{api_url}/api/v1/namespaces/{namespace}/pods"
        self.exporter = exporter
        self.lists = 0
        self.http = requests.Session()
        super().__init__()

    def targets(self) -> list[dict[str, Any]]:
        r = self.http.get(self.pods_url, timeout=10)
        r.raise_for_status()
        self.lists += 1
        groups = pod_targets(r.json()["items"])
        for group in groups:
            labels = group["labels"]
            group["targets"] = [self.exporter]
            labels["__param_pod"] = labels[POD_META_LABEL]
            labels["__param_model"] = labels.get(MODEL_META_LABEL, "model")
        return groups


class QueryProxy:
    """A timing reverse proxy between the operator and Prometheus (a thread of this process):
    every request's latency as the operator sees it, less the operator's own side."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.records: list[tuple[float, str, int, float]] = []  # (monotonic end, path, status, seconds)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> QueryProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="prometheus-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("Prometheus proxy did not start")
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        assert sockets
        self.port = sockets[0].getsockname()[1]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        t0 = time.monotonic()
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body,
                                         headers=headers) as upstream:
            payload = await upstream.read()
            status = upstream.status
            content_type = upstream.headers.get("Content-Type", "application/json")
        self.records.append((time.monotonic(), request.path, status, time.monotonic() - t0))
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    def since(self, t0: float, t1: float = float("inf")) -> list[tuple[float, str, int, float]]:
        return [r for r in list(self.records) if t0 <= r[0] < t1]

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            if self._session:
                await self._session.close()
            if self._runner:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop = None


class Observability:
    """The exporter process, the Pod discovery, Prometheus and the query proxy."""

    def __init__(self, root: Path, api_url: str, namespace: str, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.exporter_port = free_port()
        self.discovery = PodDiscovery(api_url, namespace, f"127.0.0.1:{self.exporter_port}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exporter: subprocess.Popen[bytes] | None = None
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.proxy: QueryProxy | None = None

    def start(self) -> Observability:
        self.root.mkdir(parents=True, exist_ok=True)
        a = self.args
        with open(self.root / "exporter.log", "ab") as log:
            self.exporter = subprocess.Popen(
                [sys.executable, str(EXPORTER), "--port", str(self.exporter_port), "--rps", str(a.rps)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.discovery.start()
        scrape = scrape_config_from_podmonitor(chart_serving_podmonitor(), self.discovery.url)
        scrape["http_sd_configs"][0]["refresh_interval"] = f"{a.sd_refresh}s"
        interval = f"{a.scrape_interval}s"
        config = {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": "1m"},
                  "scrape_configs": [scrape]}
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        with open(self.root / "prometheus.log", "ab") as log:
            self.prometheus = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1d"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    break
            if self.prometheus.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready:\n{(self.root / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.1)
        self.proxy = QueryProxy(self.url).start()
        return self

    def cpu(self) -> dict[str, float]:
        return {"prometheus": proc_cpu(self.prometheus.pid) if self.prometheus else 0.0,
                "exporter": proc_cpu(self.exporter.pid) if self.exporter else 0.0}

    def self_metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=10).text

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = requests.post(f"{self.url}/api/v1/query", data={"query": promql}, timeout=10)
        return list(r.json()["data"]["result"])

    def stop(self) -> None:
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.stop()
        for proc in (self.prometheus, self.exporter):
            if proc is not None:
                stop_process(proc)
        with contextlib.suppress(Exception):
            self.discovery.stop()


def git_rev(ref: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def export_operator(ref: str, dest: Path) -> Path:
    """`git archive <ref> operator` unpacked under `dest`: the package the operator process imports
    (PYTHONPATH comes before the editable install's path), so uncommitted edits in a shared
    working tree do not change what is measured."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "operator"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "operator"


def start_node(cluster: Any, name: str, cpu: int, root: Path) -> subprocess.Popen[bytes]:
    """bench/_instant_node.py with the admin credentials the harness wrote; waits for its Node."""
    creds = cluster.root
    log_path = root / "instant-node.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(INSTANT_NODE), "--server", cluster.state.server, "--ca", str(creds / "ca.crt"),
             "--cert", str(creds / "admin.crt"), "--key", str(creds / "admin.key"), "--name", name,
             "--cpu", str(cpu)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while "registered" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"instant node did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    print(f"instant node: {name} (pid {proc.pid}, {cpu} CPUs, taint {NODE_TAINT_KEY}:NoSchedule)")
    return proc


# -- resources ----------------------------------------------------------------------------

def model_name(i: int) -> str:
    return f"bench-rollout-{i:03d}"


def variants(canary_version: str, node: str) -> list[dict[str, Any]]:
    """Stable follows `champion`, the canary is pinned; both placed on the benchmark's own node."""
    place = {"nodeSelector": {"kubernetes.io/hostname": node},
             "tolerations": [{"key": NODE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}
    return [{"name": STABLE, "alias": "champion", "weight": 100, "replicas": 1, **place},
            {"name": CANARY, "version": canary_version, "weight": 0, "replicas": 1, **place}]


def modeldeployment(name: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "modelName": model, "runtime": "mlserver",
            "variants": variants("1", args.node_name),
            "router": {"type": args.router},
            # Default metrics (successRate >= 0.99, latencyP99 <= 0.5 s), failureLimit and
            # minRequests; default aliasRefreshInterval (60 s).
            "rollout": {"candidate": CANARY, "steps": args.step_list, "interval": f"{args.interval}s"},
        },
    }


def register_models(uri: str, count: int) -> float:
    """One registered model per ModelDeployment with versions 1 and 2, alias champion -> 1."""
    import logging

    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    t0 = time.monotonic()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("bench-rollout")
    run = client.create_run(exp)
    for i in range(count):
        name = model_name(i)
        client.create_registered_model(name)
        for version in (1, 2):
            client.create_model_version(name, source=f"{run.info.artifact_uri}/{name}/v{version}",
                                        run_id=run.info.run_id, await_creation_for=0)
        client.set_registered_model_alias(name, "champion", "1")
    client.set_terminated(run.info.run_id)
    return time.monotonic() - t0


# -- sampling -----------------------------------------------------------------------------

class Sample:
    def __init__(self, stack: Stack, obs: Observability, node: subprocess.Popen[bytes]) -> None:
        self.wall = time.monotonic()
        self.cpu: CpuSample = stack.cpu()
        self.obs_cpu = {**obs.cpu(), "bench-node": proc_cpu(node.pid)}
        self.threads = {n: thread_cpu(_tid(n)) for n in ("prometheus-pod-sd", "prometheus-proxy")}
        self.counts = stack.counts()
        self.mlflow = stack.mlflow.proxy.snapshot()
        self.analyses = analysis_counts(stack)
        self.reconciles = reconcile_stats(stack, "ModelDeployment")
        self.sd_lists = obs.discovery.lists


def _tid(name: str) -> int | None:
    return next((t.native_id for t in threading.enumerate() if t.name == name), None)


_ANALYSIS_LINE = re.compile(r'^dockyard_rollout_analysis_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


def analysis_counts(stack: Stack) -> Counter[str]:
    """The operator's dockyard_rollout_analysis_total summed by result (one count per metric checked)."""
    out: Counter[str] = Counter()
    try:
        text = stack.operator.metrics() if stack.operator else ""
    except Exception:
        return out
    for line in text.splitlines():
        m = _ANALYSIS_LINE.match(line)
        if m:
            result = re.search(r'result="([^"]*)"', m.group("labels"))
            out[result.group(1) if result else "?"] += int(float(m.group("value")))
    return out


def engine_quantiles(text: str) -> str:
    """Prometheus's own query engine summary (last 10 minutes): inner_eval quantiles."""
    found = {}
    for line in text.splitlines():
        if line.startswith("prometheus_engine_query_duration_seconds{") and 'slice="inner_eval"' in line:
            q = re.search(r'quantile="([^"]*)"', line)
            if q:
                found[q.group(1)] = float(line.rsplit(" ", 1)[1])
    return ", ".join(f"q{k}={1000 * v:.2f} ms" for k, v in sorted(found.items()))


def prom_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


# -- the run ------------------------------------------------------------------------------

async def rollout_states(sess: aiohttp.ClientSession, stack: Stack) -> dict[str, dict[str, Any]]:
    data = await get_json(sess, collection(stack.url, stack.namespace, "modeldeployments"))
    return {o["metadata"]["name"]: o.get("status") or {} for o in data.get("items") or []}


async def wait_states(sess: aiohttp.ClientSession, stack: Stack, n: int, what: str, ok: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        states = await rollout_states(sess, stack)
        good = [n for n, st in states.items() if ok(st)]
        if len(good) >= n:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            bad = {n: (st.get("phase"), (st.get("rollout") or {}).get("phase"), st.get("message"))
                   for n, st in states.items() if not ok(st)}
            raise RuntimeError(f"{what}: {len(good)}/{n} after {timeout:.0f}s; others: "
                               f"{dict(list(bad.items())[:5])}\n{stack.operator.log_tail() if stack.operator else ''}")
        await asyncio.sleep(1.0)


def interval_line(i: int, a: Sample, b: Sample, obs: Observability) -> str:
    queries = obs.proxy.since(a.wall, b.wall) if obs.proxy else []
    lat = [r[3] for r in queries]
    checks = b.analyses - a.analyses
    cluster = sum(b.cpu.procs.get(n, 0.0) - a.cpu.procs.get(n, 0.0) for n in b.cpu.procs)
    return (f"  {i:>3}  {b.wall - a.wall:6.1f}s  op {b.cpu.operator - a.cpu.operator:6.2f}s  "
            f"prom {b.obs_cpu['prometheus'] - a.obs_cpu['prometheus']:5.2f}s  "
            f"exporter {b.obs_cpu['exporter'] - a.obs_cpu['exporter']:5.2f}s  cluster {cluster:6.2f}s  "
            f"bench node {b.obs_cpu['bench-node'] - a.obs_cpu['bench-node']:5.2f}s  "
            f"checks {fmt_counts(dict(checks))}  queries {len(queries):4d} "
            f"p50 {1000 * percentile(lat, 50):6.1f} ms p99 {1000 * percentile(lat, 99):6.1f} ms, "
            f"busiest second {busiest_second(queries)}  MD reconciles {b.reconciles[0] - a.reconciles[0]:.0f}")


def busiest_second(queries: list[tuple[float, str, int, float]]) -> int:
    """The most queries that ended within one second (a sliding window over their end times)."""
    ends = sorted(q[0] for q in queries)
    best, lo = 0, 0
    for hi, t in enumerate(ends):
        while t - ends[lo] > 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def window_report(label: str, a: Sample, b: Sample, obs: Observability, interval: float) -> dict[str, float]:
    wall = b.wall - a.wall
    per = interval / wall  # scale to one analysis interval
    delta = {k: v - a.counts.get(k, 0) for k, v in b.counts.items() if v - a.counts.get(k, 0) > 0}
    op_req, _, watches = split_requests(delta, target="controlplane")
    writes = {k: v for k, v in delta.items() if k[0] in WRITE_VERBS}
    ml = {k: v - a.mlflow.get(k, 0) for k, v in b.mlflow.items() if v - a.mlflow.get(k, 0) > 0}
    queries = obs.proxy.since(a.wall, b.wall) if obs.proxy else []
    lat = [r[3] for r in queries]
    checks = b.analyses - a.analyses
    n_rec = b.reconciles[0] - a.reconciles[0]
    s_rec = b.reconciles[1] - a.reconciles[1]
    op = b.cpu.operator - a.cpu.operator
    prom = b.obs_cpu["prometheus"] - a.obs_cpu["prometheus"]
    exp = b.obs_cpu["exporter"] - a.obs_cpu["exporter"]
    print(f"\n-- {label}: {wall:.1f}s wall = {wall / interval:.2f} intervals of {interval:g}s")
    print(f"operator CPU: {op:.2f}s = {op * per:.3f}s per interval ({100 * op / wall:.1f}% of one core)")
    node = b.obs_cpu["bench-node"] - a.obs_cpu["bench-node"]
    print(f"prometheus CPU: {prom:.2f}s = {prom * per:.3f}s per interval ({100 * prom / wall:.1f}% of one core); "
          f"exporter {exp * per:.3f}s, instant node {node * per:.3f}s per interval")
    print(f"checks (one per metric per analysis) by result: {fmt_counts(dict(checks)) if checks else '(none)'}")
    print(f"queries to Prometheus: {len(queries)} ({len(queries) * per:.1f} per interval; statuses "
          f"{fmt_counts(dict(Counter(str(r[2]) for r in queries)))}); latency via proxy "
          f"p50 {1000 * percentile(lat, 50):.1f} ms, p99 {1000 * percentile(lat, 99):.1f} ms, "
          f"max {1000 * max(lat, default=float('nan')):.1f} ms; busiest second {busiest_second(queries)} queries")
    print(f"operator ModelDeployment reconciles: {n_rec:.0f} ({n_rec * per:.1f} per interval), "
          f"mean {1000 * s_rec / max(n_rec, 1):.1f} ms wall each")
    print(f"operator API requests: {sum(op_req.values())} ({sum(op_req.values()) * per:.1f} per interval) "
          f"[{fmt_counts(op_req)}]; writes {sum(writes.values())}; watches re-opened {sum(watches.values())}")
    print(f"operator MLflow calls: {sum(ml.values())} [{fmt_counts(ml)}]")
    print(f"Pod discovery lists (this benchmark's, for Prometheus): {b.sd_lists - a.sd_lists}")
    for line in cpu_report(a.cpu, b.cpu, sum(delta.values()), sum(ml.values())):
        print(line)
    for name in ("prometheus-pod-sd", "prometheus-proxy"):
        sec = b.threads[name] - a.threads[name]
        print(f"  {name + ' thread':<26}{sec:7.2f} s  {100 * sec / wall:5.0f}%")
    analyses = sum(checks.values())
    return {"op": op, "wall": wall, "prom": prom, "checks": float(analyses)}


async def measure(stack: Stack, obs: Observability, node: subprocess.Popen[bytes], args: argparse.Namespace) -> int:
    n = args.deployments
    metrics_per_analysis = 2  # the default metrics: successRate, latencyP99
    async with session() as sess:
        # -- load: 50 ModelDeployments, rollout Idle ---------------------------------------------
        t0 = time.monotonic()
        url = collection(stack.url, stack.namespace, "modeldeployments")
        for i in range(n):
            await kube_request(sess, "POST", url, modeldeployment(f"md-{i:03d}", model_name(i), args))
        took = await wait_states(sess, stack, n, "Ready and Idle",
                                 lambda st: st.get("phase") == "Ready"
                                 and (st.get("rollout") or {}).get("phase") == "Idle", args.timeout)
        print(f"load: {n} ModelDeployments Ready, rollout Idle, {time.monotonic() - t0:.1f}s after the first "
              f"create ({took:.1f}s waiting); loadavg {loadavg()}")
        quiet, _ = await wait_quiet(stack, args.quiet, args.timeout)
        deadline = time.monotonic() + 60
        while len(obs.query("up == 1")) < 2 * n and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
        print(f"load: operator quiet (no API request for {args.quiet:g}s: {quiet}); Prometheus targets up: "
              f"{len(obs.query('up == 1'))} (expected {2 * n}: one per serving Pod); head series "
              f"{prom_value(obs.self_metrics(), 'prometheus_tsdb_head_series'):.0f}")

        # -- idle baseline ------------------------------------------------------------------------
        print(f"\n== idle: {args.idle:g}s, {n} ModelDeployments Ready, no rollout (loadavg {loadavg()})")
        a = Sample(stack, obs, node)
        await asyncio.sleep(args.idle)
        b = Sample(stack, obs, node)
        idle = window_report("idle window", a, b, obs, args.interval)

        # -- start every rollout at once -------------------------------------------------------------
        print(f"\n== rollout start: canary version 1 -> 2 in all {n} ModelDeployments (loadavg {loadavg()})")
        t_start = time.monotonic()
        await asyncio.gather(*(
            kube_request(sess, "PATCH", f"{url}/md-{i:03d}",
                         {"spec": {"variants": variants("2", args.node_name)}},
                         content_type="application/merge-patch+json")
            for i in range(n)))
        took = await wait_states(sess, stack, n, "Progressing",
                                 lambda st: (st.get("rollout") or {}).get("phase") == "Progressing", args.timeout)
        print(f"all {n} Progressing (step 1) {took:.1f}s after the patches")

        # -- rollout window ---------------------------------------------------------------------------
        print(f"\n== rollout window: {args.intervals} intervals of {args.interval:g}s (loadavg {loadavg()})")
        print("  int    wall  operator CPU  prometheus  exporter  cluster procs  checks  queries to Prometheus")
        samples = [Sample(stack, obs, node)]
        for i in range(args.intervals):
            await asyncio.sleep(max(0.0, samples[0].wall + (i + 1) * args.interval - time.monotonic()))
            samples.append(Sample(stack, obs, node))
            print(interval_line(i + 1, samples[-2], samples[-1], obs))
            sys.stdout.flush()
        rolled = window_report("rollout window", samples[0], samples[-1], obs, args.interval)
        per_interval_op = [b.cpu.operator - a.cpu.operator for a, b in itertools.pairwise(samples)]

        states = await rollout_states(sess, stack)
        phases = Counter((st.get("rollout") or {}).get("phase") for st in states.values())
        steps = Counter((st.get("rollout") or {}).get("step") for st in states.values())
        results = Counter(r.get("result") for st in states.values() for r in (st.get("rollout") or {}).get("analysis") or [])
        print(f"\nafter the window: rollout phases {fmt_counts({str(k): v for k, v in phases.items()})}; "
              f"steps {fmt_counts({str(k): v for k, v in sorted(steps.items())})}; last analysis results "
              f"{fmt_counts({str(k): v for k, v in results.items()})} ({time.monotonic() - t_start:.0f}s after the start)")
        events = (await get_json(sess, collection(stack.url, stack.namespace, "events"))).get("items") or []
        rollout_events = [e for e in events if e.get("reason") in ROLLOUT_EVENT_REASONS]
        print(f"rollout Events since the start: "
              f"{fmt_counts(dict(Counter(e['reason'] for e in rollout_events))) if rollout_events else '(none)'}")
        for reason in ("CheckFailed", "RolledBack"):
            messages = Counter(e.get("message") or "" for e in rollout_events if e["reason"] == reason)
            for message, count in messages.most_common(3):
                print(f"  {reason} x{count}: {message[:300]}")
        prom_text = obs.self_metrics()
        print(f"Prometheus's own query engine (inner_eval, last 10 min): {engine_quantiles(prom_text)}; "
              f"head series {prom_value(prom_text, 'prometheus_tsdb_head_series'):.0f}")
        rss, hwm = proc_mem_mb(stack.operator_pid)
        print(f"operator memory: VmRSS {rss:.1f} MB, VmHWM {hwm:.1f} MB")

    # -- summary -------------------------------------------------------------------------------
    iv = args.interval
    analyses = rolled["checks"] / metrics_per_analysis
    op_i = rolled["op"] * iv / rolled["wall"]
    idle_i = idle["op"] * iv / idle["wall"]
    prom_i = rolled["prom"] * iv / rolled["wall"]
    prom_idle_i = idle["prom"] * iv / idle["wall"]
    print(f"\n== summary ({n} ModelDeployments, interval {iv:g}s, scrape {args.scrape_interval}s, "
          f"{args.intervals} intervals; loadavg {loadavg()})")
    print(f"operator CPU per interval: {op_i:.3f}s rolling out (intervals: "
          f"{', '.join(f'{x:.2f}' for x in per_interval_op)}) vs {idle_i:.3f}s idle; "
          f"{100 * op_i / iv:.1f}% vs {100 * idle_i / iv:.1f}% of one core")
    if analyses:
        print(f"analyses in the window: {analyses:.0f} ({analyses * iv / rolled['wall']:.1f} per interval); operator CPU "
              f"per analysis, above idle: {1000 * (op_i - idle_i) * rolled['wall'] / iv / analyses:.1f} ms "
              f"(the analysis and the step it passes: queries, router object(s), status, Event, and every "
              f"reconcile that follows from them)")
    print(f"prometheus CPU per interval: {prom_i:.3f}s rolling out vs {prom_idle_i:.3f}s idle (scraping only)"
          + (f"; per analysis above idle: {1000 * (prom_i - prom_idle_i) * rolled['wall'] / iv / analyses:.1f} ms"
             if analyses else ""))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deployments", type=int, default=50)
    p.add_argument("--interval", type=int, default=30, help="rollout analysis interval, seconds")
    p.add_argument("--intervals", type=int, default=4, help="length of the rollout window, in intervals")
    p.add_argument("--steps", type=int, default=20,
                   help="rollout steps (evenly spaced up to 100%%), enough not to finish inside the window")
    p.add_argument("--idle", type=float, default=60.0, help="seconds of the idle baseline window")
    p.add_argument("--scrape-interval", type=int, default=10, help="Prometheus scrape interval, seconds")
    p.add_argument("--sd-refresh", type=int, default=5, help="Pod discovery refresh, seconds")
    p.add_argument("--rps", type=float, default=10.0, help="synthetic inference requests/s per serving Pod")
    p.add_argument("--workers", type=int, default=16, help="operator DOCKYARD_WORKERS (chart default 16)")
    p.add_argument("--mlflow-workers", type=int, default=2, help="MLflow server workers (chart default 2)")
    p.add_argument("--quiet", type=float, default=5.0, help="seconds without API requests that count as converged")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--router", choices=("gateway", "builtin"), default="gateway",
                   help="router.type: gateway (an HTTPRoute, no Pods; default) or builtin (an nginx Deployment per "
                        "ModelDeployment on the cluster's own node: 50m CPU requested each plus a surge Pod per "
                        "step, so only ~15 fit its 2 CPUs)")
    p.add_argument("--node-cpu", type=int, default=64, help="CPU capacity the benchmark's instant Node advertises")
    p.add_argument("--operator-ref", default="",
                   help="run the operator from this git ref (e.g. HEAD: committed code only) instead of the "
                        "working tree")
    p.add_argument("--keep", action="store_true", help="keep the work dir and the namespace")
    args = p.parse_args()
    args.step_list = [round(100 * (k + 1) / args.steps) for k in range(args.steps)]
    args.node_name = f"dockyard-bench-rollout-{os.urandom(3).hex()}"
    params = {k: v for k, v in vars(args).items() if k not in ("step_list", "node_name")}
    print_header("rollout_analysis", {**params, "target": "controlplane"})
    print(f"rollout: steps {args.step_list}, interval {args.interval}s, default metrics and thresholds; "
          f"prometheus {PROMETHEUS}; targets: bench/_mlserver_exporter.py ({args.rps:g} req/s per Pod)")

    root = workdir("dockyard-bench-rollout-")
    try:
        with bench_target("controlplane", root) as cluster:
            mlflow = Mlflow.start(root, args.mlflow_workers)
            stack = Stack(root / "stack", "bench-rollout", mlflow, workers=args.workers, cluster=cluster,
                          keep=args.keep)
            obs: Observability | None = None
            node: subprocess.Popen[bytes] | None = None
            try:
                assert cluster is not None
                node = start_node(cluster, args.node_name, args.node_cpu, root)
                stack.start(operator=False)
                print(f"mlflow: {args.deployments} models x 2 versions registered in "
                      f"{register_models(mlflow.server.uri, args.deployments):.1f}s")
                obs = Observability(root / "prometheus", stack.url, stack.namespace, args).start()
                assert obs.proxy is not None
                print(f"prometheus: {obs.url} (operator queries via timing proxy {obs.proxy.url}); "
                      f"exporter pid {obs.exporter.pid if obs.exporter else '?'}")
                env = {"DOCKYARD_WORKERS": str(args.workers), "DOCKYARD_PROMETHEUS_URL": obs.proxy.url,
                       "DOCKYARD_PROMETHEUS_SCRAPE_INTERVAL": f"{args.scrape_interval}s", **CHART_OPERATOR_ENV}
                kubeconfig = stack.kubeconfig
                if args.router == "gateway":
                    # The chart with routers.gateway on: its RBAC for HTTPRoutes, and the router enabled.
                    kubeconfig = cluster.make_identity(root / "operator-gateway.kubeconfig", release=GATEWAY_RELEASE,
                                                       values={"routers": {"gateway": True}})
                    env["DOCKYARD_ENABLED_ROUTERS"] = "builtin,gateway"
                    print(f"operator identity: system:serviceaccount:{BENCH_IDENTITY_NAMESPACE}:{GATEWAY_RELEASE}-operator "
                          f"(chart RBAC with routers.gateway=true)")
                stack.operator = OperatorProcess(
                    kubeconfig, mlflow.proxy.uri, stack.root / "operator", namespaces=[stack.namespace],
                    mlflow_uri_for_pods=mlflow.server.uri, extra_env=env)
                if args.operator_ref:
                    src = export_operator(args.operator_ref, root / "operator-src")
                    stack.operator.extra_env["PYTHONPATH"] = str(src)
                    print(f"operator code run: {args.operator_ref} = {git_rev(args.operator_ref)} "
                          f"(exported to {src}, not the working tree)")
                stack.start_operator()
                return int(asyncio.run(measure(stack, obs, node, args)))
            finally:
                if obs is not None:
                    obs.stop()
                stack.stop()  # deletes the namespace while the node still finishes its Pods' deletion
                mlflow.stop()
                if node is not None:
                    stop_process(node)
    finally:
        cleanup(root, args.keep)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
