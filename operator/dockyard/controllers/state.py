"""State the controllers keep between reconciles, typed and keyed by object uid.

Everything here can be recomputed from the API and MLflow, so it is lost on restart by
design. It is keyed by uid, not name, and dropped when the object is deleted: a
ModelDeployment deleted and re-created under the same name is a new object and must not
inherit the old one's resolved versions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..analysis import Prometheus
from ..monitoring.reference import ReferenceProfile


@dataclass
class Resolution:
    """The exact model versions a ModelDeployment generation resolved to."""

    generation: int
    at: float  # time.monotonic() of the resolution
    versions: dict[str, str]  # variant -> exact version
    sources: dict[str, str]  # variant -> artifact source URI (for the seldon router)


@dataclass
class DeploymentState:
    """Per ModelDeployment."""

    resolution: Resolution | None = None
    resolve_now: bool = False  # an alias it may serve was just moved by this operator
    pruned_generation: int | None = None  # children no longer in the spec were pruned for it
    exported_versions: dict[str, str] = field(default_factory=dict)  # variant -> version in metrics
    # Child uid -> version marker (generation, else resourceVersion) our last apply returned:
    # a child whose marker moved was changed by someone else and is applied again.
    applied_children: dict[str, str] = field(default_factory=dict)
    # Drift gauges exported for it: (gauge, label values), removed when they go stale.
    drift_series: list[tuple[Any, tuple[str, ...]]] = field(default_factory=list)


@dataclass(frozen=True)
class ProfileEntry:
    """A model version's reference profile (None: the version has none), and when it was read."""

    profile: ReferenceProfile | None
    at: float  # time.monotonic()
    run_id: str  # the version's source run, where drift reports go


class ByUid[T]:
    """One ``T`` per object uid, made on first use, dropped when the object is deleted."""

    def __init__(self, factory: Callable[[], T]):
        self._factory = factory
        self._items: dict[str, T] = {}

    def __call__(self, uid: str) -> T:
        item = self._items.get(uid)
        if item is None:
            item = self._items[uid] = self._factory()
        return item

    def peek(self, uid: str) -> T | None:
        return self._items.get(uid)

    def pop(self, uid: str) -> T | None:
        return self._items.pop(uid, None)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class ControllerState:
    deployments: ByUid[DeploymentState] = field(default_factory=lambda: ByUid(DeploymentState))
    # Registered models this process has seen or created -> the namespace owning them ("" when
    # created outside Dockyard); names are MLflow's, not objects'.
    registered_models: dict[str, str] = field(default_factory=dict)
    # One Prometheus client per URL the rollouts analyse with.
    prometheus: dict[str, Prometheus] = field(default_factory=dict)
    # (registered model, version) -> its reference profile; MLflow's identity, and immutable.
    profiles: dict[tuple[str, str], ProfileEntry] = field(default_factory=dict)
