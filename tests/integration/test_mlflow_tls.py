"""An external MLflow over https whose certificate a private CA signed (docs/production-mlflow.md).

Real parts: the session's MLflow behind a real nginx that terminates TLS with a certificate
from a throw-away CA (tests/localcluster/pki.py), on the node address the Pods reach. The
operator trusts the CA through DOCKYARD_MLFLOW_CA_FILE; the trainer Pod and the serving Pods'
fetch-model through the ConfigMap DOCKYARD_MLFLOW_CA_CONFIGMAP of their namespace. The only
MLflow URL anyone is given is the https one, so training and serving can only succeed over TLS.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.test_serving_path import md, ready
from tests.integration.test_training_path import iris_setup, wait_phase
from tests.localcluster.pki import Pki
from tests.plugins.kube import KubeCluster, KubeEnv
from tests.plugins.mlflow_server import MlflowServer, free_port
from tests.plugins.operator import OperatorProcess
from tests.serving.nginx_process import NGINX

pytestmark = pytest.mark.integration

CA_CONFIGMAP = "mlflow-ca"


class TlsProxy:
    """nginx terminating TLS in front of an http upstream."""

    def __init__(self, upstream: str, host: str, workdir: Path) -> None:
        if NGINX is None:
            pytest.skip("nginx is not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(workdir / "pki")
        cert = self.pki.issue("mlflow", "mlflow", ips=(host,), server=True)
        self.port = free_port(host)
        self.url = f"https://{host}:{self.port}"
        conf = workdir / "nginx.conf"
        conf.write_text(f"""
pid {workdir}/nginx.pid;
events {{}}
http {{
  access_log {workdir}/access.log;
  client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi; uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;
  server {{
    listen {host}:{self.port} ssl;
    ssl_certificate {cert.cert};
    ssl_certificate_key {cert.key};
    client_max_body_size 0;
    location / {{ proxy_pass {upstream}; proxy_set_header Host $http_host; proxy_read_timeout 300s; }}
  }}
}}
""")
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        self.proc = subprocess.Popen([NGINX, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log"),
                                      "-g", directives], start_new_session=True)
        self.access_log = workdir / "access.log"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", verify=str(self.pki.ca.cert), timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"TLS proxy did not start: {(workdir / 'error.log').read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def tls_mlflow(mlflow_server: MlflowServer, tmp_path: Path) -> Iterator[TlsProxy]:
    proxy = TlsProxy(mlflow_server.uri, mlflow_server.host, tmp_path / "tls")
    yield proxy
    proxy.stop()


def test_training_and_serving_over_tls_with_a_private_ca(
    kube: KubeEnv, kube_cluster: KubeCluster, tls_mlflow: TlsProxy, tmp_path: Path
) -> None:
    ca = tls_mlflow.pki.ca.cert
    # Nobody trusts this CA by default: the setting is what makes it work.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_mlflow.url}/health", timeout=5)
    with pytest.raises(ssl.SSLError):
        ssl.create_default_context().wrap_socket(
            __import__("socket").create_connection((urlsplit(tls_mlflow.url).hostname, tls_mlflow.port), 5),
            server_hostname=urlsplit(tls_mlflow.url).hostname)

    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CA_CONFIGMAP},
                "data": {"ca.crt": ca.read_text()}})
    operator = OperatorProcess(
        kube_cluster.operator_kubeconfig(), tls_mlflow.url, tmp_path / "operator", namespaces=[kube.namespace],
        extra_env={"DOCKYARD_MLFLOW_CA_FILE": str(ca), "DOCKYARD_MLFLOW_CA_CONFIGMAP": CA_CONFIGMAP},
    ).start()
    try:
        assert operator.liveness()  # its MLflow ping went through TLS
        iris_setup(kube, model="tls-iris")
        tr = wait_phase(kube, "TrainingRun", "iris-rf", ("Succeeded", "Rejected", "Failed"), timeout=300)
        assert tr["status"]["phase"] == "Succeeded", tr["status"]
        job = kube.get("Job", tr["status"]["jobName"])
        assert job is not None
        pod = job["spec"]["template"]["spec"]
        (train,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in train["env"]}
        assert env["MLFLOW_TRACKING_URI"] == tls_mlflow.url
        assert env["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/etc/dockyard/mlflow-ca/ca.crt"
        assert any(v.get("configMap", {}).get("name") == CA_CONFIGMAP for v in pod["volumes"])

        kube.apply(md("tls-iris", [{"name": "main", "version": "1", "weight": 100}]))
        ready(kube, timeout=240)  # fetch-model downloaded version 1 over TLS
        # The trainer and fetch-model Pods came from their own addresses, not the operator's.
        clients = {line.split()[0] for line in tls_mlflow.access_log.read_text().splitlines()}
        pod_ips = {p["status"].get("podIP") for p in kube.list("Pod")} - {None}
        assert clients & pod_ips, (clients, pod_ips)
    finally:
        operator.stop()
