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
from enum import StrEnum
from typing import Any, NamedTuple

from rspark_operator.api import Phase
from rspark_operator.conditions import HOME_RESTORED, READY, condition, find


class Reason(StrEnum):
    """Reasons of the Ready condition that the operator decides (container problems
    are the kubelet's own reasons, quoted as they are)."""

    POD_READY = "PodReady"
    POD_NOT_READY = "PodNotReady"
    POD_MISSING = "PodMissing"
    POD_REPLACING = "PodReplacing"
    POD_FAILED = "PodFailed"
    SUSPENDED = "Suspended"
    SUSPENDING = "Suspending"
    INVALID_SPEC = "InvalidSpec"
    # The API server refused a child as the spec makes it (validation, admission, quota).
    CHILD_REJECTED = "ChildRejected"
    # The operator's identity may not create or change a child: an administrator's problem.
    OPERATOR_FORBIDDEN = "OperatorForbidden"
    RESTORING = "Restoring"  # also the agent's HomeRestored reason while it restores
    HOME_NOT_RESTORED = "HomeNotRestored"
    FAILED_SCHEDULING = "FailedScheduling"
    FAILED_MOUNT = "FailedMount"
    FAILED_ATTACH_VOLUME = "FailedAttachVolume"
    PROVISIONING_FAILED = "ProvisioningFailed"

    @classmethod
    def of(cls, status: Mapping[str, Any] | None) -> Reason | None:
        """The operator's reason on the Ready condition of `status`, if it shows one."""
        ready = find(list((status or {}).get("conditions") or []), READY) or {}
        try:
            return cls(str(ready.get("reason")))
        except ValueError:
            return None


# Ready reasons that say a child was refused: the next reconcile tries it again.
REFUSED = frozenset({Reason.CHILD_REJECTED, Reason.OPERATOR_FORBIDDEN})
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
VOLUME_PROBLEMS = frozenset(
    {Reason.FAILED_MOUNT, Reason.FAILED_ATTACH_VOLUME, Reason.PROVISIONING_FAILED}
)
# The Warning event reasons the status reads (see `_assess_pod`).
STATUS_WARNINGS = frozenset({Reason.FAILED_SCHEDULING, *VOLUME_PROBLEMS})
# Ready reasons that need someone's attention: their transitions are Warning events.
PROBLEMS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.CHILD_REJECTED,
        Reason.OPERATOR_FORBIDDEN,
        Reason.POD_FAILED,
        Reason.FAILED_SCHEDULING,
        Reason.HOME_NOT_RESTORED,
        *VOLUME_PROBLEMS,
        *CONTAINER_PROBLEMS,
    }
)

OWNED_FIELDS = ("phase", "url", "observedGeneration", "pendingRestart")


@dataclass(frozen=True)
class Refusal:
    """A child the API server refused: `forbidden` when the operator may not (RBAC)."""

    child: str  # Kind/name
    message: str
    forbidden: bool = False


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
    # The children the API server refused (a new workspace: nothing was created).
    refusals: Sequence[Refusal] = ()


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
        "True" if verdict.reason == Reason.POD_READY else "False",
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
        return Verdict("Failed", Reason.INVALID_SPEC, observed.invalid_spec)
    verdict = _assess_pod(suspended, observed, previous_conditions)
    if observed.refusals:
        # The workspace runs (or rests) as it was before the refused change.
        phase: Phase = verdict.phase if verdict.phase in ("Running", "Suspended") else "Failed"
        forbidden = [refusal for refusal in observed.refusals if refusal.forbidden]
        reason = Reason.OPERATOR_FORBIDDEN if forbidden else Reason.CHILD_REJECTED
        message = "; ".join(refusal.message for refusal in forbidden or observed.refusals)
        return Verdict(phase, reason, message)
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
        return Verdict("Failed", Reason.POD_FAILED, why or "the pod failed; it will be replaced")
    if _pod_condition(pod, "Ready").get("status") == "True":
        return Verdict("Running", Reason.POD_READY, "the IDE is ready")
    events = _warnings(observed)
    if Reason.PROVISIONING_FAILED in events:
        # The root cause of the unbound claim the scheduler would complain about.
        return Verdict("Pending", Reason.PROVISIONING_FAILED, events[Reason.PROVISIONING_FAILED])
    if not (pod.get("spec") or {}).get("nodeName"):
        scheduled = _pod_condition(pod, "PodScheduled")
        if scheduled.get("status") == "False" or Reason.FAILED_SCHEDULING in events:
            # The scheduler rewrites its condition at each attempt; its events are
            # aggregated and rate-limited, so they can lag behind it.
            message = scheduled.get("message") or events.get(Reason.FAILED_SCHEDULING, "")
            return Verdict("Pending", Reason.FAILED_SCHEDULING, message)
    for status in _container_statuses(pod_status):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in CONTAINER_PROBLEMS:
            message = f"container {status.get('name')}: {waiting.get('message', '')}".strip()
            return Verdict("Pending", waiting["reason"], message)
    restored = find(previous_conditions, HOME_RESTORED)
    if restored and restored.get("status") == "False":
        if restored.get("reason") == Reason.RESTORING:
            return Verdict("Restoring", Reason.RESTORING, restored.get("message", ""))
        return Verdict(
            "Pending",
            Reason.HOME_NOT_RESTORED,
            f"{restored.get('reason')}: {restored.get('message')}",
        )
    volume_problem = min(VOLUME_PROBLEMS & events.keys(), default=None)
    if volume_problem is not None:
        return Verdict("Pending", volume_problem, events[volume_problem])
    not_ready = _pod_condition(pod, "Ready").get("message")
    return Verdict(
        "Pending", Reason.POD_NOT_READY, not_ready or "waiting for the IDE to become ready"
    )


def _without_pod(suspended: bool, terminating: bool) -> Verdict:
    if suspended and terminating:
        return Verdict(
            "Pending", Reason.SUSPENDING, "the IDE is shutting down before a last snapshot"
        )
    if suspended:
        return Verdict("Suspended", Reason.SUSPENDED, "compute is stopped; the home is kept")
    if terminating:
        return Verdict(
            "Pending", Reason.POD_REPLACING, "the new pod starts once the old one is gone"
        )
    return Verdict("Pending", Reason.POD_MISSING, "the pod is being created")


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
    {Reason.RESTORING, Reason.HOME_NOT_RESTORED, Reason.POD_NOT_READY, *VOLUME_PROBLEMS}
)


def restore_report_unseen(status: Mapping[str, Any]) -> bool:
    """The agent changed HomeRestored and the Ready condition does not show it yet.

    The agent writes only its own conditions; this tells the operator, from the
    workspace alone, that a status-only reconcile would change the phase.
    """
    restored = find(list(status.get("conditions") or []), HOME_RESTORED)
    shown = Reason.of(status)
    if restored is None or shown not in _REASONS_THE_AGENT_CAN_CHANGE:
        return False
    if restored.get("status") == "False":
        return shown != (
            Reason.RESTORING
            if restored.get("reason") == Reason.RESTORING
            else Reason.HOME_NOT_RESTORED
        )
    return shown in (Reason.RESTORING, Reason.HOME_NOT_RESTORED)
