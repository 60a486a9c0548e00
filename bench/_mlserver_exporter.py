"""A stand-in for the `metrics` port of many MLServer Pods (bench/rollout_analysis.py; not a benchmark).

    python bench/_mlserver_exporter.py --port N [--rps 10] [--error-rate 0.001]
        [--latency-median 0.012] [--latency-sigma 0.6]

One HTTP server, one exposition per Pod: ``GET /metrics?pod=<name>&model=<registered model>``
answers what MLServer 1.7.1 serves on its metrics port, family for family and label for label
(captured from a real ``mlserver start`` with one model, three good inference requests and one
that raised): prometheus_client's process and GC collectors, ``model_infer_request_*``,
starlette_exporter's ``rest_server_requests_total`` / ``_created`` / ``_in_progress`` and the
``rest_server_request_duration_seconds`` histogram (its default buckets, 5 ms .. 10 s), for
``POST /v2/models/{model_name}/infer`` answered 200 and 500, plus the kubelet's probes
(``GET /v2/health/ready`` every 5 s, ``/v2/health/live`` every 10 s, as the operator's
serving Deployment declares them). Prometheus adds ``namespace``, ``modeldeployment``,
``variant``, ``model_version`` and ``pod`` by relabelling, as for real Pods.

What is synthetic is the numbers: each Pod, from the first scrape that names it, serves
``--rps`` inference requests per second, of which ``--error-rate`` answer 500, with log-normal
latencies (median ``--latency-median`` s, shape ``--latency-sigma``); counters and histogram
buckets are the running totals of that stream (rate x elapsed, times each bucket's CDF, rounded
down and to the nearest respectively, so every series is monotonic, as a counter must be). Nothing serves inference.

A separate process, so its CPU is neither the benchmark's nor the operator's.
"""

from __future__ import annotations

import argparse
import math
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
INFER_PATH = "/v2/models/{model_name}/infer"
PROBES = (("/v2/health/ready", 1 / 5), ("/v2/health/live", 1 / 10))  # path, requests per second
PROBE_SECONDS = 0.0008  # a health probe's own latency (all in the first bucket)
PROCESS_HELP = {
    "process_virtual_memory_bytes": "Virtual memory size in bytes.",
    "process_resident_memory_bytes": "Resident memory size in bytes.",
    "process_start_time_seconds": "Start time of the process since unix epoch in seconds.",
    "process_cpu_seconds_total": "Total user and system CPU time spent in seconds.",
    "process_open_fds": "Number of open file descriptors.",
    "process_max_fds": "Maximum number of open file descriptors.",
}
GRPC_FAMILIES = (
    ("handled_total", "counter",
     "Total number of RPCs completed on the server, regardless of success or failure."),
    ("started_total", "counter", "Total number of RPCs started on the server."),
    ("msg_received_total", "counter", "Total number of RPC stream messages received on the server."),
    ("msg_sent_total", "counter", "Total number of gRPC stream messages sent by the server."),
    ("handling_seconds", "histogram", "Histogram of response latency (seconds) of gRPC that had been "
     "application-level handled by the server."),
    ("handled_latency_seconds", "histogram", "Histogram of response latency (seconds) of gRPC that had been "
     "application-level handled by the server"),
)


class Traffic:
    def __init__(self, rps: float, error_rate: float, median: float, sigma: float) -> None:
        self.rps = rps
        self.error_rate = error_rate
        self.mu = math.log(median)
        self.sigma = sigma
        self.mean = math.exp(self.mu + sigma * sigma / 2)
        self.cdf = [self._cdf(le) for le in BUCKETS]
        self.first_seen: dict[str, float] = {}  # pod -> wall time of its first scrape
        self.started = time.time()

    def _cdf(self, x: float) -> float:
        return 0.5 * (1 + math.erf((math.log(x) - self.mu) / (self.sigma * math.sqrt(2))))

    def exposition(self, pod: str, model: str) -> str:
        now = time.time()
        born = self.first_seen.setdefault(pod, now - 1.0)
        # A per-Pod phase so that not every Pod's counters step in unison.
        elapsed = now - born + (zlib.crc32(pod.encode()) % 1000) / 1000
        total = self.rps * elapsed
        n500 = math.floor(total * self.error_rate)
        n200 = math.floor(total) - n500
        out: list[str] = []
        add = out.append
        gen = int(elapsed)
        add("# HELP python_gc_objects_collected_total Objects collected during gc")
        add("# TYPE python_gc_objects_collected_total counter")
        for g, k in enumerate((40, 5, 0)):
            add(f'python_gc_objects_collected_total{{generation="{g}"}} {2137.0 + k * gen}')
        add("# HELP python_gc_objects_uncollectable_total Uncollectable objects found during GC")
        add("# TYPE python_gc_objects_uncollectable_total counter")
        for g in range(3):
            add(f'python_gc_objects_uncollectable_total{{generation="{g}"}} 0.0')
        add("# HELP python_gc_collections_total Number of times this generation was collected")
        add("# TYPE python_gc_collections_total counter")
        for g, k in enumerate((6, 1, 0)):
            add(f'python_gc_collections_total{{generation="{g}"}} {303.0 + k * gen}')
        add("# HELP python_info Python platform information")
        add("# TYPE python_info gauge")
        add('python_info{implementation="CPython",major="3",minor="12",patchlevel="1",version="3.12.1"} 1.0')
        for name, kind, value in (
            ("process_virtual_memory_bytes", "gauge", 1.134649344e09),
            ("process_resident_memory_bytes", "gauge", 1.78552832e08),
            ("process_start_time_seconds", "gauge", round(born, 2)),
            ("process_cpu_seconds_total", "counter", round(1.01 + 0.002 * total, 2)),
            ("process_open_fds", "gauge", 26.0),
            ("process_max_fds", "gauge", 20000.0),
        ):
            add(f"# HELP {name} {PROCESS_HELP[name]}")
            add(f"# TYPE {name} {kind}")
            add(f"{name} {value}")
        mlabels = f'model="{model}",version="None"'
        created = f"{born:.7e}"
        for name, value in (("success", n200), ("failure", n500)):
            add(f"# HELP model_infer_request_{name}_total Model infer request {name} count")
            add(f"# TYPE model_infer_request_{name}_total counter")
            add(f"model_infer_request_{name}_total{{{mlabels}}} {float(value)}")
            add(f"# HELP model_infer_request_{name}_created Model infer request {name} count")
            add(f"# TYPE model_infer_request_{name}_created gauge")
            add(f"model_infer_request_{name}_created{{{mlabels}}} {created}")
        add("# HELP model_infer_request_duration Model infer request duration")
        add("# TYPE model_infer_request_duration summary")
        add(f"model_infer_request_duration_count{{{mlabels}}} {float(n200 + n500)}")
        add(f"model_infer_request_duration_sum{{{mlabels}}} {(n200 + n500) * self.mean * 0.2}")
        add("# HELP model_infer_request_duration_created Model infer request duration")
        add("# TYPE model_infer_request_duration_created gauge")
        add(f"model_infer_request_duration_created{{{mlabels}}} {created}")
        for family, kind, text in GRPC_FAMILIES:  # declared, no samples: this stand-in serves no gRPC
            add(f"# HELP grpc_server_{family} {text}")
            add(f"# TYPE grpc_server_{family} {kind}")

        # starlette_exporter: (method, path, status) -> (count, per-bucket counts, sum)
        series: list[tuple[str, str, str, int, list[int], float]] = []
        for code, n in (("200", n200), ("500", n500)):
            # Rounded, not floored: a CDF of 1 - 1e-9 must not leave a request beyond the last bucket.
            series.append(("POST", INFER_PATH, code, n, [math.floor(n * c + 0.5) for c in self.cdf], n * self.mean))
        for path, rate in PROBES:
            n = math.floor(rate * elapsed)
            series.append(("GET", path, "200", n, [n] * len(BUCKETS), n * PROBE_SECONDS))
        add("# HELP rest_server_requests_in_progress Total HTTP requests currently in progress")
        add("# TYPE rest_server_requests_in_progress gauge")
        for method in ("GET", "POST"):
            add(f'rest_server_requests_in_progress{{app_name="mlserver",method="{method}"}} 0.0')
        add("# HELP rest_server_requests_total Total HTTP requests")
        add("# TYPE rest_server_requests_total counter")
        for method, path, code, n, _, _ in series:
            add(f'rest_server_requests_total{{app_name="mlserver",method="{method}",path="{path}",'
                f'status_code="{code}"}} {float(n)}')
        add("# HELP rest_server_requests_created Total HTTP requests")
        add("# TYPE rest_server_requests_created gauge")
        for method, path, code, _, _, _ in series:
            add(f'rest_server_requests_created{{app_name="mlserver",method="{method}",path="{path}",'
                f'status_code="{code}"}} {created}')
        add("# HELP rest_server_request_duration_seconds HTTP request duration, in seconds")
        add("# TYPE rest_server_request_duration_seconds histogram")
        for method, path, code, n, buckets, total_seconds in series:
            rest = f'method="{method}",path="{path}",status_code="{code}"'
            for le, count in zip(BUCKETS, buckets, strict=True):
                add(f'rest_server_request_duration_seconds_bucket{{app_name="mlserver",le="{le}",{rest}}} '
                    f"{float(count)}")
            add(f'rest_server_request_duration_seconds_bucket{{app_name="mlserver",le="+Inf",{rest}}} {float(n)}')
            add(f'rest_server_request_duration_seconds_count{{app_name="mlserver",{rest}}} {float(n)}')
            add(f'rest_server_request_duration_seconds_sum{{app_name="mlserver",{rest}}} {total_seconds}')
        add("# HELP rest_server_request_duration_seconds_created HTTP request duration, in seconds")
        add("# TYPE rest_server_request_duration_seconds_created gauge")
        for method, path, code, _, _, _ in series:
            add(f'rest_server_request_duration_seconds_created{{app_name="mlserver",method="{method}",'
                f'path="{path}",status_code="{code}"}} {created}')
        return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rps", type=float, default=10.0, help="inference requests per second per Pod")
    p.add_argument("--error-rate", type=float, default=0.001, help="share of inference requests answered 500")
    p.add_argument("--latency-median", type=float, default=0.012, help="seconds")
    p.add_argument("--latency-sigma", type=float, default=0.6, help="log-normal shape")
    args = p.parse_args()
    traffic = Traffic(args.rps, args.error_rate, args.latency_median, args.latency_sigma)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus's scrape connections are

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path != "/metrics" or not query.get("pod"):
                body, code = b"GET /metrics?pod=NAME[&model=MODEL]\n", 404
            else:
                body = traffic.exposition(query["pod"][0], (query.get("model") or ["model"])[0]).encode()
                code = 200
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
