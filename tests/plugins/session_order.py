"""Session bookkeeping for tests that judge the rest of the session.

* Tests marked ``rbac_audit`` run last (they read the apiserver's audit log of everything the
  operators did in this session).
* ``passed_test_files``: the names of the test files with at least one passing test so far.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_passed: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rbac_audit: reads the session's audit log; runs last")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("rbac_audit") is not None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        _passed.add(Path(report.nodeid.split("::")[0]).name)


@pytest.fixture
def passed_test_files() -> set[str]:
    return set(_passed)
