"""A real `mlflow server` on loopback for the tests (sqlite backend, proxied artifacts).

Fixtures:
  mlflow_server   session-scoped; an :class:`MlflowServer` with .uri, .stop(), .start(),
                  .restart(), .client(), .wait_ready(). Tests may stop() it to simulate an
                  outage and start() it again: same port, same data. A test that leaves it
                  stopped gets it restarted right after that test.
  mlflow_uri      function-scoped shortcut: the running server's URI.

  mlflow_auth_server
                  session-scoped, started on first use; an :class:`MlflowServer` running
                  MLflow's basic-auth app exactly as the chart's embedded MLflow does (the
                  chart's ini settings and its bootstrap script, charts/dockyard/files/), with
                  generated admin and operator passwords in ``.auth``.

Environment: DOCKYARD_TEST_MLFLOW_URI=http://... uses an external server instead (stop/start
then raise).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.processes import stop_process

VENV_BIN = Path(sys.executable).parent
CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "dockyard" / "files"
OPERATOR_USER = "dockyard-operator"  # the chart's values.mlflow.auth.operatorUsername default


@dataclass(frozen=True)
class AuthUsers:
    """The two admin users the chart's Secret holds (see mlflow-auth-bootstrap.py)."""

    admin_password: str
    operator_password: str
    flask_secret_key: str
    admin_username: str = "admin"
    operator_username: str = OPERATOR_USER

    @classmethod
    def generate(cls) -> AuthUsers:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(32))

    def operator_env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.operator_username, "MLFLOW_TRACKING_PASSWORD": self.operator_password}

    def admin(self) -> tuple[str, str]:
        return self.admin_username, self.admin_password


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """One `mlflow server` process; restartable on the same port with the same data."""

    def __init__(self, root: Path, port: int | None = None, *, workers: int = 1, host: str = "127.0.0.1",
                 auth: AuthUsers | None = None) -> None:
        self.root = root
        self.auth = auth
        self.host = host
        self.port = port or free_port(host)
        self.workers = workers
        self.db = root / "mlflow.db"
        self.artifacts = root / "artifacts"
        self.log_path = root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.external = False

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        mlflow = VENV_BIN / "mlflow"
        exe = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
        return [
            *exe,
            "server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            str(self.artifacts),
            "--serve-artifacts",
            "--workers",
            str(self.workers),
            *(["--app-name", "basic-auth"] if self.auth else []),
        ]

    def auth_env(self) -> dict[str, str]:
        """What the chart's MLflow Pod gets from its ConfigMap and Secret."""
        if self.auth is None:
            return {}
        ini = self.root / "basic_auth.ini"
        ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{self.root}/basic_auth.db\n"
                       f"admin_username = {self.auth.admin_username}\n")
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.auth.flask_secret_key,
            "MLFLOW_AUTH_ADMIN_USERNAME": self.auth.admin_username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.auth.admin_password,
            "MLFLOW_OPERATOR_USERNAME": self.auth.operator_username,
            "MLFLOW_OPERATOR_PASSWORD": self.auth.operator_password,
        }

    def start(self, timeout: float = 90.0) -> None:
        if self.external:
            raise RuntimeError("cannot start an external MLflow server")
        if self.running():
            return
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        # No background job runner (huey workers) and no telemetry: faster start, no egress.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        env.setdefault("DO_NOT_TRACK", "true")
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            env.pop(key, None)
        env.update(self.auth_env())
        if self.auth is not None:  # the chart's init container, then the server
            subprocess.run([sys.executable, str(CHART_FILES / "mlflow-auth-bootstrap.py")], cwd=self.root, env=env,
                           stdout=self._log, stderr=subprocess.STDOUT, check=True, timeout=120)
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # so stop() can end the server and its workers together
        )
        self.wait_ready(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            r = requests.get(f"{self.uri}/health", timeout=2)
            return r.status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.2)
        raise TimeoutError(f"mlflow server not healthy after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (and its workers); the port is free when this returns."""
        if self.external:
            raise RuntimeError("cannot stop an external MLflow server")
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._port_in_use():
            time.sleep(0.1)

    def restart(self, timeout: float = 90.0) -> None:
        self.stop()
        self.start(timeout)

    def _port_in_use(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            return s.connect_ex((self.host, self.port)) == 0

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _host_for(config: pytest.Config) -> str:
    """Loopback, or on the local control plane the node's address, which Pods (in their own
    network namespaces) can reach and nothing outside this machine can."""
    from tests.plugins.kube import cluster_kind

    if cluster_kind(config) != "controlplane":
        return "127.0.0.1"
    from tests.localcluster import network

    layout = network.NetworkLayout()
    network.setup_node(layout)
    return layout.node_ip


@contextlib.contextmanager
def _own_server(prefix: str, host: str, auth: AuthUsers | None = None) -> Iterator[MlflowServer]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = MlflowServer(root, host=host, auth=auth)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(pytestconfig: pytest.Config) -> Iterator[MlflowServer]:
    """The shared MLflow server for the whole session."""
    external = os.environ.get("DOCKYARD_TEST_MLFLOW_URI")
    if external:
        server = MlflowServer(Path(tempfile.mkdtemp(prefix="dockyard-mlflow-")))
        server.external = True
        server.host, _, port = external.removeprefix("http://").rstrip("/").partition(":")
        server.port = int(port or 80)
        yield server
        return
    if not (VENV_BIN / "mlflow").exists() and shutil.which("mlflow") is None:
        pytest.skip("mlflow is not installed (pip install -e '.[runtime]')")
    with _own_server("dockyard-mlflow-", _host_for(pytestconfig)) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_auth_server(pytestconfig: pytest.Config) -> Iterator[MlflowServer]:
    """An MLflow with authentication, set up as the chart sets up its embedded one."""
    if os.environ.get("DOCKYARD_TEST_MLFLOW_URI"):
        pytest.skip("DOCKYARD_TEST_MLFLOW_URI: the auth tests start their own MLflow")
    with _own_server("dockyard-mlflow-auth-", _host_for(pytestconfig), AuthUsers.generate()) as server:
        yield server


@pytest.fixture(autouse=True)
def _mlflow_server_restart_after_outage(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stopped the shared server (outage simulation) gets it back afterwards."""
    yield
    if "mlflow_server" in request.fixturenames:
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        if not server.external and not server.running():
            server.start()


@pytest.fixture
def mlflow_uri(mlflow_server: MlflowServer) -> str:
    return mlflow_server.uri
