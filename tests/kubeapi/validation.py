"""Validation of custom resources against a CRD's structural ``openAPIV3Schema``.

Pure functions, usable without a server::

    obj, errors = validate_custom_resource(crd, obj)            # create
    obj, errors = validate_custom_resource(crd, obj, old=live)  # update (transition rules)

What it does, in the API server's order: drop ``null`` values of non-nullable fields, prune
unknown fields (honouring ``x-kubernetes-preserve-unknown-fields``), apply ``default``\\ s,
then validate types, ``required``, ``enum``, ``pattern``, ``format: date-time``,
``minimum``/``maximum`` (and exclusive), ``multipleOf``, ``minLength``/``maxLength``,
``minItems``/``maxItems``, ``minProperties``/``maxProperties``, ``x-kubernetes-int-or-string``,
``x-kubernetes-list-type`` ``set``/``map`` (+ ``x-kubernetes-list-map-keys`` uniqueness),
``allOf``/``anyOf``/``oneOf``/``not`` and CEL ``x-kubernetes-validations`` (``rule``,
``message``, ``messageExpression``, ``reason``, ``fieldPath``). Transition rules (those that
mention ``oldSelf``) run only on update and only where the old value exists (correlated through
object properties, map keys and ``list-type: map`` keys, as in Kubernetes). As in the API server,
CEL rules are skipped when there are type errors.

Error strings follow the API server, e.g.
``spec.variants[0].weight: Invalid value: 2000: spec.variants[0].weight in body should be less
than or equal to 1000``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import cel

try:  # RE2, the regexp dialect of the API server (Go): `$` does not match before a trailing newline
    import re2 as _re_engine  # from google-re2, a dependency of cel-python
except ImportError:  # pragma: no cover
    _re_engine = re  # type: ignore[no-redef]

_patterns: dict[str, Any] = {}


def _matches(p: str, value: str) -> bool:
    try:
        return _pattern(p).search(value) is not None
    except Exception:
        return False  # an invalid pattern rejects everything (the API server would reject the CRD)


def _pattern(p: str) -> Any:
    """Compile a schema ``pattern`` with RE2 semantics (cached)."""
    if p not in _patterns:
        _patterns[p] = _re_engine.compile(p)
    return _patterns[p]


__all__ = [
    "FieldError",
    "check_crd",
    "find_version",
    "prune_and_default",
    "validate_custom_resource",
    "validate_custom_resource_detailed",
]

_REASONS = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Unsupported value": "FieldValueNotSupported",
    "Too long": "FieldValueTooLong",
    "Too many": "FieldValueTooMany",
    "Duplicate value": "FieldValueDuplicate",
    "Forbidden": "FieldValueForbidden",
    "Type": "FieldValueTypeInvalid",
}
_REASON_TO_TYPE = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueRequired": "Required value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueDuplicate": "Duplicate value",
}


def go_repr(value: Any) -> str:
    """Render a value roughly as Go's ``%#v`` does in Kubernetes error messages."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)}:{go_repr(v)}" for k, v in value.items())
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(go_repr(v) for v in value) + "}"
    return json.dumps(str(value))


@dataclass
class FieldError:
    """One field error, as ``k8s.io/apimachinery/pkg/util/validation/field.Error``."""

    field: str
    type: str  # "Invalid value", "Required value", "Unsupported value", "Too long", ...
    detail: str = ""
    value: str | None = None  # already rendered
    type_error: bool = False  # FieldValueTypeInvalid (blocks CEL)

    @property
    def reason(self) -> str:
        if self.type_error:
            return "FieldValueTypeInvalid"
        return _REASONS.get(self.type, "FieldValueInvalid")

    @property
    def message(self) -> str:
        """The message without the field (``Status.details.causes[].message``)."""
        parts = [self.type]
        if self.value is not None:
            parts.append(self.value)
        if self.detail:
            parts.append(self.detail)
        return ": ".join(parts)

    def __str__(self) -> str:
        return f"{self.field or '<nil>'}: {self.message}"


# ---------------------------------------------------------------------------------------------
# paths


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _mapkey(path: str, key: str) -> str:
    return f"{path}[{key}]"


# ---------------------------------------------------------------------------------------------
# CRD helpers


def find_version(crd: dict[str, Any], api_version: str | None = None) -> dict[str, Any]:
    """The ``spec.versions[]`` entry for ``group/version`` (or the storage version)."""
    versions = crd.get("spec", {}).get("versions") or []
    if api_version:
        want = api_version.split("/")[-1]
        for v in versions:
            if v.get("name") == want:
                return v
    for v in versions:
        if v.get("storage"):
            return v
    if not versions:
        raise ValueError("CRD has no versions")
    return versions[0]


def _version_schema(crd: dict[str, Any], version: dict[str, Any]) -> dict[str, Any]:
    schema = (version.get("schema") or crd.get("spec", {}).get("validation") or {}).get("openAPIV3Schema")
    return schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _iter_rules(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    for r in schema.get("x-kubernetes-validations") or []:
        yield path, r
    for k, s in (schema.get("properties") or {}).items():
        yield from _iter_rules(s, _child(path, k))
    if isinstance(schema.get("items"), dict):
        yield from _iter_rules(schema["items"], path + "[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _iter_rules(schema["additionalProperties"], path + "[*]")
    for key in ("allOf", "anyOf", "oneOf"):
        for s in schema.get(key) or []:
            yield from _iter_rules(s, path)


def _iter_patterns(schema: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if not isinstance(schema, dict):
        return
    if isinstance(schema.get("pattern"), str):
        yield path, schema["pattern"]
    for k, sub in (schema.get("properties") or {}).items():
        yield from _iter_patterns(sub, _child(path, k))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _iter_patterns(schema[key], path + "[*]")


def check_crd(crd: dict[str, Any]) -> list[str]:
    """Static checks the API server makes on a CRD we care about: CEL rules compile."""
    errors = []
    for i, version in enumerate(crd.get("spec", {}).get("versions") or []):
        schema = _version_schema(crd, version)
        for path, pattern in _iter_patterns(schema):
            try:
                _pattern(pattern)
            except Exception as e:
                errors.append(
                    f"spec.versions[{i}].schema.openAPIV3Schema{'.' + path if path else ''}.pattern: "
                    f"Invalid value: {go_repr(pattern)}: {e}"
                )
        for path, rule in _iter_rules(schema):
            try:
                cel.compile_rule(rule.get("rule", ""))
            except cel.CELCompileError as e:
                errors.append(
                    f"spec.versions[{i}].schema.openAPIV3Schema{'.' + path if path else ''}"
                    f".x-kubernetes-validations: Invalid value: {go_repr(rule.get('rule'))}: {e}"
                )
    return errors


# ---------------------------------------------------------------------------------------------
# pruning and defaulting


def prune_and_default(
    value: Any, schema: dict[str, Any], path: str = "", pruned: list[str] | None = None, root: bool = False
) -> Any:
    """Return ``value`` with unknown fields pruned, non-nullable nulls dropped and defaults applied.

    Pruned field paths are appended to ``pruned`` (for ``fieldValidation=Strict|Warn``).
    """
    if pruned is None:
        pruned = []
    if not isinstance(schema, dict):
        return value
    if (
        isinstance(value, dict)
        and (schema.get("type") in (None, "object"))
        and not schema.get("x-kubernetes-int-or-string")
    ):
        props: dict[str, Any] = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        out: dict[str, Any] = {}
        for k, v in value.items():
            sub = props.get(k)
            if sub is None and isinstance(addl, dict):
                sub = addl
            keep_meta = (root or embedded) and k in ("apiVersion", "kind", "metadata")
            if sub is None:
                if keep_meta:
                    out[k] = v
                elif preserve or addl is True:
                    out[k] = v
                else:
                    pruned.append(
                        _child(path, k) if k in props or not isinstance(addl, dict) else _mapkey(path, k)
                    )
                continue
            if keep_meta and k == "metadata":
                out[k] = v  # metadata is handled by the server, never pruned by the schema
                continue
            child_path = _child(path, k) if k in props else _mapkey(path, k)
            if v is None and not sub.get("nullable"):
                if "default" in sub:
                    out[k] = prune_and_default(copy.deepcopy(sub["default"]), sub, child_path, [])
                continue
            out[k] = prune_and_default(v, sub, child_path, pruned)
        for k, sub in props.items():
            if k not in out and isinstance(sub, dict) and "default" in sub:
                out[k] = prune_and_default(copy.deepcopy(sub["default"]), sub, _child(path, k), [])
        return out
    if isinstance(value, list) and schema.get("type") in (None, "array"):
        items = schema.get("items")
        if isinstance(items, dict):
            res = []
            for i, v in enumerate(value):
                if v is None and not items.get("nullable") and "default" in items:
                    v = copy.deepcopy(items["default"])
                res.append(prune_and_default(v, items, _index(path, i), pruned))
            return res
        return list(value)
    return value


# ---------------------------------------------------------------------------------------------
# validation

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_ok(value: Any, typ: str) -> bool:
    if typ == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if typ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typ == "string":
        return isinstance(value, str)
    if typ == "boolean":
        return isinstance(value, bool)
    if typ == "array":
        return isinstance(value, list)
    if typ == "object":
        return isinstance(value, dict)
    return True


def _schema_type_name(schema: dict[str, Any], value: Any) -> str:
    return schema.get("type") or _json_type(value)


class _Validator:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.cel_errors: list[FieldError] = []

    # -- structural -----------------------------------------------------------------------
    def validate(self, value: Any, schema: dict[str, Any], path: str, old: Any, has_old: bool) -> bool:
        """Validate; return False when the value has the wrong type (children skipped)."""
        if not isinstance(schema, dict):
            return True
        errs = self.errors
        if value is None:
            if schema.get("nullable"):
                return True
            if schema.get("type"):
                errs.append(
                    FieldError(
                        path,
                        "Invalid value",
                        f'{path} in body must be of type {schema["type"]}: "null"',
                        '"null"',
                        type_error=True,
                    )
                )
                return False
            return True
        if schema.get("x-kubernetes-int-or-string"):
            if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
                errs.append(
                    FieldError(
                        path,
                        "Invalid value",
                        f"{path} in body must be of type integer or string: {go_repr(_json_type(value))}",
                        go_repr(_json_type(value)),
                        type_error=True,
                    )
                )
                return False
        else:
            typ = schema.get("type")
            if typ and not _type_ok(value, typ):
                tn = _json_type(value)
                errs.append(
                    FieldError(
                        path,
                        "Invalid value",
                        f"{path} in body must be of type {typ}: {go_repr(tn)}",
                        go_repr(tn),
                        type_error=True,
                    )
                )
                return False

        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(go_repr(v) for v in schema["enum"])
            errs.append(
                FieldError(path, "Unsupported value", f"supported values: {supported}", go_repr(value))
            )

        if isinstance(value, int | float) and not isinstance(value, bool):
            self._numeric(value, schema, path)
        elif isinstance(value, str):
            self._string(value, schema, path)
        elif isinstance(value, list):
            self._array(value, schema, path, old, has_old)
        elif isinstance(value, dict):
            self._object(value, schema, path, old, has_old)

        for key in ("allOf", "anyOf", "oneOf", "not"):
            if key in schema:
                self._combinators(key, schema[key], value, path)

        self._cel(value, schema, path, old, has_old)
        return True

    def _numeric(self, value: float, schema: dict[str, Any], path: str) -> None:
        errs = self.errors
        if "maximum" in schema:
            mx = schema["maximum"]
            if schema.get("exclusiveMaximum") and value >= mx:
                errs.append(
                    FieldError(
                        path,
                        "Invalid value",
                        f"{path} in body should be less than {go_repr(mx)}",
                        go_repr(value),
                    )
                )
            elif value > mx:
                errs.append(
                    FieldError(
                        path,
                        "Invalid value",
                        f"{path} in body should be less than or equal to {go_repr(mx)}",
                        go_repr(value),
                    )
                )
        if "minimum" in schema:
            mn = schema["minimum"]
            if schema.get("exclusiveMinimum") and value <= mn:
                errs.append(
                    FieldError(
                        path,
                        "Invalid value",
                        f"{path} in body should be greater than {go_repr(mn)}",
                        go_repr(value),
                    )
                )
            elif value < mn:
                errs.append(
                    FieldError(
                        path,
                        "Invalid value",
                        f"{path} in body should be greater than or equal to {go_repr(mn)}",
                        go_repr(value),
                    )
                )
        if "multipleOf" in schema:
            m = schema["multipleOf"]
            q = value / m
            if not math.isclose(q, round(q), rel_tol=0, abs_tol=1e-9):
                errs.append(
                    FieldError(
                        path,
                        "Invalid value",
                        f"{path} in body should be a multiple of {go_repr(m)}",
                        go_repr(value),
                    )
                )

    def _string(self, value: str, schema: dict[str, Any], path: str) -> None:
        errs = self.errors
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(FieldError(path, "Too long", f"may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            errs.append(
                FieldError(
                    path,
                    "Invalid value",
                    f"{path} in body should be at least {schema['minLength']} chars long",
                    go_repr(value),
                )
            )
        if "pattern" in schema and not _matches(schema["pattern"], value):
            errs.append(
                FieldError(
                    path,
                    "Invalid value",
                    f"{path} in body should match '{schema['pattern']}'",
                    go_repr(value),
                )
            )
        if schema.get("format") == "date-time" and not _DATE_TIME.match(value):
            errs.append(
                FieldError(
                    path,
                    "Invalid value",
                    f"{path} in body must be of type date-time: {go_repr(value)}",
                    go_repr(value),
                )
            )

    def _array(self, value: list[Any], schema: dict[str, Any], path: str, old: Any, has_old: bool) -> None:
        errs = self.errors
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append(
                FieldError(path, "Too many", f"must have at most {schema['maxItems']} items", str(len(value)))
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            errs.append(
                FieldError(
                    path,
                    "Invalid value",
                    f"{path} in body should have at least {schema['minItems']} items",
                    str(len(value)),
                )
            )
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set" or schema.get("uniqueItems"):
            seen: list[Any] = []
            for i, v in enumerate(value):
                if v in seen:
                    errs.append(FieldError(_index(path, i), "Duplicate value", "", go_repr(v)))
                else:
                    seen.append(v)
        keys = schema.get("x-kubernetes-list-map-keys") or []
        old_by_key: dict[str, Any] = {}
        if list_type == "map" and keys:
            seen_keys: set[str] = set()
            for i, v in enumerate(value):
                if not isinstance(v, dict):
                    continue
                kv = {k: v.get(k) for k in keys}
                ks = json.dumps(kv, sort_keys=True)
                if ks in seen_keys:
                    errs.append(FieldError(_index(path, i), "Duplicate value", "", go_repr(kv)))
                seen_keys.add(ks)
            if has_old and isinstance(old, list):
                for o in old:
                    if isinstance(o, dict):
                        old_by_key[json.dumps({k: o.get(k) for k in keys}, sort_keys=True)] = o
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                o, ho = None, False
                if list_type == "map" and keys and isinstance(v, dict):
                    ks = json.dumps({k: v.get(k) for k in keys}, sort_keys=True)
                    if ks in old_by_key:
                        o, ho = old_by_key[ks], True
                self.validate(v, items, _index(path, i), o, ho)

    def _object(
        self, value: dict[str, Any], schema: dict[str, Any], path: str, old: Any, has_old: bool
    ) -> None:
        errs = self.errors
        for req in schema.get("required") or []:
            if req not in value:
                errs.append(FieldError(_child(path, req), "Required value"))
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errs.append(
                FieldError(
                    path, "Too many", f"must have at most {schema['maxProperties']} items", str(len(value))
                )
            )
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            errs.append(
                FieldError(
                    path,
                    "Invalid value",
                    f"{path} in body should have at least {schema['minProperties']} properties",
                    str(len(value)),
                )
            )
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        old_map = old if (has_old and isinstance(old, dict)) else None
        for k, v in value.items():
            if path == "" and k == "metadata":
                # ObjectMeta is validated by the server; a CRD may only add rules for name and
                # generateName, which the apiserver checks like any schema field.
                meta_props = (props.get("metadata") or {}).get("properties") or {}
                for mk in ("name", "generateName"):
                    if mk in meta_props and isinstance(v, dict) and mk in v:
                        self.validate(v[mk], meta_props[mk], f"metadata.{mk}", None, False)
                continue
            if k in props:
                sub, cpath = props[k], _child(path, k)
            elif isinstance(addl, dict):
                sub, cpath = addl, _child(path, k)  # the real apiserver: spec.limits.memory
            else:
                continue
            if old_map is not None and k in old_map:
                self.validate(v, sub, cpath, old_map[k], True)
            else:
                self.validate(v, sub, cpath, None, False)

    def _combinators(self, key: str, sub: Any, value: Any, path: str) -> None:
        def ok(s: dict[str, Any]) -> bool:
            v = _Validator()
            v.validate(value, s, path, None, False)
            return not v.errors

        if key == "allOf":
            for s in sub:
                v = _Validator()
                v.validate(value, s, path, None, False)
                self.errors.extend(v.errors)
        elif key == "anyOf":
            if not any(ok(s) for s in sub):
                self.errors.append(
                    FieldError(
                        path, "Invalid value", "must validate at least one schema (anyOf)", go_repr(value)
                    )
                )
        elif key == "oneOf":
            n = sum(1 for s in sub if ok(s))
            if n != 1:
                self.errors.append(
                    FieldError(
                        path, "Invalid value", "must validate one and only one schema (oneOf)", go_repr(value)
                    )
                )
        elif key == "not" and ok(sub):
            self.errors.append(
                FieldError(path, "Invalid value", "must not validate the schema (not)", go_repr(value))
            )

    # -- CEL ------------------------------------------------------------------------------
    def _cel(self, value: Any, schema: dict[str, Any], path: str, old: Any, has_old: bool) -> None:
        rules = schema.get("x-kubernetes-validations")
        if not rules:
            return
        type_name = go_repr(_schema_type_name(schema, value))
        for rule in rules:
            expr = rule.get("rule", "")
            transition = cel.references_old_self(expr)
            if transition and not has_old:
                continue
            target = path
            if rule.get("fieldPath"):
                fp = rule["fieldPath"]
                target = f"{path}{fp}" if fp.startswith((".", "[")) else _child(path, fp)
            try:
                result = cel.evaluate_rule(expr, value, schema, old, has_old and transition)
            except cel.CELRuntimeError as e:
                self.cel_errors.append(
                    FieldError(target, "Invalid value", f"{e} evaluating rule: {expr}", type_name)
                )
                continue
            if result is True:
                continue
            if not isinstance(result, bool):
                self.cel_errors.append(
                    FieldError(target, "Invalid value", f"rule did not evaluate to a bool: {expr}", type_name)
                )
                continue
            message = rule.get("message") or f"failed rule: {expr}"
            if rule.get("messageExpression"):
                try:
                    m = cel.evaluate_rule(
                        rule["messageExpression"], value, schema, old, has_old and transition
                    )
                    if isinstance(m, str) and m.strip():
                        message = str(m)
                except cel.CELRuntimeError:
                    pass
            ftype = _REASON_TO_TYPE.get(rule.get("reason", "FieldValueInvalid"), "Invalid value")
            if ftype == "Invalid value" or ftype == "Duplicate value":
                self.cel_errors.append(FieldError(target, ftype, message, type_name))
            else:
                self.cel_errors.append(FieldError(target, ftype, message))


def validate_custom_resource_detailed(
    crd: dict[str, Any],
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[FieldError], list[str]]:
    """Like :func:`validate_custom_resource` but returns ``FieldError`` objects and the list of
    pruned (unknown) field paths."""
    version = find_version(crd, obj.get("apiVersion"))
    schema = _version_schema(crd, version)
    pruned: list[str] = []
    result = prune_and_default(copy.deepcopy(obj), schema, "", pruned, root=True)
    v = _Validator()
    meta = result.get("metadata") or {}
    name = meta.get("name")
    if isinstance(name, str) and name and (len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name)):
        v.errors.append(
            FieldError(
                "metadata.name",
                "Invalid value",
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                go_repr(name),
            )
        )
    old_pd = None
    if old is not None:
        old_pd = prune_and_default(copy.deepcopy(old), schema, "", [], root=True)
    v.validate(result, schema, "", old_pd, old_pd is not None)
    errors = list(v.errors)
    if any(e.type_error for e in errors):
        if v.cel_errors or _has_rules(schema):
            errors.append(
                FieldError(
                    "",
                    "Invalid value",
                    "some validation rules were not checked because the "
                    "object was invalid; correct the existing errors to complete validation",
                    '"null"',
                )
            )
    else:
        errors.extend(v.cel_errors)
    return result, errors, pruned


def _has_rules(schema: dict[str, Any]) -> bool:
    return any(True for _ in _iter_rules(schema))


def validate_custom_resource(
    crd: dict[str, Any],
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Prune, default and validate ``obj`` against ``crd``; ``old`` is the live object on update.

    Returns ``(pruned_and_defaulted_object, errors)`` where each error names the field path,
    e.g. ``spec.variants[0].weight: Invalid value: 2000: ...``. Raises
    :class:`tests.kubeapi.cel.CELUnsupported` if a CEL rule needs something cel-python lacks.
    """
    result, errors, _ = validate_custom_resource_detailed(crd, obj, old)
    return result, [str(e) for e in errors]
