"""The reference profile of a model version: what its training data and its predictions on
the held-out split looked like, binned the way live traffic will be counted.

* numeric features: quantile cut points (up to ``bins`` bins, fewer when values repeat) and
  the fraction of rows per bin; the observed min and max (live values outside them are
  counted as out of range); the fraction of missing values;
* categorical features: the frequencies of the ``max_categories`` most frequent categories,
  the rest in one "other" bucket; the fraction of missing values;
* the model's predictions on its held-out split, by the same rules (class labels are
  categorical, regression outputs numeric).

It is an artifact of the MLflow run (``reference/profile.json``), so it travels with every
model version registered from that run. The built-in trainer logs it; bring-your-own
trainers call :func:`log_reference_profile` (docs/training-contract.md).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .drift import bin_index

PROFILE_ARTIFACT = "reference/profile.json"
PROFILE_TAG = "dockyard.reference_profile"
DEFAULT_BINS = 10
DEFAULT_MAX_CATEGORIES = 20


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericProfile(_Profile):
    kind: Literal["numeric"] = "numeric"
    cuts: list[float] = Field(description="Bin boundaries: bins (-inf, c0], (c0, c1], ..., (c_last, inf).")
    fractions: list[float] = Field(description="Share of the non-missing rows in each bin.")
    min: float
    max: float
    missing: float = Field(ge=0, le=1, description="Share of rows without a value.")


class CategoricalProfile(_Profile):
    kind: Literal["categorical"] = "categorical"
    categories: dict[str, float] = Field(description="Share of the non-missing rows per kept category.")
    other: float = Field(ge=0, le=1, description="Share of the rest (categories beyond the most frequent).")
    missing: float = Field(ge=0, le=1)


ColumnProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceProfile(_Profile):
    schema_version: Literal[1] = 1
    rows: int = Field(ge=1, description="Training rows profiled.")
    features: dict[str, ColumnProfile]
    prediction: ColumnProfile | None = None


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_profile(values: Iterable[Any], *, bins: int = DEFAULT_BINS) -> NumericProfile:
    raw = list(values)
    present = sorted(float(v) for v in raw if not is_missing(v))
    if not present:
        raise ValueError("no values to profile")
    n = len(present)
    # Quantile cut points taken from the data (numpy's "lower" method), deduplicated: each bin
    # (c_prev, c] holds at least c, so no bin is empty, and a feature with few distinct values
    # gets fewer bins rather than empty ones.
    cuts: list[float] = []
    for i in range(1, bins):
        cut = present[math.floor((n - 1) * i / bins)]
        if cut < present[-1] and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    counts = [0] * (len(cuts) + 1)
    for v in present:
        counts[bin_index(cuts, v)] += 1
    return NumericProfile(cuts=cuts, fractions=[c / n for c in counts], min=present[0], max=present[-1],
                          missing=(len(raw) - n) / len(raw))


def categorical_profile(values: Iterable[Any], *, max_categories: int = DEFAULT_MAX_CATEGORIES) -> CategoricalProfile:
    raw = list(values)
    present = [str(v) for v in raw if not is_missing(v)]
    if not present:
        raise ValueError("no values to profile")
    counts = Counter(present)
    kept = dict(sorted(counts.most_common(max_categories)))
    n = len(present)
    return CategoricalProfile(categories={k: c / n for k, c in kept.items()},
                              other=(n - sum(kept.values())) / n, missing=(len(raw) - n) / len(raw))


def column_profile(values: Sequence[Any], *, bins: int = DEFAULT_BINS,
                   max_categories: int = DEFAULT_MAX_CATEGORIES) -> NumericProfile | CategoricalProfile:
    """Numeric when every present value is a number (booleans are categories), else categorical."""
    present = [v for v in values if not is_missing(v)]
    if present and all(_is_number(v) for v in present):
        return numeric_profile(values, bins=bins)
    return categorical_profile(values, max_categories=max_categories)


def build_profile(features: Any, predictions: Sequence[Any] | None = None, *, bins: int = DEFAULT_BINS,
                  max_categories: int = DEFAULT_MAX_CATEGORIES) -> ReferenceProfile:
    """Profile a pandas DataFrame of training features (and held-out predictions)."""
    columns = {str(name): column_profile(_plain(features[name]), bins=bins, max_categories=max_categories)
               for name in features.columns}
    prediction = None
    if predictions is not None:
        prediction = column_profile(_plain(predictions), bins=bins, max_categories=max_categories)
    return ReferenceProfile(rows=len(features), features=columns, prediction=prediction)


def _plain(values: Any) -> list[Any]:
    """Python scalars from a pandas Series, a numpy array or a list (numpy's float64 is a float,
    but its int64 and bool_ are not int/bool)."""
    items = values.tolist() if hasattr(values, "tolist") else list(values)
    return list(items)


def log_reference_profile(features: Any, predictions: Sequence[Any] | None = None, **options: Any) -> ReferenceProfile:
    """For trainers: profile the training features and the held-out predictions, and log the
    profile into the active MLflow run, where Dockyard's serving Pods find it."""
    import mlflow

    profile = build_profile(features, predictions, **options)
    mlflow.log_dict(profile.model_dump(mode="json"), PROFILE_ARTIFACT)
    mlflow.set_tag(PROFILE_TAG, PROFILE_ARTIFACT)
    return profile
