"""Fault survival: SIGKILL at random points, random API faults, a 30 s MLflow outage.

The operator runs as a real process; Pods run in the node agent's *instant* mode (profiling
and training Pods succeed at once, serving Pods turn Ready without a process), so what is
exercised is the operator's bookkeeping: each test drives a batch of Datasets, TrainingRuns
and ModelDeployments through its lifecycle while faults land at seeded pseudo-random points,
and then checks the end state (``fault_support.assert_converged``): every object converged,
exactly one Job, one MLflow run and one model version per training attempt, no orphans.

The tests assert outcomes, never timings. Fault *points* are reproducible in number and in
their position relative to the operator's progress (after its Nth API write, or N seconds
after a start); which reconcile step a point hits varies with the machine's speed, which is
why the kill test also prints what each kill interrupted.

Default mode (CI): 20 kills over 20 TrainingRuns + 5 ModelDeployments, and ~40 API faults
over 10 TrainingRuns + 2 ModelDeployments. ``--long``: 100 kills over 50 TrainingRuns, and
the 30 s MLflow outage during registration. Local control plane only (fault proxy, instant Pods).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.fault_support import (
    INSTANT_RESULTS,
    Load,
    PhaseRecorder,
    assert_converged,
    dataset_objects,
    deployment_variants,
    expected_versions,
    model_deployment,
    register_serving_model,
    tracebacks,
    training_run,
    wait_operator_writes,
)
from tests.integration.test_training_path import cond, phase
from tests.mlflowproxy import MlflowProxy
from tests.plugins.kube import KubeEnv
from tests.plugins.mlflow_server import MlflowServer
from tests.plugins.operator import OperatorFactory

pytestmark = pytest.mark.integration

SEED = 20261122
IN_FLIGHT = ("Pending", "Running", "Registering")
WRITE_LATENCY = 0.015


# ------------------------------------------------------------------------------ SIGKILL


@dataclass(frozen=True)
class KillPoint:
    """Kill after the operator's ``writes``-th API write since its start (capped at ``cap``
    seconds: a converged operator writes nothing), or ``delay`` seconds after its start."""

    writes: int | None = None
    delay: float | None = None
    cap: float = 2.0


def kill_plan(rng: random.Random, kills: int) -> list[KillPoint]:
    plan = []
    for _ in range(kills):
        if rng.random() < 0.5:
            plan.append(KillPoint(writes=rng.randint(1, 40)))
        else:
            plan.append(KillPoint(delay=rng.uniform(0.05, 1.5)))
    return plan


def waves(rng: random.Random, kills: int, n_trs: int, n_mds: int, model_prefix: str) -> dict:
    """Objects to apply before kill number k: the Dataset and a first batch before the first
    start, the rest spread over the first three quarters of the kills, so that kills land on every
    step of the lifecycle (including a restart over already-converged objects at the end)."""
    trs = [(f"tr-{i:03d}", f"{model_prefix}-{i:03d}") for i in range(n_trs)]
    mds = [f"md-{i}" for i in range(n_mds)]
    plan: dict[int, list[tuple[str, Any]]] = {}
    batches = max(4, n_trs // 4)
    span = max(kills * 3 // 4, 1)
    for b in range(batches):
        at = 0 if b == 0 else int((b + rng.random()) * span / batches)
        chunk = trs[b::batches]
        plan.setdefault(at, []).extend(("tr", t) for t in chunk)
        plan.setdefault(at, []).extend(("md", m) for m in mds[b::batches])
    return plan


@pytest.mark.parametrize(
    ("kills", "n_trs"),
    [
        pytest.param(20, 20, id="20kills"),
        pytest.param(100, 50, id="100kills", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),
    ],
)
def test_operator_survives_sigkill_at_random_points(
    kills: int,
    n_trs: int,
    kube: KubeEnv,
    operator_factory: OperatorFactory,
    mlflow_server: MlflowServer,
) -> None:
    kube.require_faults()
    n_mds = 5
    rng = random.Random(SEED)
    serving_model = f"fs-serve-{kube.namespace}"
    aliases = register_serving_model(mlflow_server, serving_model)
    kube.run_pods_instantly(INSTANT_RESULTS)
    load = Load(kube.namespace)
    plan = kill_plan(rng, kills)
    schedule = waves(rng, kills, n_trs, n_mds, f"fs-{kube.namespace}")

    def apply_wave(k: int) -> None:
        for what, item in schedule.get(k, []):
            if what == "tr":
                name, model = item
                kube.apply(training_run(name, model))
                load.trainingruns[name] = model
            else:
                index = int(item.split("-")[1])
                variants = deployment_variants(index)
                kube.apply(model_deployment(item, serving_model, variants))
                load.deployments[item] = expected_versions(variants, aliases)

    # A real API server answers writes in milliseconds, not microseconds: with that latency a
    # TrainingRun's life spans more of each operator life, so more kills land mid-flight.
    kube.faults.add_latency(
        WRITE_LATENCY, method="PATCH", path_regex=rf"/namespaces/{kube.namespace}/"
    )
    kube.faults.add_latency(
        WRITE_LATENCY, method="POST", path_regex=rf"/namespaces/{kube.namespace}/"
    )
    phases = PhaseRecorder(kube).start()
    for doc in dataset_objects():
        kube.apply(doc)
    apply_wave(0)

    operator = operator_factory()
    interrupted: list[str] = []  # what each kill cut short: TrainingRun phases at that instant
    for k, point in enumerate(plan):
        if k:
            apply_wave(k)
        operator.start()
        if point.writes is not None:
            done = wait_operator_writes(kube, point.writes, point.cap)
            where = f"after {done}/{point.writes} writes"
        else:
            assert point.delay is not None
            time.sleep(point.delay)  # the kill point itself: N seconds into this life
            where = f"after {point.delay:.2f}s"
        operator.kill()
        trs = Counter(phase(o) or "-" for o in kube.list("TrainingRun"))
        mds = Counter(phase(o) or "-" for o in kube.list("ModelDeployment"))
        interrupted.append(
            f"kill {k + 1:3d} {where:>18}: TrainingRuns {dict(sorted(trs.items()))}"
            f" ModelDeployments {dict(sorted(mds.items()))}"
        )

    kube.faults.clear()
    operator.start()
    print(f"\n{kills} SIGKILLs (seed {SEED}), {operator.starts} starts:")
    print("\n".join(interrupted))
    assert operator.starts == kills + 1
    assert_converged(kube, mlflow_server, load, timeout=240)
    phases.stop()
    # Across every kill and restart, no TrainingRun's phase stepped back.
    assert phases.regressions() == {}
    assert operator.alive()
    # Kills leave no trace in the log (SIGKILL); a Traceback is an unexpected exception in some
    # reconcile (expected failures log one WARNING line without one), in any of the lives.
    assert tracebacks(operator) == []
    # The kills did land while work was in flight, not only on converged objects.
    assert any(any(p in line for p in IN_FLIGHT) for line in interrupted), interrupted


# ------------------------------------------------------------------------------ leader election


def test_only_the_lease_holder_reconciles_and_a_follower_takes_over(
    kube: KubeEnv, operator_factory: OperatorFactory, mlflow_server: MlflowServer
) -> None:
    """Two replicas with --leader-elect: the follower watches but never reconciles; SIGKILL the
    leader and the follower takes over once the Lease runs out; a clean stop hands the Lease
    over (released, not left to expire)."""
    from tests.integration.test_training_path import _reconciles
    from tests.plugins.kube import OPERATOR_NAMESPACE

    kube.run_pods_instantly(INSTANT_RESULTS)
    lease = f"lease-{kube.namespace}"[:63]
    election = ["--leader-elect", f"--leader-election-id={lease}", f"--leader-election-namespace={OPERATOR_NAMESPACE}"]

    def replica(name: str) -> Any:
        return operator_factory(election=election, extra_env={"POD_NAME": name, "DOCKYARD_LEASE_SECONDS": "3"})

    def holder() -> str | None:
        obj = kube.get("Lease", lease, namespace=OPERATOR_NAMESPACE)
        return ((obj or {}).get("spec") or {}).get("holderIdentity")

    a = replica("a").start()
    kube.wait_for(lambda: holder() == "a", 30, message="a holds the Lease")
    b = replica("b").start()
    for doc in dataset_objects():
        kube.apply(doc)
    kube.apply(training_run("tr-1", f"fs-{kube.namespace}-1"))
    kube.wait_for_object("TrainingRun", "tr-1", lambda o: phase(o) == "Succeeded", timeout=120)
    assert holder() == "a" and _reconciles(b, "TrainingRun") == 0 and _reconciles(a, "TrainingRun") > 0

    a.kill()  # a crash: no release; b waits out the Lease, then reconciles
    kube.wait_for(lambda: holder() == "b", 30, message="b takes the Lease over")
    kube.apply(training_run("tr-2", f"fs-{kube.namespace}-2"))
    kube.wait_for_object("TrainingRun", "tr-2", lambda o: phase(o) == "Succeeded", timeout=120)

    a.start()
    b.stop()  # a clean stop releases the Lease before the process exits
    assert holder() != "b"
    kube.wait_for(lambda: holder() == "a", 30, message="a takes the Lease back")
    assert a.error_lines() == [] and b.error_lines() == []


# ------------------------------------------------------------------------------ API faults


def _fault_actions(ns: str) -> list[tuple[str, Any]]:
    """(label, action(faults, rng)) pairs; every regex is scoped to the test namespace."""
    base = rf"/namespaces/{ns}/"
    status = base + r"(trainingruns|datasets|modeldeployments)/[^/]+/status$"

    def fail(method: str, regex: str, code: int, retry_after: int | None = None) -> Any:
        return lambda faults, rng: faults.fail_next(
            method, regex, code, count=rng.randint(1, 3), retry_after=retry_after
        )

    def drop(faults: Any, rng: random.Random) -> None:
        faults.drop_watches()

    def gone(faults: Any, rng: random.Random) -> None:
        faults.expire_history()
        faults.drop_watches()

    return [
        ("500 status", fail("PATCH", status, 500)),
        ("409 status", fail("PATCH", status, 409)),
        ("429 status", fail("PATCH", status, 429, retry_after=1)),
        ("500 create Job", fail("POST", base + r"jobs$", 500)),
        ("429 create Job", fail("POST", base + r"jobs$", 429, retry_after=1)),
        ("503 apply child", fail("PATCH", base + r"(deployments|services|configmaps)/[^/]+$", 503)),
        ("429 apply child", fail("PATCH", base + r"(deployments|services|configmaps)/[^/]+$", 429, 1)),
        ("500 read", fail("GET", base + r"(jobs|pods|deployments|services|configmaps)", 500)),
        ("500 event", fail("POST", base + r"events$", 500)),
        ("drop watches", drop),
        ("410 Gone", gone),
    ]


def test_converges_under_random_api_faults(
    kube: KubeEnv, operator_factory: OperatorFactory, mlflow_server: MlflowServer
) -> None:
    kube.require_faults()
    faults = kube.faults
    rng = random.Random(SEED)
    serving_model = f"fs-serve-{kube.namespace}"
    aliases = register_serving_model(mlflow_server, serving_model)
    kube.run_pods_instantly(INSTANT_RESULTS)
    phases = PhaseRecorder(kube).start()
    operator = operator_factory().start()
    load = Load(kube.namespace)
    actions = _fault_actions(kube.namespace)
    # Every kind of fault at least three times, in a seeded random order.
    schedule = (actions * 4)[: max(len(actions) * 3, 40)]
    rng.shuffle(schedule)
    steps = len(schedule)
    # Objects arrive in three batches during the first half of the fault period.
    arrivals = {0: (0, 4, [0]), 5: (4, 7, []), 12: (7, 10, [1])}
    injected: Counter[str] = Counter()
    try:
        for step in range(steps):
            if step == 0:
                for doc in dataset_objects():
                    kube.apply(doc)
            if step in arrivals:
                lo, hi, mds = arrivals[step]
                for i in range(lo, hi):
                    name, model = f"tr-{i:03d}", f"fs-{kube.namespace}-{i:03d}"
                    kube.apply(training_run(name, model))
                    load.trainingruns[name] = model
                for i in mds:
                    variants = deployment_variants(4 if i else 0)  # one pinned, one alias-based
                    kube.apply(model_deployment(f"md-{i}", serving_model, variants))
                    load.deployments[f"md-{i}"] = expected_versions(variants, aliases)
            label, action = schedule[step]
            action(faults, rng)
            injected[label] += 1
            # Next fault after a few more steps of the operator's work (or a short pause once
            # it has nothing left to do).
            wait_operator_writes(kube, rng.randint(1, 6), cap=0.5)
    finally:
        faults.clear()
    print(f"\ninjected (seed {SEED}): {dict(sorted(injected.items()))}")
    felt = fault_evidence(operator)
    print(f"seen by the operator: {felt}")
    # The faults reached the operator (client retries, failed reconciles), not just the void.
    assert felt["client retries"] + felt["failed reconciles"] > 0, felt
    assert_converged(kube, mlflow_server, load, timeout=180)
    phases.stop()
    assert phases.regressions() == {}
    assert operator.alive() and operator.starts == 1
    assert tracebacks(operator) == []


def fault_evidence(operator: Any) -> dict[str, int]:
    """What the operator's log says about injected faults (its kube client logs each retry of a
    429/5xx at DEBUG; a reconcile that fails logs a WARNING)."""
    text = operator.log_path.read_text(errors="replace")
    return {
        "client retries": len(re.findall(r"dockyard\.kube: \w+ \S+ -> (?:429|5\d\d), retrying", text)),
        "failed reconciles": len(re.findall(r"reconcile \w+/\S+ failed \(\d+\)", text)),
        "watch errors": len(re.findall(r"kopf\S*: .*(?:failed|Gone|410)", text)),
    }


# ------------------------------------------------------------------------------ MLflow outage


@pytest.mark.slow
def test_mlflow_outage_30s_during_registration(
    kube: KubeEnv,
    operator_factory: OperatorFactory,
    mlflow_server: MlflowServer,
    mlflow_proxy: MlflowProxy,
) -> None:
    """MLflow stops for 30 s while TrainingRuns are registering, then comes back.

    To land the outage *during registration*, registration is first held at the MLflow proxy
    (model-versions/create answers 503), which the operator reports; then the real server is
    stopped and the hold released, so every registration attempt in the next 30 s meets a
    dead server (the proxy answers 502 for it). Afterwards: one version per run, and the
    outage was visible in status while it lasted (reported anew by attempts during it).
    """
    kube.require_faults()
    outage = 30.0
    names = [f"tr-{i}" for i in range(3)]
    kube.run_pods_instantly(INSTANT_RESULTS)
    operator = operator_factory().start()
    load = Load(kube.namespace)
    mlflow_proxy.fail("POST", r"/model-versions/create$", 503, count=10_000)
    for doc in dataset_objects():
        kube.apply(doc)
    for name in names:
        model = f"fs-{kube.namespace}-{name}"
        kube.apply(training_run(name, model))
        load.trainingruns[name] = model

    def down(o: dict[str, Any]) -> bool:
        return cond(o, "MlflowReachable").get("status") == "False"

    held: dict[str, str] = {}
    for name in names:
        tr = kube.wait_for_object("TrainingRun", name, down, timeout=120)
        assert phase(tr) == "Registering", tr["status"]
        held[name] = cond(tr, "MlflowReachable")["message"]
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    mlflow_server.stop()
    mlflow_proxy.clear()
    stopped_at = time.monotonic()
    try:
        # Record what status says for as long as the outage lasts.
        while time.monotonic() - stopped_at < outage:
            for o in kube.list("TrainingRun"):
                c = cond(o, "MlflowReachable")
                if c and c not in seen[o["metadata"]["name"]]:
                    seen[o["metadata"]["name"]].append(c)
            time.sleep(0.5)
        assert not mlflow_server.healthy()
    finally:
        mlflow_server.start()
    print(f"\nheld at registration: {held}\nduring the {outage:.0f}s outage: {seen}")
    for name in names:
        # Every TrainingRun showed the outage for all of it: never Reachable while MLflow was down.
        assert seen[name] and all(c["status"] == "False" for c in seen[name]), seen[name]
        assert {c["reason"] for c in seen[name]} == {"MlflowUnavailable"}, seen[name]
    # ... and the operator kept trying during the outage, reporting the dead server (not only
    # the 503 hold that preceded it) -- for at least one of them (backoff spacing varies).
    assert any(c["message"] != held[n] for n in names for c in seen[n]), (held, seen)
    assert_converged(kube, mlflow_server, load, timeout=240)
    for name in names:
        after = kube.get("TrainingRun", name)
        assert after is not None and cond(after, "MlflowReachable").get("status") in (None, "True"), after
    assert operator.alive()
    assert tracebacks(operator) == []
