"""The plan of a reconcile: what to dry-run, what to apply, what to do with the pod.

Pure decisions from what was observed; `reconcile.py` observes and carries them
out. Every rule about dry runs and refusals is here:

- a change of the spec (or a spec refused before) is first a dry run of every child
  and of the pod;
- a new workspace is created whole or not at all: if the API server would refuse any
  part of it, nothing is applied;
- an existing workspace takes the accepted part of a change and keeps the refused
  children as they are;
- no pod that the API server refuses is created, and a running pod is not replaced
  by one: it keeps running as it was.

A pod that differs from the desired one because its user changed the spec is
replaced at once. One that differs for the operator's own reasons (a new image
setting, an operator upgrade) is held (`HOLD`: status.pendingRestart) until its
user restarts it (suspend and resume, or the restart annotation) or the rollout
admits it (`RSPARK_ROLLOUT_MAX_PODS` at once, see `rollout.py`).

There is one pod name per workspace, so there is never a second pod: a new pod is
created only once the old one is gone. A pod on a lost node stays Terminating
forever (no kubelet confirms it stopped); past its deadline the operator
force-deletes it so the workspace can start elsewhere.

A pod on a cordoned node (being drained) is released from its PodDisruptionBudget
(`RELEASE`: a label, see `builders/disruption.py`) so that the drain evicts it
gracefully (the agent takes the last snapshot); the next pod then starts on another
node. A released pod whose node is uncordoned is protected again (`PROTECT`).

A home volume can be node-local (a local volume: its PV's node affinity names one
node). When that node is lost, so is the volume, and the pod can run nowhere else:
`volume_lost` decides when the operator gives the volume up (deletes the pod and the
claim, then makes a new claim; the agent restores the home from its last snapshot
before the IDE starts). It never does while the volume could hold newer work than the
last snapshot, unless the node is taken as gone:

- the Node object is deleted: the machine is gone (what a cloud's node controller or
  an administrator does);
- the node has been NotReady for `RSPARK_VOLUME_LOST_AFTER_SECONDS` (0: never): the
  administrator's bound on how long a node may be down and still come back; work
  written after the last snapshot is lost, even if the node returns;
- the node is cordoned (being drained or retired) and the last snapshot is the final
  one of the pod that stopped there (`lastSnapshot.finalAt`): nothing on the volume is
  newer, so nothing is lost.

It is looked at only while no pod runs on the volume (no pod, or one that no node can
take). The next pod waits until the old claim is gone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from rspark_operator import names
from rspark_operator.conditions import IDLE, SNAPSHOT_HEALTHY, find, parse_timestamp, timestamp
from rspark_operator.idle import idle_since, stop_due
from rspark_operator.status import Reason

# Reasons of the events that tell what was done to the pod (PodFailed, PodReplacing and
# IdleStopping are Ready reasons too: `status.Reason`).
POD_CREATED = "PodCreated"
POD_STOPPING = "PodStopping"
POD_RESTARTING = "PodRestarting"
VOLUME_RELEASED = "VolumeReleased"
WOKEN = "Woken"
# The events of idle workspaces (counted by the operator's metrics).
IDLE_EVENTS = frozenset({Reason.IDLE_STOPPING, VOLUME_RELEASED, WOKEN})
PENDING_RESTART = "PendingRestart"
NODE_LOST = "NodeLost"
NODE_DRAINED = "NodeDrained"
NODE_UNCORDONED = "NodeUncordoned"
VOLUME_LOST = "VolumeLost"
# The node affinity of a node-local volume names its node by this label.
HOSTNAME_LABEL = "kubernetes.io/hostname"


class PodAction(Enum):
    NONE = "none"  # the pod is as it should be (or none, suspended)
    CREATE = "create"  # no pod: create the desired one
    REPLACE = "replace"  # its spec is not the desired one: delete it, create the next once gone
    DELETE = "delete"  # suspended, or it ended: delete it
    WAIT = "wait"  # it is terminating: the next one starts once it is gone
    FORCE_DELETE = "force-delete"  # terminating on a lost node past its deadline
    HOLD = "hold"  # differs for the operator's reasons: kept until a restart or the rollout
    RELEASE = "release"  # its node is cordoned: out of its disruption budget, for the drain
    PROTECT = "protect"  # released, and its node is uncordoned: back in its budget


# Actions that put a new pod in place of what exists.
NEW_POD = frozenset({PodAction.CREATE, PodAction.REPLACE})


@dataclass(frozen=True)
class PodPlan:
    action: PodAction
    # The Kubernetes event that tells what was done (none for NONE and WAIT).
    reason: str = ""
    message: str = ""
    warning: bool = False


NOTHING = PodPlan(PodAction.NONE)
WAIT = PodPlan(PodAction.WAIT)


def decide_pod(
    *,
    suspended: bool,
    pod: Mapping[str, Any] | None,
    desired: Mapping[str, Any],
    node: Mapping[str, Any] | None,
    now: datetime,
    force_delete_after: float,
    user_edit: bool,
    restart_requested: bool,
    node_cordoned: bool,
    idle: Idleness | None = None,
) -> PodPlan:
    """`node` is the pod's node when `waiting_on_lost_node` holds (None: the node is gone);
    `user_edit`: the spec changed since the last reconcile (or was refused then), so a
    different pod is the user's doing; `restart_requested`: see `restart_requested`;
    `node_cordoned`: the pod's node is cordoned (spec.unschedulable), being drained;
    `idle`: see `idleness`."""
    stop = idle is not None and idle.stopped(now)
    if pod is None:
        if suspended or stop:
            return NOTHING
        return PodPlan(PodAction.CREATE, POD_CREATED, f"created pod {desired_name(desired)}")
    if terminating(pod):
        if waiting_on_lost_node(pod, now, force_delete_after) and not node_ready(node):
            return PodPlan(
                PodAction.FORCE_DELETE,
                NODE_LOST,
                f"node {node_name(pod)} is not ready and the pod outlived its grace period: "
                "force-deleting it so the workspace starts elsewhere",
                warning=True,
            )
        return WAIT
    if suspended:
        return PodPlan(
            PodAction.DELETE, POD_STOPPING, "suspended: stopping the pod, keeping the home"
        )
    if stop:
        assert idle is not None and idle.since is not None
        return PodPlan(
            PodAction.DELETE,
            Reason.IDLE_STOPPING,
            f"no activity since {timestamp(idle.since)}: stopping the pod after a last "
            "snapshot (a restart request wakes it)",
        )
    if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        return PodPlan(
            PodAction.DELETE, Reason.POD_FAILED, "the pod ended; replacing it", warning=True
        )
    if restart_requested:
        return PodPlan(PodAction.REPLACE, POD_RESTARTING, "restart requested; replacing the pod")
    if not spec_current(pod, desired) and user_edit:
        return PodPlan(
            PodAction.REPLACE, Reason.POD_REPLACING, "the pod spec changed; replacing the pod"
        )
    released = names.DRAIN_LABEL in (pod["metadata"].get("labels") or {})
    if node_cordoned and not released:
        return PodPlan(
            PodAction.RELEASE,
            NODE_DRAINED,
            f"node {node_name(pod)} is cordoned (being drained): the pod may be evicted now; "
            "it takes its last snapshot as it stops (status.lastSnapshot) and the workspace "
            "starts again on another node",
        )
    if released and not node_cordoned:
        return PodPlan(
            PodAction.PROTECT,
            NODE_UNCORDONED,
            f"node {node_name(pod)} is uncordoned: the pod is protected from evictions again",
        )
    return NOTHING if spec_current(pod, desired) else PodPlan(PodAction.HOLD)


@dataclass(frozen=True)
class Idleness:
    """The agent's idle verdict as the operator reads it: idle since when (None: active),
    and when that stops the pod (None: never)."""

    since: datetime | None
    due: datetime | None

    def stopped(self, now: datetime) -> bool:
        return self.due is not None and now >= self.due


def idleness(
    status: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    workspace_annotations: Mapping[str, str],
    stop_after: timedelta,
) -> Idleness:
    """From the agent's Idle condition; a pod's start and a restart request count as
    activity (a new pod is never stopped for what its predecessor's agent saw, and a
    restart request wakes a stopped workspace)."""
    condition = find(list(status.get("conditions") or []), IDLE)
    started = _time((pod or {}).get("metadata", {}).get("creationTimestamp"))
    woken = _time(workspace_annotations.get(names.RESTART_ANNOTATION))
    since = idle_since(condition, started, woken)
    return Idleness(since, stop_due(since, stop_after))


def _time(text: str | None) -> datetime | None:
    try:
        return parse_timestamp(text) if text else None
    except ValueError:
        return None


def volume_releasable(status: Mapping[str, Any], idle: Idleness) -> bool:
    """The home is in object storage as the stopped IDE left it: the agent's last snapshot
    of the stopped pod (taken after the IDE exited, `lastSnapshot.finalAt`) succeeded after
    the stop was decided."""
    final = _time((status.get("lastSnapshot") or {}).get("finalAt"))
    healthy = find(list(status.get("conditions") or []), SNAPSHOT_HEALTHY) or {}
    return (
        idle.due is not None
        and final is not None
        and final >= idle.due
        and healthy.get("status") == "True"
    )


def roll_out(pod: Mapping[str, Any], desired: Mapping[str, Any]) -> PodPlan:
    """A held pod whose turn came in the rollout."""
    return PodPlan(PodAction.REPLACE, Reason.POD_REPLACING, f"rolling out {changes(pod, desired)}")


def changes(pod: Mapping[str, Any], desired: Mapping[str, Any]) -> str:
    """What differs between the running pod and the desired one, in a few words."""

    def images(manifest: Mapping[str, Any]) -> dict[str, str]:
        spec = manifest.get("spec") or {}
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        return {c["name"]: c.get("image", "") for c in containers}

    before, after = images(pod), images(desired)
    changed = [f"{name} image {before.get(name)} -> {image}"
               for name, image in after.items() if before.get(name) != image]  # fmt: skip
    return "; ".join(changed) or "the operator's pod template (its settings or version)"


def restart_requested(
    workspace_annotations: Mapping[str, str], pod: Mapping[str, Any] | None
) -> bool:
    """The workspace's restart annotation is newer than the pod."""
    requested = workspace_annotations.get(names.RESTART_ANNOTATION)
    created = (pod or {}).get("metadata", {}).get("creationTimestamp")
    if not requested or not created:
        return False
    try:
        return parse_timestamp(requested) > parse_timestamp(created)
    except ValueError:
        return False


def needs_dry_run(*, spec_changed: bool, refused_before: bool) -> bool:
    """A change not seen yet, or one the API server refused last time, is tried dry first."""
    return spec_changed or refused_before


def dry_run_pod(
    *, suspended: bool, pod: Mapping[str, Any] | None, desired: Mapping[str, Any]
) -> bool:
    """Whether the desired pod is part of the dry run: only when one would be created."""
    return not suspended and not (pod is not None and spec_current(pod, desired))


def children_to_apply(
    manifests: Sequence[dict[str, Any]], refused: Collection[str], *, new: bool
) -> list[dict[str, Any]]:
    """The children to apply, given the keys (`key`) the dry run refused."""
    if new and refused:
        return []  # whole or not at all
    return [manifest for manifest in manifests if key(manifest) not in refused]


def plan_pod(
    decision: PodPlan, desired: Mapping[str, Any], refused: Collection[str], *, new: bool
) -> PodPlan:
    """No pod the API server refuses, nor one without its children: the current pod
    (if any) stays as it is."""
    if decision.action in NEW_POD and (key(desired) in refused or (new and refused)):
        return NOTHING
    return decision


def key(manifest: Mapping[str, Any]) -> str:
    """Kind/name: how refusals name a child."""
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def desired_name(desired: Mapping[str, Any]) -> str:
    return str(desired["metadata"]["name"])


def spec_hash(pod: Mapping[str, Any]) -> str | None:
    annotations: Mapping[str, str] = pod["metadata"].get("annotations") or {}
    return annotations.get(names.POD_SPEC_HASH_ANNOTATION)


def spec_current(pod: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """No pod, or one built from the desired spec."""
    return pod is None or spec_hash(pod) == spec_hash(desired)


def terminating(pod: Mapping[str, Any] | None) -> bool:
    return pod is not None and bool(pod["metadata"].get("deletionTimestamp"))


def waiting_on_lost_node(
    pod: Mapping[str, Any] | None, now: datetime, force_delete_after: float
) -> bool:
    """Terminating on a node, `force_delete_after` seconds past its deadline (0: never)."""
    due = force_delete_due(pod, force_delete_after)
    return due is not None and now >= due


def force_delete_due(pod: Mapping[str, Any] | None, force_delete_after: float) -> datetime | None:
    """When a pod terminating on a node may be force-deleted if its node is lost (None:
    not terminating on a node, or never): nothing else wakes the reconcile then (a dead
    kubelet sends no pod event)."""
    if pod is None or not terminating(pod) or force_delete_after <= 0 or not node_name(pod):
        return None
    deadline = parse_timestamp(pod["metadata"]["deletionTimestamp"])
    return deadline + timedelta(seconds=force_delete_after)


def node_name(pod: Mapping[str, Any]) -> str:
    """The pod's node; "" while it is not scheduled."""
    return str((pod.get("spec") or {}).get("nodeName") or "")


def node_ready(node: Mapping[str, Any] | None) -> bool:
    conditions = list((node or {}).get("status", {}).get("conditions") or [])
    return (find(conditions, "Ready") or {}).get("status") == "True"


def claim_terminating(claim: Mapping[str, Any] | None) -> bool:
    return claim is not None and bool(claim["metadata"].get("deletionTimestamp"))


def unplaced(pod: Mapping[str, Any] | None) -> bool:
    """No pod runs on the home volume: none, or one not scheduled to a node."""
    return pod is None or (not terminating(pod) and not node_name(pod))


def volume_node(volume: Mapping[str, Any] | None) -> str:
    """The one node a node-local PV lives on (its node affinity names exactly one
    hostname); "" for a volume that any of several nodes can attach."""
    required = ((volume or {}).get("spec") or {}).get("nodeAffinity", {}).get("required") or {}
    terms = required.get("nodeSelectorTerms") or []
    if len(terms) != 1:
        return ""
    expressions = terms[0].get("matchExpressions") or []
    if len(expressions) != 1:
        return ""
    (term,) = expressions
    values = term.get("values") or []
    if term.get("key") != HOSTNAME_LABEL or term.get("operator") != "In" or len(values) != 1:
        return ""
    return str(values[0])


@dataclass(frozen=True)
class VolumeVerdict:
    """Why the home volume is given up ("": kept), and when to look again (a node that
    is NotReady until it has been so for the setting)."""

    lost: str = ""
    due: datetime | None = None


KEPT = VolumeVerdict()


def volume_lost(
    holder: str,
    node: Mapping[str, Any] | None,
    status: Mapping[str, Any],
    now: datetime,
    lost_after: float,
) -> VolumeVerdict:
    """The rule of the module's docstring, for a volume on node `holder` (`node`: that
    Node, None when it is deleted) and the workspace's `status` (its lastSnapshot)."""
    snapshot = status.get("lastSnapshot") or {}
    since = f"since the last snapshot ({snapshot.get('time')})" if snapshot else "(no snapshot)"
    if node is None:
        return VolumeVerdict(
            f"node {holder}, which held the home volume, is gone (its Node was deleted): "
            f"a new volume is restored from the last snapshot; work written {since} is lost"
        )
    ready = find(list((node.get("status") or {}).get("conditions") or []), "Ready") or {}
    if ready.get("status") != "True" and lost_after > 0:
        changed = _time(ready.get("lastTransitionTime")) or now
        due = changed + timedelta(seconds=lost_after)
        if now < due:
            return VolumeVerdict(due=due)
        return VolumeVerdict(
            f"node {holder}, which holds the home volume, has been not ready since "
            f"{timestamp(changed)} (more than {lost_after:g} s): the volume is taken as lost "
            f"and a new one is restored from the last snapshot; work written {since} is lost"
        )
    if (node.get("spec") or {}).get("unschedulable") and snapshot.get("finalAt"):
        return VolumeVerdict(
            f"node {holder}, which holds the home volume, is cordoned and the last snapshot "
            f"({str(snapshot.get('id', ''))[:8]}) was taken as the pod stopped: the home "
            "moves to a new volume, restored from that snapshot, on another node"
        )
    return KEPT
