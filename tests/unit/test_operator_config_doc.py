"""Every setting of the operator is documented for users in docs/operator-config.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "operator-config.md").read_text()


def test_every_environment_variable_is_documented() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "operator" / "dockyard").glob("*.py"))
    read = set(re.findall(r'_env\("([A-Z_]+)"', source))
    assert read, "no settings found: did config.py change how it reads them?"
    assert {v for v in read if f"`{v}`" not in DOC} == set()


def test_every_flag_is_documented() -> None:
    help_text = subprocess.run([sys.executable, "-m", "dockyard", "operator", "--help"], capture_output=True,
                               text=True, timeout=60, check=True).stdout
    flags = set(re.findall(r"(--[a-z][a-z-]+)", help_text)) - {"--help"}
    assert flags, help_text
    assert {f for f in flags if f"`{f}" not in DOC} == set()
