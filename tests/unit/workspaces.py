"""Workspaces and settings for unit tests."""

from __future__ import annotations

from typing import Any

from rspark_operator.api import Workspace, WorkspaceSpec
from rspark_operator.settings import OperatorSettings

REPOSITORY_BASE = "s3:http://s3.test:8333/rspark"


def settings(**overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        # Straight to the bucket unless a test says gateway (the default).
        "snapshot_mode": "direct",
        "snapshot_repository_base": REPOSITORY_BASE,
        "ingress_domain": "rspark.localhost",
        **overrides,
    }
    return OperatorSettings(**values)


def workspace(name: str = "demo", namespace: str = "team", **spec: Any) -> Workspace:
    return Workspace(
        name=name,
        namespace=namespace,
        uid="0a1b2c3d-uid",
        generation=3,
        spec=WorkspaceSpec.model_validate({"user": "alice@example.com", **spec}),
    )
