"""Unit tests for dockyard.monitoring: reference profiles and drift statistics (issue 13)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from dockyard.monitoring.drift import (
    bin_index,
    category_vector,
    dataset_drift,
    js_distance,
    psi,
    psi_band,
)
from dockyard.monitoring.reference import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    build_profile,
    numeric_profile,
)


def test_numeric_profile_has_quantile_bins_of_equal_share() -> None:
    """Cut points are data values (numpy's quantile method "lower"), so no bin is empty."""
    profile = numeric_profile(range(1, 101), bins=4)
    assert profile.cuts == [25, 50, 75]
    assert profile.fractions == [0.25, 0.25, 0.25, 0.25]
    assert (profile.min, profile.max, profile.missing) == (1, 100, 0)


def test_repeated_values_give_fewer_bins_not_empty_ones() -> None:
    profile = numeric_profile([0.0] * 80 + [1.0] * 20 + [None] * 25, bins=10)
    assert profile.cuts == [0.0]
    assert profile.fractions == [0.8, 0.2]
    assert profile.missing == pytest.approx(0.2)


def test_profile_of_a_frame_and_predictions() -> None:
    frame = pd.DataFrame({"x": [float(i) for i in range(10)], "colour": ["red"] * 6 + ["blue"] * 3 + [None]})
    profile = build_profile(frame, ["a", "b", "a", "a"], max_categories=1)
    assert isinstance(profile.features["x"], NumericProfile)
    colour = profile.features["colour"]
    assert isinstance(colour, CategoricalProfile)
    assert colour.categories == {"red": pytest.approx(6 / 9)}
    assert colour.other == pytest.approx(3 / 9) and colour.missing == pytest.approx(0.1)
    assert profile.prediction == CategoricalProfile(categories={"a": 0.75}, other=0.25, missing=0.0)
    again = ReferenceProfile.model_validate_json(profile.model_dump_json())  # the artifact round-trips
    assert again == profile and profile.rows == 10


def test_bins_are_right_closed_and_open_at_both_ends() -> None:
    cuts = [1.0, 2.0]
    assert [bin_index(cuts, v) for v in (-100, 1.0, 1.5, 2.0, 2.5, 1e9)] == [0, 0, 1, 1, 2, 2]


def test_psi_known_value_and_bands() -> None:
    # (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0.2] * 5, [0.2] * 5) == 0
    assert math.isfinite(psi([0.5, 0.5], [1.0, 0.0]))  # an empty bin is clipped, not infinite
    assert [psi_band(s) for s in (0.05, 0.1, 0.25, 0.26)] == ["stable", "moderate", "moderate", "significant"]
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


@pytest.mark.parametrize("p, q", [([0.5, 0.5], [0.9, 0.1]), ([1, 0, 0], [0, 0, 1]), ([3, 1, 1], [1, 1, 3])])
def test_js_distance_agrees_with_scipy(p: list[float], q: list[float]) -> None:
    assert js_distance(p, q) == pytest.approx(float(jensenshannon(p, q)), abs=1e-12)


def test_unseen_categories_land_in_other() -> None:
    ref, live = category_vector({"a": 0.6, "b": 0.4}, 0.0, {"a": 5, "zebra": 5})
    assert ref == [0.6, 0.4, 0.0] and live == [5, 0.0, 5]
    assert js_distance(ref, live) > 0.1


def test_dataset_drift_share() -> None:
    assert dataset_drift([True, False]) is True  # half drifted: Evidently's default share 0.5
    assert dataset_drift([True, False, False]) is False
    assert dataset_drift([True, False, False], share=0.3) is True
    assert dataset_drift([]) is False


def test_cuts_are_numpys_lower_quantiles() -> None:
    import numpy as np

    values = np.random.default_rng(7).normal(size=1000)
    profile = numeric_profile(values.tolist())
    assert profile.cuts == pytest.approx(np.quantile(values, np.linspace(0, 1, 11)[1:-1], method="lower").tolist())
    assert profile.fractions == pytest.approx([0.1] * 10)
