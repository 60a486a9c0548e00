"""The drift report as a picture: per watched feature (and the predictions), the reference and
the live distribution over the same buckets, the statistic, and a verdict one can see.

Pure: a reference profile, a window of counts and the :class:`~.live.DriftReport` computed from
them in, an SVG document (or a self-contained HTML page around it, which MLflow's UI previews)
out. It draws from bucket counts only (no row-level data, which the operator never has), in
plain Python: the operator image carries no plotting library. Text widths are estimated from
an average character width, so the layout does not depend on the fonts installed. Every text
from users (feature names, categories, titles) is escaped. Same input, same output.
"""

from __future__ import annotations

import html
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .live import OTHER, ColumnCounts, ColumnDrift, DriftReport
from .reference import CategoricalProfile, NumericProfile, ReferenceProfile

PREDICTION = "prediction"

# Layout, in pixels (the document's height follows the number of panels).
COLUMNS = 3
MAX_BARS = 12
PANEL_W, PANEL_H = 324, 250
HEADER_H = 76
_PLOT_LEFT, _PLOT_RIGHT, _PLOT_TOP, _PLOT_BOTTOM = 46, 14, 58, 76
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
_CHAR_WIDTH = 0.6  # average character width, in font sizes: the estimate the layout uses

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


def _panels(profile: ReferenceProfile, counts: Mapping[str, ColumnCounts], prediction_counts: ColumnCounts | None,
            report: DriftReport) -> list[_Panel]:
    panels = [_Panel(name, profile.features[name], counts.get(name) or ColumnCounts(), report.features[name])
              for name in panel_order(report) if name in profile.features]
    if report.prediction is not None and profile.prediction is not None:
        panels.append(_Panel(PREDICTION, profile.prediction, prediction_counts or ColumnCounts(), report.prediction))
    return panels


def render_report_svg(profile: ReferenceProfile, counts: Mapping[str, ColumnCounts],
                      prediction_counts: ColumnCounts | None, report: DriftReport, *, title: str,
                      subtitle: str = "") -> str:
    """A standalone SVG document of the report: a header (title, subtitle, legend), then one panel
    per watched feature in :func:`panel_order`, and one for the predictions when the report has
    their drift. Each panel is a ``<g class="panel ...">`` carrying ``data-feature``."""
    panels = _panels(profile, counts, prediction_counts, report)
    return _svg(panels, title, subtitle)


def render_report_html(profile: ReferenceProfile, counts: Mapping[str, ColumnCounts],
                       prediction_counts: ColumnCounts | None, report: DriftReport, *, title: str,
                       subtitle: str = "") -> bytes:
    """A self-contained UTF-8 HTML page of the report (MLflow previews it inline): the SVG of
    :func:`render_report_svg`, then a plain table of the statistics. No script, no external
    resource; well-formed XML too."""
    panels = _panels(profile, counts, prediction_counts, report)
    rows = "".join(
        f"<tr class=\"{_VERDICT_CLASS[p.drift.drifted]}\"><td>{_escape(_panel_title(p.name))}</td>"
        f"<td>{_escape(_METHOD.get(p.drift.method, p.drift.method))}</td>"
        f"<td>{'' if p.drift.score is None else format_number(p.drift.score, 3)}</td>"
        f"<td>{format_number(p.drift.threshold, 3)}</td><td>{_MARKER[p.drift.drifted]}</td>"
        f"<td>{p.drift.samples}</td><td>{_escape(anomaly_note(p.counts))}</td></tr>\n"
        for p in panels)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n"
        f"<title>{_escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{_svg(panels, title, subtitle)}\n"
        "<table>\n<thead><tr><th>feature</th><th>method</th><th>score</th><th>threshold</th><th>verdict</th>"
        "<th>samples</th><th>anomalies</th></tr></thead>\n"
        f"<tbody>\n{rows}</tbody>\n</table>\n</body>\n</html>\n")
    return page.encode("utf-8")


_CSS = ("body{margin:16px;background:#fff;color:#343a40;font-family:" + FONT + ";}"
        "svg{display:block;max-width:100%;height:auto;}"
        "table{border-collapse:collapse;margin-top:16px;font-size:13px;}"
        "th,td{border:1px solid #dee2e6;padding:4px 10px;text-align:left;}"
        "th{background:#f1f3f5;}tr.drift td{color:#c92a2a;font-weight:bold;}tr.inconclusive td{color:#6c757d;}")
_VERDICT_CLASS = {True: "drift", False: "ok", None: "inconclusive"}

# Control characters XML 1.0 does not allow, even escaped: replaced so that any name parses.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _escape(text: str) -> str:
    """Text for an SVG/HTML text node or a quoted attribute."""
    return html.escape(_INVALID_XML.sub("\ufffd", text), quote=True)


def _n(value: float) -> str:
    """A coordinate: one decimal at most, the same string for the same value."""
    text = f"{value:.1f}"
    text = text[:-2] if text.endswith(".0") else text
    return "0" if text == "-0" else text


def _text_width(text: str, size: float, *, bold: bool = False) -> float:
    return len(text) * (_CHAR_WIDTH + (0.02 if bold else 0.0)) * size


def _fit(text: str, width: float, size: float, *, bold: bool = False) -> str:
    """The text, shortened with an ellipsis when its estimated width exceeds `width`."""
    if _text_width(text, size, bold=bold) <= width:
        return text
    keep = max(1, int(width / _text_width("x", size, bold=bold)) - 1)
    return text[:keep].rstrip() + "…"


def _text(x: float, y: float, text: str, *, size: float, fill: str = _TEXT, anchor: str = "start",
          bold: bool = False, extra: str = "") -> str:
    weight = ' font-weight="bold"' if bold else ""
    anchor_attr = f' text-anchor="{anchor}"' if anchor != "start" else ""
    return (f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" fill="{fill}"{anchor_attr}{weight}{extra}>'
            f"{_escape(text)}</text>")


def _svg(panels: Sequence[_Panel], title: str, subtitle: str) -> str:
    rows = max(1, math.ceil(len(panels) / COLUMNS))
    width, height = COLUMNS * PANEL_W, HEADER_H + rows * PANEL_H
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="{FONT}" role="img">',
           f"<title>{_escape(title)}</title>",
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           '<g class="header">',
           _text(14, 28, _fit(title, width - 28 - _LEGEND_W, 17, bold=True), size=17, bold=True)]
    if subtitle:
        out.append(_text(14, 56, _fit(subtitle, width - 28, 12.5), size=12.5, fill=_MUTED))
    out.append(_legend(width - 12, 24))
    out.append("</g>")
    if not panels:
        out.append(_text(width / 2, HEADER_H + PANEL_H / 2, "no watched features", size=13, fill=_MUTED,
                         anchor="middle"))
    for i, panel in enumerate(panels):
        row, column = divmod(i, COLUMNS)
        out.append(_panel(panel, column * PANEL_W, HEADER_H + row * PANEL_H))
    out.append("</svg>")
    return "\n".join(out) + "\n"


_LEGEND = [("reference (training)", _REFERENCE), ("live", _LIVE[False]), ("live, drifted", _LIVE[True])]
_LEGEND_SIZE, _LEGEND_SQUARE, _LEGEND_GAP = 10.5, 10, 12
_LEGEND_W = sum(_text_width(label, _LEGEND_SIZE) + _LEGEND_SQUARE + 5 + _LEGEND_GAP for label, _ in _LEGEND)


def _legend(right: float, y: float) -> str:
    entries, size, square, gap = _LEGEND, _LEGEND_SIZE, _LEGEND_SQUARE, _LEGEND_GAP
    parts, x = [], right
    for label, colour in reversed(entries):
        x -= _text_width(label, size)
        parts.append(_text(x, y, label, size=size))
        x -= square + 5
        parts.append(f'<rect x="{_n(x)}" y="{_n(y - square + 1)}" width="{square}" height="{square}" fill="{colour}"/>')
        x -= gap
    return '<g class="legend">' + "".join(reversed(parts)) + "</g>"


def _panel(panel: _Panel, left: float, top: float) -> str:
    drift, verdict = panel.drift, panel.drift.drifted
    classes = f"panel {_VERDICT_CLASS[verdict]}"
    out = [f'<g class="{classes}" data-feature="{_escape(panel.name)}" transform="translate({_n(left)},{_n(top)})">',
           f"<title>{_escape(_panel_title(panel.name))}: {_escape(_statistic(drift))}</title>"]
    if verdict:
        out.append(f'<rect class="highlight" x="6" y="6" width="{PANEL_W - 12}" height="{PANEL_H - 12}" rx="6" '
                   f'fill="{_BACKGROUND[True]}" stroke="#ffa8a8" stroke-width="1.2"/>')
    x0, x1, y0, y1 = _PLOT_LEFT, PANEL_W - _PLOT_RIGHT, _PLOT_TOP, PANEL_H - _PLOT_BOTTOM
    # Title, verdict badge, statistic.
    badge = _MARKER[verdict]
    badge_w = _text_width(badge, 10, bold=True) + 10
    out.append(_text(x0, 30, _fit(_panel_title(panel.name), x1 - badge_w - 6 - x0, 14, bold=True), size=14,
                     bold=True, fill=_TITLE[True] if verdict else _TEXT))
    out.append(f'<g class="badge"><rect x="{_n(x1 - badge_w)}" y="14" width="{_n(badge_w)}" height="17" rx="3" '
               f'fill="{_TITLE[verdict]}"/>'
               + _text(x1 - badge_w / 2, 26.5, badge, size=10, bold=True, fill="#ffffff", anchor="middle") + "</g>")
    out.append(_text(x0, 46, _fit(_statistic(drift), x1 - x0, 10.5), size=10.5, fill=_TEXT if verdict else _MUTED))
    # The chart.
    bars = chart_buckets(panel.profile, panel.counts)
    top_value = max([*(b.reference for b in bars), *(b.live for b in bars), 0.01]) * 1.12
    ticks = _ticks(top_value)

    def y_of(value: float) -> float:
        return y1 - (y1 - y0) * value / top_value

    if verdict is None:
        out.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="{_BACKGROUND[None]}"/>')
    for tick in ticks:
        y = y_of(tick)
        if tick > 0:
            out.append(f'<line x1="{x0}" y1="{_n(y)}" x2="{x1}" y2="{_n(y)}" stroke="#e9ecef" stroke-width="0.8"/>')
        out.append(f'<line x1="{x0 - 3}" y1="{_n(y)}" x2="{x0}" y2="{_n(y)}" stroke="#ced4da" stroke-width="0.8"/>')
        out.append(_text(x0 - 5, y + 3.2, _percent_label(tick, ticks[1] if len(ticks) > 1 else 1.0), size=9,
                         fill=_MUTED, anchor="end"))
    slot = (x1 - x0) / len(bars)
    live_colour = _LIVE[verdict]
    show_live = panel.counts.observed > 0
    rotate = max(_text_width(b.label, 9) for b in bars) > 0.9 * slot
    for i, bar in enumerate(bars):
        centre = x0 + (i + 0.5) * slot
        out.append(_bar(centre - 0.4 * slot, 0.4 * slot, bar.reference, y_of, _REFERENCE, "reference"))
        if show_live:
            out.append(_bar(centre, 0.4 * slot, bar.live, y_of, live_colour, "live"))
        if rotate:
            out.append(_text(0, 0, bar.label, size=9, anchor="end",
                             extra=f' transform="translate({_n(centre + 3)},{_n(y1 + 9)}) rotate(-40)"'))
        else:
            out.append(_text(centre, y1 + 13, bar.label, size=9, anchor="middle"))
    out.append(f'<path d="M{x0},{y0 - 4}V{y1}H{x1}" fill="none" stroke="#ced4da" stroke-width="1"/>')
    # Anomalies, or why the live bars are missing.
    note = anomaly_note(panel.counts) or ("" if panel.counts.observed else "no live values in this window")
    if note:
        out.append(_text(PANEL_W / 2, PANEL_H - 14, _fit(note, PANEL_W - 16, 9.5), size=9.5, anchor="middle",
                         fill=_TITLE[True] if _alarming(panel.counts) else _MUTED,
                         extra=' class="note"'))
    out.append("</g>")
    return "\n".join(out)


def _bar(x: float, width: float, value: float, y_of: Callable[[float], float], colour: str, kind: str) -> str:
    if value <= 0:
        return ""
    y = y_of(value)
    return (f'<rect class="{kind}" x="{_n(x)}" y="{_n(y)}" width="{_n(width)}" height="{_n(y_of(0) - y)}" '
            f'fill="{colour}"/>')


def _ticks(top: float) -> list[float]:
    """At most 5 round ticks from 0 up to `top`: steps of 1, 2, 2.5 or 5 times a power of ten."""
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(s * magnitude for s in (1, 2, 2.5, 5, 10) if s * magnitude >= raw * (1 - 1e-9))
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def _percent_label(value: float, step: float) -> str:
    decimals = 0 if round(step * 100, 6) == round(step * 100) else 1
    return f"{value * 100:.{decimals}f}%"


def _panel_title(name: str) -> str:
    return "prediction (model output)" if name == PREDICTION else name


def _statistic(drift: ColumnDrift) -> str:
    method = _METHOD.get(drift.method, drift.method)
    if drift.score is None:
        return f"{method}: inconclusive ({drift.samples} samples)"
    relation = ">" if drift.drifted else "≤"
    return f"{method} {format_number(drift.score, 3)} {relation} {format_number(drift.threshold, 3)} · {drift.samples} samples"
