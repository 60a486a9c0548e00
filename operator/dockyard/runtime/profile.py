"""`dockyard profile`: read a Dataset source, version it, validate it, profile it.

Inputs (env; the CLI flags of the same meaning override them):
  DOCKYARD_DATASET_NAME, DOCKYARD_DATASET_URI, DOCKYARD_DATASET_FORMAT (csv|parquet|jsonl),
  DOCKYARD_DATASET_SPEC (the Dataset spec as JSON, camelCase wire form),
  DOCKYARD_TERMINATION_LOG (default /dev/termination-log), AWS_* for s3://.

Output: ONE JSON object in the termination log, always < 4096 bytes::

  {"ok": bool, "version": "sha256:..."|null, "rows": int, "columns": int,
   "profile": {column: {...}}, "profileTruncated": bool,
   "reason": "SchemaViolation"|"QualityRuleViolation"|"SourceUnreachable"|"UnreadableData"
             |"InvalidSpec"|null,
   "errors": [short strings]}

Exit codes: 0 valid, 1 validation failed, 2 source unreadable (or invalid inputs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    TERMINATION_LIMIT,
    RuntimeFailure,
    dumps,
    env_str,
    shorten,
    termination_path,
    write_termination_message,
)
from .data import FORMATS, content_version, parse_frame, read_source_bytes

if TYPE_CHECKING:
    import pandas as pd

    from ..api.dataset import DataSchema, DatasetSpec, ValidationRules

MAX_ERRORS = 10
MAX_ERROR_LEN = 200
TOP_VALUES = 5
TOP_VALUE_LEN = 40
# status.profile is readable by anyone who may `get` the Dataset, so raw values appear there only
# for categorical columns: at most TOP_MAX_DISTINCT distinct values, and only values seen in at
# least TOP_MIN_COUNT rows (a rarer value can point at one person). Names, e-mails and ids are
# high-cardinality and never shown; columns declared `sensitive` keep counts only.
TOP_MAX_DISTINCT = 20
TOP_MIN_COUNT = 5
SAMPLE_BAD_VALUES = 3


@dataclass
class Result:
    ok: bool = False
    version: str | None = None
    rows: int = 0
    columns: int = 0
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile_truncated: bool = False
    reason: str | None = None
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "version": self.version,
            "rows": self.rows,
            "columns": self.columns,
            "profile": self.profile,
            "profileTruncated": self.profile_truncated,
            "reason": self.reason,
            "errors": self.errors,
        }


# --------------------------------------------------------------------------- checks


def _num(value: Any) -> float | int | None:
    """A JSON-safe, compact number (6 significant digits) or None for NaN/inf."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or math.isinf(f):
        return None
    if f.is_integer() and abs(f) < 2**53:
        return int(f)
    return float(f"{f:.6g}")


def _kind(series: pd.Series) -> str:
    """The logical type of a column as read: integer, float, boolean or string."""
    from pandas.api import types as pt

    if pt.is_bool_dtype(series.dtype):
        return "boolean"
    if pt.is_integer_dtype(series.dtype):
        return "integer"
    if pt.is_float_dtype(series.dtype):
        return "float"
    non_null = series.dropna()
    if len(non_null) and all(isinstance(v, bool) for v in non_null):
        return "boolean"
    return "string"


def _type_compatible(series: pd.Series, declared: str, fmt: str) -> bool:
    """Whether a column read from `fmt` can hold the declared logical type."""
    kind = _kind(series)
    non_null = series.dropna()
    if declared == "float":
        return kind in ("integer", "float")
    if declared == "integer":
        if kind == "integer":
            return True
        if kind == "float":  # a missing value turns an int column into floats
            return bool(all(float(v).is_integer() for v in non_null))
        return False
    if declared == "boolean":
        if kind == "boolean":
            return True
        if kind == "integer":
            return set(non_null.unique().tolist()) <= {0, 1}
        if kind == "string" and fmt == "csv":
            return {str(v).strip().lower() for v in non_null} <= {"true", "false"}
        return False
    # string: textual formats cannot tell "1" from 1, so anything read from CSV fits.
    if fmt == "csv":
        return True
    return kind == "string"


def _short(value: Any) -> str:
    return shorten(repr(value) if not isinstance(value, str) else value, 40)


def _value_allowed(value: Any, allowed: Sequence[Any]) -> bool:
    for a in allowed:
        if isinstance(a, bool) or isinstance(value, bool):
            if isinstance(a, bool) and isinstance(value, bool) and a == value:
                return True
            if str(a).lower() == str(value).lower():
                return True
            continue
        if a == value:
            return True
        if isinstance(a, int | float) and isinstance(value, int | float):
            continue
        if str(a) == str(value):
            return True
    return False


def check_schema(frame: pd.DataFrame, schema: DataSchema | None, fmt: str = "csv") -> list[str]:
    """Schema errors: declared columns missing, incompatible types, nulls in non-nullable
    columns, values outside allowedValues, a missing target column."""
    errors: list[str] = []
    if schema is None:
        return errors
    present = {str(c): c for c in frame.columns}
    for col in schema.columns:
        if col.name not in present:
            errors.append(f"column {col.name!r} is missing")
            continue
        series = frame[present[col.name]]
        if not _type_compatible(series, col.type, fmt):
            errors.append(f"column {col.name!r}: expected {col.type}, found {_kind(series)} ({series.dtype})")
        missing = int(series.isna().sum())
        if not col.nullable and missing:
            errors.append(f"column {col.name!r}: {missing} missing value(s) but nullable is false")
        if col.allowed_values:
            unique = series.dropna().unique().tolist()
            bad = [v for v in unique if not _value_allowed(v, col.allowed_values)]
            if bad and col.sensitive:  # the errors reach status: count them, show none
                errors.append(f"column {col.name!r}: {len(bad)} distinct value(s) not in allowedValues")
            elif bad:
                sample = ", ".join(_short(v) for v in bad[:SAMPLE_BAD_VALUES])
                more = f" (+{len(bad) - SAMPLE_BAD_VALUES} more)" if len(bad) > SAMPLE_BAD_VALUES else ""
                errors.append(f"column {col.name!r}: values not in allowedValues: {sample}{more}")
    if (
        schema.target
        and schema.target not in present
        and schema.target not in {c.name for c in schema.columns}
    ):
        errors.append(f"target column {schema.target!r} is missing")
    return errors


def check_rules(frame: pd.DataFrame, rules: ValidationRules | None) -> list[str]:
    """Quality-rule errors: fewer rows than minRows, a column above maxMissingFraction."""
    errors: list[str] = []
    if rules is None:
        return errors
    rows = len(frame)
    if rules.min_rows is not None and rows < rules.min_rows:
        errors.append(f"{rows} rows, fewer than minRows {rules.min_rows}")
    if rules.max_missing_fraction is not None and rows:
        for name in frame.columns:
            frac = float(frame[name].isna().mean())
            if frac > rules.max_missing_fraction:
                errors.append(
                    f"column {str(name)!r}: missing fraction {_num(frac)} exceeds maxMissingFraction "
                    f"{rules.max_missing_fraction}"
                )
    return errors


# --------------------------------------------------------------------------- profile


def profile_column(series: pd.Series, *, sensitive: bool = False) -> dict[str, Any]:
    """Compact profile of one column; a sensitive one gets counts only (no mean or extremes,
    which are values of rows too)."""
    rows = len(series)
    missing = int(series.isna().sum())
    kind = _kind(series)
    out: dict[str, Any] = {"type": kind, "missingFraction": _num(missing / rows) if rows else 0}
    non_null = series.dropna()
    if kind in ("integer", "float"):
        if len(non_null) and not sensitive:
            import numpy as np

            values = non_null.astype("float64")
            with np.errstate(all="ignore"):  # inf values make mean/std NaN: reported as null
                out["mean"] = _num(values.mean())
                out["std"] = _num(values.std(ddof=0))
            out["min"] = _num(values.min())
            out["max"] = _num(values.max())
        return out
    as_text = non_null.map(lambda v: v if isinstance(v, str) else str(v))
    counts = as_text.value_counts()
    out["distinct"] = len(counts)
    if sensitive or len(counts) > TOP_MAX_DISTINCT:
        return out
    top = counts[counts >= TOP_MIN_COUNT].head(TOP_VALUES)
    if len(top):
        out["top"] = {shorten(str(k), TOP_VALUE_LEN): int(v) for k, v in top.items()}
    return out


def build_profile(frame: pd.DataFrame, sensitive: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    return {str(name): profile_column(frame[name], sensitive=str(name) in sensitive) for name in frame.columns}


def bound_errors(errors: Sequence[str]) -> list[str]:
    out = [shorten(e, MAX_ERROR_LEN) for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        out.append(f"... and {len(errors) - MAX_ERRORS} more")
    return out


def render(result: Result, limit: int = TERMINATION_LIMIT, priority: Sequence[str] = ()) -> str:
    """Serialize `result` under `limit` bytes. When too large the profile is cut on purpose:
    first the top values of columns (last columns first), then whole columns (columns named
    in `priority`, e.g. the declared schema, are kept longest); `profileTruncated` is set."""
    text = dumps(result.to_json())
    if len(text) < limit:
        return text
    result.profile_truncated = True
    profile = {k: dict(v) for k, v in result.profile.items()}
    prio = {name: i for i, name in enumerate(priority)}
    # Cut order: other columns from the last one back, then priority columns from the last one back.
    cut_order = [k for k in reversed(list(profile)) if k not in prio]
    cut_order += sorted((k for k in profile if k in prio), key=lambda k: -prio[k])

    def size_of(name: str, entry: dict[str, Any]) -> int:
        return len(dumps({name: entry})) - 1  # key + value + one separator, roughly

    base = len(dumps({**result.to_json(), "profile": {}, "profileTruncated": True}))
    budget = limit - base - 8
    sizes = {k: size_of(k, v) for k, v in profile.items()}
    total = sum(sizes.values())
    for name in cut_order:  # 1) drop top values
        if total <= budget:
            break
        if "top" in profile[name]:
            del profile[name]["top"]
            new = size_of(name, profile[name])
            total += new - sizes[name]
            sizes[name] = new
    for name in cut_order:  # 2) drop columns
        if total <= budget:
            break
        total -= sizes.pop(name)
        del profile[name]
    result.profile = profile
    text = dumps(result.to_json())
    while len(text) >= limit and result.profile:  # rounding safety
        result.profile.pop(next(reversed(result.profile)))
        text = dumps(result.to_json())
    while len(text) >= limit and result.errors:
        result.errors = result.errors[:-1]
        text = dumps(result.to_json())
    return text


# --------------------------------------------------------------------------- entrypoint


def validate(frame: pd.DataFrame, spec: DatasetSpec | None, fmt: str) -> tuple[str | None, list[str]]:
    schema_errors = check_schema(frame, spec.data_schema if spec else None, fmt)
    rule_errors = check_rules(frame, spec.validation if spec else None)
    if schema_errors:
        return "SchemaViolation", schema_errors + rule_errors
    if rule_errors:
        return "QualityRuleViolation", rule_errors
    return None, []


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dockyard profile", description=__doc__.split("\n")[0])
    p.add_argument("--name", help="Dataset name (env DOCKYARD_DATASET_NAME)")
    p.add_argument("--uri", help="source URI (env DOCKYARD_DATASET_URI)")
    p.add_argument("--format", choices=FORMATS, help="data format (env DOCKYARD_DATASET_FORMAT)")
    p.add_argument("--spec", help="Dataset spec JSON, camelCase (env DOCKYARD_DATASET_SPEC)")
    p.add_argument("--spec-file", help="read the Dataset spec JSON (or YAML) from a file")
    p.add_argument("--termination-log", help="where to write the result (env DOCKYARD_TERMINATION_LOG)")
    return p.parse_args(list(argv))


def load_spec(text: str | None) -> DatasetSpec | None:
    if not text:
        return None
    from pydantic import ValidationError

    from ..api.dataset import DatasetSpec

    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RuntimeFailure(
                "InvalidSpec", f"Dataset spec is neither JSON nor YAML: {exc}", EXIT_BAD_INPUT
            ) from exc
    if isinstance(raw, dict) and "spec" in raw and "source" not in raw:
        raw = raw["spec"]  # accept a whole Dataset object too
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"msg": str(exc), "loc": ()}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise RuntimeFailure(
            "InvalidSpec", f"invalid Dataset spec at {loc}: {first['msg']}", EXIT_BAD_INPUT
        ) from exc


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Result, int, list[str]]:
    """Profile and validate. Returns (result, exit code, priority columns)."""
    result = Result()
    priority: list[str] = []
    try:
        spec_text = args.spec or env_str(environ, "DOCKYARD_DATASET_SPEC")
        if args.spec_file:
            with open(args.spec_file, encoding="utf-8") as fh:
                spec_text = fh.read()
        spec = load_spec(spec_text)
        uri = args.uri or env_str(environ, "DOCKYARD_DATASET_URI") or (spec.source.uri if spec else None)
        fmt = (
            args.format
            or env_str(environ, "DOCKYARD_DATASET_FORMAT")
            or (spec.source.format if spec else "csv")
        )
        if not uri:
            raise RuntimeFailure(
                "InvalidSpec", "no source: set DOCKYARD_DATASET_URI or --uri", EXIT_BAD_INPUT
            )
        if fmt not in FORMATS:
            raise RuntimeFailure("InvalidSpec", f"unsupported format {fmt!r}", EXIT_BAD_INPUT)
        if spec and spec.data_schema:
            priority = [c.name for c in spec.data_schema.columns]
            if spec.data_schema.target and spec.data_schema.target not in priority:
                priority.insert(0, spec.data_schema.target)
        data = read_source_bytes(uri, environ)
        result.version = content_version(data)
        frame = parse_frame(data, fmt, uri)
    except RuntimeFailure as exc:
        result.reason = exc.reason
        result.errors = bound_errors([exc.message])
        return result, exc.exit_code, priority
    result.rows = len(frame)
    result.columns = len(frame.columns)
    schema = spec.data_schema if spec else None
    result.profile = build_profile(frame, {c.name for c in schema.columns if c.sensitive} if schema else ())
    reason, errors = validate(frame, spec, fmt)
    result.reason = reason
    result.errors = bound_errors(errors)
    result.ok = reason is None
    return result, (EXIT_OK if result.ok else EXIT_FAILED), priority


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    environ = os.environ
    name = args.name or env_str(environ, "DOCKYARD_DATASET_NAME") or "(unnamed)"
    result, code, priority = run(args, environ)
    text = render(result, TERMINATION_LIMIT, priority)
    write_termination_message(termination_path(environ, args.termination_log), text)
    if result.ok:
        print(
            f"dockyard profile: dataset {name} is valid: {result.version}, {result.rows} rows, "
            f"{result.columns} columns",
            file=sys.stderr,
        )
    else:
        print(f"dockyard profile: dataset {name} failed: {result.reason}", file=sys.stderr)
        for err in result.errors:
            print(f"  - {err}", file=sys.stderr)
    print(text)
    return code
