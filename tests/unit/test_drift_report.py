"""Unit tests for dockyard.monitoring.report: the drift report drawn as a PNG from a reference
profile, a window of bucket counts and the drift computed from them (issue 13)."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import pytest
from PIL import Image

from dockyard.monitoring.live import OTHER, ColumnCounts, ColumnDrift, DriftReport, evaluate, observe
from dockyard.monitoring.reference import (
    NumericProfile,
    ReferenceProfile,
    categorical_profile,
    numeric_profile,
)
from dockyard.monitoring.report import (
    anomaly_note,
    chart_buckets,
    format_number,
    numeric_labels,
    panel_order,
    render_report_png,
)

RNG = random.Random(13)
SIZES = [RNG.gauss(5.0, 1.0) for _ in range(2000)]
WEIGHTS = [RNG.gauss(70.0, 10.0) for _ in range(2000)]
COLOURS = ["red"] * 50 + ["green"] * 30 + ["blue"] * 20
SPECIES = ["setosa", "versicolor", "virginica"] * 30


def profile_of(features: int = 3) -> ReferenceProfile:
    columns = {"size": numeric_profile(SIZES), "colour": categorical_profile(COLOURS), "weight": numeric_profile(WEIGHTS)}
    for i in range(3, features):
        columns[f"extra_{i}"] = numeric_profile([RNG.uniform(0, 1) for _ in range(500)])
    return ReferenceProfile(rows=2000, features=columns, prediction=categorical_profile(SPECIES))


def window(profile: ReferenceProfile, n: int = 500) -> tuple[dict[str, ColumnCounts], ColumnCounts]:
    """Live traffic: size shifted by +3 (drifts, mostly out of range), colour with an unseen
    category, the rest as in training; predictions with more setosa."""
    counts = {name: ColumnCounts() for name in profile.features}
    for _ in range(n):
        observe(profile.features["size"], RNG.gauss(8.0, 1.0), counts["size"])
        observe(profile.features["colour"], RNG.choice(["red", "green", "blue", "purple"]), counts["colour"])
        observe(profile.features["weight"], RNG.gauss(70.0, 10.0), counts["weight"])
        for name in counts:
            if name.startswith("extra_"):
                observe(profile.features[name], RNG.uniform(0, 1), counts[name])
    predictions = ColumnCounts()
    assert profile.prediction is not None
    for _ in range(n):
        observe(profile.prediction, RNG.choice(["setosa", "setosa", "versicolor", "virginica"]), predictions)
    return counts, predictions


def render(profile: ReferenceProfile, counts: dict[str, ColumnCounts],
           predictions: ColumnCounts | None) -> tuple[bytes, DriftReport]:
    report = evaluate(profile, counts, predictions)
    png = render_report_png(profile, counts, predictions, report, title="iris-classifier v3",
                            subtitle="window 10m, 2 of 3 features drifted")
    return png, report


def image(png: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(png))
    picture.load()
    return picture


def test_renders_a_png_of_numeric_categorical_and_prediction_panels() -> None:
    profile = profile_of()
    counts, predictions = window(profile)
    png, report = render(profile, counts, predictions)
    assert report.features["size"].drifted and report.features["colour"].drifted
    picture = image(png)
    assert picture.format == "PNG"
    # 4 panels (3 features and the predictions): 3 columns, 2 rows of panels under the header.
    assert picture.width > 800 and picture.height > 500
    assert len(png) < 300_000
    # Not a blank canvas: the bars and the red of the drifted panels are there.
    colours = picture.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20
    assert any(isinstance(c, tuple) and c[0] > 180 and c[1] < 110 and c[2] < 60 for _, c in colours)


def test_the_image_grows_with_the_number_of_panels() -> None:
    small, large = profile_of(3), profile_of(10)
    small_png, _ = render(small, *window(small))
    large_png, _ = render(large, *window(large))
    without_prediction, _ = render(small, window(small)[0], None)
    assert image(large_png).height > image(small_png).height
    assert image(large_png).width == image(small_png).width  # the grid is 3 panels wide
    # 3 features, no predictions: one row of panels instead of two.
    assert image(without_prediction).height < image(small_png).height


def test_same_input_same_bytes_and_no_software_stamp() -> None:
    profile = profile_of()
    counts, predictions = window(profile)
    first, _ = render(profile, counts, predictions)
    second, _ = render(profile, counts, predictions)
    assert first == second
    assert "Software" not in image(first).info


def test_inconclusive_and_empty_features_render() -> None:
    profile = profile_of()
    counts = {"size": ColumnCounts()}  # no live value at all for size; colour and weight absent
    for _ in range(20):
        observe(profile.features["colour"], "red", counts.setdefault("colour", ColumnCounts()))
    png, report = render(profile, counts, ColumnCounts())
    assert all(d.score is None for d in report.features.values())
    assert report.prediction is not None and report.prediction.score is None
    assert image(png).format == "PNG"


def test_a_report_without_watched_features_still_renders() -> None:
    profile = profile_of()
    report = DriftReport({}, None, 0.5)
    assert image(render_report_png(profile, {}, None, report, title="nothing watched")).format == "PNG"


def test_drifted_features_come_first_most_drifted_first_then_the_rest_by_name() -> None:
    def drift(score: float | None, threshold: float = 0.25) -> ColumnDrift:
        return ColumnDrift("psi", score, threshold, 500)

    report = DriftReport({
        "zeta": drift(0.01), "alpha": drift(None), "mild": drift(0.3), "strong": drift(2.0),
        "colour": ColumnDrift("jensenshannon", 0.5, 0.1, 500),  # 5x its threshold: above "mild" (1.2x)
        "beta": drift(0.2),
    }, None, 0.5)
    assert panel_order(report) == ["strong", "colour", "mild", "alpha", "beta", "zeta"]


def test_numeric_bins_are_labelled_by_their_value_ranges() -> None:
    profile = NumericProfile(cuts=[4.8, 5.4, 7.1], fractions=[0.25] * 4, min=4.3, max=7.9, missing=0)
    assert numeric_labels(profile) == ["≤4.8", "4.8\u20135.4", "5.4\u20137.1", ">7.1"]
    # Cuts close together get the digits that keep them apart; large numbers are shortened.
    close = NumericProfile(cuts=[1.001, 1.002], fractions=[0.3, 0.3, 0.4], min=1, max=2, missing=0)
    assert numeric_labels(close) == ["≤1.001", "1.001\u20131.002", ">1.002"]
    assert format_number(125_400) == "125k" and format_number(1_234_567) == "1.2M" and format_number(-0.5) == "\u22120.5" and format_number(0) == "0"
    single = NumericProfile(cuts=[], fractions=[1.0], min=3, max=3, missing=0)
    assert numeric_labels(single) == ["all"]


def test_chart_buckets_put_unseen_categories_in_other_and_fold_a_long_tail() -> None:
    colour = categorical_profile(COLOURS)
    counts = ColumnCounts()
    for value in ["red"] * 40 + ["purple"] * 60:
        observe(colour, value, counts)
    bars = chart_buckets(colour, counts)
    assert [b.label for b in bars] == ["red", "green", "blue", "other"]  # by reference share
    assert [b.live for b in bars] == [0.4, 0.0, 0.0, 0.6]
    assert counts.buckets[OTHER] == 60

    many = categorical_profile([f"c{i:02d}" for i in range(30) for _ in range(30 - i)])
    live = ColumnCounts()
    for i in range(30):
        observe(many, f"c{i:02d}", live)
    bars = chart_buckets(many, live, limit=8)
    assert len(bars) == 8 and bars[-2].label == "14 more"  # 20 kept categories, 6 shown and bars[-1].label == "other"
    assert sum(b.reference for b in bars) == pytest.approx(1.0)
    assert sum(b.live for b in bars) == pytest.approx(1.0)


def test_anomalies_are_noted_only_when_there_are_some() -> None:
    assert anomaly_note(ColumnCounts()) == ""
    counts = ColumnCounts()
    counts.buckets["0"] = 95
    counts.out_of_range, counts.missing = 40, 5
    assert anomaly_note(counts) == "missing 5 (5%) · out of range 40 (40%)"


def test_importing_the_report_does_not_import_matplotlib() -> None:
    """The operator image carries no matplotlib: the module must import without it."""
    code = "import sys, dockyard.monitoring.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
