"""The bad-input corpus (``tests/data/invalid/``): the one place for bad-input cases.

Each corpus file starts with a comment block that declares what must happen to it:

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

``tests/integration/test_bad_input.py`` runs every file against the real API server and the
operator: the API server and the pydantic spec models must agree on each file (both refuse it,
naming the same field, or the API server accepts it and the model refuses exactly the
``InvalidSpec`` ones), and the operator must report the accepted ones without crashing or
hot-looping. ``tests/unit/test_bad_input_corpus.py`` checks that the files are well formed.
To add a bad-input case, add a file here; do not add a parametrized unit test.
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
from dockyard.controllers.common import format_validation_error

REPO = Path(__file__).resolve().parents[1]
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


def names_field(text: str, path: str) -> bool:
    """``path`` appears in ``text`` as a whole field path (not as a prefix of a longer one)."""
    return re.search(re.escape(path) + r"(?![\w\[.])", text) is not None


def _on_one_path(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same field path, or one lies inside the other."""
    return a == b or any(a.startswith(b + sep) or b.startswith(a + sep) for sep in ".[")


def pydantic_verdict(case: Case) -> tuple[list[str], str] | None:
    """What the operator's spec model says about the file: None if it accepts the spec, else the
    field paths of its errors (``spec.variants[0].weight``, as the operator writes them) and the
    message the operator would put in status."""
    try:
        SPEC_MODELS[case.kind].model_validate(case.obj.get("spec") or {})
    except ValidationError as exc:
        message = format_validation_error(exc)
        paths = [line.split(": ", 1)[0] for line in message.split("; ")]
        return paths, message
    return None


def refuses_at(verdict: tuple[list[str], str] | None, field: str) -> bool:
    """The model refused, and one of its errors is at ``field`` or on its path (a model validator
    of the object that holds it, or a missing child of it)."""
    return verdict is not None and any(_on_one_path(p, field) for p in verdict[0])
