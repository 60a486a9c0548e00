"""Benchmark of the builtin router (not a test): split error and added latency.

    .venv/bin/python bench/router.py [--requests 10000] [--latency-requests 1000] [--concurrency 8]

Sets up the real serving path on loopback: a real MLflow server, two model versions trained
and registered with `dockyard train`, fetched with `dockyard fetch-model`, served by two real
MLServer processes (`dockyard serve`), and nginx running the config rendered by the production
renderer at weights 80/20. Then:

1. split error: N V2 inference requests through the router (random split), observed share
   per variant vs the configured share, in percentage points (with the binomial standard
   deviation for scale);
2. router overhead, without and with a shadow: sequential V2 inference requests, each path
   over its own keep-alive connection: directly to the champion MLServer, through the router
   forced to the champion (`X-Dockyard-Variant`), and through a second nginx whose config
   differs only by a shadow variant (default 10 %, served by the challenger's MLServer) and
   is forced to the champion as well. The three are interleaved one by one, in an order that
   rotates every iteration, so machine load and the shadow's mirrored copies (which run on
   the same cores) hit all paths alike; p50/p99 of each, the differences, and how many
   mirrored copies the shadow's MLServer counted (its own `rest_server_requests_total`).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from dockyard.api.modeldeployment import ModelDeploymentSpec  # noqa: E402
from tests.plugins.mlflow_server import MlflowServer  # noqa: E402
from tests.runtime.helpers import (  # noqa: E402
    fetch_model,
    free_port,
    start_serving_process,
    stop_process,
    train_and_register,
    v2_infer_payload,
)
from tests.serving.nginx_process import NGINX, NginxRouter  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from _harness import print_header  # noqa: E402

MODEL = "iris-bench"
SHADOW = "shadow"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def infer_requests_counted(metrics_url: str) -> float:
    """V2 inference requests (any status) an MLServer has counted itself, from its metrics port:
    the series ``dockyard.analysis`` reads for the built-in metrics."""
    total = 0.0
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("rest_server_requests_total{") and 'method="POST"' in line and "/infer" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10000, help="requests for the split measurement")
    p.add_argument("--latency-requests", type=int, default=1000, help="sequential requests per path for latency")
    p.add_argument("--concurrency", type=int, default=8, help="client threads for the split measurement")
    p.add_argument("--weights", default="80,20", help="champion,challenger weights")
    p.add_argument("--shadow-percent", type=int, default=10, help="share mirrored to the shadow variant (1..100)")
    args = p.parse_args()
    if NGINX is None:
        print("nginx is not installed (apt-get install nginx-light)", file=sys.stderr)
        return 2
    w_champion, w_challenger = (int(x) for x in args.weights.split(","))
    weights = {"champion": w_champion, "challenger": w_challenger}

    print_header("router", {**vars(args), "nginx": NGINX})

    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    server = MlflowServer(root / "mlflow")
    (root / "mlflow").mkdir()
    procs = []
    routers: list[NginxRouter] = []
    t0 = time.monotonic()
    try:
        server.start()
        with ThreadPoolExecutor(2) as pool:
            futures = {v: pool.submit(train_and_register, server.uri, MODEL, n_estimators=n,
                                          workdir=root / f"t-{v}", experiment_name=f"bench-{v}")
                       for v, n in (("champion", 5), ("challenger", 25))}
            versions = {v: f.result() for v, f in futures.items()}
        metrics_ports = {v: free_port() for v in weights}

        def serve(variant: str) -> tuple[str, int]:
            dest = fetch_model(server.uri, MODEL, versions[variant], root / variant, variant=variant)
            port = free_port()
            procs.append(start_serving_process("mlserver", dest, port, variant=variant, timeout=300,
                                               metrics_port=metrics_ports[variant]))
            return variant, port

        with ThreadPoolExecutor(2) as pool:
            ports = dict(pool.map(serve, weights))
        live = [{"name": v, "version": versions[v], "weight": w} for v, w in weights.items()]
        upstreams = {v: f"127.0.0.1:{port}" for v, port in ports.items()}
        # Forcing is off by default; the bench forces the champion through both routers.
        forcing = {"allowVariantForcing": True}
        spec = ModelDeploymentSpec.model_validate({"modelName": MODEL, "variants": live, "router": forcing})
        router = NginxRouter(spec, upstreams, versions, root / "nginx")
        routers.append(router)
        # The same router plus a shadow variant, served by the challenger's MLServer.
        shadow_spec = ModelDeploymentSpec.model_validate({"modelName": MODEL, "variants": [
            *live, {"name": SHADOW, "version": versions["challenger"], "shadow": args.shadow_percent}],
            "router": forcing})
        shadowed = NginxRouter(shadow_spec, {**upstreams, SHADOW: upstreams["challenger"]},
                               {**versions, SHADOW: versions["challenger"]}, root / "nginx-shadow")
        routers.append(shadowed)
        print(f"setup (mlflow, 2x train, 2x fetch, 2x MLServer, 2x nginx): {time.monotonic() - t0:.1f}s")

        payload = v2_infer_payload()
        local = threading.local()

        def session() -> requests.Session:
            if not hasattr(local, "s"):
                local.s = requests.Session()
            return local.s

        def infer(base: str, headers: dict[str, str] | None = None,
                  s: requests.Session | None = None) -> requests.Response:
            r = (s or session()).post(f"{base}/v2/models/{MODEL}/infer", json=payload, headers=headers or {},
                                      timeout=30)
            r.raise_for_status()
            return r

        # 1. split error
        t = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            counts = collections.Counter(
                pool.map(lambda _: infer(router.url).headers["X-Dockyard-Variant"], range(args.requests)))
        elapsed = time.monotonic() - t
        total_w = sum(weights.values())
        print(f"\n== split over {args.requests} V2 inference requests ({elapsed:.1f}s, "
              f"{args.requests / elapsed:.0f} req/s)")
        worst = 0.0
        for v, w in weights.items():
            expected = 100.0 * w / total_w
            observed = 100.0 * counts[v] / args.requests
            sd = 100.0 * math.sqrt((w / total_w) * (1 - w / total_w) / args.requests)
            worst = max(worst, abs(observed - expected))
            print(f"  {v:<11} configured {expected:6.2f}%  observed {observed:6.2f}%  "
                  f"error {observed - expected:+.2f} pts  (binomial sd {sd:.2f} pts)")
        print(f"  max abs split error: {worst:.2f} percentage points")

        # 2. router overhead without and with a shadow (interleaved, one keep-alive connection per path)
        force = {"X-Dockyard-Variant": "champion"}
        shadow_label = f"router+{args.shadow_percent}% shadow"
        paths = {
            "direct": (f"http://127.0.0.1:{ports['champion']}", {}),
            "router": (router.url, force),
            shadow_label: (shadowed.url, force),
        }
        sessions = {name: requests.Session() for name in paths}
        for _ in range(100):  # warm-up: connections, MLServer, nginx keepalive pools
            for name, (url, headers) in paths.items():
                infer(url, headers, sessions[name])
        shadow_metrics = f"http://127.0.0.1:{metrics_ports['challenger']}/metrics"
        mirrored_before = infer_requests_counted(shadow_metrics)
        latency: dict[str, list[float]] = {name: [] for name in paths}
        names = list(paths)
        for i in range(args.latency_requests):
            for name in names[i % 3:] + names[:i % 3]:
                url, headers = paths[name]
                started = time.perf_counter()
                r = infer(url, headers, sessions[name])
                latency[name].append((time.perf_counter() - started) * 1000)
                assert name == "direct" or r.headers["X-Dockyard-Variant"] == "champion"
        # Mirrors still in flight when the last answer arrived: wait until the count stops moving.
        mirrored, previous, deadline = infer_requests_counted(shadow_metrics), -1.0, time.monotonic() + 15
        while mirrored != previous and time.monotonic() < deadline:
            time.sleep(0.5)
            previous, mirrored = mirrored, infer_requests_counted(shadow_metrics)
        print(f"\n== latency, {args.latency_requests} sequential V2 inference requests per path, interleaved (ms)")
        for name, values in latency.items():
            print(f"  {name:<20} p50 {percentile(values, 50):7.2f}  p99 {percentile(values, 99):7.2f}  "
                  f"mean {statistics.fmean(values):7.2f}")
        direct = latency["direct"]
        for name in ("router", shadow_label):
            values = latency[name]
            diffs = [a - b for a, b in zip(values, direct, strict=True)]
            print(f"  {name} overhead vs direct: p50 {percentile(values, 50) - percentile(direct, 50):+.2f} ms, "
                  f"p99 {percentile(values, 99) - percentile(direct, 99):+.2f} ms; paired median "
                  f"{statistics.median(diffs):+.2f} ms")
        plain, shadow = latency["router"], latency[shadow_label]
        diffs = [a - b for a, b in zip(shadow, plain, strict=True)]
        print(f"  shadow's cost ({shadow_label} - router): p50 {percentile(shadow, 50) - percentile(plain, 50):+.2f} ms, "
              f"p99 {percentile(shadow, 99) - percentile(plain, 99):+.2f} ms; paired median "
              f"{statistics.median(diffs):+.2f} ms")
        n_mirrored = mirrored - mirrored_before
        print(f"  mirrored copies counted by the shadow's MLServer: {n_mirrored:.0f} of {args.latency_requests} "
              f"({100 * n_mirrored / args.latency_requests:.1f} %, configured {args.shadow_percent} %)")
        print(f"\nloadavg(1m) at the end: {os.getloadavg()[0]:.1f}")
    finally:
        for nginx in routers:
            nginx.stop()
        for proc in procs:
            stop_process(proc)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
