"""Kubernetes-style status conditions, shared by the operator and the agent.

Conditions are mirrored, never appended: one entry per type, and
lastTransitionTime moves only when the status flips.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

ConditionStatus = Literal["True", "False", "Unknown"]

# Condition types (one name per concept, used by operator, agent and tests).
READY = "Ready"
HOME_RESTORED = "HomeRestored"
SNAPSHOT_HEALTHY = "SnapshotHealthy"
IDLE = "Idle"
# Written by the operator: other users share the namespace (tenancy.py).
NAMESPACE_SHARED = "NamespaceShared"


class Advice(NamedTuple):
    """What a condition reason means and what to do about it; each module that sets
    reasons keeps one per reason beside them (docs/reference/troubleshooting.md)."""

    meaning: str
    user: str = ""  # what the workspace's user can do; empty: nothing
    admin: str = ""  # what the platform's administrator can do; empty: nothing


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes it."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """A Kubernetes RFC 3339 time ("2026-01-02T03:04:05Z") as an aware datetime."""
    return datetime.fromisoformat(text)


def condition(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    observed_generation: int | None,
    now: datetime,
    previous: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A condition, keeping the previous lastTransitionTime unless the status flips."""
    before = find(previous or [], type_)
    unchanged = before is not None and before.get("status") == status
    transition = before.get("lastTransitionTime") if unchanged and before else None
    result: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or timestamp(now),
    }
    if observed_generation is not None:
        result["observedGeneration"] = observed_generation
    return result


def find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
