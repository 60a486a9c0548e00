#!/usr/bin/env python3
"""Write docs/images/drift-report.svg: the drift report of a simulated window of traffic for a
model trained on iris, as the README shows it.

The reference profile is built from iris (a 70/30 split: the features of the training rows,
a logistic regression's predictions on the held-out rows, as the built-in trainer logs it).
The live window is 1000 rows resampled from iris with sepal_width scaled by 3 and 1.5 added to
sepal_length, counted into the reference's buckets as the serving Pods count them, and judged
as the operator judges a window. Deterministic: the same bytes on every run. With --html,
also writes the HTML page the operator logs to MLflow next to it.

Usage: .venv/bin/python hack/render-drift-example.py [--output PATH] [--html PATH] [--live-rows N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = ["setosa", "versicolor", "virginica"]
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "drift-report.svg"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--html", type=Path, default=None, help="also write the HTML page here")
    parser.add_argument("--live-rows", type=int, default=1000)
    args = parser.parse_args()

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from dockyard.monitoring.live import ColumnCounts, evaluate, observe
    from dockyard.monitoring.reference import build_profile
    from dockyard.monitoring.report import render_report_html, render_report_svg

    frame = load_iris(as_frame=True).frame
    frame.columns = [*FEATURES, "target"]
    train, test = train_test_split(frame, test_size=0.3, random_state=13, stratify=frame["target"])
    model = LogisticRegression(max_iter=1000).fit(train[FEATURES], train["target"])

    def species(rows: object) -> list[str]:
        return [SPECIES[int(t)] for t in model.predict(rows)]

    profile = build_profile(train[FEATURES], species(test[FEATURES]))

    rng = random.Random(13)
    live = frame.iloc[[rng.randrange(len(frame)) for _ in range(args.live_rows)]][FEATURES].copy()
    live["sepal_width"] = live["sepal_width"] * 3
    live["sepal_length"] = live["sepal_length"] + 1.5
    counts = {name: ColumnCounts() for name in FEATURES}
    for name in FEATURES:
        for value in live[name].tolist():
            observe(profile.features[name], value, counts[name])
    predicted = ColumnCounts()
    assert profile.prediction is not None
    for label in species(live):
        observe(profile.prediction, label, predicted)

    report = evaluate(profile, counts, predicted)
    drifted = sum(1 for d in report.features.values() if d.drifted)
    verdict = {True: "dataset drift", False: "no dataset drift", None: "inconclusive"}[report.dataset_drift]
    title = "iris-classifier v3 · variant stable"
    subtitle = (f"window 10m, {drifted} of {len(report.features)} features drifted "
                f"(share ≥ {report.share:g}): {verdict}")
    started = time.perf_counter()
    svg = render_report_svg(profile, counts, predicted, report, title=title, subtitle=subtitle).encode("utf-8")
    elapsed = time.perf_counter() - started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(svg)
    print(f"wrote {args.output} ({len(svg)} bytes, rendered in {elapsed * 1000:.1f} ms)")
    if args.html is not None:
        page = render_report_html(profile, counts, predicted, report, title=title, subtitle=subtitle)
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_bytes(page)
        print(f"wrote {args.html} ({len(page)} bytes)")
    for name, drift in report.features.items():
        print(f"  {name}: {drift.method} {drift.score} drifted={drift.drifted}")
    if report.prediction is not None:
        print(f"  prediction: {report.prediction.method} {report.prediction.score} drifted={report.prediction.drifted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
