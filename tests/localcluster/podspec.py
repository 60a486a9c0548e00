"""Pure helpers for reading a Pod spec the way the kubelet does: ``$(VAR)`` expansion,
resource quantities and ``resourceFieldRef`` values."""

from __future__ import annotations

import math
import os
from typing import Any

Obj = dict[str, Any]


class ConfigError(Exception):
    """A container cannot start yet (missing Secret/ConfigMap/key, bad field reference); the
    kubelet reports ``reason`` (e.g. CreateContainerConfigError) and retries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def expand_vars(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known vars are substituted, unknown ones left as is,
    ``$$`` is an escaped ``$``."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "$" and i + 1 < n:
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2 : end]
                    out.append(env[name] if name in env else f"$({name})")
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}


def parse_quantity(q: str | int | float) -> float:
    s = str(q)
    for suf in sorted(_SUFFIXES, key=len, reverse=True):
        if s.endswith(suf):
            return float(s[: -len(suf)]) * _SUFFIXES[suf]
    return float(s)


def resource_field_value(container: Obj, ref: Obj) -> str:
    """``resourceFieldRef``: the container's limit (else request, else the node's capacity),
    divided by ``divisor`` and rounded up, as the kubelet's downward API does."""
    section, _, res = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(section) or {}).get(res)
    if raw is None and section == "limits":
        raw = None  # a missing limit means "node allocatable"
    elif raw is None:
        raw = (resources.get("requests") or {}).get(res)
    if raw is not None:
        value = parse_quantity(raw)
    else:
        value = float(os.cpu_count() or 1) if res == "cpu" else float(8 * 2**30)
    divisor = parse_quantity(ref.get("divisor") or 1)
    return str(max(1, math.ceil(value / divisor)))
