"""The bad-input corpus (``tests/data/invalid/``, format in ``tests/corpus.py``) is well formed and
reaches every CEL rule. Whether the API server and the pydantic models agree on each file is
checked against the real API server in ``tests/integration/test_bad_input.py``."""

from __future__ import annotations

from typing import Any

import yaml

from tests.corpus import CASES, CRD_DIR, REJECTED, REPORTED, REQUIRED_KEYS, SPEC_MODELS
from tests.kubeapi.validation import validate_custom_resource


def test_corpus_is_big_and_well_formed() -> None:
    assert len(CASES) >= 50, len(CASES)
    assert REJECTED and REPORTED
    seen: set[tuple[str, str]] = set()
    for case in CASES:
        assert case.expect in REQUIRED_KEYS, case.id
        missing = REQUIRED_KEYS[case.expect] - case.header.keys()
        assert not missing, f"{case.id}: header lacks {sorted(missing)}"
        assert case.kind in SPEC_MODELS, case.id
        assert case.obj["apiVersion"] == "dockyard.dev/v1alpha1", case.id
        assert "namespace" not in case.obj["metadata"], f"{case.id}: the test chooses the namespace"
        key = (case.kind, case.name)
        assert key not in seen, f"{case.id}: metadata.name {case.name!r} used twice"
        seen.add(key)
        model = (case.obj.get("spec") or {}).get("modelName")
        if isinstance(model, str) and case.expect == "reported":
            assert model.startswith("bad-"), f"{case.id}: modelName must start with bad- (no collisions)"
        assert case.children_allowed <= {"Job"}, case.id
        if case.expect == "reported" and case.reason == "InvalidSpec":
            assert case.field, f"{case.id}: InvalidSpec cases declare the field the message must name"


def _cel_rules(node: dict[str, Any]) -> list[dict[str, Any]]:
    rules = list(node.get("x-kubernetes-validations", []))
    for child in (node.get("properties") or {}).values():
        rules += _cel_rules(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            rules += _cel_rules(node[key])
    return rules


def test_every_cel_rule_is_fired_by_a_corpus_file() -> None:
    """A new CEL rule needs a corpus file that breaks it (and so the agreement check covers it).
    Transition rules (oldSelf) are not about one bad object; they are tested in test_crds.py."""
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["spec"]["names"]["kind"]] = crd
    fired: set[str] = set()
    for case in REJECTED:
        _, errors = validate_custom_resource(crds[case.kind], case.obj)
        text = "\n".join(errors)
        schema = crds[case.kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        fired |= {r["message"] for r in _cel_rules(schema) if r["message"] in text}
    wanted = {  # by message: a rule of a shared type (a toleration) is the same rule in every kind
        rule["message"]
        for crd in crds.values()
        for rule in _cel_rules(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        if "oldSelf" not in rule["rule"]
    }
    assert wanted - fired == set(), sorted(wanted - fired)
