"""Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
(built-in kinds) and a simplified server-side apply with field ownership.

Server-side apply model (simplified, see README): each manager owns a set of *leaf* field paths.
Lists are merged by key when the schema says so (CRD ``x-kubernetes-list-type: map`` with
``x-kubernetes-list-map-keys``, or the strategic-merge keys of built-in kinds); other lists are
atomic (owned as a whole). Ownership is recorded in ``metadata.managedFields`` in the real
``FieldsV1`` format (``f:spec``/``k:{"name":"a"}``/``.``), so ``kubectl`` shows it.
"""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any


class PatchError(Exception):
    """Invalid patch (HTTP 422 for JSON-patch test failures/bad paths, 400 for malformed)."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts  # (manager, field path)
        super().__init__(", ".join(f"{m}: {f}" for m, f in conflicts))


# ---------------------------------------------------------------------------------------------
# RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# ---------------------------------------------------------------------------------------------
# RFC 6902


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}", 400)
    return [_unescape(t) for t in path[1:].split("/")]


def _resolve_parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(f"doc is missing path: {path!r}")
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError) as e:
                raise PatchError(f"doc is missing path: {path!r}") from e
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return cur, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    cur = doc
    for t in _split_pointer(path):
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError) as e:
                raise PatchError(f"doc is missing path: {path!r}") from e
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return cur


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _split_pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
        else:
            try:
                i = int(last)
            except ValueError as e:
                raise PatchError(f"invalid index in {path!r}") from e
            if i < 0 or i > len(parent):
                raise PatchError(f"index out of range in {path!r}")
            parent.insert(i, copy.deepcopy(value))
    else:
        raise PatchError(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _split_pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"Unable to remove nonexistent key: {last}: missing value")
        del parent[last]
    elif isinstance(parent, list):
        try:
            del parent[int(last)]
        except (ValueError, IndexError) as e:
            raise PatchError(f"Unable to remove index {last} of {path!r}") from e
    else:
        raise PatchError(f"doc is missing path: {path!r}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations", 400)
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid json patch operation {op!r}", 400)
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _remove(doc, path) if _split_pointer(path) else doc
            doc = _add(doc, path, op.get("value"))
        elif kind == "move":
            value = copy.deepcopy(_get(doc, op["from"]))
            doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}", 400)
    return doc


# ---------------------------------------------------------------------------------------------
# strategic merge patch (built-in kinds)

# list field name -> merge key. Scalar lists with merge strategy use the key None.
STRATEGIC_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "finalizers": None,
}
# "ports" merges by containerPort in a container and by port in a Service.


def _merge_key(field: str, items: list[Any]) -> str | None | bool:
    """Merge key for a list field; False when the list is atomic."""
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    if field in STRATEGIC_KEYS:
        return STRATEGIC_KEYS[field]
    return False


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [x for x in result[name] if x not in (v or [])]
            continue
        if v is None:
            result.pop(k, None)
            continue
        if isinstance(v, list):
            result[k] = _merge_list(result.get(k), v, k)
            continue
        if isinstance(v, dict):
            merged = strategic_merge(result.get(k), v, k)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
            continue
        result[k] = copy.deepcopy(v)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: Any, patch: list[Any], field: str) -> list[Any]:
    key = _merge_key(field, patch + (current if isinstance(current, list) else []))
    if key is False or not isinstance(current, list):
        if key is not False and any(isinstance(p, dict) and p.get("$patch") for p in patch):
            current = []
        else:
            return [p for p in copy.deepcopy(patch) if not (isinstance(p, dict) and "$patch" in p)]
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [p for p in copy.deepcopy(patch) if not (isinstance(p, dict) and "$patch" in p)]
    result = copy.deepcopy(current)
    if key is None:  # set of scalars
        for p in patch:
            if p not in result:
                result.append(copy.deepcopy(p))
        return result
    for p in patch:
        if not isinstance(p, dict):
            continue
        idx = next(
            (i for i, c in enumerate(result) if isinstance(c, dict) and c.get(key) == p.get(key)), None
        )
        if p.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
            continue
        if idx is None:
            result.append(strategic_merge({}, p, field))
        else:
            result[idx] = strategic_merge(result[idx], p, field)
    return result


# ---------------------------------------------------------------------------------------------
# server-side apply

# A field path is a tuple of elements: str (object field) or ("k", json-key) for keyed list items.
Path = tuple[Any, ...]
IGNORED_TOP = {"apiVersion", "kind"}
IGNORED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
}


def _list_keys_from_schema(schema: dict[str, Any] | None) -> list[str] | None:
    if not schema:
        return None
    if schema.get("x-kubernetes-list-type") == "map":
        return list(schema.get("x-kubernetes-list-map-keys") or [])
    return None


def _child_schema(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not schema:
        return None
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    addl = schema.get("additionalProperties")
    return addl if isinstance(addl, dict) else None


class _Keys:
    """How to key list items at a path: from a CRD schema, or from the built-in strategic keys."""

    def __init__(self, schema: dict[str, Any] | None, builtin: bool) -> None:
        self.schema = schema
        self.builtin = builtin

    def list_keys(self, field: str, schema: dict[str, Any] | None, items: list[Any]) -> list[str] | None:
        if self.builtin:
            k = _merge_key(field, items)
            if k is False or k is None:
                return None
            return [k]  # type: ignore[list-item]
        return _list_keys_from_schema(schema)


def _item_key(item: Any, keys: list[str]) -> str:
    return json.dumps({k: item.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))


def flatten(
    obj: Any, keys: _Keys, schema: dict[str, Any] | None = None, path: Path = (), field: str = ""
) -> dict[Path, Any]:
    """Leaf paths -> values for an applied configuration."""
    out: dict[Path, Any] = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            if not path and k in IGNORED_TOP:
                continue
            if path == ("metadata",) and k in IGNORED_META:
                continue
            out.update(flatten(v, keys, _child_schema(schema, k), (*path, k), k))
        return out
    if isinstance(obj, list) and obj:
        lk = keys.list_keys(field, schema, obj)
        if lk and all(isinstance(i, dict) for i in obj):
            item_schema = (schema or {}).get("items")
            for item in obj:
                ip = (*path, ("k", _item_key(item, lk)))
                sub = flatten(item, keys, item_schema, ip, field)
                out.update(sub or {ip: {}})
                # the key fields themselves are always part of the item
                for k in lk:
                    out[(*ip, k)] = item.get(k)
            return out
    if path:
        out[path] = obj
    return out


def _get_path(obj: Any, path: Path, keys: _Keys) -> tuple[bool, Any]:
    cur = obj
    for el in path:
        if isinstance(el, tuple):
            if not isinstance(cur, list):
                return False, None
            found = None
            kd = json.loads(el[1])
            for item in cur:
                if isinstance(item, dict) and all(item.get(k) == v for k, v in kd.items()):
                    found = item
                    break
            if found is None:
                return False, None
            cur = found
        else:
            if not isinstance(cur, dict) or el not in cur:
                return False, None
            cur = cur[el]
    return True, cur


def _delete_path(obj: Any, path: Path) -> None:
    if not path:
        return
    if len(path) >= 2 and isinstance(path[-2], tuple) and path[-1] in json.loads(path[-2][1]):
        # Giving up a key field of a list-map item gives up the item itself; removing just the
        # key would leave an item that can no longer be found (and fails `required`).
        _delete_path(obj, path[:-1])
        return
    parents = [obj]
    cur = obj
    for el in path[:-1]:
        if isinstance(el, tuple):
            kd = json.loads(el[1])
            cur = next(
                (i for i in (cur or []) if isinstance(i, dict) and all(i.get(k) == v for k, v in kd.items())),
                None,
            )
        else:
            cur = cur.get(el) if isinstance(cur, dict) else None
        if cur is None:
            return
        parents.append(cur)
    last = path[-1]
    if isinstance(last, tuple):
        kd = json.loads(last[1])
        if isinstance(cur, list):
            cur[:] = [
                i for i in cur if not (isinstance(i, dict) and all(i.get(k) == v for k, v in kd.items()))
            ]
    elif isinstance(cur, dict):
        cur.pop(last, None)
    # drop containers that became empty
    for i in range(len(path) - 1, 0, -1):
        container = parents[i]
        if container in ({}, []):
            _delete_path(obj, path[:i])
            break


def apply_merge(
    live: Any, config: Any, keys: _Keys, schema: dict[str, Any] | None = None, field: str = ""
) -> Any:
    """Merge an applied configuration into the live object (keyed lists merged, others replaced)."""
    if isinstance(config, dict):
        result = copy.deepcopy(live) if isinstance(live, dict) else {}
        for k, v in config.items():
            result[k] = apply_merge(result.get(k), v, keys, _child_schema(schema, k), k)
        return result
    if isinstance(config, list):
        lk = keys.list_keys(field, schema, config)
        if lk and isinstance(live, list) and all(isinstance(i, dict) for i in config):
            item_schema = (schema or {}).get("items")
            merged: list[Any] = copy.deepcopy(live)
            for item in config:
                ik = _item_key(item, lk)
                idx = next(
                    (i for i, c in enumerate(merged) if isinstance(c, dict) and _item_key(c, lk) == ik), None
                )
                if idx is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[idx] = apply_merge(merged[idx], item, keys, item_schema, field)
            return merged
    return copy.deepcopy(config)


def _path_str(path: Path) -> str:
    parts = []
    for el in path:
        if isinstance(el, tuple):
            parts.append(f"[{','.join(f'{k}={v}' for k, v in json.loads(el[1]).items())}]")
        else:
            parts.append(("." if parts else ".") + el)
    return "".join(parts)


# -- FieldsV1 encoding -----------------------------------------------------------------------


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths, key=lambda x: json.dumps(x, default=str)):
        cur = root
        for el in p:
            name = f"k:{el[1]}" if isinstance(el, tuple) else f"f:{el}"
            cur = cur.setdefault(name, {})
            if isinstance(el, tuple):
                cur.setdefault(".", {})
    return root


def from_fields_v1(fields: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for name, sub in (fields or {}).items():
        if name == ".":
            continue
        el: Any
        if name.startswith("f:"):
            el = name[2:]
        elif name.startswith("k:"):
            el = ("k", name[2:])
        else:
            continue  # v: (set values) / i: not modelled
        p = (*prefix, el)
        children = {k: v for k, v in (sub or {}).items() if k != "."}
        if children:
            out |= from_fields_v1(children, p)
        else:
            out.add(p)
    return out


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ManagedFields:
    """Read/write ``metadata.managedFields`` as {(manager, operation, subresource): set(paths)}."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.entries: dict[tuple[str, str, str], set[Path]] = {}
        self.api_versions: dict[tuple[str, str, str], str] = {}
        self.times: dict[tuple[str, str, str], str] = {}
        for e in (obj.get("metadata") or {}).get("managedFields") or []:
            k = (e.get("manager", ""), e.get("operation", "Update"), e.get("subresource", ""))
            self.entries[k] = from_fields_v1(e.get("fieldsV1") or {})
            self.api_versions[k] = e.get("apiVersion", "")
            self.times[k] = e.get("time", "")

    def owners(self, path: Path, exclude: tuple[str, str, str] | None = None) -> list[tuple[str, str, str]]:
        out = []
        for k, paths in self.entries.items():
            if k == exclude:
                continue
            for p in paths:
                if p == path or p[: len(path)] == path or path[: len(p)] == p:
                    out.append(k)
                    break
        return out

    def set_paths(self, key: tuple[str, str, str], paths: set[Path], api_version: str) -> None:
        self.entries[key] = set(paths)
        self.api_versions[key] = api_version
        self.times[key] = now_iso()

    def remove_paths(self, paths: set[Path], exclude: tuple[str, str, str] | None = None) -> None:
        for k in list(self.entries):
            if k == exclude:
                continue
            self.entries[k] = {
                p
                for p in self.entries[k]
                if not any(p == q or p[: len(q)] == q or q[: len(p)] == p for q in paths)
            }

    def write(self, obj: dict[str, Any]) -> None:
        out = []
        for k, paths in self.entries.items():
            if not paths:
                continue
            manager, op, sub = k
            e: dict[str, Any] = {
                "manager": manager,
                "operation": op,
                "apiVersion": self.api_versions.get(k, ""),
                "time": self.times.get(k) or now_iso(),
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(paths),
            }
            if sub:
                e["subresource"] = sub
            out.append(e)
        meta = obj.setdefault("metadata", {})
        if out:
            meta["managedFields"] = out
        else:
            meta.pop("managedFields", None)


def _strip_meta(obj: dict[str, Any]) -> dict[str, Any]:
    o = copy.deepcopy(obj)
    meta = o.get("metadata") or {}
    for k in ("managedFields", "resourceVersion", "generation"):
        meta.pop(k, None)
    return o


def changed_paths(
    old: Any, new: Any, keys: _Keys, schema: dict[str, Any] | None = None
) -> tuple[set[Path], set[Path]]:
    """(set-or-changed leaf paths, removed leaf paths) from ``old`` to ``new``."""
    fo = flatten(_strip_meta(old) if isinstance(old, dict) else old, keys, schema)
    fn = flatten(_strip_meta(new) if isinstance(new, dict) else new, keys, schema)
    changed = {p for p, v in fn.items() if p not in fo or fo[p] != v}
    removed = {p for p in fo if p not in fn}
    return changed, removed


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str,
    api_version: str,
    subresource: str,
    schema: dict[str, Any] | None,
    builtin: bool,
) -> None:
    """Ownership bookkeeping for a non-apply write (create/update/patch) by ``manager``."""
    keys = _Keys(schema, builtin)
    mf = ManagedFields(old or {})
    changed, removed = changed_paths(old or {}, new, keys, schema)
    key = (manager, "Update", subresource)
    if changed or removed:
        mf.remove_paths(removed)
        mf.remove_paths(changed, exclude=key)
        mine = mf.entries.get(key, set())
        mine = {p for p in mine if p not in removed} | changed
        mf.set_paths(key, mine, api_version)
    mf.write(new)


def server_side_apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    manager: str,
    force: bool,
    api_version: str,
    subresource: str,
    schema: dict[str, Any] | None,
    builtin: bool,
) -> dict[str, Any]:
    """Return the new object for an apply of ``config`` by ``manager``; raise :class:`ApplyConflict`."""
    keys = _Keys(schema, builtin)
    base = (
        copy.deepcopy(live)
        if live
        else {"apiVersion": config.get("apiVersion"), "kind": config.get("kind"), "metadata": {}}
    )
    mf = ManagedFields(base)
    key = (manager, "Apply", subresource)
    applied = flatten(config, keys, schema)
    conflicts: list[tuple[str, str]] = []
    conflicting: set[Path] = set()
    for path, value in applied.items():
        found, current = _get_path(base, path, keys)
        if found and current == value:
            continue
        for owner in mf.owners(path, exclude=key):
            conflicts.append((owner[0], _path_str(path)))
            conflicting.add(path)
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    if conflicting:
        mf.remove_paths(conflicting, exclude=key)
    # fields this manager applied before but no longer does: remove unless someone else owns them
    previously = mf.entries.get(key, set())
    for path in previously:
        if any(path == p or path[: len(p)] == p for p in applied):
            continue
        if any(p[: len(path)] == path for p in applied):
            continue
        if not mf.owners(path, exclude=key):
            _delete_path(base, path)
    result = apply_merge(base, config, keys, schema)
    # the whole config's metadata.name/namespace come from the config
    mf.set_paths(key, set(applied), api_version)
    mf.write(result)
    return result
