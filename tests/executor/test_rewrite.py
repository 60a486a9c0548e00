"""Pure helpers of the local executor: $(VAR) expansion and the path-rewriting rule."""

from __future__ import annotations

import pytest

from tests.kubeapi.executor import _rewrite_exact, expand_vars, rewrite_paths

MOUNTS = [("/data", "/scratch/vol/data"), ("/data/models", "/scratch/vol/models"), ("/", "/nope")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/data", "/scratch/vol/data"),
        ("/data/", "/scratch/vol/data/"),
        ("/data/x.csv", "/scratch/vol/data/x.csv"),
        ("file:///data/x.csv", "file:///scratch/vol/data/x.csv"),
        ("--input=/data/x.csv", "--input=/scratch/vol/data/x.csv"),
        ("a:/data:b", "a:/scratch/vol/data:b"),
        ("/data/models/m.pkl", "/scratch/vol/models/m.pkl"),  # longest mountPath wins
        ("/srv/data/x", "/srv/data/x"),  # not a prefix
        ("/database", "/database"),  # not a path component
        ("/data.csv", "/data.csv"),
        ("s3://bucket/data/x", "s3://bucket/data/x"),
        ("/etc/passwd", "/etc/passwd"),  # "/" is never rewritten
        ("", ""),
    ],
)
def test_rewrite_paths(value: str, expected: str) -> None:
    assert rewrite_paths(value, MOUNTS) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$(A)-$(B)", "a-$(B)"),
        ("$$(A)", "$(A)"),
        ("cost: $5", "cost: $5"),
        ("$(A", "$(A"),
        ("x$", "x$"),
    ],
)
def test_expand_vars(value: str, expected: str) -> None:
    assert expand_vars(value, {"A": "a"}) == expected


def test_rewrite_exact() -> None:
    m = {"8080": "41234"}
    assert _rewrite_exact("8080", m) == "41234"
    assert _rewrite_exact("--port=8080", m) == "--port=41234"
    assert _rewrite_exact("0.0.0.0:8080", m) == "0.0.0.0:8080"
    assert _rewrite_exact("18080", m) == "18080"
