"""What the agent reports: lastSnapshot and its two conditions, kept in memory and
sent to sinks (the workspace status in Kubernetes; the /status page standalone).

The agent owns exactly `status.lastSnapshot` and the conditions SnapshotHealthy and
HomeRestored; every apply carries all of them, since server-side apply drops fields
a manager stops sending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from rspark_operator.conditions import (
    HOME_RESTORED,
    SNAPSHOT_HEALTHY,
    ConditionStatus,
    condition,
    timestamp,
)

log = logging.getLogger("rspark.agent")


class Sink(Protocol):
    def publish(self, status: dict[str, Any]) -> None: ...


def last_snapshot(
    *, finished: datetime, snapshot_id: str, bytes_added: int, duration_seconds: float
) -> dict[str, Any]:
    return {
        "time": timestamp(finished),
        "id": snapshot_id,
        "bytesAdded": int(bytes_added),
        "durationSeconds": round(float(duration_seconds), 3),
    }


def apply_body(namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """The server-side apply document for the workspace's status subresource."""
    # Imported here: the API models cost half a second, and standalone runs never need them.
    from rspark_operator.api import API_VERSION, KIND

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    }


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions", [])
    ]
    return {**status, "conditions": conditions}


class Status:
    """The agent's part of the workspace status; publishes only when it differs."""

    def __init__(
        self, sinks: list[Sink] | None = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.sinks = list(sinks or [])
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._conditions: dict[str, dict[str, Any]] = {}
        self._last_snapshot: dict[str, Any] | None = None
        self._published: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._document()

    def _document(self) -> dict[str, Any]:
        status: dict[str, Any] = {}
        if self._last_snapshot is not None:
            status["lastSnapshot"] = dict(self._last_snapshot)
        status["conditions"] = [
            dict(self._conditions[t])
            for t in (SNAPSHOT_HEALTHY, HOME_RESTORED)
            if t in self._conditions
        ]
        return status

    def condition(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        with self._lock:
            previous = list(self._conditions.values())
            self._conditions[type_] = condition(
                type_,
                status,
                reason,
                message,
                observed_generation=None,
                now=self.clock(),
                previous=previous,
            )
        self.publish()

    def snapshot_taken(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._last_snapshot = entry
        self.publish()

    def get(self, type_: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._conditions.get(type_)
            return dict(found) if found else None

    def publish(self, force: bool = False) -> None:
        """Send to every sink; a failing sink is retried at the next publish."""
        with self._lock:
            document = self._document()
            if (
                not force
                and self._published is not None
                and _comparable(self._published) == _comparable(document)
            ):
                return
        ok = True
        for sink in self.sinks:
            try:
                sink.publish(document)
            except Exception as exc:  # the API server may be away; keep the agent running
                ok = False
                log.warning("could not report status: %s", exc)
        if ok:
            with self._lock:
                self._published = document
