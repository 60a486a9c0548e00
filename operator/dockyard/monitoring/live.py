"""Live traffic against a reference profile: into which bucket each value falls (what the
serving Pods will count), and the drift of a window of counts (what the operator will
compute from those counters summed over every replica, so several replicas merge exactly).

Buckets are labelled so they can be Prometheus label values: ``"0"`` ... ``"k"`` for the bins
of a numeric column, the category itself for a kept category, and :data:`OTHER` for the rest.
Missing values, numbers outside the reference's [min, max] and categories the reference never
saw are counted on their own as well (they are what a broken client looks like).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .drift import (
    DATASET_DRIFT_SHARE,
    JS_THRESHOLD,
    PSI_SIGNIFICANT,
    bin_index,
    category_vector,
    dataset_drift,
    js_distance,
    psi,
)
from .reference import CategoricalProfile, NumericProfile, ReferenceProfile, is_missing

OTHER = "__other__"
DEFAULT_MIN_SAMPLES = 100


@dataclass
class ColumnCounts:
    """Counts of one column over a window (or since start: counters only grow)."""

    buckets: Counter[str] = field(default_factory=Counter)
    missing: int = 0
    out_of_range: int = 0  # numeric: outside the reference's [min, max]
    unseen: int = 0  # categorical: a category the reference never saw
    invalid: int = 0  # a value of the wrong type (text for a numeric column)

    @property
    def observed(self) -> int:
        return sum(self.buckets.values())


Anomaly = Literal["missing", "out_of_range", "unseen", "invalid"]


def bucket(profile: NumericProfile | CategoricalProfile, value: Any) -> tuple[str | None, Anomaly | None]:
    """The bucket label of one value (None when it goes into no bucket), and what is odd
    about it. Out-of-range numbers and unseen categories are still bucketed: they are traffic."""
    if is_missing(value):
        return None, "missing"
    if isinstance(profile, NumericProfile):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "invalid"
        number = float(value)
        odd: Anomaly | None = "out_of_range" if number < profile.min or number > profile.max else None
        return str(bin_index(profile.cuts, number)), odd
    text = str(value)
    if text in profile.categories:
        return text, None
    # Categories the reference lumped into "other" are not listed; without an "other" share,
    # every category beyond the kept ones is one the reference never saw.
    return OTHER, "unseen" if profile.other == 0 else None


def observe(profile: NumericProfile | CategoricalProfile, value: Any, counts: ColumnCounts) -> None:
    """Count one value of a column."""
    label, odd = bucket(profile, value)
    if label is not None:
        counts.buckets[label] += 1
    if odd is not None:
        setattr(counts, odd, getattr(counts, odd) + 1)


@dataclass(frozen=True)
class ColumnDrift:
    method: Literal["psi", "jensenshannon"]
    score: float | None  # None: too few observations (inconclusive)
    threshold: float
    samples: int

    @property
    def drifted(self) -> bool | None:
        return None if self.score is None else self.score > self.threshold


def column_drift(profile: NumericProfile | CategoricalProfile, counts: ColumnCounts, *,
                 psi_threshold: float = PSI_SIGNIFICANT, js_threshold: float = JS_THRESHOLD,
                 min_samples: int = DEFAULT_MIN_SAMPLES) -> ColumnDrift:
    samples = counts.observed
    if isinstance(profile, NumericProfile):
        live = [float(counts.buckets.get(str(i), 0)) for i in range(len(profile.fractions))]
        score = psi(profile.fractions, [c / samples for c in live]) if samples >= min_samples else None
        return ColumnDrift("psi", score, psi_threshold, samples)
    live_counts = {k: float(v) for k, v in counts.buckets.items() if k != OTHER}
    live_counts[OTHER] = float(counts.buckets.get(OTHER, 0))
    # OTHER is not a reference category, so category_vector adds it to the last ("other") bucket.
    ref, cur = category_vector(profile.categories, profile.other, live_counts)
    score = js_distance(ref, cur) if samples >= min_samples else None
    return ColumnDrift("jensenshannon", score, js_threshold, samples)


@dataclass(frozen=True)
class DriftReport:
    features: dict[str, ColumnDrift]
    prediction: ColumnDrift | None
    share: float

    @property
    def dataset_drift(self) -> bool | None:
        verdicts = [d.drifted for d in self.features.values()]
        if not verdicts or any(v is None for v in verdicts):
            return None
        return dataset_drift((bool(v) for v in verdicts), share=self.share)

    def most_drifted(self, limit: int = 3) -> list[tuple[str, ColumnDrift]]:
        """Drifted features, the largest score relative to its threshold first."""
        drifted = [(n, d) for n, d in self.features.items() if d.drifted]
        return sorted(drifted, key=lambda item: -(item[1].score or 0) / item[1].threshold)[:limit]


def evaluate(profile: ReferenceProfile, features: Mapping[str, ColumnCounts], prediction: ColumnCounts | None = None,
             *, watch: Sequence[str] | None = None, share: float = DATASET_DRIFT_SHARE,
             **thresholds: Any) -> DriftReport:
    """Drift of one window of counts against the profile, per watched feature (default all)."""
    names = list(watch) if watch is not None else sorted(profile.features)
    unknown = [n for n in names if n not in profile.features]
    if unknown:
        raise KeyError(f"features not in the reference profile: {', '.join(unknown)}")
    report = {n: column_drift(profile.features[n], features.get(n) or ColumnCounts(), **thresholds) for n in names}
    pred = None
    if profile.prediction is not None and prediction is not None:
        pred = column_drift(profile.prediction, prediction, **thresholds)
    return DriftReport(report, pred, share)
