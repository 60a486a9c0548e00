"""The real Kubeflow Trainer, JobSet and KubeRay controllers, run as host processes against the
local control plane (built from hack/engines and hack/engines/kuberay by
:mod:`tests.localcluster.engines`).

Each runs with the cluster's admin kubeconfig, leader election off, metrics off, and its
health probes and webhook server on free loopback ports, served with a certificate from a CA
in the test's directory. The engines' own webhook configurations (from the pinned modules'
manifests: Trainer's manifests/base/webhook, JobSet's config/components/webhook) are
registered in the API server for the fixture's lifetime, each webhook pointed at its
manager's loopback URL and limited to the test's namespace: objects pass through the engines'
real defaulting and validation (JobSet's controller relies on its defaulting webhook; without
it a JobSet from Trainer panics the reconciler on an unset spec.network). Certificate
management (which would write Secrets and patch webhook configurations) is off in both.

Fixture:
  engine_controllers   function scope: both managers started and ready (``/readyz``), their
                       webhooks registered for the test's namespace, the engines' CRDs and
                       Trainer's ``torch-distributed`` ClusterTrainingRuntime present; webhook
                       configurations deleted, then managers stopped (SIGTERM, then SIGKILL). Yields
                       :class:`EngineControllers` (log paths, ``log_tail``).
  kuberay_controller   function scope: KubeRay's ``ray-operator`` v1.6.2 watching only the test's
                       namespace (leader election off, metrics and health probes on free loopback
                       ports, ``--use-kubernetes-proxy``: a host process cannot resolve cluster DNS,
                       so it reaches the head's dashboard through the API server's Service proxy;
                       no webhooks, KubeRay's are off by default), ready on ``/readyz``; the
                       engines' CRDs (RayService's too: the manager exits without it) present,
                       and the Ray image's virtualenv built (``rayproject/ray:2.52.0`` in the node
                       agent's catalog). Yields :class:`KubeRayController`. Afterwards the
                       namespace's RayJobs and RayClusters are deleted while ray-operator still
                       runs (it alone removes its ``ray.io/rayjob-finalizer``; stopped first, the
                       namespace would stay Terminating), then it is stopped.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes.client.exceptions import ApiException

from tests.plugins.mlflow_server import free_port

# The engines' webhook configurations, relative to their pinned modules.
WEBHOOK_MANIFESTS = {
    "trainer": ("github.com/kubeflow/trainer/v2", "manifests/base/webhook/manifests.yaml"),
    "jobset": ("sigs.k8s.io/jobset", "config/components/webhook/manifests.yaml"),
}
TRAINER_CONFIG = "config.trainer.kubeflow.org/v1alpha1"  # pkg/apis/config/v1alpha1 of trainer v2.3.0
JOBSET_CONFIG = "config.jobset.x-k8s.io/v1alpha1"  # api/config/v1alpha1 of jobset v0.12.0


@dataclass
class Controller:
    name: str
    argv: list[str]
    env: dict[str, str]
    probe_port: int
    webhook_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}")
        try:
            return requests.get(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class EngineControllers:
    trainer: Controller
    jobset: Controller
    bin_dir: Path
    build_seconds: float
    ca_cert: Path
    start_seconds: float = 0.0

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"----- {c.name} ({c.log_path})\n{c.log_tail(lines)}" for c in (self.trainer, self.jobset))

    def error_lines(self) -> list[str]:
        out: list[str] = []
        for c in (self.trainer, self.jobset):
            text = c.log_path.read_text(errors="replace") if c.log_path.exists() else ""
            out += [f"{c.name}: {line}" for line in text.splitlines()
                    if '"level":"error"' in line or "\tERROR\t" in line]
        return out


def _serving_cert(workdir: Path) -> tuple[Path, Path]:
    """A directory with ``tls.crt`` / ``tls.key`` for 127.0.0.1 (controller-runtime's names),
    and the CA that signed it."""
    from tests.localcluster.pki import Pki

    pki = Pki(workdir / "pki")
    paths = pki.issue("webhook", "127.0.0.1", dns_names=("localhost",), ips=("127.0.0.1",),
                                       server=True)
    certs = workdir / "serving-certs"
    certs.mkdir(parents=True, exist_ok=True)
    (certs / "tls.crt").write_bytes(paths.cert.read_bytes())
    (certs / "tls.key").write_bytes(paths.key.read_bytes())
    return certs, pki.ca.cert


def webhook_configurations(engines: EngineControllers, namespace: str) -> list[dict[str, Any]]:
    """The engines' webhook configurations from their pinned modules, each webhook sent to its
    manager's loopback URL (the API server runs on this host) and, for namespaced objects,
    limited to ``namespace`` so that no other test's Pods depend on these processes."""
    from tests.plugins.engine_crds import _load_yaml, module_dir

    ca_bundle = base64.b64encode(engines.ca_cert.read_bytes()).decode()
    out: list[dict[str, Any]] = []
    for engine, (module, rel) in WEBHOOK_MANIFESTS.items():
        port = getattr(engines, engine).webhook_port
        for doc in _load_yaml(module_dir(module) / rel):
            doc["metadata"] = {"name": f"{namespace}-{engine}-{doc['kind'].lower()}"}
            for hook in doc["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
                hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            out.append(doc)
    return out


def _ensure_runtime(cluster: Any) -> None:
    from tests.plugins.engine_crds import sample_runtime

    runtime = sample_runtime()
    path = cluster.path("ClusterTrainingRuntime", name=runtime["metadata"]["name"])
    try:
        cluster.request("GET", path)
    except ApiException as e:
        if e.status != 404:
            raise
        cluster.request("POST", path.rsplit("/", 1)[0], runtime)


def start_engine_controllers(kubeconfig: Path, workdir: Path, timeout: float = 60.0) -> EngineControllers:
    from tests.localcluster.engines import build_engines

    built = build_engines()
    workdir.mkdir(parents=True, exist_ok=True)
    certs, ca_cert = _serving_cert(workdir)
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))

    # Trainer's configuration has no webhook cert directory: controller-runtime's default is
    # $TMPDIR/k8s-webhook-server/serving-certs.
    trainer_tmp = workdir / "trainer-tmp"
    (trainer_tmp / "k8s-webhook-server").mkdir(parents=True, exist_ok=True)
    link = trainer_tmp / "k8s-webhook-server" / "serving-certs"
    if not link.exists():
        link.symlink_to(certs)
    t_probe, j_probe, t_hook, j_hook = free_port(), free_port(), free_port(), free_port()
    trainer_cfg = workdir / "trainer-config.yaml"
    trainer_cfg.write_text(yaml.safe_dump({
        "apiVersion": TRAINER_CONFIG, "kind": "Configuration",
        "webhook": {"host": "127.0.0.1", "port": t_hook},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{t_probe}"},
        "certManagement": {"enable": False},
        "leaderElection": {"leaderElect": False},
    }))
    jobset_cfg = workdir / "jobset-config.yaml"
    jobset_cfg.write_text(yaml.safe_dump({
        "apiVersion": JOBSET_CONFIG, "kind": "Configuration",
        "webhook": {"host": "127.0.0.1", "port": j_hook, "certDir": str(certs)},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{j_probe}"},
        "internalCertManagement": {"enable": False},
        "leaderElection": {"leaderElect": False},
    }))
    engines = EngineControllers(
        trainer=Controller("trainer-controller-manager",
                           [str(built.bin_dir / "trainer-controller-manager"), "--config", str(trainer_cfg)],
                           {**env, "TMPDIR": str(trainer_tmp)}, t_probe, t_hook, workdir / "trainer.log"),
        jobset=Controller("jobset", [str(built.bin_dir / "jobset"), "--config", str(jobset_cfg)],
                          env, j_probe, j_hook, workdir / "jobset.log"),
        bin_dir=built.bin_dir, build_seconds=built.seconds, ca_cert=ca_cert,
    )
    started = time.monotonic()
    try:
        for c in (engines.jobset, engines.trainer):
            c.start()
        deadline = started + timeout
        while not (engines.jobset.ready() and engines.trainer.ready()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"engine controllers not ready after {timeout}s:\n{engines.log_tail()}")
            time.sleep(0.2)
    except BaseException:
        stop_engine_controllers(engines)
        raise
    engines.start_seconds = time.monotonic() - started
    return engines


def stop_engine_controllers(engines: EngineControllers) -> None:
    for c in (engines.trainer, engines.jobset):
        c.stop()


@dataclass
class KubeRayController:
    operator: Controller
    build_seconds: float
    ray_venv_seconds: float
    start_seconds: float = 0.0

    def log_tail(self, lines: int = 40) -> str:
        return f"----- {self.operator.name} ({self.operator.log_path})\n{self.operator.log_tail(lines)}"

    def error_lines(self) -> list[str]:
        path = self.operator.log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        return [line for line in text.splitlines() if '"level":"error"' in line or "\tERROR\t" in line]


def start_kuberay(kubeconfig: Path, namespace: str, workdir: Path, timeout: float = 60.0) -> KubeRayController:
    from tests.localcluster.engines import build_kuberay

    built = build_kuberay()
    workdir.mkdir(parents=True, exist_ok=True)
    probe, metrics = free_port(), free_port()  # not 8080/18080: CoreDNS holds 127.0.0.1:18080
    operator = Controller(
        "ray-operator",
        [str(built.bin_dir / "ray-operator"), "--kubeconfig", str(kubeconfig), f"--watch-namespace={namespace}",
         "--enable-leader-election=false", f"--metrics-addr=127.0.0.1:{metrics}",
         f"--health-probe-bind-address=127.0.0.1:{probe}", "--use-kubernetes-proxy"],
        dict(os.environ, KUBECONFIG=str(kubeconfig)), probe, 0, workdir / "ray-operator.log")
    ctl = KubeRayController(operator, built.seconds, 0.0)
    started = time.monotonic()
    try:
        operator.start()
        while not operator.ready():
            if time.monotonic() > started + timeout:
                raise TimeoutError(f"ray-operator not ready after {timeout}s:\n{ctl.log_tail()}")
            time.sleep(0.2)
    except BaseException:
        operator.stop()
        raise
    ctl.start_seconds = time.monotonic() - started
    return ctl


RAY_API = "ray.io/v1"


def delete_ray_objects(kube: Any, timeout: float = 60.0) -> None:
    """Delete the namespace's RayJobs and RayClusters and wait until they are gone, with
    ray-operator still running to finalize them; whatever is left after ``timeout`` loses its
    finalizers, so that the namespace can go."""
    kinds = ("RayJob", "RayCluster")
    for kind in kinds:
        for obj in kube.list(kind, api_version=RAY_API):
            kube.delete(kind, obj["metadata"]["name"], api_version=RAY_API)
    deadline = time.monotonic() + timeout
    while any(kube.list(kind, api_version=RAY_API) for kind in kinds):
        if time.monotonic() > deadline:
            for kind in kinds:
                for obj in kube.list(kind, api_version=RAY_API):
                    kube.patch(kind, obj["metadata"]["name"], {"metadata": {"finalizers": None}}, api_version=RAY_API)
            return
        time.sleep(0.5)


_WEBHOOK_API = "admissionregistration.k8s.io/v1"


@pytest.fixture
def engine_controllers(kube: Any, engine_crds_installed: dict[str, str],
                       tmp_path: Path) -> Iterator[EngineControllers]:
    import shutil

    if shutil.which("go") is None:
        pytest.skip("needs Go: the engines' controllers are built from the Go module proxy")
    cluster = kube.cluster
    _ensure_runtime(cluster)
    engines = start_engine_controllers(Path(cluster.kubeconfig), tmp_path / "engines")
    registered: list[str] = []
    try:
        for config in webhook_configurations(engines, kube.namespace):
            collection = cluster.path(config["kind"], api_version=_WEBHOOK_API)
            cluster.request("POST", collection, config)
            registered.append(f"{collection}/{config['metadata']['name']}")
        yield engines
    finally:
        for path in registered:  # before the managers stop: these webhooks fail closed
            try:
                cluster.request("DELETE", path)
            except ApiException as e:
                if e.status != 404:
                    raise
        stop_engine_controllers(engines)


@pytest.fixture
def kuberay_controller(kube: Any, engine_crds_installed: dict[str, str], tmp_path: Path) -> Iterator[KubeRayController]:
    import shutil

    from tests.localcluster.engines import RAY_REQUIREMENT, build_ray_venv

    if shutil.which("go") is None:
        pytest.skip("needs Go: KubeRay's ray-operator is built from the Go module proxy")
    try:
        venv = build_ray_venv()
    except RuntimeError as exc:  # pip could not reach PyPI
        pytest.skip(f"needs PyPI: the Ray image's virtualenv is {RAY_REQUIREMENT}: {exc}")
    ctl = start_kuberay(Path(kube.cluster.kubeconfig), kube.namespace, tmp_path / "kuberay")
    ctl.ray_venv_seconds = venv.seconds
    try:
        yield ctl
    finally:
        try:
            delete_ray_objects(kube)
        finally:
            ctl.operator.stop()
