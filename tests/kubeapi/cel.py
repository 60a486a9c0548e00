"""CEL evaluation for ``x-kubernetes-validations`` on top of cel-python (``celpy``).

Values are converted using the structural schema (so ``type: number`` is a CEL double even when
the JSON holds an integer, as in the real API server). Anything cel-python cannot evaluate
(an unknown function such as a Kubernetes CEL library extension we do not provide) raises
:class:`CELUnsupported` -- loudly -- instead of letting the rule pass or fail silently.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError

__all__ = ["CELCompileError", "CELRuntimeError", "CELUnsupported", "evaluate_rule", "to_cel"]


class CELUnsupported(RuntimeError):
    """The emulator cannot evaluate this rule (a gap of the emulator, not an invalid object)."""


class CELCompileError(ValueError):
    """The rule does not compile (the real API server rejects such a CRD)."""


class CELRuntimeError(Exception):
    """The rule failed at evaluation time on this object (reported as an invalid value)."""


# --- a few functions of the Kubernetes CEL libraries, on top of the CEL standard library ---------


def _lower_ascii(s: Any) -> Any:
    return celtypes.StringType(str(s).lower())


def _upper_ascii(s: Any) -> Any:
    return celtypes.StringType(str(s).upper())


def _trim(s: Any) -> Any:
    return celtypes.StringType(str(s).strip())


def _index_of(s: Any, sub: Any) -> Any:
    if isinstance(s, list):
        for i, v in enumerate(s):
            if v == sub:
                return celtypes.IntType(i)
        return celtypes.IntType(-1)
    return celtypes.IntType(str(s).find(str(sub)))


def _last_index_of(s: Any, sub: Any) -> Any:
    if isinstance(s, list):
        for i in range(len(s) - 1, -1, -1):
            if s[i] == sub:
                return celtypes.IntType(i)
        return celtypes.IntType(-1)
    return celtypes.IntType(str(s).rfind(str(sub)))


def _split(s: Any, sep: Any) -> Any:
    return celtypes.ListType([celtypes.StringType(p) for p in str(s).split(str(sep))])


def _join(items: Any, sep: Any = "") -> Any:
    return celtypes.StringType(str(sep).join(str(i) for i in items))


def _replace(s: Any, old: Any, new: Any) -> Any:
    return celtypes.StringType(str(s).replace(str(old), str(new)))


def _is_sorted(items: Any) -> Any:
    return celtypes.BoolType(all(items[i] <= items[i + 1] for i in range(len(items) - 1)))


def _sum(items: Any) -> Any:
    total: Any = celtypes.IntType(0)
    for i, v in enumerate(items):
        total = v if i == 0 else total + v
    return total


def _min(items: Any) -> Any:
    if not items:
        raise CELRuntimeError("min called on an empty list")
    return min(items)


def _max(items: Any) -> Any:
    if not items:
        raise CELRuntimeError("max called on an empty list")
    return max(items)


K8S_FUNCTIONS: dict[str, Any] = {
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "trim": _trim,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "split": _split,
    "join": _join,
    "replace": _replace,
    "isSorted": _is_sorted,
    "sum": _sum,
    "min": _min,
    "max": _max,
}

_env = celpy.Environment()
_lock = threading.Lock()


@functools.lru_cache(maxsize=1024)
def _program(rule: str) -> Any:
    with _lock:
        try:
            ast = _env.compile(rule)
        except Exception as e:  # celpy raises CELParseError
            raise CELCompileError(f"compilation failed: {e}") from e
        return _env.program(ast, functions=K8S_FUNCTIONS)


def compile_rule(rule: str) -> None:
    """Compile a rule (cached); raises :class:`CELCompileError`."""
    _program(rule)


def references_old_self(rule: str) -> bool:
    return re.search(r"\boldSelf\b", rule) is not None


# --- value conversion ----------------------------------------------------------------------------


def to_cel(value: Any, schema: dict[str, Any] | None = None) -> Any:
    """Convert a JSON value to CEL using its structural schema (if any)."""
    schema = schema or {}
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        if schema.get("type") == "number":
            return celtypes.DoubleType(float(value))
        return celtypes.IntType(value)
    if isinstance(value, float):
        if schema.get("type") == "integer" and value.is_integer():
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = schema.get("items") or {}
        return celtypes.ListType([to_cel(v, items) for v in value])
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        addl = addl if isinstance(addl, dict) else {}
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v, props.get(k, addl)) for k, v in value.items()}
        )
    raise CELRuntimeError(f"cannot convert {type(value).__name__} to CEL")


def _short(err: Exception) -> str:
    """cel-python error texts embed the whole activation; keep the useful head."""
    args = getattr(err, "args", ())
    text = str(args[0]) if args else str(err)
    text = text.split(" (in activation", 1)[0]
    return text[:300]


def evaluate_rule(
    rule: str, self_value: Any, schema: dict[str, Any], old_value: Any = None, has_old: bool = False
) -> Any:
    """Evaluate ``rule`` with ``self`` (and ``oldSelf`` when ``has_old``). Returns the CEL result.

    Raises :class:`CELRuntimeError` for data-dependent failures (e.g. ``no such key``), which the
    API server reports as invalid values, and :class:`CELUnsupported` when the emulator's CEL
    implementation lacks something the rule needs.
    """
    prg = _program(rule)
    activation: dict[str, Any] = {"self": to_cel(self_value, schema)}
    if has_old:
        activation["oldSelf"] = to_cel(old_value, schema)
    try:
        result = prg.evaluate(activation)
    except CELEvalError as e:
        msg = _short(e)
        if msg.startswith("undeclared reference"):
            name = e.args[2][0] if len(e.args) > 2 and e.args[2] else "?"
            if name not in activation and name not in ("self", "oldSelf"):
                raise CELUnsupported(
                    f"CEL rule {rule!r} uses {name!r}, which the emulator's CEL (cel-python) does not "
                    "implement; add it to tests/kubeapi/cel.py K8S_FUNCTIONS"
                ) from e
        raise CELRuntimeError(msg) from e
    except CELRuntimeError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as e:
        raise CELRuntimeError(f"{type(e).__name__}: {e}") from e
    if isinstance(result, CELEvalError):
        raise CELRuntimeError(_short(result))
    if isinstance(result, celtypes.BoolType):
        return bool(result)
    if isinstance(result, celtypes.StringType):
        return str(result)
    return result
