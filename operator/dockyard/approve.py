"""`dockyard approve`: approve the candidate a ModelDeployment's rollout is waiting on.

It sets the annotations the operator reads (`dockyard.dev/approve=<version>` and
`dockyard.dev/approved-by=<you>`), where "you" is what the API server says you are
(SelfSubjectReview, as `kubectl auth whoami`), so the audit trail in status, Events and the
MLflow version's tags names a person or a ServiceAccount rather than a tool.
`kubectl annotate mdep NAME dockyard.dev/approve=<version>` works too; the approver is
then recorded as the field manager that set the annotation.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from .api.common import API_VERSION
from .kube import ApiError, KubeClient
from .rollout import APPROVE_ANNOTATION, APPROVED_BY_ANNOTATION


async def whoami(kube: KubeClient) -> str:
    review = await kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "unknown")


def waiting_version(md: dict[str, Any]) -> str | None:
    rollout = (md.get("status") or {}).get("rollout") or {}
    if rollout.get("phase") != "AwaitingApproval":
        return None
    return str(rollout.get("candidateVersion"))


async def approve(kube: KubeClient, namespace: str, name: str, version: str | None) -> tuple[int, str]:
    md = await kube.get(API_VERSION, "ModelDeployment", namespace, name)
    if md is None:
        return 1, f"ModelDeployment {namespace}/{name} not found"
    waiting = waiting_version(md)
    if waiting is None:
        phase = ((md.get("status") or {}).get("rollout") or {}).get("phase", "no rollout")
        return 1, f"{namespace}/{name} is not waiting for an approval (rollout phase: {phase})"
    if version is not None and version != waiting:
        return 1, f"refused: version {waiting} is waiting for approval, not {version}"
    who = await whoami(kube)
    await kube.merge_patch(API_VERSION, "ModelDeployment", namespace, name,
                           {"metadata": {"annotations": {APPROVE_ANNOTATION: waiting, APPROVED_BY_ANNOTATION: who}}})
    return 0, f"approved version {waiting} of {namespace}/{name} as {who}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dockyard approve", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="ModelDeployment name")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--version", help="the version you approve (refused unless it is the one waiting)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    args = parser.parse_args(argv)

    async def run() -> tuple[int, str]:
        kube = KubeClient.from_environment(args.kubeconfig)
        try:
            return await approve(kube, args.namespace, args.name, args.version)
        except ApiError as exc:
            return 1, f"the API refused: {exc}"
        finally:
            await kube.close()

    code, message = asyncio.run(run())
    print(message, file=sys.stderr if code else sys.stdout)
    return code
