"""A drift window from Prometheus series to the ModelDeployment's status (monitoring.window),
and the consecutive-window count retraining keys on (controllers.monitoring)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from dockyard.analysis import serving_matchers
from dockyard.api.monitoring import MonitoringSpec, VariantDrift
from dockyard.controllers.monitoring import _next_status
from dockyard.monitoring.live import OTHER, bucket
from dockyard.monitoring.reference import build_profile
from dockyard.monitoring.window import counts_from_series, drift_condition, variant_drift, window_queries


def profile_and_rows(n: int = 600) -> tuple[object, list[dict[str, object]]]:
    rng = np.random.default_rng(0)
    rows = [{"size": float(rng.normal(10, 2)), "colour": str(rng.choice(["red", "green", "blue"]))}
            for _ in range(n)]
    import pandas as pd

    features = pd.DataFrame({"size": [r["size"] for r in rows], "colour": [r["colour"] for r in rows]})
    return build_profile(features, [r["colour"] for r in rows]), rows


def series_for(profile: object, rows: list[dict[str, object]]) -> tuple[list, list, list, list]:
    """What the four window queries return for `rows`, as serving would have counted them."""
    values: dict[tuple[str, str], float] = {}
    anomalies: dict[tuple[str, str], float] = {}
    for row in rows:
        for name, column in profile.features.items():  # type: ignore[attr-defined]
            label, odd = bucket(column, row[name])
            if label is not None:
                values[(name, label)] = values.get((name, label), 0) + 1
            if odd is not None:
                anomalies[(name, odd)] = anomalies.get((name, odd), 0) + 1
    return ([({"feature": f, "bucket": b}, v) for (f, b), v in values.items()],
            [({"feature": f, "kind": k}, v) for (f, k), v in anomalies.items()],
            [({"bucket": "red"}, len(rows) / 3.0)],
            [({"outcome": "counted"}, float(len(rows))), ({"outcome": "mismatch"}, 2.0)])


def test_queries_sum_every_replica_of_one_variant_version_over_the_window() -> None:
    q = window_queries(serving_matchers("ns", "iris", "stable", "3"), 20)
    assert q.features == ('sum by (feature, bucket) (increase(dockyard_monitor_feature_values_total{namespace="ns", '
                          'modeldeployment="iris", variant="stable", model_version="3"}[20s]))')
    assert "sum by (outcome)" in q.requests and "[20s]" in q.anomalies


def test_in_distribution_window_is_no_drift_and_a_shifted_one_names_exactly_the_shifted_features() -> None:
    profile, rows = profile_and_rows()
    spec = MonitoringSpec(min_samples=100)
    calm, _ = variant_drift("stable", "3", spec, profile, counts_from_series(*series_for(profile, rows[:300])))
    assert calm.result == "NoDrift" and calm.drifted_features == 0 and calm.requests == 300, calm

    shifted = [{"size": 3 * r["size"], "colour": "purple"} for r in rows[:300]]  # type: ignore[operator]
    counts = counts_from_series(*series_for(profile, shifted))
    assert counts.features["size"].out_of_range > 250 and counts.features["colour"].unseen == 300
    drift, report = variant_drift("stable", "3", spec, profile, counts)
    assert drift.result == "Drift" and report is not None
    assert {f.name for f in drift.features or [] if f.drifted} == {"size", "colour"}
    size = next(f for f in drift.features or [] if f.name == "size")
    assert size.anomalies == {"out_of_range": counts.features["size"].out_of_range}
    assert "2 requests did not carry" in (drift.message or "")
    status, reason, message = drift_condition([drift, calm])
    assert (status, reason) == ("True", "DriftDetected")
    assert "variant stable (version 3)" in message and "size psi" in message and "colour jensenshannon" in message


def test_too_little_traffic_is_inconclusive_and_unknown_features_are_a_clear_error() -> None:
    profile, rows = profile_and_rows()
    few, _ = variant_drift("stable", "3", MonitoringSpec(min_samples=100), profile,
                           counts_from_series(*series_for(profile, rows[:40])))
    assert few.result == "Inconclusive" and few.reason == "TooFewSamples"
    assert drift_condition([few])[:2] == ("Unknown", "TooFewSamples")

    wrong, report = variant_drift("stable", "3", MonitoringSpec(features=["size", "weight"]), profile,
                                  counts_from_series([], [], [], []))
    assert wrong.result == "Error" and wrong.reason == "UnknownFeatures" and report is None
    assert "weight" in (wrong.message or "") and "colour, size" in (wrong.message or "")
    assert drift_condition([wrong])[:2] == ("Unknown", "UnknownFeatures")


def test_other_bucket_counts_reach_the_categorical_column() -> None:
    counts = counts_from_series([({"feature": "colour", "bucket": OTHER}, 4.6)], [], [], [])
    assert counts.features["colour"].buckets[OTHER] == 5  # increase() extrapolates: rounded


def test_drifted_windows_count_up_calm_ones_reset_and_inconclusive_ones_leave_the_count() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)

    def window(result: str) -> list[VariantDrift]:
        return [VariantDrift(name="stable", version="3", result=result)]  # type: ignore[arg-type]

    first = _next_status(None, window("Drift"), 20, now)
    second = _next_status(first, window("Drift"), 20, now)
    held = _next_status(second, window("Inconclusive"), 20, now)
    calm = _next_status(held, window("NoDrift"), 20, now)
    assert [s.consecutive_drift_windows for s in (first, second, held, calm)] == [1, 2, 2, 0]
    assert first.drift_since == second.drift_since == held.drift_since and calm.drift_since is None
