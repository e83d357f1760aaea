"""What to do with the workspace pod: a pure decision from what exists.

There is one pod name per workspace, so there is never a second pod: a new pod
is created only once the old one is gone. A pod on a lost node stays
Terminating forever (no kubelet confirms it stopped); past its deadline the
operator force-deletes it so the workspace can start elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from rspark_operator import names
from rspark_operator.conditions import find, parse_timestamp
from rspark_operator.status import POD_FAILED, POD_REPLACING

# Reasons of the events that mark what was done to the pod (and POD_FAILED,
# POD_REPLACING, shared with the Ready condition).
POD_CREATED = "PodCreated"
POD_STOPPING = "PodStopping"
NODE_LOST = "NodeLost"


class PodAction(StrEnum):
    KEEP = "keep"
    CREATE = "create"
    DELETE = "delete"
    FORCE_DELETE = "force-delete"


@dataclass(frozen=True)
class PodDecision:
    action: PodAction
    reason: str = ""
    message: str = ""
    warning: bool = False


KEEP = PodDecision(PodAction.KEEP)


def decide_pod(
    *,
    suspended: bool,
    pod: Mapping[str, Any] | None,
    desired: Mapping[str, Any],
    node: Mapping[str, Any] | None,
    now: datetime,
    force_delete_after: float,
) -> PodDecision:
    """`node` is the pod's node when `waiting_on_lost_node` holds (None: the node is gone)."""
    if pod is None:
        if suspended:
            return KEEP
        return PodDecision(PodAction.CREATE, POD_CREATED, f"created pod {desired_name(desired)}")
    if terminating(pod):
        if waiting_on_lost_node(pod, now, force_delete_after) and not node_ready(node):
            node_name = (pod.get("spec") or {}).get("nodeName")
            return PodDecision(
                PodAction.FORCE_DELETE,
                NODE_LOST,
                f"node {node_name} is not ready and the pod outlived its grace period: "
                "force-deleting it so the workspace starts elsewhere",
                warning=True,
            )
        return KEEP
    if suspended:
        return PodDecision(
            PodAction.DELETE, POD_STOPPING, "suspended: stopping the pod, keeping the home"
        )
    if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        return PodDecision(
            PodAction.DELETE, POD_FAILED, "the pod ended; replacing it", warning=True
        )
    if not spec_current(pod, desired):
        return PodDecision(
            PodAction.DELETE, POD_REPLACING, "the pod spec changed; replacing the pod"
        )
    return KEEP


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
    if pod is None or not terminating(pod) or force_delete_after <= 0:
        return False
    if not (pod.get("spec") or {}).get("nodeName"):
        return False
    deadline = parse_timestamp(pod["metadata"]["deletionTimestamp"])
    return now >= deadline + timedelta(seconds=force_delete_after)


def node_ready(node: Mapping[str, Any] | None) -> bool:
    conditions = list((node or {}).get("status", {}).get("conditions") or [])
    return (find(conditions, "Ready") or {}).get("status") == "True"
