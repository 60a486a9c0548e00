"""What the real API server does to built-in kinds that operator bugs tend to hide behind:
object-meta validation (names, labels), a subset of defaulting (so desired-vs-live comparisons see
the same defaulted fields as on a cluster), a few validations (Job restartPolicy, Deployment
selector/template labels, Service names) and immutable fields (Job template, selectors).

It is a subset, not the full apiserver validation: see README.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import re
from typing import Any

from .resources import ResourceType
from .validation import FieldError, go_repr

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def validate_name(rt: ResourceType, name: str) -> list[FieldError]:
    if rt.plural in ("services",):
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            return [
                FieldError(
                    "metadata.name",
                    "Invalid value",
                    _DNS1035_MSG if len(name) <= 63 else "must be no more than 63 characters",
                    go_repr(name),
                )
            ]
        return []
    if rt.plural in ("namespaces",):
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            return [
                FieldError(
                    "metadata.name",
                    "Invalid value",
                    _LABEL_MSG if len(name) <= 63 else "must be no more than 63 characters",
                    go_repr(name),
                )
            ]
        return []
    if rt.plural in ("roles", "rolebindings", "clusterroles", "clusterrolebindings"):
        if not name or "/" in name or "%" in name or name in (".", ".."):
            return [FieldError("metadata.name", "Invalid value", "may not contain '/' or '%'", go_repr(name))]
        return []
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return [
            FieldError(
                "metadata.name",
                "Invalid value",
                _SUBDOMAIN_MSG if len(name) <= 253 else "must be no more than 253 characters",
                go_repr(name),
            )
        ]
    return []


def _qualified_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return "prefix part " + _SUBDOMAIN_MSG
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
            "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return None


def validate_labels(labels: Any, path: str = "metadata.labels") -> list[FieldError]:
    errs: list[FieldError] = []
    if labels is None:
        return errs
    if not isinstance(labels, dict):
        return [
            FieldError(path, "Invalid value", "must be a map of strings", go_repr(labels), type_error=True)
        ]
    for k, v in labels.items():
        msg = _qualified_key(k)
        if msg:
            errs.append(FieldError(path, "Invalid value", msg, go_repr(k)))
        if not isinstance(v, str):
            errs.append(FieldError(f"{path}", "Invalid value", "label values must be strings", go_repr(v)))
        elif len(v) > 63:
            errs.append(FieldError(path, "Invalid value", "must be no more than 63 characters", go_repr(v)))
        elif not _LABEL_VALUE.match(v):
            errs.append(
                FieldError(
                    path,
                    "Invalid value",
                    "a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                    "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                    go_repr(v),
                )
            )
    return errs


def validate_meta(rt: ResourceType, obj: dict[str, Any]) -> list[FieldError]:
    meta = obj.get("metadata") or {}
    errs: list[FieldError] = []
    if rt.builtin:
        errs += validate_name(rt, meta.get("name", ""))
    errs += validate_labels(meta.get("labels"))
    ann = meta.get("annotations")
    if ann is not None:
        if not isinstance(ann, dict) or any(not isinstance(v, str) for v in ann.values()):
            errs.append(
                FieldError(
                    "metadata.annotations",
                    "Invalid value",
                    "annotation values must be strings",
                    '"object"',
                    type_error=True,
                )
            )
        else:
            for k in ann:
                msg = _qualified_key(k)
                if msg:
                    errs.append(FieldError("metadata.annotations", "Invalid value", msg, go_repr(k)))
            if sum(len(k) + len(v) for k, v in ann.items()) > 256 * 1024:
                errs.append(FieldError("metadata.annotations", "Too long", "must have at most 262144 bytes"))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for f in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(f):
                errs.append(
                    FieldError(
                        f"metadata.ownerReferences[{i}].{f}", "Invalid value", f"{f} must not be empty", '""'
                    )
                )
    if sum(1 for r in meta.get("ownerReferences") or [] if r.get("controller")) > 1:
        errs.append(
            FieldError(
                "metadata.ownerReferences",
                "Invalid value",
                "Only one reference can have Controller set to true",
                '"array"',
            )
        )
    return errs


# ---------------------------------------------------------------------------------------------
# defaulting


def _default_container(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image", "")
    if "imagePullPolicy" not in c:
        tag = image.rsplit("/", 1)[-1]
        c["imagePullPolicy"] = (
            "Always" if ("@" not in tag and (":" not in tag or tag.endswith(":latest"))) else "IfNotPresent"
        )
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        p.setdefault("protocol", "TCP")
    for e in c.get("env") or []:
        vf = e.get("valueFrom") or {}
        if "fieldRef" in vf:
            vf["fieldRef"].setdefault("apiVersion", "v1")


def default_pod_spec(spec: dict[str, Any], restart_policy: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in spec.get("initContainers") or []:
        _default_container(c)
    for c in spec.get("containers") or []:
        _default_container(c)
    for v in spec.get("volumes") or []:
        for src in ("configMap", "secret"):
            if src in v:
                v[src].setdefault("defaultMode", 420)


def apply_defaults(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Defaulting on create/update for built-in kinds (a subset of the real defaulters)."""
    key = (rt.group, rt.plural)
    spec = obj.get("spec")
    if key == ("", "secrets"):
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        if string_data:
            data = obj.setdefault("data", {}) or {}
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data
    elif key == ("", "namespaces"):
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif key == ("", "services") and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName" and "clusterIP" not in spec:
            spec["clusterIP"] = (old or {}).get("spec", {}).get("clusterIP") or _next_cluster_ip()
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif key == ("", "pods") and isinstance(spec, dict):
        default_pod_spec(spec)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif key == ("apps", "deployments") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        tspec = spec.setdefault("template", {}).setdefault("spec", {})
        default_pod_spec(tspec)
    elif key in (("apps", "statefulsets"), ("apps", "daemonsets"), ("apps", "replicasets")) and isinstance(
        spec, dict
    ):
        if key != ("apps", "daemonsets"):
            spec.setdefault("replicas", 1)
        default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
    elif key == ("batch", "jobs") and isinstance(spec, dict):
        if old is None:
            spec.setdefault("parallelism", 1)
            spec.setdefault("completions", 1)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
            uid = obj["metadata"]["uid"]
            name = obj["metadata"]["name"]
            if not spec.get("manualSelector"):
                spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
                labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
                labels.setdefault("batch.kubernetes.io/controller-uid", uid)
                labels.setdefault("batch.kubernetes.io/job-name", name)
                labels.setdefault("controller-uid", uid)
                labels.setdefault("job-name", name)
        default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}), restart_policy="Never")
    elif key == ("batch", "cronjobs") and isinstance(spec, dict):
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)


_ip_counter = [10]


def _next_cluster_ip() -> str:
    _ip_counter[0] += 1
    n = _ip_counter[0]
    return str(ipaddress.IPv4Address("10.96.0.0") + n)


# ---------------------------------------------------------------------------------------------
# validation


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, vals = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def _validate_containers(spec: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    containers = spec.get("containers")
    if not containers:
        errs.append(FieldError(f"{path}.containers", "Required value"))
        return errs
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            cp = f"{path}.{kind}[{i}]"
            name = c.get("name")
            if not name:
                errs.append(FieldError(f"{cp}.name", "Required value"))
            elif len(name) > 63 or not DNS1123_LABEL.match(name):
                errs.append(FieldError(f"{cp}.name", "Invalid value", _LABEL_MSG, go_repr(name)))
            elif name in seen:
                errs.append(FieldError(f"{cp}.name", "Duplicate value", "", go_repr(name)))
            else:
                seen.add(name)
            if not c.get("image"):
                errs.append(FieldError(f"{cp}.image", "Required value"))
            env_names: set[str] = set()
            for j, e in enumerate(c.get("env") or []):
                if not e.get("name"):
                    errs.append(FieldError(f"{cp}.env[{j}].name", "Required value"))
                env_names.add(e.get("name", ""))
            mounts: set[str] = set()
            for j, m in enumerate(c.get("volumeMounts") or []):
                vol_names = {v.get("name") for v in spec.get("volumes") or []}
                if m.get("name") not in vol_names:
                    errs.append(
                        FieldError(f"{cp}.volumeMounts[{j}].name", "Not found", "", go_repr(m.get("name")))
                    )
                if m.get("mountPath") in mounts:
                    errs.append(
                        FieldError(
                            f"{cp}.volumeMounts[{j}].mountPath",
                            "Invalid value",
                            "must be unique",
                            go_repr(m.get("mountPath")),
                        )
                    )
                mounts.add(m.get("mountPath"))
    vols: set[str] = set()
    for i, v in enumerate(spec.get("volumes") or []):
        if v.get("name") in vols:
            errs.append(
                FieldError(f"{path}.volumes[{i}].name", "Duplicate value", "", go_repr(v.get("name")))
            )
        vols.add(v.get("name"))
    return errs


def validate(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    key = (rt.group, rt.plural)
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    if key == ("batch", "jobs"):
        tspec = (spec.get("template") or {}).get("spec") or {}
        if tspec.get("restartPolicy") not in ("Never", "OnFailure"):
            errs.append(
                FieldError(
                    "spec.template.spec.restartPolicy", "Required value", 'valid values: "OnFailure", "Never"'
                )
            )
        errs += _validate_containers(tspec, "spec.template.spec")
        if old is not None:
            ospec = old.get("spec") or {}
            for f in ("template", "selector", "completions", "completionMode", "podFailurePolicy"):
                if f == "completions" and spec.get(f) != ospec.get(f):
                    errs.append(
                        FieldError(f"spec.{f}", "Invalid value", "field is immutable", go_repr(spec.get(f)))
                    )
                elif f != "completions" and _strip_none(spec.get(f)) != _strip_none(ospec.get(f)):
                    errs.append(
                        FieldError(f"spec.{f}", "Invalid value", "field is immutable", go_repr(spec.get(f)))
                    )
    elif key in (
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
    ):
        sel = spec.get("selector")
        tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not sel:
            errs.append(FieldError("spec.selector", "Required value"))
        elif not _selector_matches(sel, tlabels):
            errs.append(
                FieldError(
                    "spec.template.metadata.labels",
                    "Invalid value",
                    "`selector` does not match template `labels`",
                    go_repr(tlabels),
                )
            )
        errs += validate_labels(tlabels, "spec.template.metadata.labels")
        errs += _validate_containers((spec.get("template") or {}).get("spec") or {}, "spec.template.spec")
        if (
            old is not None
            and key != ("apps", "replicasets")
            and _strip_none((old.get("spec") or {}).get("selector")) != _strip_none(sel)
        ):
            errs.append(FieldError("spec.selector", "Invalid value", "field is immutable", go_repr(sel)))
        if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
            errs.append(
                FieldError(
                    "spec.replicas",
                    "Invalid value",
                    "must be greater than or equal to 0",
                    go_repr(spec["replicas"]),
                )
            )
    elif key == ("", "pods"):
        errs += _validate_containers(spec, "spec")
    elif key == ("", "services"):
        ports = spec.get("ports") or []
        if spec.get("type", "ClusterIP") != "ExternalName" and not ports and spec.get("clusterIP") != "None":
            errs.append(FieldError("spec.ports", "Required value"))
        names: set[str] = set()
        for i, p in enumerate(ports):
            if len(ports) > 1 and not p.get("name"):
                errs.append(FieldError(f"spec.ports[{i}].name", "Required value"))
            if p.get("name") in names:
                errs.append(
                    FieldError(f"spec.ports[{i}].name", "Duplicate value", "", go_repr(p.get("name")))
                )
            names.add(p.get("name"))
        errs += validate_labels(spec.get("selector"), "spec.selector")
        if old is not None:
            oip = (old.get("spec") or {}).get("clusterIP")
            if oip and spec.get("clusterIP") not in (None, oip):
                errs.append(
                    FieldError(
                        "spec.clusterIP",
                        "Invalid value",
                        "field is immutable",
                        go_repr(spec.get("clusterIP")),
                    )
                )
    elif key == ("", "configmaps"):
        for f in ("data", "binaryData"):
            for k in obj.get(f) or {}:
                if not re.match(r"^[-._a-zA-Z0-9]+$", k) or len(k) > 253:
                    errs.append(
                        FieldError(
                            f"{f}",
                            "Invalid value",
                            "a valid config key must consist of alphanumeric characters, '-', '_' "
                            "or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
                            "for validation is '[-._a-zA-Z0-9]+')",
                            go_repr(k),
                        )
                    )
        if old is not None and old.get("immutable") and (obj.get("data") != old.get("data")):
            errs.append(FieldError("data", "Forbidden", "field is immutable when `immutable` is set"))
    elif key == ("", "secrets"):
        for k, v in (obj.get("data") or {}).items():
            try:
                base64.b64decode(v, validate=True)
            except Exception:
                errs.append(FieldError(f"data[{k}]", "Invalid value", "illegal base64 data", '"string"'))
    return errs


def _strip_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip_none(x) for x in v]
    return copy.deepcopy(v)
