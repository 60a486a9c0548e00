"""Unit tests for dockyard.monitoring.report: the drift report drawn as SVG (and an HTML page
around it) from a reference profile, a window of bucket counts and the drift computed from them
(issue 13)."""

from __future__ import annotations

import random
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

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
    render_report_html,
    render_report_svg,
)

SVG = "{http://www.w3.org/2000/svg}"

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
           predictions: ColumnCounts | None) -> tuple[str, DriftReport]:
    report = evaluate(profile, counts, predictions)
    svg = render_report_svg(profile, counts, predictions, report, title="iris-classifier v3",
                            subtitle="window 10m, 2 of 3 features drifted")
    return svg, report


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def panels(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "panel" in g.get("class", "").split()]


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def test_renders_an_svg_of_numeric_categorical_and_prediction_panels() -> None:
    profile = profile_of()
    counts, predictions = window(profile)
    svg, report = render(profile, counts, predictions)
    assert report.features["size"].drifted and report.features["colour"].drifted
    root = parse(svg)
    # Standalone: a size and a viewBox, a white background, no external resource or script.
    width, height = int(root.get("width", "0")), int(root.get("height", "0"))
    assert root.get("viewBox") == f"0 0 {width} {height}"
    assert width > 800 and height > 500
    assert "href" not in svg and "<script" not in svg and "@import" not in svg
    assert len(svg) < 100_000
    # One panel per watched feature, then the predictions; drifted ones first and highlighted.
    found = panels(root)
    assert [g.get("data-feature") for g in found] == [*panel_order(report), "prediction"]
    assert [g.get("data-feature") for g in found][:2] == sorted(["size", "colour"], key=panel_order(report).index)
    for g in found:
        drifted = "drift" in g.get("class", "").split()
        assert drifted == bool(report.features.get(g.get("data-feature", ""), report.prediction).drifted)  # type: ignore[union-attr]
        assert drifted == any(r.get("class") == "highlight" for r in g.iter(f"{SVG}rect"))
        assert ("DRIFT" in texts(g)) == drifted
    size = next(g for g in found if g.get("data-feature") == "size")
    assert any(t.startswith("PSI ") and " > 0.25 · 500 samples" in t for t in texts(size))
    assert any(t.startswith("out of range") for t in texts(size))  # the shift leaves the reference's range
    assert any(t.startswith("≤") for t in texts(size)) and any(t.startswith(">") for t in texts(size))
    # Bars: grey reference and coloured live ones, the live ones orange-red where drifted.
    assert {r.get("fill") for r in size.iter(f"{SVG}rect") if r.get("class") == "live"} == {"#d9480f"}
    weight = next(g for g in found if g.get("data-feature") == "weight")
    assert {r.get("fill") for r in weight.iter(f"{SVG}rect") if r.get("class") == "live"} == {"#1c7ed6"}
    assert {r.get("fill") for r in weight.iter(f"{SVG}rect") if r.get("class") == "reference"} == {"#b8c2cc"}
    header = texts(root)
    assert "iris-classifier v3" in header and "reference (training)" in header


def test_the_document_grows_with_the_number_of_panels() -> None:
    small, large = profile_of(3), profile_of(10)
    small_root = parse(render(small, *window(small))[0])
    large_root = parse(render(large, *window(large))[0])
    without_prediction = parse(render(small, window(small)[0], None)[0])
    assert len(panels(small_root)) == 4 and len(panels(large_root)) == 11 and len(panels(without_prediction)) == 3
    assert int(large_root.get("height", "0")) > int(small_root.get("height", "0"))
    assert large_root.get("width") == small_root.get("width")  # the grid is 3 panels wide
    # 3 features, no predictions: one row of panels instead of two.
    assert int(without_prediction.get("height", "0")) < int(small_root.get("height", "0"))


def test_same_input_same_output() -> None:
    profile = profile_of()
    counts, predictions = window(profile)
    first, report = render(profile, counts, predictions)
    second, _ = render(profile, counts, predictions)
    assert first == second
    html_args = (profile, counts, predictions, report)
    assert render_report_html(*html_args, title="t") == render_report_html(*html_args, title="t")


def test_inconclusive_and_empty_features_render() -> None:
    profile = profile_of()
    counts = {"size": ColumnCounts()}  # no live value at all for size; colour and weight absent
    for _ in range(20):
        observe(profile.features["colour"], "red", counts.setdefault("colour", ColumnCounts()))
    svg, report = render(profile, counts, ColumnCounts())
    assert all(d.score is None for d in report.features.values())
    assert report.prediction is not None and report.prediction.score is None
    root = parse(svg)
    assert all("inconclusive" in g.get("class", "").split() for g in panels(root))
    size = next(g for g in panels(root) if g.get("data-feature") == "size")
    assert "PSI: inconclusive (0 samples)" in texts(size) and "no live values in this window" in texts(size)
    assert not [r for r in size.iter(f"{SVG}rect") if r.get("class") == "live"]
    colour = next(g for g in panels(root) if g.get("data-feature") == "colour")
    assert "JS: inconclusive (20 samples)" in texts(colour)


def test_a_report_without_watched_features_still_renders() -> None:
    profile = profile_of()
    report = DriftReport({}, None, 0.5)
    root = parse(render_report_svg(profile, {}, None, report, title="nothing watched"))
    assert not panels(root) and "no watched features" in texts(root)
    ET.fromstring(render_report_html(profile, {}, None, report, title="nothing watched"))


HOSTILE = ["<script>alert(1)</script>", "\"&'", "a]]>b", "tab\tand\x01control"]


def test_text_from_users_is_escaped() -> None:
    colour = categorical_profile(HOSTILE * 10)
    profile = ReferenceProfile(rows=40, features={"<b>name</b> \"&'": colour}, prediction=None)
    counts = ColumnCounts()
    for value in HOSTILE * 30:
        observe(colour, value, counts)
    report = evaluate(profile, {"<b>name</b> \"&'": counts}, None)
    args = (profile, {"<b>name</b> \"&'": counts}, None, report)
    svg = render_report_svg(*args, title="<title>&co</title> <script>alert(1)</script>", subtitle="\"quoted\" & 'single'")
    page = render_report_html(*args, title="<title>&co</title> <script>alert(1)</script>", subtitle="x").decode("utf-8")
    for document in (svg, page):
        assert "<script" not in document and "<b>" not in document and "&co<" not in document
        assert "&lt;script&gt;alert…" in document  # the category's label, shortened
        assert "&lt;title&gt;&amp;co&lt;/title&gt; &lt;script&gt;alert(1)&lt;/script&gt;" in document
        assert "&quot;&amp;&#x27;" in document
    root = parse(svg)
    (panel,) = panels(root)
    assert panel.get("data-feature") == "<b>name</b> \"&'"
    labels = texts(panel)
    assert "<script>alert…" in labels and "tab\tand\ufffdcontr…" in labels and "\"&'" in labels  # labels are shortened to 14 characters
    assert "<title>&co</title> <script>alert(1)</script>" in texts(root) and "\"quoted\" & 'single'" in texts(root)
    html_root = ET.fromstring(page)  # the page is well-formed XML too
    assert html_root.find("head/title") is not None and html_root.find("head/title").text == "<title>&co</title> <script>alert(1)</script>"  # type: ignore[union-attr]


def test_the_html_page_holds_the_svg_and_a_table() -> None:
    profile = profile_of()
    counts, predictions = window(profile)
    report = evaluate(profile, counts, predictions)
    page = render_report_html(profile, counts, predictions, report, title="iris-classifier v3", subtitle="window")
    text = page.decode("utf-8")
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8" />' in text
    assert render_report_svg(profile, counts, predictions, report, title="iris-classifier v3",
                             subtitle="window") in text
    assert "<script" not in text and "href" not in text and "src=" not in text
    root = ET.fromstring(page)
    assert root.find("head/title").text == "iris-classifier v3"  # type: ignore[union-attr]
    assert root.find(f"body/{SVG}svg") is not None
    header = [th.text for th in root.iter("th")]
    assert header[:6] == ["feature", "method", "score", "threshold", "verdict", "samples"]
    rows = [[td.text or "" for td in tr.iter("td")] for tr in root.iter("tr") if tr.find("td") is not None]
    assert [r[0] for r in rows] == [*panel_order(report), "prediction (model output)"]
    size = next(r for r in rows if r[0] == "size")
    assert size[1] == "PSI" and size[3] == "0.25" and size[4] == "DRIFT" and size[5] == "500"
    assert float(size[2]) > 0.25
    weight = next(r for r in rows if r[0] == "weight")
    assert weight[4] == "ok"


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


def test_importing_or_rendering_the_report_imports_no_plotting_library() -> None:
    """The operator image carries no matplotlib nor numpy: the module renders without them."""
    code = ("import sys\nfrom dockyard.monitoring.report import render_report_html\n"
            "from dockyard.monitoring.live import DriftReport\n"
            "from dockyard.monitoring.reference import ReferenceProfile\n"
            "p = ReferenceProfile(rows=1, features={}, prediction=None)\n"
            "render_report_html(p, {}, None, DriftReport({}, None, 0.5), title='t')\n"
            "print(sorted(m for m in ('matplotlib', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
