"""``meta.k8s.io/v1`` Table output (what ``kubectl get`` asks for) and the small JSONPath subset
used by ``additionalPrinterColumns`` (``.a.b``, ``.a[0]``, ``.a[*].b``, ``.a[?(@.k=="v")].b``)."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from .resources import ResourceType

_NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace. Is required when creating resources, "
    "although some resources may allow a client to request the generation of an "
    "appropriate name automatically.",
}
_AGE_COLUMN = {
    "name": "Age",
    "type": "string",
    "format": "",
    "priority": 0,
    "description": "CreationTimestamp is a timestamp representing the server time when this object "
    "was created.",
}

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_$\-/]+)
      |\[(?P<index>-?\d+|\*)\]
      |\[\?\(@\.(?P<fkey>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)\s*(?P<fval>"[^"]*"|'[^']*'|[^)\s]+)\)\]
      |\['(?P<qfield>[^']+)'\]
    """,
    re.VERBOSE,
)


class JSONPathError(ValueError):
    pass


def _parse(path: str) -> list[tuple[str, Any]]:
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1]
    if p.startswith("$"):
        p = p[1:]
    if p and not p.startswith((".", "[")):
        p = "." + p
    pos, out = 0, []
    while pos < len(p):
        m = _TOKEN.match(p, pos)
        if not m:
            raise JSONPathError(f"unsupported JSONPath {path!r} at {p[pos:]!r}")
        if m.group("field") is not None:
            out.append(("field", m.group("field")))
        elif m.group("qfield") is not None:
            out.append(("field", m.group("qfield")))
        elif m.group("index") is not None:
            idx = m.group("index")
            out.append(("all", None) if idx == "*" else ("index", int(idx)))
        else:
            raw = m.group("fval")
            val: Any = raw[1:-1] if raw[0] in "\"'" else json.loads(raw)
            out.append(("filter", (m.group("fkey"), m.group("op"), val)))
        pos = m.end()
    return out


def jsonpath(obj: Any, path: str) -> list[Any]:
    """All results of ``path`` applied to ``obj``."""
    cur = [obj]
    for kind, arg in _parse(path):
        nxt: list[Any] = []
        for c in cur:
            if kind == "field":
                if isinstance(c, dict) and arg in c:
                    nxt.append(c[arg])
                elif isinstance(c, list) and arg != "*":
                    nxt.extend(i[arg] for i in c if isinstance(i, dict) and arg in i)
            elif kind == "index":
                if isinstance(c, list) and -len(c) <= arg < len(c):
                    nxt.append(c[arg])
            elif kind == "all":
                if isinstance(c, list):
                    nxt.extend(c)
                elif isinstance(c, dict):
                    nxt.extend(c.values())
            elif kind == "filter":
                key, op, val = arg
                if isinstance(c, list):
                    for item in c:
                        got = jsonpath(item, "." + key)
                        v = got[0] if got else None
                        if (op == "==" and v == val) or (op == "!=" and got and v != val):
                            nxt.append(item)
        cur = nxt
    return cur


def human_duration(seconds: float) -> str:
    """``k8s.io/apimachinery/pkg/util/duration.HumanDuration``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 60 * 3:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        return f"{h // (24 * 365)}y{(h // 24) % 365}d"
    return f"{h // (24 * 365)}y"


def age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    return human_duration((datetime.datetime.now(datetime.UTC) - t).total_seconds())


def _cell(column: dict[str, Any], obj: dict[str, Any]) -> Any:
    try:
        results = jsonpath(obj, column.get("jsonPath", ""))
    except JSONPathError:
        return None
    if not results:
        return None
    value = results[0]
    typ = column.get("type", "string")
    if typ == "date":
        return age(value) if isinstance(value, str) else None
    if typ == "string":
        if isinstance(value, dict | list):
            return json.dumps(value, separators=(",", ":"))
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    if typ == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if typ == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if typ == "boolean":
        return value if isinstance(value, bool) else None
    return value


def _pod_ready(o: dict[str, Any]) -> str:
    statuses = (o.get("status") or {}).get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _ports(o: dict[str, Any]) -> str:
    ports = (o.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _job_status(o: dict[str, Any]) -> str:
    conds = {c.get("type"): c.get("status") for c in (o.get("status") or {}).get("conditions") or []}
    if conds.get("Complete") == "True":
        return "Complete"
    if conds.get("Failed") == "True":
        return "Failed"
    return "Running"


_S = "string"
BUILTIN_COLUMNS: dict[str, list[tuple[str, str, Any]]] = {
    "pods": [
        ("Ready", _S, _pod_ready),
        ("Status", _S, lambda o: (o.get("status") or {}).get("phase", "Pending")),
        (
            "Restarts",
            "integer",
            lambda o: sum(
                s.get("restartCount", 0) for s in (o.get("status") or {}).get("containerStatuses") or []
            ),
        ),
    ],
    "deployments": [
        (
            "Ready",
            _S,
            lambda o: (
                f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
                f"{(o.get('spec') or {}).get('replicas', 1)}"
            ),
        ),
        ("Up-to-date", "integer", lambda o: (o.get("status") or {}).get("updatedReplicas", 0)),
        ("Available", "integer", lambda o: (o.get("status") or {}).get("availableReplicas", 0)),
    ],
    "jobs": [
        ("Status", _S, _job_status),
        (
            "Completions",
            _S,
            lambda o: (
                f"{(o.get('status') or {}).get('succeeded', 0)}/{(o.get('spec') or {}).get('completions', 1)}"
            ),
        ),
    ],
    "services": [
        ("Type", _S, lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
        ("Cluster-IP", _S, lambda o: (o.get("spec") or {}).get("clusterIP", "<none>")),
        ("Ports", _S, _ports),
    ],
    "namespaces": [("Status", _S, lambda o: (o.get("status") or {}).get("phase", "Active"))],
    "configmaps": [("Data", "integer", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}))],
    "secrets": [
        ("Type", _S, lambda o: o.get("type", "Opaque")),
        ("Data", "integer", lambda o: len(o.get("data") or {})),
    ],
}


def columns_for(rt: ResourceType) -> tuple[list[dict[str, Any]], list[Any]]:
    """(column definitions, cell functions) for a resource type."""
    defs = [dict(_NAME_COLUMN)]
    funcs: list[Any] = [lambda o: o.get("metadata", {}).get("name")]
    if rt.crd is not None:
        cols = rt.printer_columns
        if not cols:
            defs.append(dict(_AGE_COLUMN))
            funcs.append(lambda o: age(o.get("metadata", {}).get("creationTimestamp")))
        for c in cols:
            defs.append(
                {
                    "name": c["name"],
                    "type": c.get("type", "string"),
                    "format": c.get("format", ""),
                    "description": c.get("description", ""),
                    "priority": c.get("priority", 0),
                }
            )
            funcs.append(lambda o, c=c: _cell(c, o))
        return defs, funcs
    for name, typ, fn in BUILTIN_COLUMNS.get(rt.plural, []):
        defs.append({"name": name, "type": typ, "format": "", "description": name, "priority": 0})
        funcs.append(fn)
    defs.append(dict(_AGE_COLUMN))
    funcs.append(lambda o: age(o.get("metadata", {}).get("creationTimestamp")))
    return defs, funcs


def row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def to_table(
    rt: ResourceType,
    objs: list[dict[str, Any]],
    resource_version: str | None,
    include_object: str = "PartialObjectMetadata",
    with_columns: bool = True,
) -> dict[str, Any]:
    defs, funcs = columns_for(rt)
    rows = []
    for o in objs:
        cells = []
        for f in funcs:
            try:
                cells.append(f(o))
            except Exception:
                cells.append(None)
        row: dict[str, Any] = {"cells": cells}
        ro = row_object(o, include_object)
        if ro is not None:
            row["object"] = ro
        rows.append(row)
    table: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "rows": rows}
    if resource_version is not None:
        table["metadata"]["resourceVersion"] = resource_version
    if with_columns:
        table["columnDefinitions"] = defs
    return table
