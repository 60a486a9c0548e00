"""Drift statistics over binned distributions, in plain Python (the operator image carries
no numpy). The conventions are Evidently's, so thresholds people know carry over:

* **PSI** (population stability index) for numeric features, over the reference's quantile
  bins; below 0.1 stable, 0.1-0.25 moderate, above 0.25 significant. Empty bins are clipped
  to a small fraction, as Evidently does, so one empty bin does not make the index infinite.
* **Jensen-Shannon distance** (natural log, scipy's default, as Evidently uses it) for
  categorical features; drift above 0.1.
* **Dataset drift** when at least a share of the features drift (Evidently: 0.5).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
JS_THRESHOLD = 0.1
DATASET_DRIFT_SHARE = 0.5
EMPTY_BIN_FRACTION = 1e-4


def bin_index(cuts: Sequence[float], value: float) -> int:
    """The bin of `value` among len(cuts)+1 bins: (-inf, c0], (c0, c1], ..., (c_last, inf)."""
    return bisect.bisect_left(cuts, value)


def fractions(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("no observations")
    return [c / total for c in counts]


def psi(reference: Sequence[float], live: Sequence[float], *, floor: float = EMPTY_BIN_FRACTION) -> float:
    """Population stability index of `live` against `reference` (fractions per bin)."""
    if len(reference) != len(live) or not reference:
        raise ValueError(f"psi needs two distributions over the same bins, got {len(reference)} and {len(live)}")
    total = 0.0
    for expected, actual in zip(reference, live, strict=True):
        e, a = max(expected, floor), max(actual, floor)
        total += (a - e) * math.log(a / e)
    return total


def psi_band(score: float) -> Literal["stable", "moderate", "significant"]:
    if score < PSI_MODERATE:
        return "stable"
    return "moderate" if score <= PSI_SIGNIFICANT else "significant"


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance (square root of the divergence, natural log) between two
    distributions over the same categories; 0 identical, sqrt(ln 2) ~ 0.83 disjoint."""
    if len(p) != len(q) or not p:
        raise ValueError(f"js_distance needs two distributions over the same categories, got {len(p)} and {len(q)}")
    p, q = fractions(p), fractions(q)
    divergence = 0.0
    for pi, qi in zip(p, q, strict=True):
        mi = (pi + qi) / 2
        if pi > 0:
            divergence += 0.5 * pi * math.log(pi / mi)
        if qi > 0:
            divergence += 0.5 * qi * math.log(qi / mi)
    return math.sqrt(max(divergence, 0.0))


def category_vector(reference: Mapping[str, float], other: float, live: Mapping[str, float]) -> tuple[
        list[float], list[float]]:
    """Reference and live distributions over the reference's categories plus one "other"
    bucket, into which live categories the reference never saw fall."""
    names = sorted(reference)
    ref = [reference[n] for n in names] + [other]
    unseen = sum(v for k, v in live.items() if k not in reference)
    cur = [float(live.get(n, 0.0)) for n in names] + [unseen]
    return ref, cur


def dataset_drift(drifted: Iterable[bool], *, share: float = DATASET_DRIFT_SHARE) -> bool:
    flags = list(drifted)
    return bool(flags) and sum(flags) / len(flags) >= share
