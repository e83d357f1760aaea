"""The workspace status, computed from what exists; a pure function.

The operator owns phase, url, observedGeneration, pendingRestart and the Ready
condition. The snapshot agent owns HomeRestored, SnapshotHealthy and
lastSnapshot. `compute_status` returns the operator's fields only, meant for a
server-side apply of the status subresource: status.conditions is a map keyed
by type, so applying [Ready] leaves the agent's conditions as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from rspark_operator.api import Phase
from rspark_operator.conditions import HOME_RESTORED, READY, condition, find

# Reasons of the Ready condition.
POD_READY = "PodReady"
POD_NOT_READY = "PodNotReady"
POD_MISSING = "PodMissing"
POD_REPLACING = "PodReplacing"
POD_FAILED = "PodFailed"
SUSPENDED = "Suspended"
SUSPENDING = "Suspending"
INVALID_SPEC = "InvalidSpec"
CHILD_REJECTED = "ChildRejected"
# A workspace its SparkProfile refuses (profiles.ProfileRefusal).
SPARK_LIMIT_EXCEEDED = "SparkLimitExceeded"
SPARK_PROFILE_NOT_ALLOWED = "SparkProfileNotAllowed"
SPARK_PROFILE_NOT_FOUND = "SparkProfileNotFound"
SPARK_PROFILE_INVALID = "SparkProfileInvalid"
SPARK_PROFILE_PROBLEMS = frozenset(
    {
        SPARK_LIMIT_EXCEEDED,
        SPARK_PROFILE_NOT_ALLOWED,
        SPARK_PROFILE_NOT_FOUND,
        SPARK_PROFILE_INVALID,
    }
)
RESTORING = "Restoring"  # also the agent's HomeRestored reason while it restores
HOME_NOT_RESTORED = "HomeNotRestored"
FAILED_SCHEDULING = "FailedScheduling"
FAILED_MOUNT = "FailedMount"
FAILED_ATTACH_VOLUME = "FailedAttachVolume"
PROVISIONING_FAILED = "ProvisioningFailed"
# Container waiting states that need the user's attention, reported as they are.
CONTAINER_PROBLEMS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
VOLUME_PROBLEMS = frozenset({FAILED_MOUNT, FAILED_ATTACH_VOLUME, PROVISIONING_FAILED})
# The Warning event reasons the status reads (see `_assess_pod`).
STATUS_WARNINGS = frozenset({FAILED_SCHEDULING, *VOLUME_PROBLEMS})
# Ready reasons that need someone's attention: their transitions are Warning events.
PROBLEMS = frozenset(
    {
        INVALID_SPEC,
        *SPARK_PROFILE_PROBLEMS,
        CHILD_REJECTED,
        POD_FAILED,
        FAILED_SCHEDULING,
        HOME_NOT_RESTORED,
        *VOLUME_PROBLEMS,
        *CONTAINER_PROBLEMS,
    }
)

OWNED_FIELDS = ("phase", "url", "observedGeneration", "pendingRestart", "spark")


@dataclass(frozen=True)
class Observed:
    """What exists in the cluster for one workspace."""

    pod: Mapping[str, Any] | None = None
    claim: Mapping[str, Any] | None = None
    # Recent events whose involvedObject is the pod or the claim.
    events: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    # The pod's rspark.dev/pod-spec-hash equals the desired pod's.
    pod_spec_current: bool = True
    # Why the spec cannot be built (see validation.parse_workspace), if it cannot.
    invalid_spec: str | None = None
    # The Ready reason for it: InvalidSpec, or why its SparkProfile refuses it.
    invalid_reason: str = INVALID_SPEC
    # Which child the API server refused, and why (nothing of the change was applied).
    rejected: str | None = None


class Verdict(NamedTuple):
    phase: Phase
    reason: str
    message: str


def compute_status(
    *,
    generation: int,
    suspended: bool,
    url: str | None,
    previous: Mapping[str, Any] | None,
    observed: Observed,
    now: datetime,
) -> dict[str, Any]:
    """The operator-owned part of the status (see the module docstring)."""
    previous_conditions = list((previous or {}).get("conditions") or [])
    verdict = assess(suspended, observed, previous_conditions)
    ready = condition(
        READY,
        "True" if verdict.reason == POD_READY else "False",
        verdict.reason,
        verdict.message,
        observed_generation=generation,
        now=now,
        previous=previous_conditions,
    )
    status: dict[str, Any] = {
        "phase": verdict.phase,
        "observedGeneration": generation,
        "pendingRestart": observed.pod is not None and not observed.pod_spec_current,
        "conditions": [ready],
    }
    if url is not None:
        status["url"] = url
    return status


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` changes any field the operator owns."""
    old = old or {}
    return any(old.get(key) != new.get(key) for key in OWNED_FIELDS) or find(
        old.get("conditions") or [], READY
    ) != find(new.get("conditions") or [], READY)


class Transition(NamedTuple):
    reason: str
    message: str
    warning: bool


def ready_transition(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Transition | None:
    """The Ready condition's new verdict, when its reason (or a problem's message) changed:
    what a Kubernetes event should tell. Progress within one reason is not an event, nor
    is the first verdict of a new workspace unless it is a problem (the action that
    created the pod is already an event)."""
    before = find((old or {}).get("conditions") or [], READY)
    after = find(new.get("conditions") or [], READY) or {}
    reason, message = str(after.get("reason", "")), str(after.get("message", ""))
    problem = reason in PROBLEMS
    if before is None:
        return Transition(reason, message, problem) if problem else None
    if before.get("reason") == reason and (not problem or before.get("message") == message):
        return None
    return Transition(reason, message, problem)


def assess(
    suspended: bool, observed: Observed, previous_conditions: list[dict[str, Any]]
) -> Verdict:
    """Phase and Ready reason, the most specific explanation first."""
    if observed.invalid_spec is not None:
        return Verdict("Failed", observed.invalid_reason, observed.invalid_spec)
    verdict = _assess_pod(suspended, observed, previous_conditions)
    if observed.rejected is not None:
        # The workspace runs (or rests) as it was before the refused change.
        phase: Phase = verdict.phase if verdict.phase in ("Running", "Suspended") else "Failed"
        return Verdict(phase, CHILD_REJECTED, observed.rejected)
    return verdict


def _assess_pod(
    suspended: bool, observed: Observed, previous_conditions: list[dict[str, Any]]
) -> Verdict:
    pod = observed.pod
    if pod is None or pod.get("metadata", {}).get("deletionTimestamp"):
        return _without_pod(suspended, pod is not None)
    pod_status = pod.get("status") or {}
    if pod_status.get("phase") == "Failed":
        why = ": ".join(filter(None, (pod_status.get("reason"), pod_status.get("message"))))
        return Verdict("Failed", POD_FAILED, why or "the pod failed; it will be replaced")
    if _pod_condition(pod, "Ready").get("status") == "True":
        return Verdict("Running", POD_READY, "RStudio is ready")
    events = _warnings(observed)
    if PROVISIONING_FAILED in events:
        # The root cause of the unbound claim the scheduler would complain about.
        return Verdict("Pending", PROVISIONING_FAILED, events[PROVISIONING_FAILED])
    if not (pod.get("spec") or {}).get("nodeName"):
        scheduled = _pod_condition(pod, "PodScheduled")
        if scheduled.get("status") == "False" or FAILED_SCHEDULING in events:
            # The scheduler rewrites its condition at each attempt; its events are
            # aggregated and rate-limited, so they can lag behind it.
            message = scheduled.get("message") or events.get(FAILED_SCHEDULING, "")
            return Verdict("Pending", FAILED_SCHEDULING, message)
    for status in _container_statuses(pod_status):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in CONTAINER_PROBLEMS:
            message = f"container {status.get('name')}: {waiting.get('message', '')}".strip()
            return Verdict("Pending", waiting["reason"], message)
    restored = find(previous_conditions, HOME_RESTORED)
    if restored and restored.get("status") == "False":
        if restored.get("reason") == RESTORING:
            return Verdict("Restoring", RESTORING, restored.get("message", ""))
        return Verdict(
            "Pending", HOME_NOT_RESTORED, f"{restored.get('reason')}: {restored.get('message')}"
        )
    volume_problem = min(VOLUME_PROBLEMS & events.keys(), default=None)
    if volume_problem is not None:
        return Verdict("Pending", volume_problem, events[volume_problem])
    not_ready = _pod_condition(pod, "Ready").get("message")
    return Verdict("Pending", POD_NOT_READY, not_ready or "waiting for RStudio to become ready")


def _without_pod(suspended: bool, terminating: bool) -> Verdict:
    if suspended and terminating:
        return Verdict("Pending", SUSPENDING, "RStudio is shutting down after a last snapshot")
    if suspended:
        return Verdict("Suspended", SUSPENDED, "compute is stopped; the home is kept")
    if terminating:
        return Verdict("Pending", POD_REPLACING, "the new pod starts once the old one is gone")
    return Verdict("Pending", POD_MISSING, "the pod is being created")


def _pod_condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return find((pod.get("status") or {}).get("conditions") or [], type_) or {}


def _container_statuses(pod_status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        *(pod_status.get("initContainerStatuses") or []),
        *(pod_status.get("containerStatuses") or []),
    ]


def _warnings(observed: Observed) -> dict[str, str]:
    """The latest message of each Warning reason about the current pod or claim."""
    current = {
        (thing.get("metadata") or {}).get("uid")
        for thing in (observed.pod, observed.claim)
        if thing
    }
    relevant = [
        event
        for event in observed.events
        if event.get("type") == "Warning"
        and (event.get("involvedObject") or {}).get("uid") in current
    ]
    return {
        event.get("reason", ""): event.get("message", "")
        for event in sorted(relevant, key=_event_time)
    }


def _event_time(event: Mapping[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


# Ready reasons decided at or after the look at the agent's HomeRestored (see `assess`).
_REASONS_THE_AGENT_CAN_CHANGE = frozenset(
    {RESTORING, HOME_NOT_RESTORED, POD_NOT_READY, *VOLUME_PROBLEMS}
)


def restore_report_unseen(status: Mapping[str, Any]) -> bool:
    """The agent changed HomeRestored and the Ready condition does not show it yet.

    The agent writes only its own conditions; this tells the operator, from the
    workspace alone, that a status-only reconcile would change the phase.
    """
    conditions = list(status.get("conditions") or [])
    restored, ready = find(conditions, HOME_RESTORED), find(conditions, READY)
    if restored is None or ready is None:
        return False
    shown = str(ready.get("reason"))
    if shown not in _REASONS_THE_AGENT_CAN_CHANGE:
        return False
    if restored.get("status") == "False":
        return shown != (RESTORING if restored.get("reason") == RESTORING else HOME_NOT_RESTORED)
    return shown in (RESTORING, HOME_NOT_RESTORED)
