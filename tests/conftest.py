"""Root conftest: loads every fixture plugin in tests/plugins/ (one module per real part:
the Kubernetes API emulator, the MLflow server, ...), so each area owns its fixtures."""

from __future__ import annotations

import pathlib

_PLUGINS = pathlib.Path(__file__).parent / "plugins"
pytest_plugins = sorted(f"tests.plugins.{p.stem}" for p in _PLUGINS.glob("*.py") if p.stem != "__init__")
