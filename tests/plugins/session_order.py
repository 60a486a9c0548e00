"""Session bookkeeping for tests that judge the rest of the session.

* Tests that need no cluster run first: on a clean machine (CI) the control plane is still
  being built in the background meanwhile, and the first test that needs it waits for the
  build (a file lock) instead of the whole session waiting before it starts.
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
    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("rbac_audit") is not None:
            return 2
        return 1 if "kube_cluster" in getattr(item, "fixturenames", ()) else 0

    items.sort(key=order)  # stable: file order within each group


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        _passed.add(Path(report.nodeid.split("::")[0]).name)


@pytest.fixture
def passed_test_files() -> set[str]:
    return set(_passed)
