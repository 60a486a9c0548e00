"""The canary state machine (dockyard.rollout), decision by decision, without I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.api.rollout import MetricResult, RolloutStatus
from dockyard.rollout import Decision, Observed, decide, effective_weights, judge, traffic_serving

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def spec(**rollout: object) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({
        "modelName": "m",
        "variants": [{"name": "stable", "alias": "champion", "weight": 90},
                     {"name": "canary", "alias": "challenger", "weight": 10}],
        "rollout": {"candidate": "canary", "steps": [10, 50], "interval": "10s", "failureLimit": 2, **rollout},
    })


def seen(at: float = 0, *, candidate: str = "2", stable: str = "1", ready: bool = True, **kw: object) -> Observed:
    return Observed(now=T0 + timedelta(seconds=at), candidate_version=candidate, stable_version=stable,
                    candidate_ready=ready, prometheus_url="http://prometheus:9090", **kw)  # type: ignore[arg-type]


PASS = [MetricResult(name="success-rate", value=1.0, min=0.99, result="Passed")]
FAIL = [MetricResult(name="success-rate", value=0.7, min=0.99, result="Failed", message="success-rate = 0.7 below min 0.99")]
NO_DATA = [MetricResult(name="success-rate", result="Inconclusive", message="3 requests in 10s < minRequests 10")]


def run(s: ModelDeploymentSpec, status: RolloutStatus | None, at: float, results: list[MetricResult] | None = None,
        *, router_settled: bool = True, **kw: object) -> Decision:
    """One reconcile: decide, judge when an analysis is due, then (after the children are
    applied) note whether the router serves the weights."""
    assert s.rollout is not None
    observed = seen(at, **kw)
    decision = decide(s.rollout, status, observed)
    if decision.analyse:
        assert results is not None, f"an analysis was due at {at}s"
        later = judge(s.rollout, decision.status, results, observed)
        later.events[:0], later.actions[:0] = decision.events, decision.actions
        decision = later
    served = traffic_serving(s.rollout, decision.status, router_settled, observed.now)
    assert served is not None
    decision.status = served
    return decision


def test_a_good_version_walks_the_steps_and_is_promoted_once() -> None:
    s = spec()
    d = run(s, None, 0, ready=False)
    assert (d.status.phase, d.status.candidate_weight) == ("Waiting", 0)
    assert effective_weights(s, d.status) == {"stable": 1000, "canary": 0}
    d = run(s, d.status, 1)
    assert (d.status.phase, d.status.step, d.status.candidate_weight) == ("Progressing", 1, 10)
    assert effective_weights(s, d.status) == {"stable": 900, "canary": 100}
    assert not run(s, d.status, 5).analyse  # not due before the interval is over
    d = run(s, d.status, 11, PASS)
    assert (d.status.step, d.status.candidate_weight, d.status.summary) == (2, 50, "2/2 50%")
    d = run(s, d.status, 21, PASS)
    assert d.status.phase == "Promoted" and d.status.previous_version == "1"
    assert [(a.kind, a.version, a.detail) for a in d.actions] == [
        ("move-alias", "2", "champion"), ("tag-promoted", "2", "1")]
    assert effective_weights(s, d.status) == {"stable": 90, "canary": 10}  # declared weights again
    # The next reconcile sees the alias moved: nothing more to do, no second move.
    after = run(s, d.status, 22, stable="2")
    assert after.status.phase == "Promoted" and after.actions == [] and not after.analyse


def test_failed_checks_roll_back_at_the_failure_limit_and_stay_rolled_back() -> None:
    s = spec()
    d = run(s, run(s, None, 0).status, 1)
    d = run(s, d.status, 11, FAIL)
    assert (d.status.phase, d.status.failed_checks, d.status.step) == ("Progressing", 1, 1)
    d = run(s, d.status, 21, FAIL)
    assert d.status.phase == "RolledBack" and d.status.candidate_weight == 0
    assert "success-rate = 0.7 below min 0.99" in (d.status.message or "")
    assert [a.kind for a in d.actions] == ["tag-failed"]  # the stable alias is never touched
    assert [e.reason for e in d.events] == ["RolledBack"] and d.events[0].type == "Warning"
    assert effective_weights(s, d.status) == {"stable": 1000, "canary": 0}
    assert run(s, d.status, 500).status.phase == "RolledBack"  # no retry by itself
    retried = run(s, d.status, 600, retry="2")
    assert retried.status.phase == "Progressing" and retried.status.step == 1
    assert [(a.kind, a.detail) for a in retried.actions] == [("consume-annotation", "dockyard.dev/retry")]


def test_an_inconclusive_check_neither_advances_nor_counts_as_failure() -> None:
    s = spec()
    d = run(s, run(s, None, 0).status, 1)
    d = run(s, d.status, 11, NO_DATA)
    assert (d.status.step, d.status.failed_checks, d.status.reason) == (1, 0, "Inconclusive")
    assert d.status.next_check_at == "2026-12-01T12:00:21Z"


def test_approval_pauses_refuses_the_wrong_version_and_promotes_the_right_one() -> None:
    s = spec(manualApproval=True)
    d = run(s, run(s, None, 0).status, 1)
    d = run(s, run(s, d.status, 11, PASS).status, 21, PASS)
    assert d.status.phase == "AwaitingApproval" and d.status.candidate_weight == 50
    refused = run(s, d.status, 25, approve="7")
    assert refused.status.phase == "AwaitingApproval" and "approval refused" in (refused.status.message or "")
    assert [e.reason for e in refused.events] == ["ApprovalRefused"]
    assert run(s, refused.status, 26, approve="7").events == []  # said once
    ok = run(s, refused.status, 27, approve="2", approved_by="alice")
    assert ok.status.phase == "Promoted" and ok.status.approved_by == "alice"
    assert [a.kind for a in ok.actions] == ["tag-approved", "move-alias", "tag-promoted", "consume-annotation"]


def test_a_restart_after_the_alias_moved_finishes_the_promotion_without_moving_it_again() -> None:
    s = spec(bakeWindow="30s")
    d = run(s, run(s, None, 0).status, 1)
    d = run(s, d.status, 11, PASS)
    # The operator moved the alias at the last step and died before writing status.
    resumed = run(s, d.status, 25, stable="2")
    assert resumed.status.phase == "Baking" and resumed.status.previous_version == "1"
    assert [a.kind for a in resumed.actions] == ["tag-promoted"]


def test_a_failure_in_the_bake_window_moves_the_alias_back() -> None:
    s = spec(bakeWindow="1m")
    d = run(s, run(s, None, 0).status, 1)
    d = run(s, run(s, d.status, 11, PASS).status, 21, PASS)
    assert d.status.phase == "Baking"
    d = run(s, d.status, 31, FAIL, stable="2")
    d = run(s, d.status, 41, FAIL, stable="2")
    assert d.status.phase == "RolledBack"
    assert [(a.kind, a.version, a.detail) for a in d.actions][0] == ("move-alias", "1", "champion")
    baked = run(s, run(s, run(s, None, 0).status, 1).status, 11, PASS)
    baked = run(s, baked.status, 21, PASS)
    assert run(s, baked.status, 90, stable="2").status.phase == "Promoted"  # window over, no failure


def test_a_newer_version_restarts_the_rollout() -> None:
    s = spec()
    d = run(s, run(s, run(s, None, 0).status, 1).status, 11, PASS)
    assert d.status.step == 2
    d = run(s, d.status, 12, candidate="3", ready=False)
    assert (d.status.phase, d.status.candidate_version, d.status.step) == ("Waiting", "3", 0)
    assert [e.reason for e in d.events] == ["RolloutRestarted", "RolloutStarted"]


def test_without_prometheus_the_candidate_is_held_at_zero_with_the_reason() -> None:
    s = spec()
    blocked = decide(s.rollout, None, replace(seen(0), prometheus_url=None))  # type: ignore[arg-type]
    assert blocked.status.phase == "Blocked" and blocked.status.reason == "PrometheusNotConfigured"
    assert "DOCKYARD_PROMETHEUS_URL" in (blocked.status.message or "")
    again = decide(s.rollout, blocked.status, replace(seen(5), prometheus_url=None))  # type: ignore[arg-type]
    assert again.events == []  # no Event storm while it stays blocked
    assert decide(s.rollout, blocked.status, seen(9)).status.phase == "Progressing"  # type: ignore[arg-type]


def test_effective_weights_split_the_rest_by_declared_weight() -> None:
    s = ModelDeploymentSpec.model_validate({
        "modelName": "m",
        "variants": [{"name": "a", "alias": "champion", "weight": 2}, {"name": "b", "version": "1", "weight": 1},
                     {"name": "c", "alias": "challenger", "weight": 0}, {"name": "s", "version": "3", "shadow": 10}],
        "rollout": {"candidate": "c", "steps": [25]},
    })
    status = RolloutStatus(phase="Progressing", candidate_version="5", step=1, steps=1, candidate_weight=25)
    weights = effective_weights(s, status)
    assert weights == {"a": 500, "b": 250, "c": 250, "s": 0} and sum(weights.values()) == 1000


def test_a_step_is_analysed_one_interval_after_the_router_serves_its_weights() -> None:
    s = spec()
    d = run(s, None, 0, router_settled=False)  # step 1 at once (candidate ready); old router Pods answer
    assert d.status.step == 1 and d.status.traffic_since is None
    d = run(s, d.status, 30, router_settled=False)
    assert not d.analyse and d.status.step == 1, "no check judges traffic the step never got"
    d = run(s, d.status, 31)  # the router's new Pods serve the step's weights
    assert d.status.traffic_since == "2026-12-01T12:00:31Z"
    assert not run(s, d.status, 40).analyse
    assert run(s, d.status, 41, PASS).status.step == 2


def test_the_router_serves_a_step_once_its_deployment_of_that_config_is_rolled_out() -> None:
    from types import SimpleNamespace
    from typing import Any

    from dockyard.builders.serving import desired_serving_children
    from dockyard.config import OperatorConfig
    from dockyard.controllers.base import Cache, slim
    from dockyard.controllers.modeldeployment import with_weights
    from dockyard.controllers.rollout import router_serving

    s = spec()
    body = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ns", "uid": "u1", "generation": 1}}

    def children(weights: dict[str, int]) -> list[dict[str, Any]]:
        return desired_serving_children(body, with_weights(s, weights), {"stable": "1", "canary": "2"},
                                        OperatorConfig(), model_uris={"stable": "s3://b/1", "canary": "s3://b/2"})

    def serving(applied: list[dict[str, Any]], now: list[dict[str, Any]], **status: int) -> bool:
        router = next(o for o in applied if o["kind"] == "Deployment" and o["metadata"]["name"] == "iris-router")
        cache = Cache()
        # The watch cache keeps only metadata and status of children (slim).
        cache.put(("Deployment", "ns", "iris-router"), slim(
            {**router, "metadata": {**router["metadata"], "generation": 2},
             "status": {"observedGeneration": 2, **status}}, keep_spec=False))
        ctx: Any = SimpleNamespace(cache=cache)
        return router_serving(ctx, now)

    step_1, step_2 = children({"stable": 900, "canary": 100}), children({"stable": 500, "canary": 500})
    done = {"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "terminatingReplicas": 0}
    assert serving(step_1, step_1, **done)
    assert not serving(step_1, step_2, **done), "the router Pods run the previous step's config"
    assert not serving(step_2, step_2, **{**done, "terminatingReplicas": 1}), "an old Pod still drains"


def test_a_candidate_that_never_becomes_ready_is_rolled_back_not_waited_on_forever() -> None:
    s = spec()
    d = run(s, None, 0, ready=False)
    assert d.status.phase == "Waiting"
    stuck = 'ReplicaSet "iris-canary-1" has timed out progressing.'
    d = run(s, d.status, 600, ready=False, candidate_stuck=stuck)
    assert (d.status.phase, d.status.reason, d.status.candidate_weight) == ("RolledBack", "CandidateNotReady", 0)
    assert stuck in (d.status.message or "") and d.events[0].type == "Warning"
    assert [(a.kind, a.version) for a in d.actions] == [("tag-failed", "2")]
