"""docs/security.md backs each claim with a test: every test it names must exist, so a
renamed or deleted test cannot leave a claim unsupported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
# `tests/x/test_y.py::test_z`, `test_y.py::test_z`, `::test_z` (same file as the previous one),
# or a bare `tests/x/test_y.py`.
REFERENCE = re.compile(r"`((?:tests/[\w/]+/)?test_\w+\.py)?(::\w+)?`")


def defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def resolve(name: str) -> Path:
    if name.startswith("tests/"):
        return ROOT / name
    found = sorted((ROOT / "tests").rglob(name))
    assert len(found) == 1, f"docs/security.md: {name} matches {found}"
    return found[0]


def test_every_test_the_security_doc_names_exists() -> None:
    text = DOC.read_text()
    current: Path | None = None
    checked = 0
    for match in REFERENCE.finditer(text):
        file, function = match.groups()
        if not file and not function:
            continue
        if file:
            current = resolve(file)
            assert current.exists(), f"docs/security.md names {file}, which does not exist"
        if function:
            assert current is not None, f"docs/security.md: {function} without a file before it"
            assert function[2:] in defined_functions(current), f"docs/security.md: {current.name}{function} is gone"
        checked += 1
    assert checked >= 20, checked
