"""A real Prometheus (Debian's /usr/bin/prometheus 2.42) scraping the serving Pods of the test
cluster, as the chart's PodMonitor has a Prometheus Operator scrape them.

Fixture:
  prometheus   session-scoped :class:`PrometheusServer` (.url, .query(), .targets()): on
               loopback, a fresh TSDB in a temp dir, scrape interval 1 s. Started on first use
               (about a second), stopped at the session's end.

Debian builds Prometheus without ``kubernetes_sd_configs`` (client-go is not packaged), so Pods
are discovered through ``http_sd_configs`` from :class:`PodDiscovery`, which lists every Pod
of the cluster on each refresh and describes each container port with the meta labels
``kubernetes_sd_configs`` (role pod) gives it. The relabelling then runs in Prometheus as it
would there: derived from the chart's own rendered PodMonitor (selector, port, path,
relabelings) plus the labels the Prometheus Operator adds (``namespace``, ``pod``,
``container``), so a query that works here works on the PodMonitor's series.
Needs the local control plane: Pod IPs are routed from this machine there (``dockyard0``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest
import requests
import yaml
from kubernetes import config as k8s_config

from tests.plugins.kube import KubeCluster
from tests.plugins.mlflow_server import free_port
from tests.processes import stop_process

PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_INTERVAL_SECONDS = 1
JOB = "dockyard-serving"


def _camel_to_snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _meta_label(kind: str, label: str) -> str:
    """A Pod label's discovery meta label, e.g. dockyard.dev/kind -> ..._label_dockyard_dev_kind."""
    return f"__meta_kubernetes_pod_{kind}_" + "".join(c if c.isalnum() else "_" for c in label)


def _pod_meta(pod: dict[str, Any]) -> dict[str, str]:
    meta, status = pod["metadata"], pod.get("status") or {}
    labels = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_ip": status.get("podIP", ""),
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_node_name": (pod.get("spec") or {}).get("nodeName", ""),
        "__meta_kubernetes_pod_uid": meta.get("uid", ""),
    }
    for key, value in (meta.get("labels") or {}).items():
        labels[_meta_label("label", key)] = value
        labels[_meta_label("labelpresent", key)] = "true"
    return labels


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """HTTP SD target groups for `pods`: one per container port of a Pod with an IP, with the
    meta labels of kubernetes_sd_configs role pod."""
    groups = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        base = _pod_meta(pod)
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **base,
                    "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                }})
    return groups


class HttpServiceDiscovery:
    """A Prometheus HTTP service discovery endpoint: ``targets()`` on every refresh."""

    def __init__(self) -> None:
        discovery = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    body, code = json.dumps(discovery.targets()).encode(), 200
                except Exception as exc:  # Prometheus keeps the last good targets and logs this
                    body, code = str(exc).encode(), 500
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/targets"
        self.thread = threading.Thread(target=self.server.serve_forever, name="prometheus-http-sd", daemon=True)

    def targets(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PodDiscovery(HttpServiceDiscovery):
    """HTTP service discovery listing the cluster's Pods on every request."""

    def __init__(self, kubeconfig: Path) -> None:
        # Its own client: requests come on the server's threads, concurrently with the tests'.
        self.api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        super().__init__()

    def targets(self) -> list[dict[str, Any]]:
        return pod_targets(self.pods())

    def pods(self) -> list[dict[str, Any]]:
        method, url, headers, body, post = self.api.param_serialize(
            method="GET", resource_path="/api/v1/pods", header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, header_params=headers, body=body, post_params=post, _request_timeout=10)
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"list pods: HTTP {resp.status}: {data[:200]!r}")
        return list(json.loads(data)["items"])

    def stop(self) -> None:
        super().stop()
        self.api.close()


def scrape_config_from_podmonitor(podmonitor: dict[str, Any], sd_url: str) -> dict[str, Any]:
    """What the Prometheus Operator generates for a PodMonitor with one endpoint (the parts the
    chart's PodMonitor uses): keep Pods matching its selector and the named container port, add
    namespace/pod/container, then the endpoint's own relabelings."""
    spec = podmonitor["spec"]
    (endpoint,) = spec["podMetricsEndpoints"]
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)", "action": "drop"},
    ]
    for key, value in sorted((spec["selector"].get("matchLabels") or {}).items()):
        relabel.append({"source_labels": [_meta_label("label", key), _meta_label("labelpresent", key)],
                        "regex": f"({value});true", "action": "keep"})
    for expr in spec["selector"].get("matchExpressions") or []:
        assert expr["operator"] == "Exists", f"translate {expr} too"
        relabel.append({"source_labels": [_meta_label("labelpresent", expr["key"])], "regex": "true",
                        "action": "keep"})
    relabel += [
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"], "action": "keep"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]
    relabel += [{_camel_to_snake(k): v for k, v in r.items()} for r in endpoint.get("relabelings") or []]
    return {
        "job_name": JOB,
        "metrics_path": endpoint.get("path", "/metrics"),
        "http_sd_configs": [{"url": sd_url, "refresh_interval": f"{SCRAPE_INTERVAL_SECONDS}s"}],
        "relabel_configs": relabel,
    }


def chart_serving_podmonitor() -> dict[str, Any]:
    from tests.chart import chartlib

    objects = chartlib.render({"metrics": {"servingPodMonitor": {"enabled": True}}})
    return next(o for o in objects if o["kind"] == "PodMonitor")


class PrometheusServer:
    def __init__(self, root: Path, kubeconfig: Path) -> None:
        self.root = root
        self.discovery = PodDiscovery(kubeconfig)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = root / "prometheus.yml"
        self.log_path = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s", "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
                       "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s"},
            "scrape_configs": [scrape_config_from_podmonitor(chart_serving_podmonitor(), self.discovery.url)],
        }

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self.discovery.start()
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.discovery.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result list (vector samples); raises on an error answer."""
        r = requests.post(f"{self.url}/api/v1/query", data={"query": promql}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", body
        return list(body["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        body = requests.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=10).json()
        return list(body["data"]["activeTargets"])


@pytest.fixture(scope="session")
def prometheus(kube_cluster: KubeCluster) -> Iterator[PrometheusServer]:
    if kube_cluster.kind != "controlplane":
        pytest.skip("scrapes Pod IPs from this machine: needs the local control plane")
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus (.ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="dockyard-prometheus-"))
    server = PrometheusServer(root, kube_cluster.kubeconfig).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
