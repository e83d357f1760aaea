"""The one level-based, idempotent reconcile of a workspace.

Read what exists, build what should exist, apply it with server-side apply,
compute the status from what exists, and write the status only when it changed.
Every entry point (create, update, resume, the resync timer, pod and volume
events) comes here.

A change of the spec is first applied as a server-side dry run, pod included:
if the API server (validation, admission, quota, immutable fields) refuses any
part of it, nothing of it is applied and Ready=False says which child and why.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from rspark_operator import names
from rspark_operator.api import GROUP, KIND, VERSION, Workspace
from rspark_operator.builders import (
    build_children,
    build_passwords_secret,
    build_pod,
    settle_home_claim,
    workspace_url,
)
from rspark_operator.conditions import READY, find
from rspark_operator.kube import Kube, KubeError
from rspark_operator.lifecycle import (
    KEEP,
    PodAction,
    PodDecision,
    decide_pod,
    spec_current,
    waiting_on_lost_node,
)
from rspark_operator.profiles import attach_profile, spark_status
from rspark_operator.settings import OperatorSettings
from rspark_operator.status import (
    CHILD_REJECTED,
    POD_REPLACING,
    Observed,
    compute_status,
    ready_transition,
    status_changed,
)
from rspark_operator.validation import InvalidSpecError, parse_workspace

# A workspace pod's ServiceAccount does not exist before the first apply, and the
# ServiceAccount admission plugin refuses a pod whose account is missing: the dry
# run of a first pod uses the namespace's default account instead.
DEFAULT_SERVICE_ACCOUNT = "default"

Send = Callable[[dict[str, Any]], object]
# The Warning events (of `status.STATUS_WARNINGS`) about an object, by its uid.
WarningsOf = Callable[[str], Iterable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass
class Outcome:
    status: dict[str, Any]
    # What this reconcile did and how the Ready verdict changed, for Kubernetes events.
    events: list[Event] = field(default_factory=list)


def reconcile(
    kube: Kube,
    settings: OperatorSettings,
    body: dict[str, Any],
    warnings_of: WarningsOf,
    *,
    children: bool = True,
    now: datetime | None = None,
) -> Outcome:
    """Converge one workspace. `children=False` skips re-applying the children that
    pod events cannot have changed (used for pod events, which are many)."""
    now = now or datetime.now(UTC)
    metadata = body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    previous = body.get("status") or {}
    try:
        ws = parse_workspace(body, settings)
        ws = attach_profile(kube, settings, ws)
    except InvalidSpecError as error:
        # Nothing is created for a spec that cannot be built; what exists stays.
        observed = Observed(
            pod=_get_pod(kube, namespace, name),
            invalid_spec=str(error),
            invalid_reason=error.reason,
        )
        status = compute_status(
            generation=metadata.get("generation", 1),
            suspended=bool((body.get("spec") or {}).get("suspended")),
            url=None,
            previous=previous,
            observed=observed,
            now=now,
        )
        return _finish(kube, body, status, [])

    events: list[Event] = []
    desired_pod = build_pod(ws, settings)
    pod = _get_pod(kube, namespace, name)
    rejected_before = _ready_reason(previous) == CHILD_REJECTED
    apply_children = children or rejected_before
    # A ready pod's claim is bound: a pod event then needs nothing from it.
    claim = (
        kube.get("v1", "PersistentVolumeClaim", namespace, names.home_claim_name(name))
        if apply_children or pod is None or not _healthy(pod)
        else None
    )
    manifests = [settle_home_claim(m, claim) if _is_claim(m) else m
                 for m in build_children(ws, settings)]  # fmt: skip
    refusals: dict[str, str] = {}
    # A new workspace is made whole or not at all; an existing one keeps the refused
    # children as they are and takes the rest of the change.
    new = claim is None and pod is None
    if apply_children:
        if rejected_before or previous.get("observedGeneration") != ws.generation:
            refusals = _dry_run(kube, ws, manifests, desired_pod, pod)
        if not (new and refusals):
            accepted = [m for m in manifests if _key(m) not in refusals]
            refusals |= _apply_children(kube, ws, accepted)

    decision = decide_pod(
        suspended=ws.spec.suspended,
        pod=pod,
        desired=desired_pod,
        node=_node_if_lost(kube, pod, now, settings),
        now=now,
        force_delete_after=settings.node_lost_force_delete_seconds,
    )
    if _key(desired_pod) in refusals or (new and refusals):
        # No pod the API server refuses, nor one without its children.
        decision = _without_new_pod(decision)
    pod = _carry_out(kube, decision, pod, desired_pod)
    if decision.action != PodAction.KEEP:
        events.append(Event(decision.reason, decision.message, decision.warning))

    unhealthy = [obj for obj in (pod, claim) if obj is not None and not _healthy(obj)]
    observed = Observed(
        pod=pod,
        claim=claim,
        events=[event for obj in unhealthy for event in warnings_of(obj["metadata"]["uid"])],
        pod_spec_current=spec_current(pod, desired_pod),
        rejected="; ".join(refusals.values()) or None,
    )
    status = compute_status(
        generation=ws.generation,
        suspended=ws.spec.suspended,
        url=workspace_url(ws, settings),
        previous=previous,
        observed=observed,
        now=now,
    ) | spark_status(ws)
    return _finish(kube, body, status, events)


def _dry_run(
    kube: Kube,
    ws: Workspace,
    manifests: list[dict[str, Any]],
    desired_pod: dict[str, Any],
    pod: dict[str, Any] | None,
) -> dict[str, str]:
    """What the API server would refuse of the desired state, and why."""
    steps: list[tuple[Send, dict[str, Any]]] = [
        (partial(_dry_apply, kube), manifest) for manifest in manifests
    ]
    if not ws.spec.suspended and not (pod is not None and spec_current(pod, desired_pod)):
        trial = desired_pod
        if not kube.get("v1", "ServiceAccount", ws.namespace, names.service_account_name(ws.name)):
            spec = {**desired_pod["spec"], "serviceAccountName": DEFAULT_SERVICE_ACCOUNT}
            trial = {**desired_pod, "spec": spec}
        steps.append((kube.dry_run_create, trial))
    return _send(steps)


def _dry_apply(kube: Kube, manifest: dict[str, Any]) -> None:
    try:
        kube.apply(manifest, dry_run=True)
    except KubeError as error:
        # A dry run creates nothing: a new child that refers to another new one (a
        # RoleBinding to its Role) cannot be checked before the first real apply.
        if error.status != 404:
            raise


def _apply_children(kube: Kube, ws: Workspace, manifests: list[dict[str, Any]]) -> dict[str, str]:
    """Create the passwords Secret if it is missing and apply the other children."""
    passwords = build_passwords_secret(
        ws, restic_password=secrets.token_urlsafe(32), rstudio_password=secrets.token_urlsafe(18)
    )
    return _send([(kube.create, passwords), *((kube.apply, m) for m in manifests)])


def _send(steps: Iterable[tuple[Send, dict[str, Any]]]) -> dict[str, str]:
    """Send each manifest; what the API server refuses, by kind/name, and why."""
    refusals = {}
    for send, manifest in steps:
        try:
            send(manifest)
        except KubeError as error:
            if not error.rejected:
                raise
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            refusals[_key(manifest)] = f"the API server refused {kind} {name}: {error}"
    return refusals


def _key(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def _without_new_pod(decision: PodDecision) -> PodDecision:
    """Keep the current pod rather than create or replace one that cannot start."""
    if decision.action == PodAction.CREATE or decision.reason == POD_REPLACING:
        return KEEP
    return decision


def _carry_out(
    kube: Kube, decision: PodDecision, pod: dict[str, Any] | None, desired: dict[str, Any]
) -> dict[str, Any] | None:
    """Do what was decided; the pod as it is afterwards."""
    if decision.action == PodAction.CREATE:
        return kube.apply(desired)
    if pod is None or decision.action == PodAction.KEEP:
        return pod
    metadata = pod["metadata"]
    kube.delete(
        "v1",
        "Pod",
        metadata["namespace"],
        metadata["name"],
        metadata["uid"],
        force=decision.action == PodAction.FORCE_DELETE,
    )
    return kube.get("v1", "Pod", metadata["namespace"], metadata["name"])


def _finish(
    kube: Kube, body: dict[str, Any], status: dict[str, Any], events: list[Event]
) -> Outcome:
    previous = body.get("status")
    transition = ready_transition(previous, status)
    if transition is not None:
        events.append(Event(*transition))
    if status_changed(previous, status):
        metadata = body["metadata"]
        kube.apply(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
                "status": status,
            },
            subresource="status",
        )
    return Outcome(status=status, events=events)


def _ready_reason(status: dict[str, Any]) -> str | None:
    ready = find(status.get("conditions") or [], READY)
    return None if ready is None else ready.get("reason")


def _is_claim(manifest: dict[str, Any]) -> bool:
    return bool(manifest["kind"] == "PersistentVolumeClaim")


def _get_pod(kube: Kube, namespace: str, workspace: str) -> dict[str, Any] | None:
    return kube.get("v1", "Pod", namespace, names.pod_name(workspace))


def _node_if_lost(
    kube: Kube, pod: dict[str, Any] | None, now: datetime, settings: OperatorSettings
) -> dict[str, Any] | None:
    """The node of a pod stuck terminating past its deadline (read only then)."""
    if pod is None or not waiting_on_lost_node(pod, now, settings.node_lost_force_delete_seconds):
        return None
    return kube.get("v1", "Node", "", pod["spec"]["nodeName"])


def _healthy(obj: dict[str, Any]) -> bool:
    """A ready pod or a bound claim: its past warnings explain nothing now."""
    status = obj.get("status") or {}
    if obj["kind"] == "PersistentVolumeClaim":
        return bool(status.get("phase") == "Bound")
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
