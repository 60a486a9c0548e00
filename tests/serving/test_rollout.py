"""Progressive delivery, end to end on real parts: the real control plane, a real MLflow, the
operator, MLServer Pods serving real MLflow models, the builtin nginx router as the operator
deploys it, and a real Prometheus scraping the serving Pods.

Live traffic runs through the router Service during every test (`Traffic`), so what users
see is measured, not inferred from status. The misbehaving versions are MLflow
models-from-code (tests/data/models/misbehaving_model.py), registered like any version:
one fails 30 % of its predictions, one fails on a "poison" input the test sends when it
chooses to.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.mlflowproxy import MlflowProxy
from tests.plugins.kube import KubeCluster, KubeEnv, scratch_namespace
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorProcess
from tests.runtime.helpers import IRIS_FEATURES, run_dockyard, train_and_register
from tests.serving.test_traffic import ready_router_url, settle

pytestmark = [pytest.mark.serving, pytest.mark.integration]

MODEL = "iris-rollout"
NAME = "iris"
INTERVAL = 6  # seconds per step and per analysis
FAILURE_LIMIT = 2
POISON = 9.9  # petal_width that the poison version refuses
MISBEHAVING = Path(__file__).resolve().parents[1] / "data" / "models" / "misbehaving_model.py"
SET_ALIAS = "POST registered-models/alias"


def register_from_code(mlflow_uri: str, config: dict[str, Any]) -> str:
    """Log the misbehaving model and register it as a new version of MODEL."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_uri)
    try:
        mlflow.set_experiment("rollout-test-misbehaving")
        example = pd.DataFrame([[5.1, 3.5, 1.4, 0.2]], columns=IRIS_FEATURES)
        with mlflow.start_run() as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=str(MISBEHAVING), model_config=config,
                                           signature=infer_signature(example, ["setosa"]))
    finally:
        mlflow.set_tracking_uri(previous_uri)
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    # MLflow 3 keeps the model as a LoggedModel (models:/m-<id>), not under the run's artifacts.
    version = client.create_model_version(MODEL, source=info.model_uri, run_id=run.info.run_id,
                                          model_id=info.model_id)
    return str(version.version)


def kube_env(r: RolloutEnv) -> dict[str, str]:
    """A user's environment for the dockyard CLI: the admin kubeconfig of the test cluster."""
    return {"KUBECONFIG": str(r.env.cluster.kubeconfig)}


@dataclass
class Traffic:
    """Clients sending V2 inference requests through the router Service, recording every answer."""

    url: str
    poison_share: float = 0.0  # share of requests that carry the poison input
    log: list[tuple[float, int, str, str]] = field(default_factory=list)  # (t, status, variant, version)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int = 3) -> Traffic:
        for i in range(clients):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, seed: int) -> None:
        session = requests.Session()
        n = seed
        while not self._stop.is_set():
            n += 1
            poisoned = self.poison_share > 0 and (n % 100) < self.poison_share * 100
            width = POISON if poisoned else 0.2
            body = {"inputs": [{"name": f, "shape": [1, 1], "datatype": "FP64", "data": [v]}
                               for f, v in zip(IRIS_FEATURES, [5.1, 3.5, 1.4, width], strict=True)]}
            try:
                r = session.post(f"{self.url}/v2/models/{MODEL}/infer", json=body, timeout=10)
                entry = (time.monotonic(), r.status_code, r.headers.get("X-Dockyard-Variant", ""),
                         r.headers.get("X-Dockyard-Model-Version", ""))
            except requests.RequestException as exc:
                entry = (time.monotonic(), 0, type(exc).__name__, str(exc)[:200])
            self.log.append(entry)
            time.sleep(0.03)  # ~30 requests/s per client: pacing, not a wait for a condition

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def since(self, t: float) -> list[tuple[float, int, str, str]]:
        return [e for e in list(self.log) if e[0] >= t]


@dataclass
class RolloutEnv:
    env: KubeEnv
    mlflow: MlflowServer
    proxy: MlflowProxy
    operator: OperatorProcess
    versions: dict[str, str]  # role -> version: stable, good, flaky, poison
    url: str = ""

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow.uri, registry_uri=self.mlflow.uri)

    def alias(self, alias: str) -> str:
        return str(self.client().get_model_version_by_alias(MODEL, alias).version)

    def set_alias(self, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(MODEL, alias, version)

    def rollout(self) -> dict[str, Any]:
        md = self.env.get("ModelDeployment", NAME) or {}
        return dict((md.get("status") or {}).get("rollout") or {})

    def wait_rollout(self, phase: str | set[str], version: str, timeout: float = 180) -> dict[str, Any]:
        phases = {phase} if isinstance(phase, str) else phase

        def ok(md: dict[str, Any]) -> bool:
            st = (md.get("status") or {}).get("rollout") or {}
            return st.get("phase") in phases and st.get("candidateVersion") == version
        md = self.env.wait_for_object("ModelDeployment", NAME, ok, timeout=timeout)
        return dict(md["status"]["rollout"])

    def start_from(self, version: str) -> None:
        """Both aliases on `version`: nothing to roll out, the stable variant serves it (Idle, or
        Promoted when the previous test's rollout promoted it)."""
        self.set_alias("champion", version)
        self.set_alias("challenger", version)
        self.wait_rollout({"Idle", "Promoted"}, version)
        self.env.wait_for_object("ModelDeployment", NAME, lambda md: all(
            v.get("resolvedVersion") == version and v.get("readyReplicas", 0) >= 1
            for v in md["status"].get("variants") or []), timeout=180)

    def phases(self, until: set[str], version: str, timeout: float = 240) -> list[tuple[float, str, int, bool]]:
        """Every (time, phase, step, router serves the step) the rollout of `version` passes
        through, until one of `until`."""
        seen: list[tuple[float, str, int, bool]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.rollout()
            if st.get("candidateVersion") == version:
                point = (st.get("phase", ""), int(st.get("step") or 0), bool(st.get("trafficSince")))
                if not seen or seen[-1][1:] != point:
                    seen.append((time.monotonic(), *point))
                if point[0] in until:
                    return seen
            time.sleep(0.2)  # polling interval of a watch-free observer
        raise AssertionError(f"rollout of {version} did not reach {until}: {seen}\n{self.operator.log_tail()}")

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.env.list("Event") if e.get("reason") == reason
                and (e.get("involvedObject") or e.get("regarding") or {}).get("name") == NAME]


@pytest.fixture(scope="module")
def rollout_env(kube_cluster: KubeCluster, mlflow_server: MlflowServer, prometheus: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutEnv]:
    if kube_cluster.kind != "controlplane":
        pytest.skip("sends traffic to ClusterIPs from this machine: needs the local control plane")
    work = tmp_path_factory.mktemp("rollout")
    versions = {
        "stable": train_and_register(mlflow_server.uri, MODEL, n_estimators=5, workdir=work / "v1",
                                     experiment_name="rollout-test"),
        "good": train_and_register(mlflow_server.uri, MODEL, n_estimators=10, workdir=work / "v2",
                                   experiment_name="rollout-test"),
        "flaky": register_from_code(mlflow_server.uri, {"fail_rate": 0.3}),
        "poison": register_from_code(mlflow_server.uri, {"poison": POISON}),
    }
    proxy = MlflowProxy(mlflow_server.uri).start()
    with scratch_namespace(kube_cluster, "rollout", work) as env:
        operator = OperatorProcess(
            kube_cluster.operator_kubeconfig(), proxy.uri, work / "operator", namespaces=[env.namespace],
            mlflow_uri_for_pods=mlflow_server.uri,
            extra_env={"DOCKYARD_PROMETHEUS_URL": prometheus.url,
                       "DOCKYARD_PROMETHEUS_SCRAPE_INTERVAL": "1s"},
        ).start()
        r = RolloutEnv(env, mlflow_server, proxy, operator, versions)
        r.set_alias("champion", versions["stable"])
        r.set_alias("challenger", versions["stable"])
        env.apply({
            "apiVersion": "dockyard.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": NAME},
            "spec": {
                "modelName": MODEL,
                "aliasRefreshInterval": "5s",
                "variants": [{"name": "stable", "alias": "champion", "weight": 100},
                             {"name": "canary", "alias": "challenger", "weight": 0}],
                "rollout": {
                    "candidate": "canary", "steps": [25, 50], "interval": f"{INTERVAL}s",
                    "failureLimit": FAILURE_LIMIT, "minRequests": 5,
                    "metrics": [{"name": "success-rate", "builtin": "successRate", "min": 0.95},
                                {"name": "latency-p99", "builtin": "latencyP99", "max": 3}],
                },
            },
        })
        r.wait_rollout("Idle", versions["stable"])
        r.url = ready_router_url(env, NAME)
        try:
            yield r
        finally:
            operator.stop()
            proxy.stop()


def test_a_good_version_is_promoted_step_by_step_across_an_operator_kill(rollout_env: RolloutEnv) -> None:
    r, good = rollout_env, rollout_env.versions["good"]
    r.start_from(r.versions["stable"])
    traffic = Traffic(r.url).start()
    try:
        before = r.proxy.snapshot()
        r.set_alias("challenger", good)
        step1 = r.env.wait_for(lambda: (st := r.rollout()).get("candidateVersion") == good
                               and st.get("phase") == "Progressing" and st, timeout=180, interval=0.2,
                               message="step 1")
        # SIGKILL mid-step: the new process resumes the same step from status.
        r.operator.restart()
        seen = r.phases({"Promoted", "RolledBack"}, good)
        steps = sorted({s for _, p, s, _ in seen if p == "Progressing"})
        assert steps in ([1, 2], [2]), seen  # never back to Waiting or a fresh step 1
        assert seen[-1][1] == "Promoted", seen
        # What users got while the router served step 2 (kube-proxy's rules lag the Pods by
        # a moment: one second of margin).
        serving_2 = next(t for t, p, s, serving in seen if p == "Progressing" and s == 2 and serving)
        at_step_2 = [e for e in traffic.since(serving_2 + 1) if e[0] < seen[-1][0]]
        canary = sum(1 for e in at_step_2 if e[3] == good) / max(1, len(at_step_2))
        assert len(at_step_2) > 100 and 0.4 <= canary <= 0.6, (
            f"{canary:.2f} of {len(at_step_2)} step-2 answers from the candidate (50 % wanted); {seen}")
    finally:
        traffic.stop()
    assert step1["step"] == 1
    assert r.alias("champion") == good  # read back through MlflowClient
    tags = r.client().get_model_version(MODEL, good).tags
    assert tags["dockyard.rollout"] == "promoted"
    assert tags["dockyard.rollout.previous_version"] == r.versions["stable"]
    assert r.rollout()["previousVersion"] == r.versions["stable"]
    assert r.proxy.calls_since(before).get(SET_ALIAS, 0) == 1, "exactly one alias move by the operator"
    assert len([e for e in r.events("Promoted") if good in e.get("message", e.get("note", ""))]) == 1
    # No error answer at all. A router weight change rolls the nginx Pod: a keep-alive
    # connection the old Pod closes as a request goes out fails on the client side (HTTP/1.1
    # has no way to say "closing"); those few connection errors are reported, and bounded.
    answers = collections.Counter(e[1] for e in traffic.log)
    assert set(answers) <= {200, 0}, answers
    resets = [e for e in traffic.log if e[1] == 0]
    print(f"promotion: {len(traffic.log)} requests, {len(resets)} connection errors: "
          f"{collections.Counter(e[2] for e in resets)}")
    assert len(resets) <= 0.005 * len(traffic.log), resets[:5]


def test_a_bad_version_is_rolled_back_quickly_and_stable_users_see_no_errors(rollout_env: RolloutEnv) -> None:
    r, flaky = rollout_env, rollout_env.versions["flaky"]
    stable = r.versions["good"]
    r.start_from(stable)
    traffic = Traffic(r.url).start()
    try:
        before = r.proxy.snapshot()
        r.set_alias("challenger", flaky)
        seen = r.phases({"RolledBack", "Promoted"}, flaky)
        assert seen[-1][1] == "RolledBack", seen
        # Weight 0 as users see it: the last answer the flaky version gave.
        settle(r.env, NAME)
        after_rollback = time.monotonic()
        time.sleep(10)  # a window of user traffic after the rollback, to check what users get
        # From the first failing interval (it begins with the candidate's first answer) to
        # weight 0 as users see it (the candidate's last answer).
        answers = [e[0] for e in traffic.log if e[3] == flaky]
        reaction = max(answers) - min(answers)
        print(f"rollback reaction: {reaction:.1f} s from the first failing interval to weight 0 "
              f"(goal {INTERVAL * FAILURE_LIMIT + 10} s)")
        assert reaction <= INTERVAL * FAILURE_LIMIT + 10
        late = traffic.since(after_rollback)
        assert late and all(e[1] == 200 and e[3] == stable for e in late), collections.Counter(
            (e[1], e[3]) for e in late)
    finally:
        traffic.stop()
    st = r.rollout()
    assert "success-rate" in st["message"] and "below min 0.95" in st["message"], st["message"]
    assert r.alias("champion") == stable, "the stable alias never moves on a rollback"
    assert r.proxy.calls_since(before).get(SET_ALIAS, 0) == 0
    tags = r.client().get_model_version(MODEL, flaky).tags
    assert tags["dockyard.rollout"] == "failed" and "success-rate" in tags["dockyard.rollout.reason"]
    assert r.events("RolledBack") and r.events("RolledBack")[-1]["type"] == "Warning"
    md = r.env.get("ModelDeployment", NAME) or {}
    cond = next(c for c in md["status"]["conditions"] if c["type"] == "RolledOut")
    assert (cond["status"], cond["reason"]) == ("False", "AnalysisFailed")


def test_approval_then_a_failure_in_the_bake_window_reverts_the_alias(rollout_env: RolloutEnv) -> None:
    r, poison = rollout_env, rollout_env.versions["poison"]
    stable = r.versions["good"]
    r.start_from(stable)
    r.env.patch("ModelDeployment", NAME, {"spec": {"rollout": {"manualApproval": True, "bakeWindow": "2m"}}})
    traffic = Traffic(r.url).start()
    try:
        r.set_alias("challenger", poison)
        r.wait_rollout("AwaitingApproval", poison)
        # An approval for another version is refused, with the reason in status and an Event.
        r.env.patch("ModelDeployment", NAME, {"metadata": {"annotations": {"dockyard.dev/approve": stable}}})
        r.env.wait_for(lambda: "approval refused" in (r.rollout().get("message") or ""), timeout=30,
                       message="the wrong approval refused")
        assert r.rollout()["phase"] == "AwaitingApproval" and r.alias("champion") == stable
        assert r.events("ApprovalRefused")
        # `dockyard approve` refuses the wrong version itself, then approves as whoever we are.
        wrong = run_dockyard("approve", NAME, "-n", r.env.namespace, "--version", stable, env=kube_env(r))
        assert wrong.returncode == 1 and f"version {poison} is waiting" in wrong.stderr, wrong.stderr
        ok = run_dockyard("approve", NAME, "-n", r.env.namespace, "--version", poison, env=kube_env(r))
        assert ok.returncode == 0, ok.stderr
        st = r.wait_rollout("Baking", poison, timeout=60)
        who = ok.stdout.strip().rsplit(" as ", 1)[1]
        assert st["approvedBy"] == who and st["approvedAt"], (st, ok.stdout)
        assert r.alias("champion") == poison
        tags = r.client().get_model_version(MODEL, poison).tags
        assert tags["dockyard.approved_by"] == who and tags["dockyard.approved_at"] == st["approvedAt"]
        assert any(who in e.get("message", e.get("note", "")) for e in r.events("Approved"))
        annotations = (r.env.get("ModelDeployment", NAME) or {})["metadata"].get("annotations") or {}
        assert "dockyard.dev/approve" not in annotations, "a used approval is consumed"
        # Now the promoted version meets inputs it fails on.
        traffic.poison_share = 0.3
        r.wait_rollout("RolledBack", poison, timeout=90)
        assert r.alias("champion") == stable, "a failure in the bake window moves the alias back"
    finally:
        traffic.stop()
        r.env.patch("ModelDeployment", NAME, {"spec": {"rollout": {"manualApproval": False, "bakeWindow": "0s"}}})
    assert r.client().get_model_version(MODEL, poison).tags["dockyard.rollout"] == "failed"


def test_no_prometheus_holds_the_candidate_and_says_why(rollout_env: RolloutEnv) -> None:
    r = rollout_env
    r.start_from(r.versions["good"])
    url = r.operator.extra_env["DOCKYARD_PROMETHEUS_URL"]
    r.operator.extra_env["DOCKYARD_PROMETHEUS_URL"] = ""
    r.operator.restart()
    try:
        r.set_alias("challenger", r.versions["stable"])
        st = r.wait_rollout("Blocked", r.versions["stable"], timeout=60)
        assert st["reason"] == "PrometheusNotConfigured" and "DOCKYARD_PROMETHEUS_URL" in st["message"]
        # Blocked at once, while the canary's Pods still roll to the new version; once they
        # serve it, nothing more is to be written.
        md = r.env.wait_for_object("ModelDeployment", NAME, lambda m: m["status"].get("phase") == "Ready" and all(
            v.get("resolvedVersion") == r.versions["stable"] for v in m["status"]["variants"] if v["name"] == "canary"),
            timeout=180)
        r.env.wait_for(lambda: (st := (r.env.get("Deployment", f"{NAME}-canary") or {}).get("status") or {})
                       .get("updatedReplicas") == st.get("replicas") == 1 and not st.get("terminatingReplicas"),
                       timeout=120, interval=0.5, message="the canary Deployment rolled out")
        md = r.env.get("ModelDeployment", NAME) or {}
        assert md["status"]["weights"] == "stable=100%,canary=0%"
        assert md["status"]["rollout"]["phase"] == "Blocked"
        blocked = len(r.events("RolloutBlocked"))
        version = md["metadata"]["resourceVersion"]
        time.sleep(5)  # a quiet window: no hot loop means nothing new is written in it
        assert (r.env.get("ModelDeployment", NAME) or {})["metadata"]["resourceVersion"] == version
        assert len(r.events("RolloutBlocked")) == blocked
    finally:
        r.operator.extra_env["DOCKYARD_PROMETHEUS_URL"] = url
        r.operator.restart()


def test_a_candidate_that_cannot_start_is_rolled_back_at_its_progress_deadline(rollout_env: RolloutEnv) -> None:
    import mlflow

    r = rollout_env
    stable = r.versions["good"]
    r.start_from(stable)
    # A version whose source holds no model: its fetch-model init container fails, for ever.
    mlflow.set_tracking_uri(r.mlflow.uri)
    mlflow.set_experiment("rollout-test-broken")
    with mlflow.start_run() as run:
        mlflow.log_param("broken", "yes")
    broken = str(r.client().create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id).version)
    r.set_alias("challenger", broken)
    r.wait_rollout("Waiting", broken, timeout=60)
    # The Deployment controller's deadline (default 600 s) shortened by a user's own patch; the
    # operator does not declare the field, so its re-apply leaves it.
    r.env.wait_for(lambda: ((r.env.get("Deployment", f"{NAME}-canary") or {}).get("metadata", {}).get("labels") or {})
                   .get("dockyard.dev/model-version") == broken, timeout=60, message="canary Deployment on the version")
    r.env.patch("Deployment", f"{NAME}-canary", {"spec": {"progressDeadlineSeconds": 10}})
    st = r.wait_rollout("RolledBack", broken, timeout=120)
    assert st["reason"] == "CandidateNotReady" and "progressing" in st["message"], st
    assert r.alias("champion") == stable
    assert r.client().get_model_version(MODEL, broken).tags["dockyard.rollout"] == "failed"
    md = r.env.get("ModelDeployment", NAME) or {}
    assert md["status"]["weights"] == "stable=100%,canary=0%"
