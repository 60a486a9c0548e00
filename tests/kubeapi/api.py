"""REST semantics of the emulator, independent of HTTP: create/get/list/update/patch/delete with
resourceVersion preconditions, generation, the status subresource, finalizers, validation,
server-side apply bookkeeping and garbage collection. Thread-safe (holds ``Store.lock``).
"""

from __future__ import annotations

import copy
import datetime
import json
import random
import re
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import builtins
from . import patch as patchlib
from .cel import CELCompileError
from .resources import Registry, ResourceType
from .store import Key, Store
from .validation import FieldError, check_crd, validate_custom_resource_detailed


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error response: a ``Status`` object with ``code``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            st["details"] = self.details
        return st


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rt.group_resource} "{name}" not found',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    body = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{rt.kind_group} "{name}" is invalid: {body}',
        {
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [{"reason": e.reason, "message": e.message, "field": e.field} for e in errors],
        },
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# ---------------------------------------------------------------------------------------------
# selectors

_SET_EXPR = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_selector(sel: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_label_selector(sel: str | None) -> list[tuple[str, str, list[str]]]:
    """Parse a label selector into (key, op, values); op in = != in notin exists !exists."""
    reqs: list[tuple[str, str, list[str]]] = []
    if not sel:
        return reqs
    for part in _split_selector(sel):
        part = part.strip()
        m = re.match(r"^([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)$", part)
        if m:
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", [m.group(3)]))
            continue
        m2 = _SET_EXPR.match(part)
        if m2 and m2.group(3):
            if m2.group(1):
                raise bad_request(f"unable to parse requirement: {part!r}")
            vals = [v.strip() for v in m2.group(4).split(",") if v.strip()]
            reqs.append((m2.group(2), m2.group(3), vals))
        elif m2:
            reqs.append((m2.group(2), "!exists" if m2.group(1) else "exists", []))
        else:
            raise bad_request(
                f"unable to parse requirement: found '{part}', expected: '=', '!=', '==', 'in', notin'"
            )
    return reqs


def labels_match(reqs: list[tuple[str, str, list[str]]], labels: dict[str, str]) -> bool:
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=" and (not has or v != vals[0]):
            return False
        if op == "!=" and has and v == vals[0]:
            return False
        if op == "in" and (not has or v not in vals):
            return False
        if op == "notin" and has and v in vals:
            return False
        if op == "exists" and not has:
            return False
        if op == "!exists" and has:
            return False
    return True


def parse_field_selector(rt: ResourceType, sel: str | None) -> list[tuple[str, str, str]]:
    reqs: list[tuple[str, str, str]] = []
    if not sel:
        return reqs
    allowed: set[str] | None = None
    if rt.crd is not None:
        allowed = {"metadata.name", "metadata.namespace"}
        for v in rt.crd["spec"].get("versions") or []:
            if v.get("name") == rt.version:
                allowed |= {f["jsonPath"].lstrip(".") for f in v.get("selectableFields") or []}
    for part in _split_selector(sel):
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: '{sel}'; can't understand '{part}'")
        if allowed is not None and m.group(1) not in allowed:
            raise bad_request(f"field label not supported: {m.group(1)}")
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for p in path.split("."):
        cur = cur.get(p) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs: list[tuple[str, str, str]], obj: dict[str, Any]) -> bool:
    for path, op, val in reqs:
        got = _field_value(obj, path)
        if (op == "=" and got != val) or (op == "!=" and got == val):
            return False
    return True


@dataclass
class Filter:
    namespace: str | None = None
    labels: list[tuple[str, str, list[str]]] = field(default_factory=list)
    fields: list[tuple[str, str, str]] = field(default_factory=list)

    def match(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and (meta.get("namespace") or "") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels") or {}) and fields_match(self.fields, obj)


# ---------------------------------------------------------------------------------------------


@dataclass
class WriteOptions:
    field_manager: str | None = None
    dry_run: bool = False
    field_validation: str = "Warn"  # Strict / Warn / Ignore
    force: bool = False
    user_agent: str = ""

    def manager(self) -> str:
        if self.field_manager:
            return self.field_manager
        ua = self.user_agent or "unknown"
        return ua.split("/", 1)[0] or "unknown"


@dataclass
class WriteResult:
    obj: dict[str, Any]
    created: bool = False
    warnings: list[str] = field(default_factory=list)


DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_List = list  # the classes below have a method named `list`


class Api:
    def __init__(self, store: Store, registry: Registry, on_change: Any = None) -> None:
        self.store = store
        self.registry = registry
        self.on_change = on_change or (lambda: None)  # wakes the GC
        for ns in DEFAULT_NAMESPACES:
            self._create_raw(
                self.registry.get("", "v1", "namespaces"),
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def key(rt: ResourceType) -> Key:
        return rt.storage_key

    @staticmethod
    def _for_version(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        return obj

    def _create_raw(self, rt: ResourceType | None, obj: dict[str, Any]) -> dict[str, Any]:
        assert rt is not None
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta.setdefault("generation", 1)
        builtins.apply_defaults(rt, obj, None)
        return self.store.put(self.key(rt), obj)

    def _validate(
        self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, opts: WriteOptions
    ) -> tuple[dict[str, Any], _List[str]]:
        """Prune/default/validate; returns (object, warnings) or raises 422/400."""
        name = obj["metadata"].get("name", "")
        errors = builtins.validate_meta(rt, obj)
        warnings: _List[str] = []
        if rt.crd is not None:
            try:
                obj, cr_errors, pruned = validate_custom_resource_detailed(rt.crd, obj, old)
            except CELCompileError as e:
                raise ApiError(
                    500, "InternalError", f"CEL rule of {rt.kind_group} does not compile: {e}"
                ) from e
            errors += cr_errors
            if pruned and opts.field_validation == "Strict":
                msgs = ", ".join(f'unknown field "{p}"' for p in pruned)
                raise bad_request(
                    f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                    f"strict decoding error: {msgs}"
                )
            if pruned and opts.field_validation == "Warn":
                warnings += [f'unknown field "{p}"' for p in pruned]
        else:
            builtins.apply_defaults(rt, obj, old)
            errors += builtins.validate(rt, obj, old)
            if rt.plural == "customresourcedefinitions":
                errors += self._validate_crd(obj)
        if errors:
            raise invalid(rt, name, errors)
        return obj, warnings

    def _validate_crd(self, crd: dict[str, Any]) -> _List[FieldError]:
        errs: _List[FieldError] = []
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for f in ("group",):
            if not spec.get(f):
                errs.append(FieldError(f"spec.{f}", "Required value"))
        for f in ("plural", "kind"):
            if not names.get(f):
                errs.append(FieldError(f"spec.names.{f}", "Required value"))
        if not errs and crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
            errs.append(
                FieldError(
                    "metadata.name",
                    "Invalid value",
                    'must be spec.names.plural+"."+spec.group',
                    json.dumps(crd["metadata"]["name"]),
                )
            )
        if not spec.get("versions"):
            errs.append(
                FieldError(
                    "spec.versions",
                    "Invalid value",
                    "must have exactly one version marked as storage version",
                    '"null"',
                )
            )
        errs += [FieldError("", "Invalid value", e) for e in check_crd(crd)]
        return errs

    def _namespace_check(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise ApiError(400, "BadRequest", "the server could not find the requested resource")
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
                {"name": namespace, "kind": "namespaces"},
            )

    @staticmethod
    def _generation_bump(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> bool:
        def strip(o: dict[str, Any]) -> dict[str, Any]:
            o = {k: v for k, v in o.items() if k not in ("metadata", "apiVersion", "kind")}
            if rt.status_subresource:
                o.pop("status", None)
            return o

        return strip(old) != strip(new)

    # -- reads ----------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(self.key(rt), namespace or "", name)
        if obj is None:
            raise not_found(rt, name)
        return self._for_version(rt, obj)

    def list(self, rt: ResourceType, flt: Filter) -> tuple[list[dict[str, Any]], int]:
        items, rv = self.store.list(self.key(rt), flt.namespace, flt.match)
        return [self._for_version(rt, o) for o in items], rv

    # -- create ---------------------------------------------------------------------------
    def create(
        self, rt: ResourceType, namespace: str | None, body: Any, opts: WriteOptions, subresource: str = ""
    ) -> WriteResult:
        if subresource:
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested "
                f"resource ({rt.plural}/{subresource})",
            )
        obj = self._check_body(rt, body)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace or meta.get("namespace")
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(
                    random.choices(string.ascii_lowercase + string.digits, k=5)
                )
            else:
                raise invalid(
                    rt,
                    "",
                    [FieldError("metadata.name", "Required value", "name or generateName is required")],
                )
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        with self.store.lock:
            self._namespace_check(rt, meta.get("namespace"))
            if self.store.get(self.key(rt), meta.get("namespace") or "", meta["name"]) is not None:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{rt.group_resource} "{meta["name"]}" already exists',
                    {"name": meta["name"], "group": rt.group, "kind": rt.plural},
                )
            return self._do_create(rt, obj, opts)

    def _do_create(
        self, rt: ResourceType, obj: dict[str, Any], opts: WriteOptions, managed: bool = True
    ) -> WriteResult:
        meta = obj["metadata"]
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        if managed:
            meta.pop("managedFields", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["generation"] = 1
        if (
            rt.status_subresource
            and rt.plural != "namespaces"
            and not (rt.builtin and rt.plural == "services")
        ):
            obj.pop("status", None)
        obj, warnings = self._validate(rt, obj, None, opts)
        if rt.plural == "customresourcedefinitions":
            self._install_crd(obj)
        if managed:
            patchlib.record_update(
                None, obj, opts.manager(), rt.api_version, "", self._schema(rt), rt.builtin
            )
        if opts.dry_run:
            return WriteResult(self._for_version(rt, obj), created=True, warnings=warnings)
        stored = self.store.put(self.key(rt), obj)
        if meta.get("ownerReferences"):
            self.on_change()
        return WriteResult(self._for_version(rt, stored), created=True, warnings=warnings)

    def _install_crd(self, crd: dict[str, Any]) -> None:
        crd.setdefault("status", {})
        crd["status"]["acceptedNames"] = {k: v for k, v in crd["spec"]["names"].items()}
        crd["status"]["storedVersions"] = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
        crd["status"]["conditions"] = [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now(),
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now(),
            },
        ]
        self.registry.add_crd(crd)

    def _check_body(self, rt: ResourceType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if kind and kind != rt.kind:
            raise bad_request(f"the kind of the object ({kind}) does not match the resource ({rt.kind})")
        if (
            api_version
            and api_version != rt.api_version
            and not (rt.crd is None and kind == rt.kind and api_version.split("/")[-1] == rt.version)
        ):
            group = api_version.rpartition("/")[0]
            if group != rt.group:
                raise bad_request(
                    f"the API version in the data ({api_version}) does not match the expected API "
                    f"version ({rt.api_version})"
                )
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        if not isinstance(obj.get("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        return obj

    def _schema(self, rt: ResourceType) -> dict[str, Any] | None:
        if rt.crd is None:
            return None
        for v in rt.crd["spec"].get("versions") or []:
            if v.get("name") == rt.version:
                return (v.get("schema") or {}).get("openAPIV3Schema")
        return None

    # -- update ---------------------------------------------------------------------------
    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        opts: WriteOptions,
        subresource: str = "",
    ) -> WriteResult:
        obj = self._check_body(rt, body)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request(
                "the name of the object ({}) does not match the name on the URL ({})".format(
                    meta["name"], name
                )
            )
        meta["name"] = name
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        with self.store.lock:
            old = self.store.get(self.key(rt), namespace or "", name)
            if old is None:
                raise not_found(rt, name)
            rv = meta.get("resourceVersion")
            if not rv and rt.crd is not None:
                raise invalid(
                    rt,
                    name,
                    [
                        FieldError(
                            "metadata.resourceVersion",
                            "Invalid value",
                            "must be specified for an update",
                            "0x0",
                        )
                    ],
                )
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rt.group_resource} "{name}": '
                    f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                    f"{old['metadata']['uid']}",
                    {"name": name, "group": rt.group, "kind": rt.plural},
                )
            return self._do_update(rt, old, obj, opts, subresource)

    def _do_update(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        opts: WriteOptions,
        subresource: str,
        manager_op: str = "Update",
    ) -> WriteResult:
        """Common path for update, patch and apply (``new`` is the full intended object)."""
        name = old["metadata"]["name"]
        if subresource and subresource != "status":
            raise not_found(rt, name)
        applied_mf = copy.deepcopy(new["metadata"].get("managedFields"))
        if subresource == "status":
            if not rt.status_subresource:
                raise not_found(rt, name)
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            meta = new["metadata"]
            ometa = old["metadata"]
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if k in ometa:
                    meta[k] = ometa[k]
                else:
                    meta.pop(k, None)
            if rt.status_subresource:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if ometa.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(ometa.get("finalizers") or [])
                if added:
                    raise invalid(
                        rt,
                        name,
                        [
                            FieldError(
                                "metadata.finalizers",
                                "Forbidden",
                                "no new finalizers can be added if the object is being "
                                "deleted, found new finalizers " + json.dumps(sorted(added)),
                            )
                        ],
                    )
        if manager_op == "Update" or subresource == "status":
            # managedFields are the server's: what a client sends is ignored
            mf = new["metadata"]["managedFields"] = copy.deepcopy(old["metadata"].get("managedFields"))
            if manager_op == "Apply":
                mf = new["metadata"]["managedFields"] = applied_mf
            if not mf:
                new["metadata"].pop("managedFields")
        new, warnings = self._validate(rt, new, old, opts)
        if rt.plural == "customresourcedefinitions" and not subresource:
            self._install_crd(new)
        if self._generation_bump(rt, old, new):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if manager_op == "Update":
            patchlib.record_update(
                old, new, opts.manager(), rt.api_version, subresource, self._schema(rt), rt.builtin
            )
        # a no-op write does not change the resourceVersion nor emit an event (as the apiserver)
        if self._same(old, new):
            return WriteResult(self._for_version(rt, old), warnings=warnings)
        if opts.dry_run:
            return WriteResult(self._for_version(rt, new), warnings=warnings)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            removed = self.store.remove(self.key(rt), meta.get("namespace") or "", name)
            self._after_delete(rt, removed)
            return WriteResult(self._for_version(rt, removed or new), warnings=warnings)
        stored = self.store.put(self.key(rt), new)
        if meta.get("ownerReferences") != old["metadata"].get("ownerReferences"):
            self.on_change()
        return WriteResult(self._for_version(rt, stored), warnings=warnings)

    @staticmethod
    def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
        def strip(o: dict[str, Any]) -> dict[str, Any]:
            o = copy.deepcopy(o)
            o["metadata"].pop("resourceVersion", None)
            for e in o["metadata"].get("managedFields") or []:
                e.pop("time", None)
            return o

        return strip(old) == strip(new)

    # -- patch ----------------------------------------------------------------------------
    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        raw: bytes,
        opts: WriteOptions,
        subresource: str = "",
    ) -> WriteResult:
        ctype = content_type.split(";")[0].strip().lower()
        with self.store.lock:
            old = self.store.get(self.key(rt), namespace or "", name)
            if ctype == "application/apply-patch+yaml":
                return self._apply(rt, namespace, name, old, raw, opts, subresource)
            if old is None:
                raise not_found(rt, name)
            try:
                body = json.loads(raw or b"null")
            except ValueError as e:
                raise bad_request(f"error decoding patch: {e}") from e
            current = self._for_version(rt, copy.deepcopy(old))
            try:
                if ctype == "application/merge-patch+json":
                    if not isinstance(body, dict):
                        raise bad_request("merge patch must be a JSON object")
                    new = patchlib.merge_patch(current, body)
                elif ctype == "application/json-patch+json":
                    new = patchlib.json_patch(current, body)
                elif ctype == "application/strategic-merge-patch+json":
                    if rt.crd is not None:
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            "strategic merge patch is not supported for custom resources; use "
                            "application/merge-patch+json, application/json-patch+json or "
                            "application/apply-patch+yaml",
                        )
                    if not isinstance(body, dict):
                        raise bad_request("strategic merge patch must be a JSON object")
                    new = patchlib.strategic_merge(current, body)
                else:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - "
                        "accepted media types include: application/json-patch+json, "
                        "application/merge-patch+json, application/apply-patch+yaml"
                        + ("" if rt.crd else ", application/strategic-merge-patch+json"),
                    )
            except patchlib.PatchError as e:
                raise ApiError(e.code, "Invalid" if e.code == 422 else "BadRequest", str(e)) from e
            if not isinstance(new, dict):
                raise bad_request("patch result is not an object")
            new.setdefault("metadata", {})
            rv = new["metadata"].get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            if new["metadata"].get("name") != name:
                raise bad_request("the name of the object does not match the name on the URL")
            if rt.namespaced:
                new["metadata"]["namespace"] = namespace
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            return self._do_update(rt, old, new, opts, subresource)

    def _apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        old: dict[str, Any] | None,
        raw: bytes,
        opts: WriteOptions,
        subresource: str,
    ) -> WriteResult:
        if not opts.field_manager:
            raise bad_request(
                "PATCH /apply requires fieldManager to be set (the fieldManager query parameter)"
            )
        try:
            config = yaml.safe_load(raw or b"")
        except yaml.YAMLError as e:
            raise bad_request(f"error decoding YAML: {e}") from e
        if not isinstance(config, dict):
            raise bad_request("apply configuration must be an object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise bad_request("apiVersion and kind must be set in an apply configuration")
        config = self._check_body(rt, config)
        cmeta = config.setdefault("metadata", {})
        if cmeta.get("name") and cmeta["name"] != name:
            raise bad_request("the name of the object does not match the name on the URL")
        cmeta["name"] = name
        if rt.namespaced:
            if cmeta.get("namespace") and cmeta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            cmeta["namespace"] = namespace
        rv = cmeta.pop("resourceVersion", None)
        if rv and old is not None and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if rt.status_subresource:
            if subresource == "status":
                config = {
                    k: v for k, v in config.items() if k in ("apiVersion", "kind", "metadata", "status")
                }
                config["metadata"] = {k: v for k, v in cmeta.items() if k in ("name", "namespace")}
            else:
                config.pop("status", None)
        schema = self._schema(rt)
        if old is None:
            if subresource:
                raise not_found(rt, name)
            self._namespace_check(rt, namespace)
            try:
                new = patchlib.server_side_apply(
                    None, config, opts.field_manager, opts.force, rt.api_version, "", schema, rt.builtin
                )
            except patchlib.ApplyConflict as e:  # pragma: no cover - nothing to conflict with
                raise self._apply_conflict(rt, name, e) from e
            new["metadata"]["name"] = name
            if rt.namespaced:
                new["metadata"]["namespace"] = namespace
            return self._do_create(rt, new, opts, managed=False)
        current = self._for_version(rt, copy.deepcopy(old))
        try:
            new = patchlib.server_side_apply(
                current,
                config,
                opts.field_manager,
                opts.force,
                rt.api_version,
                subresource,
                schema,
                rt.builtin,
            )
        except patchlib.ApplyConflict as e:
            raise self._apply_conflict(rt, name, e) from e
        return self._do_update(rt, old, new, opts, subresource, manager_op="Apply")

    @staticmethod
    def _apply_conflict(rt: ResourceType, name: str, e: patchlib.ApplyConflict) -> ApiError:
        n = len(e.conflicts)
        if n == 1:
            m, f = e.conflicts[0]
            msg = f'Apply failed with 1 conflict: conflict with "{m}": {f}'
        else:
            lines = "\n".join(f'- conflict with "{m}": {f}' for m, f in e.conflicts)
            msg = f"Apply failed with {n} conflicts: conflicts with managers:\n{lines}"
        return ApiError(
            409,
            "Conflict",
            msg,
            {
                "name": name,
                "group": rt.group,
                "kind": rt.plural,
                "causes": [
                    {"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": f}
                    for m, f in e.conflicts
                ],
            },
        )

    # -- delete ---------------------------------------------------------------------------
    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: dict[str, Any],
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete; returns (object, finished). ``finished`` is False when finalizers keep it."""
        with self.store.lock:
            old = self.store.get(self.key(rt), namespace or "", name)
            if old is None:
                raise not_found(rt, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rt.group_resource} "{name}": '
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                    f"{old['metadata']['uid']}",
                    {"name": name, "group": rt.group, "kind": rt.plural},
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rt.group_resource} "{name}": '
                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {old['metadata']['resourceVersion']}",
                    {"name": name, "group": rt.group, "kind": rt.plural},
                )
            policy = options.get("propagationPolicy")
            if policy is None and options.get("orphanDependents") is not None:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy not in (None, "Background", "Foreground", "Orphan"):
                raise invalid(
                    rt,
                    name,
                    [
                        FieldError(
                            "propagationPolicy",
                            "Unsupported value",
                            'supported values: "Foreground", "Background", "Orphan", "nil"',
                            json.dumps(policy),
                        )
                    ],
                )
            meta = old["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            if policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            if rt.plural == "namespaces" and rt.group == "":
                finalizers = finalizers or []
                new = copy.deepcopy(old)
                new["metadata"].setdefault("deletionTimestamp", now())
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new.setdefault("status", {})["phase"] = "Terminating"
                if dry_run:
                    return self._for_version(rt, new), False
                if new != old:
                    stored = self.store.put(self.key(rt), new)
                else:
                    stored = old
                self.on_change()
                return self._for_version(rt, stored), False
            if finalizers:
                new = copy.deepcopy(old)
                new["metadata"]["finalizers"] = finalizers
                new["metadata"].setdefault("deletionTimestamp", now())
                new["metadata"].setdefault("deletionGracePeriodSeconds", 0)
                if dry_run:
                    return self._for_version(rt, new), False
                stored = self.store.put(self.key(rt), new) if new != old else old
                self.on_change()
                return self._for_version(rt, stored), False
            if dry_run:
                return self._for_version(rt, old), True
            removed = self.store.remove(self.key(rt), namespace or "", name)
            self._after_delete(rt, removed)
            return self._for_version(rt, removed or old), True

    def _after_delete(self, rt: ResourceType, removed: dict[str, Any] | None) -> None:
        if removed is None:
            return
        if rt.plural == "customresourcedefinitions" and rt.group == "apiextensions.k8s.io":
            # deleting a CRD deletes all its custom resources and stops serving the kind
            spec = removed.get("spec") or {}
            key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
            items, _ = self.store.list(key)
            for o in items:
                self.store.remove(key, o["metadata"].get("namespace") or "", o["metadata"]["name"])
            self.registry.remove_crd(removed["metadata"]["name"])
        self.on_change()

    def delete_collection(
        self, rt: ResourceType, flt: Filter, options: dict[str, Any], dry_run: bool
    ) -> _List[dict[str, Any]]:
        with self.store.lock:
            items, _ = self.list(rt, flt)
            out = []
            for o in items:
                try:
                    obj, _ = self.delete(
                        rt, o["metadata"].get("namespace"), o["metadata"]["name"], options, dry_run
                    )
                    out.append(obj)
                except ApiError:
                    continue
            return out

    # -- garbage collection and namespace lifecycle (run by the server's background task) ---
    def gc_pass(self) -> bool:
        """One pass of the garbage collector and namespace controller. Returns True if it did work."""
        did = False
        with self.store.lock:
            all_types = {rt.storage_key: rt for rt in self.registry.all() if rt.storage_version or rt.builtin}
            objs: _List[tuple[ResourceType, dict[str, Any]]] = []
            for key in self.store.keys():
                rt = all_types.get(key)
                if rt is None:
                    continue
                objs += [(rt, o) for o in self.store.peek_all(key)]
            by_owner: dict[str, _List[tuple[ResourceType, dict[str, Any]]]] = {}
            for rt, o in objs:
                for ref in o["metadata"].get("ownerReferences") or []:
                    by_owner.setdefault(ref.get("uid", ""), []).append((rt, o))
            for rt, o in objs:
                meta = o["metadata"]
                ns, name = meta.get("namespace"), meta["name"]
                fins = meta.get("finalizers") or []
                if meta.get("deletionTimestamp") and "orphan" in fins:
                    for drt, d in by_owner.get(meta["uid"], []):
                        self._strip_owner(drt, d, meta["uid"])
                    self._remove_finalizer(rt, ns, name, "orphan")
                    did = True
                elif meta.get("deletionTimestamp") and "foregroundDeletion" in fins:
                    deps = by_owner.get(meta["uid"], [])
                    live_deps = [
                        (drt, d)
                        for drt, d in deps
                        if self.store.get(
                            drt.storage_key, d["metadata"].get("namespace") or "", d["metadata"]["name"]
                        )
                        is not None
                    ]
                    if not live_deps:
                        self._remove_finalizer(rt, ns, name, "foregroundDeletion")
                        did = True
                    else:
                        for drt, d in live_deps:
                            if not d["metadata"].get("deletionTimestamp"):
                                self._safe_delete(drt, d, {"propagationPolicy": "Foreground"})
                                did = True
                refs = meta.get("ownerReferences") or []
                if refs and not meta.get("deletionTimestamp"):
                    if all(not self.store.uid_exists(r.get("uid", "")) for r in refs):
                        self._safe_delete(rt, o, {"propagationPolicy": "Background"})
                        did = True
                if rt.plural == "namespaces" and rt.group == "" and meta.get("deletionTimestamp"):
                    remaining = [
                        (crt, c)
                        for crt, c in objs
                        if crt.namespaced and c["metadata"].get("namespace") == name
                    ]
                    for crt, c in remaining:
                        if not c["metadata"].get("deletionTimestamp"):
                            self._safe_delete(crt, c, {})
                            did = True
                    still = any(
                        self.store.get(crt.storage_key, name, c["metadata"]["name"]) is not None
                        for crt, c in remaining
                    )
                    if not still:
                        removed = self.store.remove(rt.storage_key, "", name)
                        self._after_delete(rt, removed)
                        did = True
        return did

    def _safe_delete(self, rt: ResourceType, obj: dict[str, Any], options: dict[str, Any]) -> None:
        try:
            self.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], options)
        except ApiError:
            pass

    def _strip_owner(self, rt: ResourceType, obj: dict[str, Any], uid: str) -> None:
        cur = self.store.get(rt.storage_key, obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        if cur is None:
            return
        refs = [r for r in cur["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if refs:
            cur["metadata"]["ownerReferences"] = refs
        else:
            cur["metadata"].pop("ownerReferences", None)
        self.store.put(rt.storage_key, cur)

    def _remove_finalizer(self, rt: ResourceType, namespace: str | None, name: str, finalizer: str) -> None:
        cur = self.store.get(rt.storage_key, namespace or "", name)
        if cur is None:
            return
        fins = [f for f in cur["metadata"].get("finalizers") or [] if f != finalizer]
        if fins:
            cur["metadata"]["finalizers"] = fins
            self.store.put(rt.storage_key, cur)
        else:
            cur["metadata"].pop("finalizers", None)
            removed = self.store.remove(rt.storage_key, namespace or "", name)
            self._after_delete(rt, removed)
