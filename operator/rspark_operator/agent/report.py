"""What the agent reports: lastSnapshot and its two conditions, kept in memory and
sent to sinks (the workspace status in Kubernetes; the /status page standalone).

The agent owns exactly `status.lastSnapshot` and the conditions SnapshotHealthy,
HomeRestored and Idle; every apply carries all of them, since server-side apply drops fields
a manager stops sending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from rspark_operator.agent.restic import Snapshot, parse_time
from rspark_operator.conditions import (
    HOME_RESTORED,
    IDLE,
    SNAPSHOT_HEALTHY,
    ConditionStatus,
    condition,
    timestamp,
)

log = logging.getLogger("rspark.agent")


class Sink(Protocol):
    def publish(self, status: dict[str, Any]) -> None: ...


def last_snapshot(
    *,
    finished: datetime,
    snapshot_id: str,
    bytes_added: int | None = None,
    duration_seconds: float | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"time": timestamp(finished), "id": snapshot_id}
    if bytes_added is not None:
        entry["bytesAdded"] = int(bytes_added)
    if duration_seconds is not None:
        entry["durationSeconds"] = round(float(duration_seconds), 3)
    return entry


def last_snapshot_of(snapshot: Snapshot) -> dict[str, Any]:
    """lastSnapshot from `restic snapshots --json`, for an agent that did not take it.

    restic 0.17+ keeps the backup's summary in the snapshot; older snapshots give
    only their time and id.
    """
    summary = snapshot.summary
    start, end = summary.get("backup_start"), summary.get("backup_end")
    added = summary.get("data_added_packed", summary.get("data_added"))
    return last_snapshot(
        finished=parse_time(end or snapshot.time),
        snapshot_id=snapshot.id,
        bytes_added=None if added is None else int(added),
        duration_seconds=(
            (parse_time(end) - parse_time(start)).total_seconds() if start and end else None
        ),
    )


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
        self._sending = threading.Lock()
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
            for t in (SNAPSHOT_HEALTHY, HOME_RESTORED, IDLE)
            if t in self._conditions
        ]
        return status

    def condition(
        self,
        type_: str,
        status: ConditionStatus,
        reason: str,
        message: str,
        *,
        at: datetime | None = None,
    ) -> None:
        """Set one condition and publish; `at`: when it changed, if not now (Idle: the
        last activity)."""
        with self._lock:
            previous = list(self._conditions.values())
            self._conditions[type_] = condition(
                type_,
                status,
                reason,
                message,
                observed_generation=None,
                now=at or self.clock(),
                previous=previous,
            )
        self.publish()

    def mark_final(self) -> None:
        """The last snapshot of a stopping pod succeeded, after the IDE exited: the home
        as the IDE left it is in lastSnapshot (`finalAt`, what spec.idle.releaseVolume
        waits for). Nothing without a snapshot."""
        with self._lock:
            if self._last_snapshot is None:
                return
            self._last_snapshot = {**self._last_snapshot, "finalAt": timestamp(self.clock())}
        self.publish()

    def remember_snapshot(self, entry: dict[str, Any]) -> None:
        """Set lastSnapshot for the next publish: it goes out with the condition that follows
        (SnapshotHealthy after a snapshot; the first condition at start-up)."""
        with self._lock:
            self._last_snapshot = entry

    def get(self, type_: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._conditions.get(type_)
            return dict(found) if found else None

    def publish(self, force: bool = False) -> None:
        """Send to every sink; a failing sink is retried at the next publish. One publish
        at a time (the snapshot loop and the activity watch both report), each sending
        the document as it is when its turn comes: an older one never lands last."""
        with self._sending:
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
