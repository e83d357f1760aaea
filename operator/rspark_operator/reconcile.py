"""The one level-based, idempotent reconcile of a workspace.

Read what exists, build what should exist, apply it with server-side apply,
compute the status from what exists, and write the status only when it changed.
Every entry point (create, update, resume, the resync timer, pod events) comes here.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rspark_operator import names
from rspark_operator.api import GROUP, KIND, VERSION
from rspark_operator.builders import build_children, build_password_secret, build_pod, workspace_url
from rspark_operator.kube import Kube
from rspark_operator.settings import OperatorSettings
from rspark_operator.status import Observed, compute_status, status_changed
from rspark_operator.validation import InvalidSpecError, parse_workspace

# Reasons of the Kubernetes events that mark transitions.
POD_CREATED = "PodCreated"
POD_REPLACING = "PodReplacing"
POD_STOPPING = "PodStopping"
POD_FAILED = "PodFailed"
INVALID_SPEC = "InvalidSpec"
PHASE_CHANGED = "PhaseChanged"


@dataclass
class Outcome:
    status: dict[str, Any]
    # (reason, message) of what this reconcile did, for Kubernetes events.
    actions: list[tuple[str, str]] = field(default_factory=list)
    status_written: bool = False


def reconcile(
    kube: Kube,
    settings: OperatorSettings,
    body: dict[str, Any],
    *,
    children: bool = True,
    now: datetime | None = None,
) -> Outcome:
    """Converge one workspace. `children=False` skips re-applying the children that
    pod events cannot have changed (used for pod events, which are many)."""
    now = now or datetime.now(UTC)
    metadata = body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    actions: list[tuple[str, str]] = []
    try:
        ws = parse_workspace(body, settings)
    except InvalidSpecError as error:
        # Nothing is created for a spec that cannot be built; what exists stays.
        observed = Observed(pod=_get_pod(kube, namespace, name), invalid_spec=str(error))
        status = compute_status(
            generation=metadata.get("generation", 1),
            suspended=bool((body.get("spec") or {}).get("suspended")),
            url=None,
            previous=body.get("status"),
            observed=observed,
            now=now,
        )
        actions.append((INVALID_SPEC, str(error)))
        return _finish(kube, body, status, actions)

    if children:
        if kube.create(build_password_secret(ws, secrets.token_urlsafe(32))):
            actions.append(("PasswordCreated", "generated the restic repository password"))
        for manifest in build_children(ws, settings):
            kube.apply(manifest)

    desired = build_pod(ws, settings)
    pod = _get_pod(kube, namespace, name)
    pod_spec_current = pod is None or _spec_hash(pod) == _spec_hash(desired)
    if pod is not None and not _terminating(pod):
        uid = pod["metadata"]["uid"]
        if ws.spec.suspended:
            kube.delete("v1", "Pod", namespace, pod["metadata"]["name"], uid)
            actions.append((POD_STOPPING, "suspended: stopping the pod, keeping the home"))
        elif (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            kube.delete("v1", "Pod", namespace, pod["metadata"]["name"], uid)
            actions.append((POD_FAILED, "the pod ended; replacing it"))
        elif not pod_spec_current:
            kube.delete("v1", "Pod", namespace, pod["metadata"]["name"], uid)
            actions.append((POD_REPLACING, "the pod spec changed; replacing the pod"))
        pod = _get_pod(kube, namespace, name) if actions else pod
    elif pod is None and not ws.spec.suspended:
        # The pod name is fixed, so a second pod cannot exist: the old one must be gone.
        pod = kube.apply(desired)
        actions.append((POD_CREATED, f"created pod {desired['metadata']['name']}"))

    claim = kube.get("v1", "PersistentVolumeClaim", namespace, names.home_claim_name(name))
    unhealthy = [obj for obj in (pod, claim) if obj is not None and not _healthy(obj)]
    observed = Observed(
        pod=pod,
        claim=claim,
        events=[event for obj in unhealthy for event in _events_of(kube, obj)],
        pod_spec_current=pod_spec_current,
    )
    status = compute_status(
        generation=ws.generation,
        suspended=ws.spec.suspended,
        url=workspace_url(ws, settings),
        previous=body.get("status"),
        observed=observed,
        now=now,
    )
    return _finish(kube, body, status, actions)


def _finish(
    kube: Kube, body: dict[str, Any], status: dict[str, Any], actions: list[tuple[str, str]]
) -> Outcome:
    previous = body.get("status")
    outcome = Outcome(status=status, actions=actions)
    if (previous or {}).get("phase") != status["phase"]:
        actions.append((PHASE_CHANGED, f"phase {status['phase']}"))
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
        outcome.status_written = True
    return outcome


def _get_pod(kube: Kube, namespace: str, workspace: str) -> dict[str, Any] | None:
    return kube.get("v1", "Pod", namespace, names.pod_name(workspace))


def _spec_hash(pod: dict[str, Any]) -> str | None:
    annotations: dict[str, str] = pod["metadata"].get("annotations") or {}
    return annotations.get(names.POD_SPEC_HASH_ANNOTATION)


def _terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _events_of(kube: Kube, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Events about this incarnation of the object (scheduling, mounts, provisioning)."""
    metadata = obj["metadata"]
    selector = f"involvedObject.kind={obj['kind']},involvedObject.name={metadata['name']}"
    events = kube.list("v1", "Event", metadata["namespace"], field_selector=selector)
    return [e for e in events if (e.get("involvedObject") or {}).get("uid") == metadata["uid"]]


def _healthy(obj: dict[str, Any]) -> bool:
    """A ready pod or a bound claim: no need to read its events."""
    status = obj.get("status") or {}
    if obj["kind"] == "PersistentVolumeClaim":
        return bool(status.get("phase") == "Bound")
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
