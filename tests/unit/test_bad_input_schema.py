"""The bad-input corpus (``tests/data/invalid/``) against the CRD schema + CEL and the pydantic models.

Fast, no server. Each corpus file starts with a comment block that declares what must happen to it:

    # expect: rejected          the API server refuses it (422): structural schema or CEL
    # field: spec.variants[0].weight     the field path the refusal must name
    # pydantic: n/a: <why>      (optional) the spec model cannot see this field (metadata.*)
    # xfail: <why>              (optional) a known operator bug: the expectation is what SHOULD happen;
                                the tests the bug breaks are strict xfails (they flip when it is fixed)

    # expect: reported          the API server accepts it; the operator reports it (Ready=False)
    # reason: InvalidSpec       Ready condition reason
    # phase: Invalid            status.phase
    # field: spec.alias         (optional) the Ready message must name this field
    # kind-of-child-allowed: none | Job
    # condition: DataReady      (optional) another condition that must be False with the same reason
    # needs: ready-dataset      (optional) the test provides a Ready Dataset named bad-corpus-base

This module checks the schema side of every declaration:
  * ``rejected``: ``validate_custom_resource`` (the emulator's implementation of the API server's
    validation) returns an error naming the declared field, and the pydantic spec model refuses
    it too (the operator's mirror, for clusters that skipped CRD validation);
  * ``reported``: the schema accepts it; the pydantic model refuses exactly the ``InvalidSpec``
    ones (with a message naming the declared field) and accepts the rest, whose problem (a
    dangling reference, an unknown estimator) only shows at reconcile time.
The integration test ``tests/integration/test_bad_input.py`` checks the same files against a
running API server and operator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from dockyard.api.dataset import DatasetSpec
from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.api.trainingrun import TrainingRunSpec
from dockyard.controllers.common import format_validation_error, invalid_status
from tests.kubeapi.validation import validate_custom_resource

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "invalid"
CRD_DIR = REPO / "crds"

SPEC_MODELS: dict[str, type[BaseModel]] = {
    "Dataset": DatasetSpec,
    "TrainingRun": TrainingRunSpec,
    "ModelDeployment": ModelDeploymentSpec,
}
REQUIRED_KEYS = {
    "rejected": {"expect", "field", "why"},
    "reported": {"expect", "reason", "phase", "kind-of-child-allowed", "why"},
}


@dataclass
class Case:
    """One corpus file: its declared expectation and the object."""

    path: Path
    header: dict[str, str]
    obj: dict[str, Any] = field(repr=False)

    @property
    def id(self) -> str:
        return self.path.stem

    @property
    def expect(self) -> str:
        return self.header["expect"]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def field(self) -> str | None:
        return self.header.get("field")

    @property
    def reason(self) -> str | None:
        return self.header.get("reason")

    @property
    def children_allowed(self) -> set[str]:
        value = self.header.get("kind-of-child-allowed", "none")
        return set() if value == "none" else {k.strip() for k in value.split(",")}

    @property
    def known_bug(self) -> str | None:
        return self.header.get("xfail")

    def param(self, *, affected: bool = True) -> Any:
        """A pytest param; strict xfail when the file documents a known operator bug and this test
        is one the bug breaks (``affected``)."""
        marks = [pytest.mark.xfail(reason=self.known_bug, strict=True)] if self.known_bug and affected else []
        return pytest.param(self, id=self.id, marks=marks)


_HEADER = re.compile(r"^#\s*([a-z-]+):\s?(.*)$")


def load_case(path: Path) -> Case:
    header: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = _HEADER.match(line)
        if m:
            header[m.group(1)] = m.group(2).strip()
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, f"{path.name}: one object per file"
    return Case(path, header, docs[0])


def load_corpus() -> list[Case]:
    return [load_case(p) for p in sorted(CORPUS.glob("*.yaml"))]


CASES = load_corpus()
REJECTED = [c for c in CASES if c.expect == "rejected"]
REPORTED = [c for c in CASES if c.expect == "reported"]


def load_crds() -> dict[str, dict[str, Any]]:
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def names_field(text: str, path: str) -> bool:
    """``path`` appears in ``text`` as a whole field path (not as a prefix of a longer one)."""
    return re.search(re.escape(path) + r"(?![\w\[.])", text) is not None


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    return load_crds()


# -------------------------------------------------------------------------------- the corpus


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


# -------------------------------------------------------------------------------- rejected


@pytest.mark.parametrize("case", [c.param() for c in REJECTED])
def test_rejected_by_crd_schema(case: Case, crds: dict[str, dict[str, Any]]) -> None:
    _, errors = validate_custom_resource(crds[case.kind], case.obj)
    assert errors, f"{case.id}: the CRD schema accepted it"
    assert case.field is not None
    assert any(names_field(e, case.field) for e in errors), (
        f"{case.id}: no error names {case.field}: {errors}"
    )


def _mirror_na(case: Case) -> bool:
    return case.header.get("pydantic", "").startswith("n/a")


@pytest.mark.parametrize("case", [c.param(affected=not _mirror_na(c)) for c in REJECTED])
def test_rejected_by_pydantic_mirror(case: Case) -> None:
    if _mirror_na(case):
        assert case.field and case.field.startswith("metadata."), (
            f"{case.id}: only metadata fields are out of the spec model's reach"
        )
        return
    with pytest.raises(ValidationError):
        SPEC_MODELS[case.kind].model_validate(case.obj.get("spec") or {})


# -------------------------------------------------------------------------------- reported


@pytest.mark.parametrize("case", [c.param(affected=False) for c in REPORTED])
def test_reported_passes_crd_schema(case: Case, crds: dict[str, dict[str, Any]]) -> None:
    _, errors = validate_custom_resource(crds[case.kind], case.obj)
    assert errors == [], f"{case.id}: the schema refuses it, so it cannot be 'reported': {errors}"


@pytest.mark.parametrize("case", [c.param() for c in REPORTED])
def test_reported_pydantic_verdict(case: Case, crds: dict[str, dict[str, Any]]) -> None:
    model = SPEC_MODELS[case.kind]
    spec = case.obj.get("spec") or {}
    if case.reason == "InvalidSpec":
        with pytest.raises(ValidationError) as info:
            model.model_validate(spec)
        message = format_validation_error(info.value)
        assert case.field and case.field in message, f"{case.id}: {message!r} does not name {case.field}"
        # The report the operator writes must itself pass the status schema, or it can never be stored.
        body = {**case.obj, "metadata": {**case.obj["metadata"], "generation": 1}}
        status = invalid_status(body, "InvalidSpec", message)
        _, errors = validate_custom_resource(crds[case.kind], {**case.obj, "status": status})
        assert errors == [], (
            f"{case.id}: the InvalidSpec status would be refused: {[e[:300] for e in errors]}"
        )
    else:
        model.model_validate(spec)  # valid spec: the problem is outside it (a reference, the estimator)
