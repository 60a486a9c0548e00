"""The real operator, run as a separate process (`dockyard operator`) for integration tests.

Fixtures:
  operator_factory  build :class:`OperatorProcess` objects (not started) for the test's
                    namespace, pointed at the test cluster and MLflow server.
  operator          one started operator watching the test's namespace; stopped afterwards.

A separate process is what lets fault tests SIGKILL it at any instant and start it again,
exactly as a crashed Pod would be restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.mlflowproxy import MlflowProxy
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer, free_port

VENV_BIN = Path(sys.executable).parent


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        mlflow_uri: str,
        workdir: Path,
        *,
        namespaces: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        mlflow_uri_for_pods: str | None = None,
        election: list[str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.mlflow_uri = mlflow_uri
        self.mlflow_uri_for_pods = mlflow_uri_for_pods or mlflow_uri
        self.workdir = workdir
        self.namespaces = namespaces or []
        self.extra_env = extra_env or {}
        self.election = election or ["--standalone"]  # or --leader-elect and its options
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "operator.log"
        self.starts = 0

    def command(self) -> list[str]:
        scope: list[str] = []
        for ns in self.namespaces:
            scope += ["--namespace", ns]
        if not scope:
            scope = ["--all-namespaces"]
        return [
            str(VENV_BIN / "dockyard"),
            "operator",
            *scope,
            *self.election,
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--metrics-port",
            str(self.metrics_port),
            "--verbose",
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "DOCKYARD_MLFLOW_TRACKING_URI": self.mlflow_uri,
                "DOCKYARD_MLFLOW_TRACKING_URI_FOR_PODS": os.environ.get(
                    "DOCKYARD_TEST_MLFLOW_URI_FOR_PODS", self.mlflow_uri_for_pods
                ),
                "DOCKYARD_RUNTIME_IMAGE": os.environ.get(
                    "DOCKYARD_TEST_RUNTIME_IMAGE", "dockyard-runtime:test"
                ),
                "DOCKYARD_WORKERS": "8",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        log.write(f"\n===== start {self.starts + 1} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        self.wait_live(timeout)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_live(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"operator exited early:\n{self.log_tail()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"operator not live after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful anything — a crashed Pod."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def liveness(self) -> dict[str, Any]:
        return dict(requests.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=5).json())

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def error_lines(self) -> list[str]:
        """Tracebacks and ERROR lines: an operator that crashes on input shows up here."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if " ERROR " in line or line.startswith("Traceback")]


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def mlflow_proxy(mlflow_server: MlflowServer) -> Iterator[MlflowProxy]:
    """The operator's view of MLflow: counts calls, can fail chosen endpoints."""
    proxy = MlflowProxy(mlflow_server.uri).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def operator_factory(
    kube: KubeEnv, mlflow_server: MlflowServer, mlflow_proxy: MlflowProxy, tmp_path: Path
) -> Iterator[OperatorFactory]:
    made: list[OperatorProcess] = []

    def make(**kwargs: Any) -> OperatorProcess:
        kwargs.setdefault("namespaces", [kube.namespace])
        kwargs.setdefault("mlflow_uri_for_pods", mlflow_server.uri)
        proc = OperatorProcess(
            kube.cluster.operator_kubeconfig(), mlflow_proxy.uri, tmp_path / f"operator-{len(made)}", **kwargs
        )
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()


@pytest.fixture
def operator(operator_factory: OperatorFactory) -> OperatorProcess:
    return operator_factory().start()
