"""Retention at the platform: forget + prune of every workspace repository kept behind
the snapshot gateway, with the bucket's key, since the gateway refuses deletes.

`rspark-agent retention` runs once over every workspace and exits; the platform runs it
daily (the agent's own maintenance cadence, `maintenance_interval` 24h) in the gateway's
namespace, the only one holding the bucket's key (docs/security.md). Each workspace's
repository password comes from its `<name>-passwords` Secret; its retention and host
are the ones the agent used to apply itself (spec.snapshot.retention, the workspace's
fixed host). Environment: the bucket's AWS_* keys and RSPARK_SNAPSHOT_STORAGE_BASE, the
direct restic base where the gateway keeps repositories (its remote).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rspark_operator import names
from rspark_operator.api import WorkspaceSpec
from rspark_operator.gateway import direct_repository, gateway_user

log = logging.getLogger("rspark.agent.retention")

STORAGE_BASE = "RSPARK_SNAPSHOT_STORAGE_BASE"


@dataclass(frozen=True)
class Job:
    """forget + prune of one workspace's repository."""

    namespace: str
    name: str
    repository: str
    host: str
    retention: dict[str, int]


def jobs(workspaces: Iterable[Mapping[str, Any]], storage_base: str) -> list[Job]:
    """The workspaces whose snapshots go through the gateway and that keep fewer than all:
    the ones with snapshots on, no repository of their own, and a retention."""
    out = []
    for body in workspaces:
        metadata = body.get("metadata") or {}
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        try:
            spec = WorkspaceSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            log.warning("%s/%s: invalid spec, left alone", namespace, name)
            continue
        snapshot = spec.snapshot
        retention = {key: count for key, count in snapshot.retention.wire().items() if count}
        if not snapshot.enabled or snapshot.repository or not retention:
            continue
        out.append(
            Job(
                namespace,
                name,
                direct_repository(storage_base, gateway_user(namespace, name)),
                names.snapshot_host(namespace, name),
                retention,
            )
        )
    return out


class NoRepository(Exception):
    """The workspace never took a snapshot: nothing to prune."""


class GoingAway(Exception):
    """The workspace's namespace is being deleted (its Secrets may go first): nothing
    to keep."""


# Runs one job with the repository's password; raises on failure (NoRepository: none yet).
Forget = Callable[[Job, str], None]
# The repository password of a workspace (its passwords Secret), None when missing;
# raises GoingAway when its namespace is being deleted.
Password = Callable[[str, str], str | None]


def run(all_jobs: Iterable[Job], password_of: Password, forget: Forget) -> int:
    """Every job, each on its own: one failing leaves the others. The number that failed."""
    failed = 0
    for job in all_jobs:
        try:
            password = password_of(job.namespace, job.name)
        except GoingAway:
            log.info("%s/%s: its namespace is being deleted, skipped", job.namespace, job.name)
            continue
        if password is None:
            log.error("%s/%s: no repository password, skipped", job.namespace, job.name)
            failed += 1
            continue
        try:
            forget(job, password)
        except NoRepository:
            log.info("%s/%s: no repository yet, nothing to prune", job.namespace, job.name)
        except Exception as exc:
            log.error("%s/%s: forget + prune failed: %s", job.namespace, job.name, exc)
            failed += 1
        else:
            log.info("%s/%s: forget + prune done (keep %s)", job.namespace, job.name, job.retention)
    return failed
