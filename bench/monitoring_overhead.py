"""Benchmark of drift monitoring's cost on the request path (not a test).

    .venv/bin/python bench/monitoring_overhead.py [--rate 200] [--seconds 30] [--rows 1]

One iris version trained with `dockyard train` and registered in a real MLflow server, fetched
twice with `dockyard fetch-model`: one copy served by the monitored runtime
(dockyard.runtime.monitored.MonitoredMLflowRuntime, what fetch-model picks for a version with
a reference profile), the other by the plain mlserver_mlflow runtime (its model-settings.json
rewritten). Two real MLServer processes (`dockyard serve`). Then an open-loop load of
`--rate` V2 requests per second in total, alternating between the two servers request by
request (so machine load hits both alike), for `--seconds`; p50/p99 latency per runtime, the
difference, and the monitored server's own count of the requests it counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from dockyard.runtime.fetch_model import MLSERVER_IMPLEMENTATION, MODEL_SETTINGS  # noqa: E402
from tests.plugins.mlflow_server import MlflowServer  # noqa: E402
from tests.runtime.helpers import (  # noqa: E402
    IRIS_SAMPLE_ROWS,
    fetch_model,
    free_port,
    start_serving_process,
    stop_process,
    train_and_register,
    v2_infer_payload,
)

sys.path.insert(0, str(Path(__file__).parent))
from _harness import percentile, print_header  # noqa: E402

MODEL = "bench-monitoring"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, default=200.0, help="requests per second, both servers together")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rows", type=int, default=1, help="rows per request")
    args = p.parse_args()
    print_header("bench/monitoring_overhead.py", vars(args))
    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-monitoring-"))
    server = MlflowServer(root / "mlflow")
    (root / "mlflow").mkdir()
    server.start()
    procs = []
    try:
        version = train_and_register(server.uri, MODEL, n_estimators=50, workdir=root)
        urls: dict[str, str] = {}
        metrics: dict[str, str] = {}
        for runtime in ("monitored", "plain"):
            dest = fetch_model(server.uri, MODEL, version, root / runtime, variant=runtime)
            settings = json.loads((dest / MODEL_SETTINGS).read_text())
            if runtime == "plain":
                settings["implementation"] = MLSERVER_IMPLEMENTATION
                (dest / MODEL_SETTINGS).write_text(json.dumps(settings))
            print(f"{runtime}: implementation {settings['implementation']}")
            port, metrics_port = free_port(), free_port()
            procs.append(start_serving_process("mlserver", dest, port, metrics_port=metrics_port, variant=runtime,
                                               timeout=300))
            urls[runtime] = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
            metrics[runtime] = f"http://127.0.0.1:{metrics_port}/metrics"

        rows = (IRIS_SAMPLE_ROWS * (args.rows // len(IRIS_SAMPLE_ROWS) + 1))[:args.rows]
        payload = v2_infer_payload(rows)
        local = threading.local()

        def call(runtime: str) -> tuple[str, float, int]:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            start = time.perf_counter()
            status = session.post(urls[runtime], json=payload, timeout=30).status_code
            return runtime, time.perf_counter() - start, status

        for runtime in urls:  # warm up both
            for _ in range(50):
                call(runtime)
        total = int(args.rate * args.seconds)
        interval = 1.0 / args.rate
        futures = []
        with ThreadPoolExecutor(max_workers=32) as pool:
            begin = time.perf_counter()
            for i in range(total):  # open loop: requests leave on schedule, whatever the answers do
                delay = begin + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(call, "monitored" if i % 2 == 0 else "plain"))
            results = [f.result() for f in futures]
            achieved = total / (time.perf_counter() - begin)
        print(f"sent {total} requests ({args.rows} row(s) each) at {achieved:.0f}/s, half to each runtime")
        for runtime in ("plain", "monitored"):
            lat = [d * 1000 for r, d, _ in results if r == runtime]
            errors = sum(1 for r, _, s in results if r == runtime and s != 200)
            print(f"{runtime:>9}: p50 {percentile(lat, 50):.2f} ms  p99 {percentile(lat, 99):.2f} ms  "
                  f"errors {errors}")
        plain = [d for r, d, _ in results if r == "plain"]
        monitored = [d for r, d, _ in results if r == "monitored"]
        print(f"monitoring cost: p50 {1000 * (percentile(monitored, 50) - percentile(plain, 50)):+.2f} ms  "
              f"p99 {1000 * (percentile(monitored, 99) - percentile(plain, 99)):+.2f} ms")
        counted = [line for line in requests.get(metrics["monitored"], timeout=10).text.splitlines()
                   if line.startswith("dockyard_monitor_requests_total")]
        print("monitored server's counters: " + "; ".join(counted))
    finally:
        for proc in procs:
            stop_process(proc)
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
