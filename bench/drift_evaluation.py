"""Benchmark of the operator's cost of evaluating data drift (issue 13; not a test).

    .venv/bin/python bench/drift_evaluation.py [--deployments 50] [--window 20] [--rounds 5]

A reference profile from iris (4 numeric features, predictions = the class labels) built with
dockyard.monitoring.reference.build_profile. An exporter process (prometheus_client, its own
CollectorRegistry, HTTP server thread on 127.0.0.1) exposes the serving Pods' four monitoring
counters for `--deployments` ModelDeployments (variant "stable", version "1"), counted by the
runtime's own dockyard.runtime.monitor_counts.Monitor (same bucketing as serving, every series
pre-created at 0), with the PodMonitor's target labels (namespace, modeldeployment, variant,
model_version) already on the series. A feeder thread in it counts iris rows resampled at
`--rate` rows/s per deployment; the odd-numbered deployments get petal_length and petal_width
times 3. Two features, not one: with the default MonitoringSpec (driftShare 0.5) one drifted feature
of four is a NoDrift verdict. The exporter is a separate process so that this process's CPU
time is the operator code's alone.

Prometheus 2.42 (/usr/bin/prometheus, temp TSDB, scrape interval 1 s, honor_labels) scrapes it.
Once every series has a window's worth of samples, the operator's per-window work for each
deployment - dockyard.controllers.monitoring._window_counts (4 PromQL queries through
dockyard.analysis.Prometheus) plus dockyard.monitoring.window.variant_drift with a default
MonitoringSpec - is timed for all deployments, (a) one deployment after the other and (b) as
the operator's workers do, up to 8 at once (asyncio.gather behind a semaphore), `--rounds`
rounds each, interleaved. The verdicts are checked: Drift for the shifted half, NoDrift for
the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import requests  # noqa: E402
import yaml  # noqa: E402

from dockyard.analysis import Prometheus  # noqa: E402
from dockyard.api.monitoring import MonitoringSpec  # noqa: E402
from dockyard.controllers.monitoring import _window_counts  # noqa: E402
from dockyard.monitoring.reference import ReferenceProfile, build_profile  # noqa: E402
from dockyard.monitoring.window import WindowCounts, variant_drift  # noqa: E402
from tests.processes import stop_process  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _harness import code_version, loadavg, percentile, proc_cpu  # noqa: E402

PROMETHEUS = "/usr/bin/prometheus"
NAMESPACE = "bench"
VARIANT = "stable"
VERSION = "1"
MODEL = "iris"
SHIFTED = ("petal_length", "petal_width")
SHIFT = 3.0
TARGET_LABELS = ("namespace", "modeldeployment", "model_version")  # "variant" is the runtime's label too
CONCURRENCY = 8  # ModelDeployments the operator reconciles at once


def iris() -> tuple[Any, list[int]]:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.drop(columns=["target"])
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return frame, [int(t) for t in data.target]


def iris_profile() -> ReferenceProfile:
    frame, labels = iris()
    return build_profile(frame, labels)


def name(i: int) -> str:
    return f"md-{i}"


def shifted(i: int) -> bool:
    return i % 2 == 1


# -- the exporter process -------------------------------------------------------------------


def exporter(deployments: int, rate: float) -> int:
    """The serving Pods' counters of every deployment on one endpoint; prints its port, then
    feeds traffic until killed."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client import Counter as PromCounter

    from dockyard.runtime.monitor_counts import METRICS, Metric, Monitor

    registry = CollectorRegistry()
    counters = {m.name: PromCounter(m.name, m.documentation, [*m.labels, *TARGET_LABELS], registry=registry)
                for m in METRICS}
    lock = threading.Lock()

    class Sink:
        def __init__(self, extra: tuple[str, ...]) -> None:
            self.extra = extra

        def inc(self, metric: Metric, labels: tuple[str, ...], amount: float = 1) -> None:
            counters[metric.name].labels(*labels, *self.extra).inc(amount)

    profile = iris_profile()
    monitors = [Monitor(profile, MODEL, VERSION, VARIANT, Sink((NAMESPACE, name(i), VERSION)))
                for i in range(deployments)]  # every series at 0 from here on
    frame, labels = iris()
    rows = [(dict(zip(frame.columns, map(float, values), strict=True)), label)
            for values, label in zip(frame.itertuples(index=False), labels, strict=True)]
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(json.dumps({"port": server.server_address[1]}), flush=True)

    def feed() -> None:
        rng, tick = random.Random(13), 0.25
        per_tick = max(1, round(rate * tick))
        next_at = time.monotonic()
        while True:
            with lock:
                for i, monitor in enumerate(monitors):
                    batch = rng.choices(rows, k=per_tick)
                    inputs = {c: [r[c] * (SHIFT if shifted(i) and c in SHIFTED else 1.0) for r, _ in batch]
                              for c in frame.columns}
                    monitor.observe(inputs, [str(label) for _, label in batch])
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))

    threading.Thread(target=feed, name="feeder", daemon=True).start()
    threading.Event().wait()
    return 0


# -- Prometheus -----------------------------------------------------------------------------


def start_prometheus(root: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "dockyard-serving", "honor_labels": True,
                            "static_configs": [{"targets": [target]}]}],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    with open(root / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"prometheus not ready:\n{(root / 'prometheus.log').read_text()[-3000:]}")
        time.sleep(0.1)


def scalar(url: str, promql: str) -> float:
    body = requests.post(f"{url}/api/v1/query", data={"query": promql}, timeout=10).json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def prom_metric(url: str, metric: str, having: str = "") -> float:
    """The sum of a metric's samples on Prometheus's own /metrics (those whose line has `having`)."""
    total = 0.0
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if (line.startswith(metric + "{") or line.startswith(metric + " ")) and having in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def engine_seconds(url: str) -> float:
    """Time Prometheus's query engine spent evaluating queries (not queueing or sorting)."""
    return prom_metric(url, "prometheus_engine_query_duration_seconds_sum", 'slice="inner_eval"')


# -- the measurement ------------------------------------------------------------------------


async def evaluate_one(prom: Prometheus, spec: MonitoringSpec, profile: ReferenceProfile, i: int,
                       window: int) -> tuple[str, float, WindowCounts, Any]:
    start = time.perf_counter()
    counts = await _window_counts(prom, NAMESPACE, name(i), VARIANT, VERSION, window)
    verdict, report = variant_drift(VARIANT, VERSION, spec, profile, counts)
    return verdict.result, time.perf_counter() - start, counts, (verdict, report)


async def one_round(prom: Prometheus, spec: MonitoringSpec, profile: ReferenceProfile, deployments: int,
                    window: int, concurrent: bool) -> list[tuple[str, float, WindowCounts, Any]]:
    if not concurrent:
        return [await evaluate_one(prom, spec, profile, i, window) for i in range(deployments)]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(i: int) -> tuple[str, float, WindowCounts, Any]:
        async with gate:
            return await evaluate_one(prom, spec, profile, i, window)

    return list(await asyncio.gather(*(gated(i) for i in range(deployments))))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def versions() -> str:
    out = []
    for dist in ("aiohttp", "prometheus-client", "pydantic", "scikit-learn"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    prom = subprocess.run([PROMETHEUS, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return ", ".join(out) + f"; {prom.strip()}"


async def measure(args: argparse.Namespace, url: str, prom_pid: int) -> None:
    profile = iris_profile()
    spec = MonitoringSpec()
    prom = Prometheus(url)
    window = args.window
    results: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": [], "lat": [], "prom_cpu": [],
                                                      "prom_eval": []} for m in ("sequential", "concurrent")}
    verdicts: dict[str, Counter[tuple[bool, str]]] = {m: Counter() for m in results}
    sample: tuple[WindowCounts, Any] | None = None
    try:
        for _ in range(2):  # warm up (connections, caches)
            await one_round(prom, spec, profile, args.deployments, window, True)
        # Prometheus's CPU while only scraping, to subtract from its CPU during the rounds.
        t0, c0 = time.monotonic(), proc_cpu(prom_pid)
        await asyncio.sleep(args.idle)
        idle_rate = (proc_cpu(prom_pid) - c0) / (time.monotonic() - t0)
        for r in range(args.rounds):
            for mode in (("sequential", "concurrent") if r % 2 == 0 else ("concurrent", "sequential")):
                eval0, pcpu0 = engine_seconds(url), proc_cpu(prom_pid)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                out = await one_round(prom, spec, profile, args.deployments, window, mode == "concurrent")
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                pcpu = proc_cpu(prom_pid) - pcpu0
                evals = engine_seconds(url) - eval0
                res = results[mode]
                res["wall"].append(wall)
                res["cpu"].append(cpu)
                res["prom_cpu"].append(max(0.0, pcpu - idle_rate * wall))
                res["prom_eval"].append(evals)
                res["lat"] += [lat for _, lat, _, _ in out]
                for i, (result, _, counts, pair) in enumerate(out):
                    verdicts[mode][(shifted(i), result)] += 1
                    if shifted(i) and result == "Drift" and sample is None:
                        sample = (counts, pair)
                print(f"round {r + 1} {mode:>10}: wall {wall * 1000:7.1f} ms  operator CPU {cpu * 1000:6.1f} ms  "
                      f"prometheus CPU {pcpu * 1000:5.0f} ms (query engine {evals * 1000:6.1f} ms)", flush=True)
    finally:
        await prom.close()

    n, q = args.deployments, 4 * args.deployments
    print(f"\nper round: {n} deployments, {q} PromQL queries (window {window}s); prometheus idle (scraping "
          f"only) {idle_rate * 1000:.0f} ms CPU/s, subtracted")
    for mode, res in results.items():
        print(f"{mode:>10}: wall p50 {percentile(res['wall'], 50) * 1000:.0f} ms max "
              f"{max(res['wall']) * 1000:.0f} ms | per deployment p50 {percentile(res['lat'], 50) * 1000:.1f} ms "
              f"p99 {percentile(res['lat'], 99) * 1000:.1f} ms | operator CPU/round p50 "
              f"{percentile(res['cpu'], 50) * 1000:.0f} ms ({percentile(res['cpu'], 50) / n * 1000:.2f} ms per "
              f"deployment) | prometheus CPU/round p50 {percentile(res['prom_cpu'], 50) * 1000:.0f} ms, query "
              f"engine {percentile(res['prom_eval'], 50) * 1000:.0f} ms")
    for mode, got in verdicts.items():
        print(f"{mode:>10} verdicts: " + ", ".join(f"{'shifted' if s else 'calm'} {v}={c}"
                                                   for (s, v), c in sorted(got.items())))
        wrong = {k: c for k, c in got.items() if k not in ((True, "Drift"), (False, "NoDrift"))}
        assert not wrong, f"wrong verdicts ({mode}): {wrong}"
    if sample is not None:
        report_cost(profile, *sample)


def report_cost(profile: ReferenceProfile, counts: WindowCounts, pair: Any) -> None:
    """The drift report the operator renders for a drifted window (skipped if report.py lacks it)."""
    verdict, report = pair
    try:
        from dockyard.monitoring.report import render_report_html

        times, size = [], 0
        for _ in range(20):
            cpu0 = time.process_time()
            page = render_report_html(profile, counts.features, counts.prediction, report,
                                      title="iris version 1: bench/md-1 variant stable", subtitle=verdict.message)
            times.append(time.process_time() - cpu0)
            size = len(page)
        print(f"render_report_html (one drifted window): p50 {percentile(times, 50) * 1000:.1f} ms CPU, "
              f"{size} bytes")
    except Exception as exc:  # being rewritten: a missing or changed function only skips this line
        print(f"render_report_html: skipped ({exc.__class__.__name__}: {exc})")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--deployments", type=int, default=50)
    p.add_argument("--window", type=int, default=20, help="seconds of traffic each evaluation queries")
    p.add_argument("--rate", type=float, default=20.0, help="rows per second per deployment")
    p.add_argument("--rounds", type=int, default=8, help="rounds of each mode")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of scraping-only Prometheus CPU to subtract")
    p.add_argument("--exporter", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.exporter:
        return exporter(args.deployments, args.rate)

    params = {k: v for k, v in vars(args).items() if k != "exporter"}
    print(f"== bench/drift_evaluation.py  {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
    print("parameters: " + " ".join(f"{k}={v}" for k, v in params.items()))
    print(f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()} loadavg(1/5/15m)={loadavg()} "
          f"python={platform.python_version()} {platform.machine()}")
    print(f"versions: {versions()}")
    print(f"operator code: {code_version()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-drift-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        exp = subprocess.Popen([sys.executable, __file__, "--exporter", f"--deployments={args.deployments}",
                                f"--rate={args.rate}"], stdout=subprocess.PIPE, start_new_session=True)
        procs.append(exp)
        assert exp.stdout is not None
        line = exp.stdout.readline()
        if not line:
            raise RuntimeError(f"the exporter exited with {exp.wait()}")
        target = f"127.0.0.1:{json.loads(line)['port']}"
        prom_proc, url = start_prometheus(root, target)
        procs.append(prom_proc)
        # Every deployment's series scraped across the window, with a margin: increase() needs
        # samples over the whole window to see its traffic.
        need, started = args.window + 5, time.monotonic()
        deadline = started + need + 60
        while True:
            ready = scalar(url, f'count(count_over_time(dockyard_monitor_requests_total{{outcome="counted"}}'
                                f'[{need}s]) >= {need - 2})')
            if ready >= args.deployments:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ready:.0f} of {args.deployments} deployments have {need - 2} samples "
                                   f"after {time.monotonic() - started:.0f}s")
            time.sleep(1)
        series = prom_metric(url, "prometheus_tsdb_head_series")
        print(f"prometheus {url}: scraping {target} every 1s, {series:.0f} head series; ready after "
              f"{time.monotonic() - started:.0f}s", flush=True)
        asyncio.run(measure(args, url, prom_proc.pid))
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
