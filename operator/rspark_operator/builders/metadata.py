"""Metadata every child carries: owner reference, labels, namespace."""

from __future__ import annotations

from typing import Any

from rspark_operator import names
from rspark_operator.api import API_VERSION, KIND, Workspace

Manifest = dict[str, Any]


def labels(ws: Workspace) -> dict[str, str]:
    return {
        names.MANAGED_BY_LABEL: names.FIELD_MANAGER,
        names.WORKSPACE_LABEL: ws.name,
        names.USER_LABEL: names.label_safe(ws.spec.user),
    }


def workspace_pod_selector(ws: Workspace) -> dict[str, str]:
    """Selects the workspace pod only, never its Spark executors."""
    return {names.WORKSPACE_LABEL: ws.name, names.COMPONENT_LABEL: names.RSTUDIO_COMPONENT}


def owner_reference(ws: Workspace) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ws.name,
        "uid": ws.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child(
    ws: Workspace,
    api_version: str,
    kind: str,
    name: str,
    *,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owned: bool = True,
) -> Manifest:
    """The envelope of a child object; callers add spec, data or rules. Not `owned`:
    no owner reference, so garbage collection leaves it when the workspace goes."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": ws.namespace,
        "labels": {**labels(ws), **(extra_labels or {})},
    }
    if owned:
        metadata["ownerReferences"] = [owner_reference(ws)]
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    """An environment variable from one key of a Secret (read by the kubelet, not the pod)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
