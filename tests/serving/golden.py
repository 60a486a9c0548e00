"""Golden files for the serving builders: readable YAML (and nginx.conf) under tests/golden/.

``DOCKYARD_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_serving_builders.py tests/unit/test_routers.py``
rewrites them; review the diff before keeping it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden" / "serving"
UPDATE = os.environ.get("DOCKYARD_UPDATE_GOLDEN") == "1"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True  # no &id001 anchors: every golden file reads top to bottom


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line strings (the nginx.conf inside the ConfigMap) as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)


def assert_golden_text(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    if UPDATE or not path.exists():
        if not UPDATE:
            raise AssertionError(f"golden file {path} is missing: run with DOCKYARD_UPDATE_GOLDEN=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    expected = path.read_text()
    assert text == expected, (
        f"{name} differs from the golden file; if the change is intended, regenerate with "
        f"DOCKYARD_UPDATE_GOLDEN=1 and review the diff"
    )


def assert_golden_yaml(name: str, objs: list[dict[str, Any]]) -> None:
    text = to_yaml(objs)
    # The file must round-trip to the same objects (literal blocks kept every byte).
    assert list(yaml.safe_load_all(text)) == objs
    assert_golden_text(name, text)
