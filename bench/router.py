"""Benchmark of the builtin router (not a test): split error and added latency.

    .venv/bin/python bench/router.py [--requests 10000] [--latency-requests 1000] [--concurrency 8]

Sets up the real serving path on loopback: a real MLflow server, two model versions trained
and registered with `dockyard train`, fetched with `dockyard fetch-model`, served by two real
MLServer processes (`dockyard serve`), and nginx running the config rendered by the production
renderer at weights 80/20. Then:

1. split error: N V2 inference requests through the router (random split), observed share
   per variant vs the configured share, in percentage points (with the binomial standard
   deviation for scale);
2. router overhead: sequential V2 inference requests over one keep-alive connection, directly
   to the champion MLServer and through the router forced to the champion
   (`X-Dockyard-Variant`), interleaved one by one so machine load hits both alike; p50/p99
   of each and the difference.
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

MODEL = "iris-bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10000, help="requests for the split measurement")
    p.add_argument("--latency-requests", type=int, default=1000, help="sequential requests per path for latency")
    p.add_argument("--concurrency", type=int, default=8, help="client threads for the split measurement")
    p.add_argument("--weights", default="80,20", help="champion,challenger weights")
    args = p.parse_args()
    if NGINX is None:
        print("nginx is not installed (apt-get install nginx-light)", file=sys.stderr)
        return 2
    w_champion, w_challenger = (int(x) for x in args.weights.split(","))
    weights = {"champion": w_champion, "challenger": w_challenger}

    print("== parameters")
    print(f"requests={args.requests} latency_requests={args.latency_requests} concurrency={args.concurrency} "
          f"weights={weights}")
    print(f"os.cpu_count()={os.cpu_count()} loadavg(1m)={os.getloadavg()[0]:.1f} nginx={NGINX} "
          f"python={sys.version.split()[0]}")

    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    server = MlflowServer(root / "mlflow")
    (root / "mlflow").mkdir()
    procs = []
    router = None
    t0 = time.monotonic()
    try:
        server.start()
        with ThreadPoolExecutor(2) as pool:
            futures = {v: pool.submit(train_and_register, server.uri, MODEL, n_estimators=n,
                                          workdir=root / f"t-{v}", experiment_name=f"bench-{v}")
                       for v, n in (("champion", 5), ("challenger", 25))}
            versions = {v: f.result() for v, f in futures.items()}

        def serve(variant: str) -> tuple[str, int]:
            dest = fetch_model(server.uri, MODEL, versions[variant], root / variant, variant=variant)
            port = free_port()
            procs.append(start_serving_process("mlserver", dest, port, variant=variant, timeout=300))
            return variant, port

        with ThreadPoolExecutor(2) as pool:
            ports = dict(pool.map(serve, weights))
        spec = ModelDeploymentSpec.model_validate({
            "modelName": MODEL,
            "variants": [{"name": v, "version": versions[v], "weight": w} for v, w in weights.items()],
        })
        router = NginxRouter(spec, {v: f"127.0.0.1:{port}" for v, port in ports.items()}, versions, root / "nginx")
        print(f"setup (mlflow, 2x train, 2x fetch, 2x MLServer, nginx): {time.monotonic() - t0:.1f}s")

        payload = v2_infer_payload()
        local = threading.local()

        def session() -> requests.Session:
            if not hasattr(local, "s"):
                local.s = requests.Session()
            return local.s

        def infer(base: str, headers: dict[str, str] | None = None) -> requests.Response:
            r = session().post(f"{base}/v2/models/{MODEL}/infer", json=payload, headers=headers or {}, timeout=30)
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

        # 2. router overhead (interleaved, one keep-alive connection per path)
        direct_url = f"http://127.0.0.1:{ports['champion']}"
        force = {"X-Dockyard-Variant": "champion"}
        for _ in range(100):  # warm-up: connections, MLServer, nginx keepalive pool
            infer(direct_url)
            infer(router.url, force)
        direct: list[float] = []
        routed: list[float] = []
        for _ in range(args.latency_requests):
            s = time.perf_counter()
            infer(direct_url)
            direct.append((time.perf_counter() - s) * 1000)
            s = time.perf_counter()
            r = infer(router.url, force)
            routed.append((time.perf_counter() - s) * 1000)
            assert r.headers["X-Dockyard-Variant"] == "champion"
        print(f"\n== latency, {args.latency_requests} sequential V2 inference requests per path (ms)")
        for name, values in (("direct", direct), ("router", routed)):
            print(f"  {name:<7} p50 {percentile(values, 50):7.2f}  p99 {percentile(values, 99):7.2f}  "
                  f"mean {statistics.fmean(values):7.2f}")
        print(f"  router overhead: p50 {percentile(routed, 50) - percentile(direct, 50):+.2f} ms, "
              f"p99 {percentile(routed, 99) - percentile(direct, 99):+.2f} ms")
        diffs = [r - d for r, d in zip(routed, direct, strict=True)]
        print(f"  paired difference (router - direct, same iteration): median {statistics.median(diffs):+.2f} ms")
        print(f"\nloadavg(1m) at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if router is not None:
            router.stop()
        for proc in procs:
            stop_process(proc)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
