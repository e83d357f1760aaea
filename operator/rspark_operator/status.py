"""The workspace status, computed from what exists; a pure function.

The operator owns phase, url, observedGeneration, pendingRestart and the Ready
and NamespaceShared conditions. The snapshot agent owns HomeRestored, SnapshotHealthy and
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
from rspark_operator.conditions import (
    HOME_RESTORED,
    IDLE,
    NAMESPACE_SHARED,
    READY,
    Advice,
    condition,
    find,
    timestamp,
)
from rspark_operator.tenancy import Tenancy, tenancy_condition


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
    IDLE = "Idle"
    IDLE_STOPPING = "IdleStopping"
    INVALID_SPEC = "InvalidSpec"
    # The API server refused a child as the spec makes it (validation, admission, quota).
    CHILD_REJECTED = "ChildRejected"
    # The operator's identity may not create or change a child: an administrator's problem.
    OPERATOR_FORBIDDEN = "OperatorForbidden"
    # A workspace its SparkProfile refuses (profiles.ProfileRefusal).
    SPARK_LIMIT_EXCEEDED = "SparkLimitExceeded"
    SPARK_PROFILE_NOT_ALLOWED = "SparkProfileNotAllowed"
    SPARK_PROFILE_NOT_FOUND = "SparkProfileNotFound"
    SPARK_PROFILE_INVALID = "SparkProfileInvalid"
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
SPARK_PROFILE_PROBLEMS = frozenset(
    {
        Reason.SPARK_LIMIT_EXCEEDED,
        Reason.SPARK_PROFILE_NOT_ALLOWED,
        Reason.SPARK_PROFILE_NOT_FOUND,
        Reason.SPARK_PROFILE_INVALID,
    }
)
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
        *SPARK_PROFILE_PROBLEMS,
        Reason.CHILD_REJECTED,
        Reason.OPERATOR_FORBIDDEN,
        Reason.POD_FAILED,
        Reason.FAILED_SCHEDULING,
        Reason.HOME_NOT_RESTORED,
        *VOLUME_PROBLEMS,
        *CONTAINER_PROBLEMS,
    }
)

# What each Ready reason means and what to do (docs/reference/troubleshooting.md).
_LOGS = "`kubectl logs NAME -c ide` (or `-c snapshot-agent`; `--previous` after a restart)"
ADVICE: dict[str, Advice] = {
    Reason.POD_READY: Advice("The IDE answers; `status.url` is where to open it."),
    Reason.POD_NOT_READY: Advice(
        "The pod runs but the IDE does not answer its readiness probe yet.",
        f"Wait a minute after a start; if it lasts, read {_LOGS}.",
    ),
    Reason.POD_MISSING: Advice(
        "The operator is creating the pod.",
        "Wait a few seconds.",
        "If it lasts, check that the operator runs: "
        "`kubectl -n rspark-system logs deploy/rspark-operator`.",
    ),
    Reason.POD_REPLACING: Advice(
        "The old pod is still shutting down (a spec change, a failure or a lost node); the "
        "new one starts once it is gone.",
        "Wait: shutting down takes at most `RSPARK_TERMINATION_GRACE_SECONDS`.",
        "A pod on a dead node stays Terminating: the operator force-deletes it after "
        "`RSPARK_NODE_LOST_FORCE_DELETE_SECONDS` (0: never; then delete the Node).",
    ),
    Reason.POD_FAILED: Advice(
        "The pod ended (evicted, out of memory, node shut down); the operator replaces it.",
        "If the message says OOMKilled, raise `spec.resources.limits.memory`.",
        "Eviction messages name node pressure: look at the node's conditions.",
    ),
    Reason.SUSPENDED: Advice(
        "`spec.suspended` is true: no pod runs; the home, URL and snapshots are kept.",
        "Set `spec.suspended: false` to resume.",
    ),
    Reason.SUSPENDING: Advice(
        "The IDE is shutting down (RStudio suspends its R sessions) before a last snapshot.",
        "Wait; the phase becomes Suspended.",
    ),
    Reason.IDLE: Advice(
        "Nobody used the workspace for `spec.idle.stopAfter`: no pod runs; the home (on its "
        "volume, or only in object storage with `spec.idle.releaseVolume`), URL and "
        "snapshots are kept.",
        "Wake it: `kubectl annotate rsw NAME rspark.dev/restart-requested-at=$(date -u "
        '+%FT%TZ) --overwrite`; or set `spec.idle.stopAfter: "0"` to never stop it.',
    ),
    Reason.IDLE_STOPPING: Advice(
        "The workspace was idle for `spec.idle.stopAfter`: the IDE saves its sessions and "
        "stops, then the agent takes a last snapshot.",
        "Wait; the phase becomes Idle. A restart request wakes it afterwards.",
    ),
    Reason.INVALID_SPEC: Advice(
        "The spec cannot be built; the message names each field. Nothing was created or changed.",
        "Fix the fields the message names (`kubectl explain rsw.spec` describes each).",
        "A message about the snapshot repository or the ingress domain means an operator "
        "setting is missing or disagrees: `RSPARK_SNAPSHOT_REPOSITORY_BASE`, "
        "`RSPARK_INGRESS_DOMAIN`.",
    ),
    Reason.SPARK_LIMIT_EXCEEDED: Advice(
        "A Spark value of the spec is beyond what its SparkProfile allows; the message names "
        "the value, the limit and the profile. Nothing of the change was applied.",
        "Lower the value, or choose a larger profile (`kubectl get sparkprofiles`).",
        "Raise the profile's maximum if the request is fair.",
    ),
    Reason.SPARK_PROFILE_NOT_ALLOWED: Advice(
        "The SparkProfile named in `spec.spark.profile` is not offered to this namespace.",
        "Choose a profile your namespace may use (`kubectl get sparkprofiles` shows who may).",
        "Add the namespace to the profile's `namespaces` or label it for its selector.",
    ),
    Reason.SPARK_PROFILE_NOT_FOUND: Advice(
        "No SparkProfile has the name in `spec.spark.profile`.",
        "Fix the name (`kubectl get sparkprofiles`), or remove it to use the default.",
        "Create the profile, or fix `RSPARK_DEFAULT_SPARK_PROFILE`.",
    ),
    Reason.SPARK_PROFILE_INVALID: Advice(
        "The workspace's SparkProfile itself is broken (the message names its problems).",
        "Choose another profile meanwhile.",
        "Fix the profile; the workspaces that use it are re-rendered at once.",
    ),
    Reason.CHILD_REJECTED: Advice(
        "The API server refused part of a change (Pod Security, a quota, an admission "
        "webhook, a volume that cannot grow). A new workspace was not created at all; an "
        "existing one runs as before. The operator tries again at each resync and edit.",
        "Undo the change, or ask the administrator about the refusal the message quotes.",
        "Fix the cause (namespace Pod Security level `baseline`, ResourceQuota, a "
        "StorageClass with `allowVolumeExpansion`); no restart of the operator is needed.",
    ),
    Reason.OPERATOR_FORBIDDEN: Advice(
        "The operator's own identity may not create or change a child (the message names "
        "the verb, the resource and the namespace): not a problem with the spec.",
        "Nothing in the spec fixes it: tell the administrator what the message says.",
        "Grant the operator's ServiceAccount that permission (the ClusterRole in "
        "manifests/base or the chart); the operator tries again at each resync and edit.",
    ),
    Reason.RESTORING: Advice(
        "The snapshot agent restores the home before the IDE starts.",
        "Wait: a large home takes a while; `HomeRestored`'s message names the snapshot.",
    ),
    Reason.HOME_NOT_RESTORED: Advice(
        "The snapshot agent could not restore the home; the IDE waits for it.",
        "The message starts with the `HomeRestored` reason: follow that reason's advice.",
        "Follow the advice of the `HomeRestored` reason the message starts with.",
    ),
    Reason.FAILED_SCHEDULING: Advice(
        "No node can take the pod (resources, taints, affinity, or its volume's zone); "
        "the scheduler's words follow.",
        "Lower `spec.resources.requests` if the message says Insufficient cpu or memory.",
        "Add capacity, or check quotas, taints and the home volume's node affinity.",
    ),
    Reason.PROVISIONING_FAILED: Advice(
        "The storage provisioner cannot create the home volume.",
        "Check `spec.home.storageClassName` and `spec.home.size`.",
        "Check the StorageClass (`RSPARK_STORAGE_CLASS` or the cluster default) and its "
        "provisioner's logs.",
    ),
    Reason.FAILED_ATTACH_VOLUME: Advice(
        "The home volume cannot be attached to the node (often still attached to a node "
        "that died: a ReadWriteOnce volume is on one node at a time).",
        admin="Check the VolumeAttachment objects and the CSI driver; a dead node's "
        "attachment is released once the Node is deleted or tainted out-of-service.",
    ),
    Reason.FAILED_MOUNT: Advice(
        "The kubelet cannot mount a volume of the pod (the home, or a Secret or ConfigMap).",
        admin="Read the message: a missing Secret, or the CSI driver's error on that node.",
    ),
    "ErrImagePull": Advice(
        "An image cannot be pulled: a wrong name or tag, or a private registry without a "
        "pull secret.",
        "Check `spec.image` if you set it.",
        "Check `RSPARK_WORKSPACE_IMAGE` and `RSPARK_AGENT_IMAGE` and the registry's access.",
    ),
    "ImagePullBackOff": Advice(
        "An image pull failed and the kubelet waits before trying again.",
        "As for ErrImagePull.",
        "As for ErrImagePull.",
    ),
    "InvalidImageName": Advice(
        "An image reference is not valid.",
        "Fix `spec.image`.",
        "Fix `RSPARK_WORKSPACE_IMAGE` or `RSPARK_AGENT_IMAGE`.",
    ),
    "CrashLoopBackOff": Advice(
        "A container keeps exiting and the kubelet waits before restarting it.",
        f"Read {_LOGS}.",
        "A crashing snapshot-agent prints its configuration error first in its log.",
    ),
    "CreateContainerConfigError": Advice(
        "A container refers to a Secret or ConfigMap key that does not exist.",
        "Check `spec.env[].valueFrom` and `spec.snapshot.credentialsSecret`.",
        "Create the S3 credentials Secret (`RSPARK_SNAPSHOT_CREDENTIALS_SECRET`, with "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in the workspace's namespace.",
    ),
    "CreateContainerError": Advice(
        "The container runtime could not create a container; its words follow.",
        admin="Read the message and the node's container runtime log.",
    ),
}

OWNED_FIELDS = ("phase", "url", "observedGeneration", "pendingRestart", "spark")
OWNED_CONDITIONS = (READY, NAMESPACE_SHARED)


@dataclass(frozen=True)
class Refusal:
    """A child the API server refused: `forbidden` when the operator may not (RBAC)."""

    child: str  # Kind/name
    message: str
    forbidden: bool = False


@dataclass(frozen=True)
class Stopped:
    """The workspace is stopped for idleness (lifecycle.idleness)."""

    since: datetime
    # The home volume was released: the home lives only in object storage.
    released: bool = False


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
    # The Ready reason for it: InvalidSpec, or why its SparkProfile refuses it.
    invalid_reason: Reason = Reason.INVALID_SPEC
    # Stopped for idleness, and since when.
    idle: Stopped | None = None
    # Who else has workspaces in the namespace (None: not looked at, an invalid spec).
    tenancy: Tenancy | None = None


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
    conditions = [ready]
    if observed.tenancy is not None:
        conditions.append(
            tenancy_condition(
                observed.tenancy,
                observed_generation=generation,
                now=now,
                previous=previous_conditions,
            )
        )
    status: dict[str, Any] = {
        "phase": verdict.phase,
        "observedGeneration": generation,
        "pendingRestart": observed.pod is not None and not observed.pod_spec_current,
        "conditions": conditions,
    }
    if url is not None:
        status["url"] = url
    return status


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` changes any field the operator owns."""
    old = old or {}
    return any(old.get(key) != new.get(key) for key in OWNED_FIELDS) or any(
        find(old.get("conditions") or [], type_) != find(new.get("conditions") or [], type_)
        for type_ in OWNED_CONDITIONS
    )


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
    if observed.refusals:
        # The workspace runs (or rests) as it was before the refused change.
        phase: Phase = (
            verdict.phase if verdict.phase in ("Running", "Suspended", "Idle") else "Failed"
        )
        forbidden = [refusal for refusal in observed.refusals if refusal.forbidden]
        reason = Reason.OPERATOR_FORBIDDEN if forbidden else Reason.CHILD_REJECTED
        # Each message once: two children refused for the same reason say it once.
        message = "; ".join(dict.fromkeys(r.message for r in forbidden or observed.refusals))
        return Verdict(phase, reason, message)
    return verdict


def _assess_pod(
    suspended: bool, observed: Observed, previous_conditions: list[dict[str, Any]]
) -> Verdict:
    pod = observed.pod
    if pod is None or pod.get("metadata", {}).get("deletionTimestamp"):
        if observed.idle is not None and not suspended:
            return _stopped_idle(observed.idle, pod is not None)
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


def _stopped_idle(idle: Stopped, terminating: bool) -> Verdict:
    since = timestamp(idle.since)
    if terminating:
        return Verdict(
            "Idle",
            Reason.IDLE_STOPPING,
            f"no activity since {since}: the IDE is shutting down before a last snapshot",
        )
    where = (
        "the home is in object storage only (its volume was released)"
        if idle.released
        else "the home is kept on its volume"
    )
    return Verdict("Idle", Reason.IDLE, f"no activity since {since}; {where}")


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


def idle_report_unseen(status: Mapping[str, Any]) -> bool:
    """The agent reports the workspace idle and the operator has not stopped it: a status
    refresh computes when it stops (and schedules it). Once stopped, nothing to see."""
    idle = find(list(status.get("conditions") or []), IDLE)
    return (
        idle is not None
        and idle.get("status") == "True"
        and Reason.of(status) not in (Reason.IDLE, Reason.IDLE_STOPPING)
    )


def final_snapshot_unseen(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """A workspace stopped for idleness that releases its volume has a final snapshot
    report: a status refresh may release the volume now."""
    return (
        bool((spec.get("idle") or {}).get("releaseVolume"))
        and Reason.of(status) == Reason.IDLE
        and bool((status.get("lastSnapshot") or {}).get("finalAt"))
    )
