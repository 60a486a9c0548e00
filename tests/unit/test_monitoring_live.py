"""Unit tests for dockyard.monitoring.live: counting live values into the reference's buckets
and judging a window of counts (issue 13)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dockyard.monitoring.live import OTHER, ColumnCounts, column_drift, evaluate, observe
from dockyard.monitoring.reference import ReferenceProfile, categorical_profile, numeric_profile

RNG = random.Random(13)
TRAIN = [RNG.gauss(5.0, 1.0) for _ in range(2000)]
COLOURS = ["red"] * 50 + ["green"] * 30 + ["blue"] * 20
PROFILE = ReferenceProfile(rows=2000, features={"size": numeric_profile(TRAIN),
                                                "colour": categorical_profile(COLOURS)})


def counted(values: list[object], column: str = "size") -> ColumnCounts:
    counts = ColumnCounts()
    for v in values:
        observe(PROFILE.features[column], v, counts)
    return counts


def test_in_distribution_traffic_is_stable() -> None:
    drift = column_drift(PROFILE.features["size"], counted([RNG.gauss(5.0, 1.0) for _ in range(1000)]))
    assert drift.method == "psi" and drift.drifted is False and drift.score is not None and drift.score < 0.1


def test_a_feature_scaled_by_three_drifts_and_is_out_of_range() -> None:
    counts = counted([3 * RNG.gauss(5.0, 1.0) for _ in range(1000)])
    drift = column_drift(PROFILE.features["size"], counts)
    assert drift.drifted is True and drift.score is not None and drift.score > 0.25
    assert counts.out_of_range > 500


def test_an_unseen_category_drifts_and_is_counted() -> None:
    counts = counted(["red"] * 40 + ["purple"] * 60, "colour")
    assert counts.unseen == 60 and counts.buckets[OTHER] == 60
    drift = column_drift(PROFILE.features["colour"], counts)
    assert drift.method == "jensenshannon" and drift.drifted is True


def test_missing_and_wrongly_typed_values_are_counted_not_binned() -> None:
    counts = counted([None, float("nan"), "five", True, 5.0])
    assert (counts.missing, counts.invalid, counts.observed) == (2, 2, 1)


def test_too_few_requests_are_inconclusive() -> None:
    drift = column_drift(PROFILE.features["size"], counted([50.0] * 99), min_samples=100)
    assert drift.score is None and drift.drifted is None


def test_replicas_merge_by_adding_counts() -> None:
    """What Prometheus does with counters of several Pods: the sum is one window."""
    one, two = counted([RNG.gauss(5, 1) for _ in range(500)]), counted([15.0] * 500)
    merged = ColumnCounts(one.buckets + two.buckets)
    alone = counted([*([RNG.gauss(5, 1) for _ in range(500)]), *([15.0] * 500)])
    assert merged.observed == alone.observed == 1000
    assert column_drift(PROFILE.features["size"], merged).score == pytest.approx(
        column_drift(PROFILE.features["size"], alone).score, rel=0.2)


def test_report_names_the_drifted_features_and_dataset_drift() -> None:
    report = evaluate(PROFILE, {"size": counted([3 * RNG.gauss(5, 1) for _ in range(500)]),
                                "colour": counted(["red", "green", "blue", "red", "red"] * 100, "colour")})
    assert [name for name, _ in report.most_drifted()] == ["size"]
    assert report.dataset_drift is True  # 1 of 2 features: Evidently's share 0.5
    assert evaluate(PROFILE, {}, share=0.5).dataset_drift is None  # nothing counted yet
    with pytest.raises(KeyError, match="weight"):
        evaluate(PROFILE, {}, watch=["size", "weight"])


def test_every_series_exists_at_zero_before_any_traffic() -> None:
    """Prometheus's increase() misses the first increments of a series that appears mid-window:
    each bucket and anomaly a value can land in is exported at 0 from the start."""
    from prometheus_client import CollectorRegistry

    from dockyard.runtime.monitor_counts import Monitor, PrometheusCounters

    profile = PROFILE.model_copy(update={"prediction": categorical_profile(["yes", "no", "no"])})
    registry = CollectorRegistry()
    monitor = Monitor(profile, "m", "3", "champion", PrometheusCounters(registry))

    def exported() -> dict[tuple[str, ...], float]:
        """(metric, extra label values in label-name order: bucket, feature, kind, outcome) -> value"""
        return {(s.name, *(v for k, v in sorted(s.labels.items()) if k not in ("model", "version", "variant"))): s.value
                for family in registry.collect() for s in family.samples
                if s.name.endswith("_total") and s.labels.get("variant") == "champion"}

    before = exported()
    assert set(before.values()) == {0.0}
    bins = len(profile.features["size"].fractions)
    assert {k for k in before if k[0] == "dockyard_monitor_feature_values_total"} == {
        *(("dockyard_monitor_feature_values_total", str(i), "size") for i in range(bins)),
        *(("dockyard_monitor_feature_values_total", c, "colour") for c in ("blue", "green", "red", OTHER))}
    assert {k[1:] for k in before if k[0] == "dockyard_monitor_feature_anomalies_total"} == {
        ("size", "missing"), ("size", "out_of_range"), ("size", "invalid"), ("colour", "missing"), ("colour", "unseen")}
    assert {k[1] for k in before if k[0] == "dockyard_monitor_predictions_total"} == {"no", "yes", OTHER}
    assert {k[1] for k in before if k[0] == "dockyard_monitor_requests_total"} == {"counted", "mismatch"}

    # Whatever live traffic brings (far outside the range, wrong types, new categories), it
    # lands only in series that were there from the start.
    sizes = [-1e9, *TRAIN[:200], 1e9, None, "five", True]
    colours = ["red", "purple", None, 7, "green", "blue"]
    rows = max(len(sizes), len(colours))
    assert monitor.observe({"size": (sizes * 2)[:rows], "colour": (colours * 3)[:rows]}, ["yes", "maybe", None])
    assert not monitor.observe({"weight": [1.0]}, None)
    after = exported()
    assert set(after) == set(before)
    assert after[("dockyard_monitor_feature_anomalies_total", "colour", "unseen")] > 0
    assert after[("dockyard_monitor_feature_values_total", str(bins - 1), "size")] > 0
    assert after[("dockyard_monitor_requests_total", "mismatch")] == 1


def test_a_reference_with_an_other_share_has_no_unseen_series() -> None:
    from dockyard.runtime.monitor_counts import FEATURE_ANOMALIES, Increments, Monitor

    profile = ReferenceProfile(rows=100, features={"colour": categorical_profile(COLOURS, max_categories=2)})
    monitor = Monitor(profile, "m", "1", "v", Increments())
    assert [labels[-1] for metric, labels in monitor.series() if metric is FEATURE_ANOMALIES] == ["missing"]
    monitor.observe({"colour": ["blue", "purple"]}, None)  # both beyond the two kept categories: "other"
    assert {labels[-1]: v for (metric, labels), v in monitor.sink.take().items()  # type: ignore[attr-defined]
            if metric is not FEATURE_ANOMALIES and len(labels) == 5} == {OTHER: 2}


def test_seldon_counts_a_refused_request_once(tmp_path: Path) -> None:
    """seldon-core calls predict() again without `meta` when it raises a TypeError (taking it
    for an old signature): a model that raises one must not be counted, or run, twice."""
    from seldon_core.user_model import client_predict

    from dockyard.runtime.monitor_counts import PROFILE_FILE, REQUESTS
    from dockyard.runtime.seldon_model import DockyardModel

    (tmp_path / "dockyard.json").write_text('{"model": "m", "version": "3", "variant": "champion"}')
    (tmp_path / PROFILE_FILE).write_text(PROFILE.model_dump_json())
    calls: list[int] = []

    class Refusing:
        def predict(self, frame: object) -> object:
            calls.append(1)
            raise TypeError("could not convert string to float: 'five'")

    model = DockyardModel(model_dir=str(tmp_path))
    model.model, model.loaded = Refusing(), True
    with pytest.raises(ValueError, match="refused the input"):
        client_predict(model, [["five", "red"]], ["size", "colour"], meta={})
    assert len(calls) == 1
    assert model._counts.take() == {(REQUESTS, ("m", "3", "champion", "mismatch")): 1}


def test_seldon_refuses_to_count_series_it_would_merge() -> None:
    """seldon-core keys a series by its tags joined as `k-v_k-v`: categories that make two
    series' keys equal would add their counts together; such a profile is not counted at all."""
    from dockyard.runtime.monitor_counts import Increments, Monitor
    from dockyard.runtime.seldon_model import seldon_key_clash

    def monitor(features: dict[str, list[str]]) -> Monitor:
        profile = ReferenceProfile(rows=2, features={k: categorical_profile(v) for k, v in features.items()})
        return Monitor(profile, "m", "1", "v", Increments())

    assert seldon_key_clash(monitor({"a": ["x", "y"], "b": ["x_feature-a"]})) is None
    # bucket "x_feature-b" of feature "a" and bucket "x" of feature "b_feature-a" join to the
    # same key: bucket-x_feature-b_feature-a_...
    clash = seldon_key_clash(monitor({"a": ["x_feature-b"], "b_feature-a": ["x"]}))
    assert clash is not None and "dockyard_monitor_feature_values" in clash
