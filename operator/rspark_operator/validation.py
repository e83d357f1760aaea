"""From a raw RStudioWorkspace to a validated `Workspace`, or one clear message.

The CRD rejects most bad input at the API server; what reaches the operator
anyway (rules that need the operator's settings, or that the schema cannot
express) becomes Ready=False, reason InvalidSpec, with this message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from rspark_operator.api import (
    WORKSPACE_NAME_MAX_LENGTH,
    WORKSPACE_NAME_PATTERN,
    IngressSpec,
    Workspace,
    WorkspaceSpec,
    quiet_time_problem,
)
from rspark_operator.builders.pod import snapshot_repository
from rspark_operator.builders.url import ingress_host, ingress_path
from rspark_operator.settings import OperatorSettings
from rspark_operator.status import Reason

_WORKSPACE_NAME = re.compile(WORKSPACE_NAME_PATTERN)


class InvalidSpecError(ValueError):
    """The workspace cannot be built; str() is the message for the Ready condition."""

    reason: Reason = Reason.INVALID_SPEC


def parse_workspace(body: Mapping[str, Any], settings: OperatorSettings) -> Workspace:
    """The validated workspace, or InvalidSpecError listing every problem."""
    metadata = body["metadata"]
    name = metadata["name"]
    problems = name_problems(name)
    try:
        spec = WorkspaceSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        problems.extend(_describe(issue) for issue in error.errors())
        raise InvalidSpecError("; ".join(problems)) from None
    workspace = Workspace(
        name=name,
        namespace=metadata["namespace"],
        uid=metadata["uid"],
        generation=metadata.get("generation", 1),
        spec=spec,
    )
    problems.extend(settings_problems(workspace, settings))
    if problems:
        raise InvalidSpecError("; ".join(problems))
    return workspace


def name_problems(name: str) -> list[str]:
    if len(name) <= WORKSPACE_NAME_MAX_LENGTH and _WORKSPACE_NAME.fullmatch(name):
        return []
    return [
        f"metadata.name must be a DNS label of at most {WORKSPACE_NAME_MAX_LENGTH} "
        "characters starting with a letter"
    ]


def settings_problems(ws: Workspace, settings: OperatorSettings) -> list[str]:
    """Rules that depend on how the operator is configured."""
    problems = []
    if ws.spec.snapshot.enabled and snapshot_repository(ws, settings) is None:
        problems.append(
            "spec.snapshot.repository is required: the operator has no default "
            "repository base (RSPARK_SNAPSHOT_REPOSITORY_BASE)"
        )
    problems.extend(_policy_problems(ws, settings))
    stop_after = ws.spec.idle.stop_after
    too_short = stop_after and quiet_time_problem(stop_after, settings.idle_quiet)
    if too_short:
        problems.append(f"spec.idle.{too_short}")
    s3 = ws.spec.spark.s3
    if s3 is not None and s3.credentials_secret == settings.snapshot_credentials_secret:
        # The IDE would hold the snapshots' bucket key (every workspace's homes).
        problems.append(
            f"spec.spark.s3.credentialsSecret: {s3.credentials_secret} is the snapshots' "
            "key (RSPARK_SNAPSHOT_CREDENTIALS_SECRET); name a Secret of your own"
        )
    assigned = replace(ws, spec=ws.spec.model_copy(update={"ingress": IngressSpec()}))
    host, assigned_host = ingress_host(ws, settings), ingress_host(assigned, settings)
    shared_paths = settings.ingress_mode == "path" and host == assigned_host
    if _in_domain(host, settings.ingress_domain) and (
        host != assigned_host
        or (shared_paths and ingress_path(ws, settings) != ingress_path(assigned, settings))
    ):
        problems.append(
            f"spec.ingress: {host}{ingress_path(ws, settings)} is inside the operator's domain "
            f"{settings.ingress_domain}, where URLs are assigned by workspace name; remove "
            f"spec.ingress.host and spec.ingress.path or use a host outside that domain"
        )
    return problems


def _policy_problems(ws: Workspace, settings: OperatorSettings) -> list[str]:
    """What the platform allows its tenants to choose: images and hosts."""
    problems = []
    allowed = (
        f"under {', '.join(settings.allowed_image_prefixes)}"
        if settings.allowed_image_prefixes
        else "the operator's own"
    )
    for field, image, configured in (
        ("spec.image", ws.spec.image, settings.workspace_image),
        ("spec.spark.executorImage", ws.spec.spark.executor_image, settings.spark_executor_image),
    ):
        if image and not settings.image_allowed(image, configured):
            problems.append(
                f"{field}: {image} is not an allowed image ({allowed}; "
                "RSPARK_ALLOWED_IMAGE_PREFIXES)"
            )
    host = ws.spec.ingress.host
    if host and not any(_in_domain(host, d) for d in settings.allowed_ingress_domains):
        domains = ", ".join(settings.allowed_ingress_domains) or "none"
        problems.append(
            f"spec.ingress.host: {host} is not in an allowed domain ({domains}; "
            "RSPARK_ALLOWED_INGRESS_DOMAINS)"
        )
    return problems


def _in_domain(host: str, domain: str) -> bool:
    return host == domain or host.endswith(f".{domain}")


def _describe(issue: Mapping[str, Any]) -> str:
    path = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in ("spec", *issue["loc"])
    )
    return f"{path}: {str(issue['msg']).removeprefix('Value error, ')}"
