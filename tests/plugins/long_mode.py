"""Long mode: tests marked ``slow`` run only with ``pytest --long`` or ``DOCKYARD_LONG_TESTS=1``.

The default run (CI) keeps the fault-survival tier within its time budget; long mode adds the
heavier variants (more kills, more objects, a real 30 s MLflow outage). Tests may also ask
``long_mode`` (a session fixture, bool) to scale themselves.
"""

from __future__ import annotations

import os

import pytest

ENV_LONG = "DOCKYARD_LONG_TESTS"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help=f"also run tests marked slow (long fault-survival variants); env {ENV_LONG}=1 does the same",
    )


def is_long(config: pytest.Config) -> bool:
    return bool(config.getoption("--long")) or os.environ.get(ENV_LONG, "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_long(config):
        return
    skip = pytest.mark.skip(reason=f"slow: runs with --long or {ENV_LONG}=1")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def long_mode(pytestconfig: pytest.Config) -> bool:
    return is_long(pytestconfig)
