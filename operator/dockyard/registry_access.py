"""Who may do what in the model registry (docs/security.md).

Two guards, for an MLflow that runs its basic-auth app (the chart's default):

* **Workload credentials.** Training Jobs and serving Pods do not get the operator's MLflow
  user (an MLflow admin: MLflow lets only admins create users). Each namespace that runs
  Dockyard workloads gets its own MLflow user ``dockyard-ns-<namespace>``, whose password the
  operator generates into the Secret ``dockyard-mlflow-workload`` of that namespace. Pods load
  it with ``envFrom`` (never a plain env value). With MLflow's ``default_permission = READ``
  the user can read every model version and download artifacts (``fetch-model``); the
  operator grants it EDIT on each experiment a TrainingRun of that namespace logs to, so the
  trainer can log its run and model. It cannot set an alias, delete or create a model version
  or change permissions: MLflow answers 403 (tests/integration/test_registry_auth.py).

* **Namespace ownership.** Experiments and registered models the operator creates carry the tag
  ``dockyard.namespace``. A TrainingRun or a rollout in another namespace that names one of
  them is refused in status, instead of the operator (whose MLflow user may write anything)
  logging into, registering into or moving the alias of another team's model on its behalf.
  Experiments and models created outside Dockyard carry no tag and stay usable by everyone,
  unless another namespace's workload user may change them (it created the name in advance:
  MLflow lets any user create, and makes the creator MANAGEr); those are refused too.

Pure builders and checks first; :class:`WorkloadCredentials` is the side-effecting edge.
"""

from __future__ import annotations

import base64
import logging
import secrets
from typing import Any

from .kube import ApiError, KubeClient
from .labels import MANAGED_BY, MANAGED_BY_LABEL, PART_OF, PART_OF_LABEL
from .mlflow_client import MlflowClient, MlflowError, MlflowNotFound

log = logging.getLogger(__name__)

OWNER_TAG = "dockyard.namespace"
WORKLOAD_SECRET = "dockyard-mlflow-workload"  # noqa: S105 - a Secret name
USERNAME_KEY = "MLFLOW_TRACKING_USERNAME"
PASSWORD_KEY = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 - a key name, not a password


WORKLOAD_USER_PREFIX = "dockyard-ns-"
WRITE_PERMISSIONS = ("EDIT", "MANAGE")


def workload_username(namespace: str) -> str:
    return f"{WORKLOAD_USER_PREFIX}{namespace}"


def owner_tags(namespace: str) -> dict[str, str]:
    """Tags the operator puts on the experiments and registered models it creates."""
    return {OWNER_TAG: namespace}


def foreign_owner(tags: dict[str, str], namespace: str) -> str | None:
    """The other namespace that owns an experiment or model with these tags, or None when
    `namespace` may use it (its own, or untagged: created outside Dockyard)."""
    owner = tags.get(OWNER_TAG)
    return owner if owner and owner != namespace else None


class ForeignOwner(Exception):
    """An experiment or registered model belongs to another namespace's Dockyard objects."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_experiment(name: str, tags: dict[str, str], namespace: str) -> None:
    owner = foreign_owner(tags, namespace)
    if owner is not None:
        raise ForeignOwner("ExperimentInAnotherNamespace",
                           f"MLflow experiment {name!r} belongs to namespace {owner!r}; choose another spec.experiment")


def check_model(name: str, owner: str, namespace: str) -> None:
    """`owner`: the model's OWNER_TAG ("" when untagged)."""
    if foreign_owner({OWNER_TAG: owner}, namespace) is not None:
        raise ForeignOwner("ModelInAnotherNamespace",
                           f"registered model {name!r} belongs to namespace {owner!r}: Dockyard objects in "
                           f"{namespace!r} may read it but not register versions or move its aliases")


async def model_owner(mlflow: MlflowClient, known: dict[str, str], name: str, *,
                      create_for: str | None = None) -> str:
    """The OWNER_TAG of registered model `name` ("" when untagged). With `create_for`, a
    missing model is created, owned by that namespace. `known` caches it per process."""
    if name not in known:
        if create_for is not None:
            tags = await mlflow.ensure_registered_model(name, owner_tags(create_for))
        else:
            tags = await mlflow.registered_model_tags(name)
        known[name] = tags.get(OWNER_TAG, "")
    return known[name]


class RegistryRefused(Exception):
    """MLflow or the apiserver refused what the workload credential needs (the operator's
    MLflow user is not an admin, RBAC forbids the Secret): reported in the object's status
    like a refused child, and retried with backoff."""

    reason = "MlflowCredentialsRefused"


def _refusal(what: str, exc: Exception) -> Exception:
    """The exception to raise for `exc`: RegistryRefused for a refusal that waiting will not
    fix; `exc` itself otherwise (MLflow down, a conflict, a server error)."""
    refused = (isinstance(exc, MlflowError) and not isinstance(exc, MlflowNotFound)) or (
        isinstance(exc, ApiError) and exc.status in (400, 403, 422))
    return RegistryRefused(f"{what}: {exc}"[:1000]) if refused else exc


def build_workload_secret(namespace: str, username: str, password: str) -> dict[str, Any]:
    """The Secret Pods of `namespace` load as their MLflow credential. No owner reference:
    it serves every Dockyard object of the namespace and outlives each of them."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": WORKLOAD_SECRET,
            "namespace": namespace,
            "labels": {PART_OF_LABEL: PART_OF, MANAGED_BY_LABEL: MANAGED_BY},
        },
        "data": {USERNAME_KEY: _b64(username), PASSWORD_KEY: _b64(password)},
    }


def secret_password(secret: dict[str, Any], namespace: str) -> str | None:
    """The password in a namespace's workload Secret; None when it is missing, or when the
    Secret names another user. Whoever can edit Secrets in a namespace must not be able to
    make the operator reset another MLflow user's password (its own, say) to theirs."""
    data = secret.get("data") or {}
    try:
        username = base64.b64decode(data[USERNAME_KEY]).decode()
        password = base64.b64decode(data[PASSWORD_KEY]).decode()
    except (KeyError, ValueError):
        return None
    return password if username == workload_username(namespace) and len(password) >= 12 else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class WorkloadCredentials:
    """Makes sure a namespace's workload Secret and its MLflow user agree, and grants that user
    EDIT on experiments. Each namespace is checked once per operator process (the Secret is
    the source of truth: a deleted Secret gets a new password and the user is updated)."""

    def __init__(self, kube: KubeClient, mlflow: MlflowClient, *, enabled: bool) -> None:
        self._kube = kube
        self._mlflow = mlflow
        self.enabled = enabled
        self._ready: set[str] = set()
        self._granted: set[tuple[str, str]] = set()
        self._clean: set[tuple[str, str, str]] = set()

    async def ensure(self, namespace: str) -> None:
        if not self.enabled or namespace in self._ready:
            return
        try:
            await self._ensure(namespace)
        except (MlflowError, ApiError) as exc:
            raise _refusal(f"MLflow credential of namespace {namespace!r}", exc) from exc
        self._ready.add(namespace)

    async def _ensure(self, namespace: str) -> None:
        username = workload_username(namespace)
        secret = await self._kube.get("v1", "Secret", namespace, WORKLOAD_SECRET)
        password = secret_password(secret, namespace) if secret is not None else None
        if password is None:
            password = secrets.token_urlsafe(32)
            await self._set_user(username, password)
            desired = build_workload_secret(namespace, username, password)
            try:
                if secret is None:
                    await self._kube.create(desired)
                else:  # keys missing, edited or emptied by hand: put them back
                    await self._kube.apply(desired)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                # Another replica (or a previous life) got there first: its password wins.
                return await self._ensure(namespace)
            log.info("set MLflow workload user %s and Secret %s/%s", username, namespace, WORKLOAD_SECRET)
        else:
            await self._set_user(username, password)

    async def foreign_writers(self, resource_type: str, resource_id: str, namespace: str) -> list[str]:
        """Other namespaces' workload users that may change an untagged experiment or model:
        a workload user may create them (MLflow gives every creator MANAGE), so a name created
        ahead of its first Dockyard use could be a trap set by another namespace's trainer."""
        key = (resource_type, resource_id, namespace)
        if not self.enabled or key in self._clean:
            return []
        own = workload_username(namespace)
        others = [u for u in await self._mlflow.list_usernames() if u.startswith(WORKLOAD_USER_PREFIX) and u != own]
        writers = [u for u in others
                   if await self._mlflow.permission(u, resource_type, resource_id) in WRITE_PERMISSIONS]
        if not writers:
            # Stays clean: with no workload user holding MANAGE, only an admin can grant more.
            self._clean.add(key)
        return writers

    async def check_experiment(self, name: str, experiment_id: str, tags: dict[str, str], namespace: str) -> None:
        check_experiment(name, tags, namespace)
        if OWNER_TAG not in tags:
            writers = await self.foreign_writers("experiment", experiment_id, namespace)
            if writers:
                raise ForeignOwner("ExperimentInAnotherNamespace",
                                   f"MLflow experiment {name!r} can be changed by {', '.join(writers)} (another "
                                   "namespace's workload); choose another spec.experiment")

    async def check_model_use(self, known: dict[str, str], name: str, namespace: str, *, create: bool = False) -> None:
        """Refuse (ForeignOwner) work for `namespace` on registered model `name` that another
        namespace owns or may change; with `create`, a missing model is created, owned by
        `namespace`. `known` caches owners per process; a refusal is looked up again next
        time (an admin may revoke the grant)."""
        owner = await model_owner(self._mlflow, known, name, create_for=namespace if create else None)
        try:
            await self.check_model(name, owner, namespace)
        except ForeignOwner:
            known.pop(name, None)
            raise

    async def check_model(self, name: str, owner: str, namespace: str) -> None:
        check_model(name, owner, namespace)
        if not owner:
            writers = await self.foreign_writers("registered_model", name, namespace)
            if writers:
                raise ForeignOwner("ModelInAnotherNamespace",
                                   f"registered model {name!r} can be changed by {', '.join(writers)} (another "
                                   "namespace's workload): an MLflow admin must revoke that before Dockyard "
                                   "registers versions of it or moves its aliases")

    async def grant_experiment(self, namespace: str, experiment_id: str) -> None:
        """EDIT on one experiment: log runs, metrics, artifacts and logged models into it."""
        if not self.enabled or (namespace, experiment_id) in self._granted:
            return
        await self.ensure(namespace)
        try:
            await self._mlflow.grant(workload_username(namespace), "experiment", experiment_id, "EDIT")
        except MlflowError as exc:
            raise _refusal(f"granting namespace {namespace!r} EDIT on experiment {experiment_id}", exc) from exc
        self._granted.add((namespace, experiment_id))

    async def _set_user(self, username: str, password: str) -> None:
        if await self._mlflow.user_exists(username):
            await self._mlflow.set_user_password(username, password)
        else:
            await self._mlflow.create_user(username, password)
