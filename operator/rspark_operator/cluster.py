"""What the reconcile needs of the API server, and how its failures are told apart.

Pure: `kube.Kube` implements `Api` over HTTP; the unit tests use an in-memory fake.
A failure is an explicit `Failure`, decided from the HTTP status and the API
server's structured Status (its `details.causes`), never from a message.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any, Protocol

Manifest = dict[str, Any]


class Failure(Enum):
    NOT_FOUND = "not found"
    CONFLICT = "conflict"
    # The object as sent is refused: validation, admission, quota, immutable fields.
    REJECTED = "rejected"
    # The operator's identity may not do this (RBAC): an administrator's problem.
    FORBIDDEN = "forbidden"
    NAMESPACE_TERMINATING = "namespace terminating"
    # Not reached, timed out, overloaded (429, 5xx): worth another try.
    UNAVAILABLE = "unavailable"


# Answers worth another try: the request may well succeed a moment later.
TRANSIENT_STATUSES = frozenset({0, 429, 500, 502, 503, 504})
# The StatusCause type the NamespaceLifecycle admission plugin sets (a cause's type is
# its "reason" on the wire).
NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"


def classify(status: int, body: Mapping[str, Any] | None) -> Failure:
    """The failure an HTTP status and the API server's Status object mean.

    A 403 is FORBIDDEN here; only an access review can tell RBAC from an admission
    plugin that answers 403 (quota, Pod Security), see `kube.Kube`."""
    if status in TRANSIENT_STATUSES:
        return Failure.UNAVAILABLE
    if status == 404:
        return Failure.NOT_FOUND
    if status == 409:
        return Failure.CONFLICT
    if status == 403:
        causes = ((body or {}).get("details") or {}).get("causes") or []
        if any(cause.get("reason") == NAMESPACE_TERMINATING_CAUSE for cause in causes):
            return Failure.NAMESPACE_TERMINATING
        return Failure.FORBIDDEN
    return Failure.REJECTED


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(
        self, failure: Failure, status: int, message: str, *, denied: str | None = None
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.status = status
        # FORBIDDEN: what the operator may not do ("create pods in namespace team-a").
        self.denied = denied

    @property
    def refused(self) -> bool:
        """The API server refuses this object as sent, or refuses it to the operator."""
        return self.failure in (Failure.REJECTED, Failure.FORBIDDEN)


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> Iterator[float]:
    """The pauses before each of `attempts - 1` further tries: exponential from `base`,
    capped at `cap`, with full jitter (uniform between half and all of it), so replicas
    and workspaces that failed together do not retry together."""
    for attempt in range(attempts - 1):
        yield pause(attempt, base, cap, rng)


def pause(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """The pause after the `attempt`-th failure (from 0): see `backoff`."""
    ceiling = min(cap, base * 2**attempt)
    return rng.uniform(ceiling / 2, ceiling)


class Api(Protocol):
    """The calls the reconcile makes; every one raises KubeError on failure."""

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        """The object, or None when it does not exist."""

    def list(
        self, api_version: str, kind: str, namespace: str, selector: str = ""
    ) -> Iterator[Manifest]:
        """Every object of a kind in `namespace` ("": in all) whose labels match
        `selector` (a label selector; "": all)."""

    def apply(
        self, manifest: Manifest, subresource: str = "", *, dry_run: bool = False
    ) -> Manifest:
        """Server-side apply under the operator's field manager, forcing conflicts."""

    def create(self, manifest: Manifest) -> bool:
        """Create unless it exists; True when this call created it."""

    def dry_run_create(self, manifest: Manifest) -> None:
        """Would the API server create this object (under a generated name)?"""

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        uid: str | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Delete that incarnation (`uid`) of the object; gone is fine."""

    def label(self, obj: Manifest, key: str, value: str | None) -> Manifest | None:
        """Set (None: remove) one label of that incarnation of `obj`; the object as it is
        afterwards, None when it is gone."""

    def event(self, obj: Manifest, reason: str, message: str, *, warning: bool) -> None:
        """Record a Kubernetes event about `obj`."""


def secret_text(secret: Mapping[str, Any], key: str) -> str | None:
    """One key of a Secret as the API server returns it (base64 under data)."""
    value = (secret.get("data") or {}).get(key)
    return None if value is None else base64.b64decode(value).decode()
