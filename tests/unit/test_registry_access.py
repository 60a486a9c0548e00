"""Unit tests for dockyard.registry_access: the per-namespace MLflow workload credential and
the namespace ownership of experiments and models. The real MLflow (basic-auth) and the real
apiserver check the same in tests/integration/test_registry_auth.py."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from dockyard.builders.pods import mlflow_env_from
from dockyard.config import OperatorConfig
from dockyard.kube import ApiError
from dockyard.registry_access import (
    OWNER_TAG,
    WORKLOAD_SECRET,
    ForeignOwner,
    WorkloadCredentials,
    build_workload_secret,
    check_experiment,
    check_model,
    secret_password,
    workload_username,
)


class FakeKube:
    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []
        self.race: dict[str, Any] | None = None  # created by "someone else" just before our create

    async def get(self, api_version: str, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(ns)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        ns = obj["metadata"]["namespace"]
        if self.race is not None:
            self.secrets[ns], self.race = self.race, None
        if ns in self.secrets:
            raise ApiError(409, "AlreadyExists")
        self.writes.append("create")
        self.secrets[ns] = obj
        return obj

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.writes.append("apply")
        self.secrets[obj["metadata"]["namespace"]] = obj
        return obj


class FakeMlflow:
    def __init__(self) -> None:
        self.passwords: dict[str, str] = {}
        self.grants: list[tuple[str, str, str, str]] = []

    async def user_exists(self, username: str) -> bool:
        return username in self.passwords

    async def create_user(self, username: str, password: str) -> None:
        assert username not in self.passwords
        self.passwords[username] = password

    async def set_user_password(self, username: str, password: str) -> None:
        assert username in self.passwords
        self.passwords[username] = password

    async def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> None:
        self.grants.append((username, resource_type, resource_id, permission))


def password_in(secret: dict[str, Any]) -> str:
    return base64.b64decode(secret["data"]["MLFLOW_TRACKING_PASSWORD"]).decode()


def credentials(enabled: bool = True) -> tuple[WorkloadCredentials, FakeKube, FakeMlflow]:
    kube, mlflow = FakeKube(), FakeMlflow()
    return WorkloadCredentials(kube, mlflow, enabled=enabled), kube, mlflow  # type: ignore[arg-type]


def test_first_use_creates_user_and_secret_with_the_same_password() -> None:
    creds, kube, mlflow = credentials()
    asyncio.run(creds.ensure("team-a"))
    secret = kube.secrets["team-a"]
    assert secret["metadata"]["name"] == WORKLOAD_SECRET and "ownerReferences" not in secret["metadata"]
    assert mlflow.passwords == {"dockyard-ns-team-a": password_in(secret)}
    assert len(password_in(secret)) >= 32
    asyncio.run(creds.ensure("team-a"))  # cached for the process: no second write
    assert kube.writes == ["create"]


def test_an_existing_secret_is_the_truth_after_a_restart() -> None:
    creds, kube, mlflow = credentials()
    kube.secrets["team-a"] = build_workload_secret("team-a", "dockyard-ns-team-a", "kept-from-before-123")
    mlflow.passwords["dockyard-ns-team-a"] = "stale-password-xyz"
    asyncio.run(creds.ensure("team-a"))
    assert mlflow.passwords["dockyard-ns-team-a"] == "kept-from-before-123"
    assert kube.writes == []


def test_a_secret_naming_another_user_is_replaced_not_trusted() -> None:
    creds, kube, mlflow = credentials()
    mlflow.passwords["dockyard-operator"] = "the-operators-own-password"
    kube.secrets["team-a"] = build_workload_secret("team-a", "dockyard-operator", "chosen-by-a-tenant")
    asyncio.run(creds.ensure("team-a"))
    assert mlflow.passwords["dockyard-operator"] == "the-operators-own-password"
    assert kube.writes == ["apply"]
    assert mlflow.passwords["dockyard-ns-team-a"] == password_in(kube.secrets["team-a"])
    assert secret_password(kube.secrets["team-a"], "team-a") is not None


def test_losing_the_create_race_adopts_the_winners_password() -> None:
    creds, kube, mlflow = credentials()
    kube.race = build_workload_secret("team-a", "dockyard-ns-team-a", "the-other-replicas-pw")
    asyncio.run(creds.ensure("team-a"))
    assert mlflow.passwords["dockyard-ns-team-a"] == "the-other-replicas-pw"


def test_grant_is_edit_on_the_experiment_once() -> None:
    creds, _, mlflow = credentials()
    asyncio.run(creds.grant_experiment("team-a", "7"))
    asyncio.run(creds.grant_experiment("team-a", "7"))
    assert mlflow.grants == [("dockyard-ns-team-a", "experiment", "7", "EDIT")]


def test_disabled_touches_nothing() -> None:
    creds, kube, mlflow = credentials(enabled=False)
    asyncio.run(creds.ensure("team-a"))
    asyncio.run(creds.grant_experiment("team-a", "7"))
    assert kube.secrets == {} and mlflow.passwords == {} and mlflow.grants == []


def test_pods_load_the_workload_secret_and_nothing_else() -> None:
    assert mlflow_env_from(OperatorConfig(mlflow_workload_credentials=True)) == [
        {"secretRef": {"name": WORKLOAD_SECRET}}]
    assert mlflow_env_from(OperatorConfig(mlflow_credentials_secret="ext")) == [
        {"secretRef": {"name": "ext", "optional": True}}]
    assert mlflow_env_from(OperatorConfig()) == []


def test_ownership_checks() -> None:
    check_experiment("e", {}, "team-a")  # untagged: made outside Dockyard, shared
    check_experiment("e", {OWNER_TAG: "team-a"}, "team-a")
    with pytest.raises(ForeignOwner) as refused:
        check_experiment("e", {OWNER_TAG: "team-b"}, "team-a")
    assert refused.value.reason == "ExperimentInAnotherNamespace" and "team-b" in refused.value.message
    check_model("m", "", "team-a")
    with pytest.raises(ForeignOwner) as refused:
        check_model("m", "team-b", "team-a")
    assert refused.value.reason == "ModelInAnotherNamespace"
    assert workload_username("team-a") == "dockyard-ns-team-a"


class SquattedMlflow(FakeMlflow):
    """Another namespace's workload user created the model (MLflow gave it MANAGE)."""

    def __init__(self) -> None:
        super().__init__()
        self.passwords.update({"admin": "x", "dockyard-ns-team-a": "x", "dockyard-ns-team-b": "x"})
        self.held = {("dockyard-ns-team-b", "registered_model", "fraud"): "MANAGE"}
        self.lookups = 0

    async def list_usernames(self) -> list[str]:
        return sorted(self.passwords)

    async def permission(self, username: str, resource_type: str, resource_id: str) -> str:
        self.lookups += 1
        return self.held.get((username, resource_type, resource_id), "READ")


def test_an_untagged_model_another_namespaces_workload_can_change_is_refused() -> None:
    kube, mlflow = FakeKube(), SquattedMlflow()
    creds = WorkloadCredentials(kube, mlflow, enabled=True)  # type: ignore[arg-type]
    with pytest.raises(ForeignOwner) as refused:
        asyncio.run(creds.check_model("fraud", "", "team-a"))
    assert refused.value.reason == "ModelInAnotherNamespace" and "dockyard-ns-team-b" in refused.value.message
    asyncio.run(creds.check_model("fraud", "", "team-b"))  # its own namespace may
    asyncio.run(creds.check_model("clean", "", "team-a"))
    lookups = mlflow.lookups
    asyncio.run(creds.check_model("clean", "", "team-a"))  # a clean verdict is remembered
    assert mlflow.lookups == lookups
    asyncio.run(creds.check_experiment("e", "7", {}, "team-a"))


def test_a_refusal_becomes_a_reportable_error_and_mlflow_down_stays_retryable() -> None:
    from dockyard.mlflow_client import MlflowError, MlflowUnavailable
    from dockyard.registry_access import RegistryRefused

    class Refusing(FakeMlflow):
        async def create_user(self, username: str, password: str) -> None:
            raise MlflowError(403, "", "Permission denied")

    class Down(FakeMlflow):
        async def user_exists(self, username: str) -> bool:
            raise MlflowUnavailable("MLflow get_user: ClientConnectorError")

    refusing = WorkloadCredentials(FakeKube(), Refusing(), enabled=True)  # type: ignore[arg-type]
    with pytest.raises(RegistryRefused, match="team-a.*Permission denied") as refused:
        asyncio.run(refusing.ensure("team-a"))
    assert refused.value.reason == "MlflowCredentialsRefused"
    down = WorkloadCredentials(FakeKube(), Down(), enabled=True)  # type: ignore[arg-type]
    with pytest.raises(MlflowUnavailable):
        asyncio.run(down.ensure("team-a"))
