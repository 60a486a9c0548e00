"""Helpers the API-model tests share: edit one field of a good spec, collect error locations."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest

DELETE = object()  # set_path(..., DELETE) removes the field


def set_path(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with the dotted `path` (list indices as numbers) set to value.

    `None` or DELETE removes the field instead.
    """
    spec = copy.deepcopy(base)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = spec
    for part in parents:
        node = node[part]
    if value is None or value is DELETE:
        del node[last]
    else:
        node[last] = value
    return spec


def error_locs(model: type[pydantic.BaseModel], data: Any) -> list[tuple[Any, ...]]:
    """The `loc` of every validation error `model` raises for `data` (it must raise)."""
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate(data)
    return [tuple(e["loc"]) for e in info.value.errors()]
