"""The drift report as a picture: per watched feature (and the predictions), the reference and
the live distribution over the same buckets, the statistic, and a verdict one can see.

Pure: a reference profile, a window of counts and the :class:`~.live.DriftReport` computed from
them in, PNG bytes out. It draws from bucket counts only (no row-level data, which the
operator never has), with matplotlib's object API and the Agg canvas: no pyplot, so no global
figure registry to leak into and no backend switched for the rest of the process. matplotlib
is imported when a report is drawn, so importing this module costs nothing. Same input, same
bytes: the PNG carries no software or time metadata.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .live import OTHER, ColumnCounts, ColumnDrift, DriftReport
from .reference import CategoricalProfile, NumericProfile, ReferenceProfile

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

PREDICTION = "prediction"

# Layout, in inches (the figure's size follows the number of panels).
COLUMNS = 3
DPI = 90
MAX_BARS = 12
_PANEL_W, _PANEL_H = 3.6, 2.75
_HEADER_H = 0.85
_AX_LEFT, _AX_RIGHT, _AX_TOP, _AX_BOTTOM = 0.5, 0.15, 0.5, 0.82

_REFERENCE = "#b8c2cc"
_LIVE = {True: "#d9480f", False: "#1c7ed6", None: "#868e96"}
_TITLE = {True: "#c92a2a", False: "#2b8a3e", None: "#5c636a"}
_BACKGROUND = {True: "#fff5f5", False: "white", None: "#f8f9fa"}
_TEXT = "#343a40"
_MUTED = "#6c757d"
_MARKER = {True: "DRIFT", False: "ok", None: "inconclusive"}
_METHOD = {"psi": "PSI", "jensenshannon": "JS"}
_MAX_LABEL = 14
_EN_DASH = "\u2013"
_MINUS = "\u2212"


def panel_order(report: DriftReport) -> list[str]:
    """Watched features as the report shows them: drifted ones first, the largest score
    relative to its threshold first; then the rest (not drifted, inconclusive) by name."""
    drifted = sorted((name for name, d in report.features.items() if d.drifted),
                     key=lambda name: (-_severity(report.features[name]), name))
    rest = sorted(name for name, d in report.features.items() if not d.drifted)
    return drifted + rest


def _severity(drift: ColumnDrift) -> float:
    return (drift.score or 0.0) / drift.threshold if drift.threshold > 0 else math.inf


def format_number(value: float, digits: int = 2) -> str:
    """Compact: `digits` significant digits (the integer part whole), k/M/G beyond a thousand,
    no exponents, a true minus sign."""
    magnitude = abs(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= scale:
            return f"{_significant(value / scale, digits)}{suffix}"
    return _significant(value, digits)


def _significant(value: float, digits: int) -> str:
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "0") else text.replace("-", _MINUS)


def numeric_labels(profile: NumericProfile) -> list[str]:
    """The bins as value ranges from the cuts: "≤4.8", "4.8-5.4" (an en dash), ..., ">7.1",
    with as few digits as keep the cuts apart."""
    if not profile.cuts:
        return ["all"]
    for digits in range(2, 8):
        cuts = [format_number(c, digits) for c in profile.cuts]
        if len(set(cuts)) == len(cuts):
            break
    middle = [f"{lo} {_EN_DASH} {hi}" if _MINUS in hi else f"{lo}{_EN_DASH}{hi}"
              for lo, hi in itertools.pairwise(cuts)]
    return [f"≤{cuts[0]}", *middle, f">{cuts[-1]}"]


@dataclass(frozen=True)
class Bar:
    """One bucket on a chart: its label and the reference's and the live window's share."""

    label: str
    reference: float
    live: float


def chart_buckets(profile: NumericProfile | CategoricalProfile, counts: ColumnCounts, *,
                  limit: int = MAX_BARS) -> list[Bar]:
    """The bars of a panel. Numeric: the reference's bins in order. Categorical: the categories
    by reference share, then "other" (the reference's rest, and live values of categories it
    does not list, as the statistic counts them); beyond `limit` bars, the categories with the
    smallest shares (reference and live) are summed into one "N more" bar. Live shares are of
    the window's observed values, all 0 without any."""
    observed = counts.observed

    def share(n: float) -> float:
        return n / observed if observed > 0 else 0.0

    if isinstance(profile, NumericProfile):
        return [Bar(label, ref, share(counts.buckets.get(str(i), 0)))
                for i, (label, ref) in enumerate(zip(numeric_labels(profile), profile.fractions, strict=True))]
    bars = [Bar(name, ref, share(counts.buckets.get(name, 0)))
            for name, ref in sorted(profile.categories.items(), key=lambda item: (-item[1], item[0]))]
    other = Bar("other", profile.other,
                share(sum(v for k, v in counts.buckets.items() if k == OTHER or k not in profile.categories)))
    if len(bars) + 1 > limit:
        keep = {b.label for b in sorted(bars, key=lambda b: (-max(b.reference, b.live), b.label))[:max(limit - 2, 0)]}
        rest = [b for b in bars if b.label not in keep]
        bars = [b for b in bars if b.label in keep]
        bars.append(Bar(f"{len(rest)} more", sum(b.reference for b in rest), sum(b.live for b in rest)))
    return [Bar(_shorten(b.label), b.reference, b.live) for b in [*bars, other]]


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[:_MAX_LABEL - 1] + "…"


def anomaly_note(counts: ColumnCounts) -> str:
    """The odd values of a window, those that are not zero, with their share of all values."""
    seen = counts.observed + counts.missing + counts.invalid
    parts = [(counts.missing, "missing"), (counts.out_of_range, "out of range"), (counts.unseen, "unseen"),
             (counts.invalid, "invalid")]
    return " · ".join(f"{label} {n} ({_percent(n / seen)})" for n, label in parts if n > 0 and seen > 0)


def _alarming(counts: ColumnCounts, share: float = 0.05) -> bool:
    """At least 5% of the values are odd: worth the reader's attention even without drift."""
    seen = counts.observed + counts.missing + counts.invalid
    odd = counts.missing + counts.out_of_range + counts.unseen + counts.invalid
    return seen > 0 and odd / seen >= share


def _percent(share: float) -> str:
    return "<1%" if 0 < share < 0.01 else f"{share:.0%}"


@dataclass(frozen=True)
class _Panel:
    name: str
    profile: NumericProfile | CategoricalProfile
    counts: ColumnCounts
    drift: ColumnDrift


def render_report_png(profile: ReferenceProfile, counts: Mapping[str, ColumnCounts],
                      prediction_counts: ColumnCounts | None, report: DriftReport, *, title: str,
                      subtitle: str = "") -> bytes:
    """A PNG of the report: a header (title, subtitle), then one panel per watched feature in
    :func:`panel_order`, and one for the predictions when the report has their drift."""
    panels = [_Panel(name, profile.features[name], counts.get(name) or ColumnCounts(), report.features[name])
              for name in panel_order(report)]
    if report.prediction is not None and profile.prediction is not None:
        panels.append(_Panel(PREDICTION, profile.prediction, prediction_counts or ColumnCounts(), report.prediction))
    figure = _figure(panels, title, subtitle)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def _figure(panels: Sequence[_Panel], title: str, subtitle: str) -> Figure:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = max(1, math.ceil(len(panels) / COLUMNS))
    columns = min(COLUMNS, max(1, len(panels)))
    width, height = columns * _PANEL_W, _HEADER_H + rows * _PANEL_H
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    figure.text(0.15 / width, 1 - 0.3 / height, title, fontsize=13, fontweight="bold", color=_TEXT, va="center")
    if subtitle:
        figure.text(0.15 / width, 1 - 0.62 / height, subtitle, fontsize=9.5, color=_MUTED, va="center")
    if not panels:
        figure.text(0.5, 0.5 * (1 - _HEADER_H / height), "no watched features", ha="center", color=_MUTED)
    figure.legend(handles=[Patch(color=_REFERENCE, label="reference (training)"),
                           Patch(color=_LIVE[False], label="live"), Patch(color=_LIVE[True], label="live, drifted")],
                  loc="upper right", bbox_to_anchor=(1 - 0.1 / width, 1 - 0.08 / height), ncols=3, fontsize=8,
                  frameon=False, handlelength=1.2, columnspacing=1.0)
    for i, panel in enumerate(panels):
        row, column = divmod(i, COLUMNS)
        left = column * _PANEL_W
        bottom = height - _HEADER_H - (row + 1) * _PANEL_H
        if panel.drift.drifted:
            figure.patches.append(_cell(figure, left, bottom, width, height))
        axes = figure.add_axes((
            (left + _AX_LEFT) / width, (bottom + _AX_BOTTOM) / height,
            (_PANEL_W - _AX_LEFT - _AX_RIGHT) / width, (_PANEL_H - _AX_TOP - _AX_BOTTOM) / height))
        _draw(axes, panel)
        note = anomaly_note(panel.counts) or ("" if panel.counts.observed else "no live values in this window")
        if note:
            figure.text((left + _PANEL_W / 2) / width, (bottom + 0.1) / height, note, ha="center", va="bottom",
                        fontsize=7.5, color=_TITLE[True] if _alarming(panel.counts) else _MUTED)
    return figure


def _cell(figure: Figure, left: float, bottom: float, width: float, height: float) -> FancyBboxPatch:
    from matplotlib.patches import FancyBboxPatch

    pad = 0.06
    return FancyBboxPatch(((left + pad) / width, (bottom + pad) / height), (_PANEL_W - 2 * pad) / width,
                          (_PANEL_H - 2 * pad) / height, boxstyle="round,pad=0,rounding_size=0.006",
                          transform=figure.transFigure, facecolor=_BACKGROUND[True], edgecolor="#ffa8a8",
                          linewidth=1.0, zorder=-1)


def _draw(axes: Axes, panel: _Panel) -> None:
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    drift, verdict = panel.drift, panel.drift.drifted
    bars = chart_buckets(panel.profile, panel.counts)
    reference, live = [b.reference for b in bars], [b.live for b in bars]
    positions = range(len(bars))
    axes.set_facecolor(_BACKGROUND[verdict])
    axes.bar([p - 0.2 for p in positions], reference, width=0.4, color=_REFERENCE, linewidth=0)
    if panel.counts.observed:
        axes.bar([p + 0.2 for p in positions], live, width=0.4, color=_LIVE[verdict], linewidth=0)
    # Upright labels when the longest fits its bar's slot (7 pt is about 0.055 in a character).
    slot = (_PANEL_W - _AX_LEFT - _AX_RIGHT) / len(bars)
    rotate = max(len(b.label) for b in bars) * 0.055 > 0.9 * slot
    axes.set_xticks(list(positions), [b.label for b in bars], fontsize=7, rotation=40 if rotate else 0,
                    ha="right" if rotate else "center", rotation_mode="anchor")
    axes.tick_params(axis="x", length=0, pad=3)
    axes.tick_params(axis="y", labelsize=7, colors=_MUTED, length=2)
    axes.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_ylim(0, max([*reference, *live, 0.01]) * 1.12)
    axes.set_xlim(-0.6, len(reference) - 0.4)
    axes.grid(axis="y", color="#e9ecef", linewidth=0.6)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color("#ced4da")
    name = "prediction (model output)" if panel.name == PREDICTION else _shorten_title(panel.name)
    axes.set_title(name, loc="left", fontsize=10.5, fontweight="bold",
                   color=_TITLE[True] if verdict else _TEXT, pad=16)
    axes.text(1, 1.17, _MARKER[verdict], transform=axes.transAxes, ha="right", va="bottom", fontsize=8,
              fontweight="bold", color="white",
              bbox={"boxstyle": "round,pad=0.3", "facecolor": _TITLE[verdict], "linewidth": 0})
    axes.text(0, 1.03, _statistic(drift), transform=axes.transAxes, fontsize=8, color=_TEXT if verdict else _MUTED,
              va="bottom")


def _shorten_title(name: str) -> str:
    return name if len(name) <= 20 else name[:19] + "…"


def _statistic(drift: ColumnDrift) -> str:
    method = _METHOD.get(drift.method, drift.method)
    if drift.score is None:
        return f"{method}: inconclusive ({drift.samples} samples)"
    relation = ">" if drift.drifted else "≤"
    return f"{method} {format_number(drift.score, 3)} {relation} {format_number(drift.threshold, 3)} · {drift.samples} samples"
