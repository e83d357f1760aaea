"""Every child of a workspace but the pod, in the order they can be applied."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from rspark_operator import gateway, names
from rspark_operator.api import Workspace
from rspark_operator.builders.disruption import build_disruption_budget
from rspark_operator.builders.identity import build_identities
from rspark_operator.builders.metadata import Manifest, child
from rspark_operator.builders.network import (
    build_ide_service,
    build_ingress,
    build_spark_driver_service,
)
from rspark_operator.builders.pod import (
    IDE_PASSWORD_KEY,
    RESTIC_PASSWORD_KEY,
    snapshot_credentials_secret,
    snapshot_repository,
)
from rspark_operator.builders.policy import build_egress_policy, build_network_policy
from rspark_operator.builders.signin import build_signin_config_map, signin_enabled
from rspark_operator.builders.spark import build_spark_config_map
from rspark_operator.builders.waker import build_waker_endpoints, build_waker_service
from rspark_operator.quantity import parse_quantity
from rspark_operator.settings import OperatorSettings


def build_home_claim(ws: Workspace, settings: OperatorSettings) -> Manifest:
    claim = child(ws, "v1", "PersistentVolumeClaim", names.home_claim_name(ws.name))
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": ws.spec.home.size}},
    }
    storage_class = ws.spec.home.storage_class_name or settings.storage_class
    if storage_class:
        spec["storageClassName"] = storage_class
    claim["spec"] = spec
    return claim


def settle_home_claim(desired: Manifest, existing: Mapping[str, Any] | None) -> Manifest:
    """The claim to apply over `existing`. The API server refuses to change a claim's
    storage class or to shrink it, so a changed operator default (or a claim grown by
    hand) keeps what the claim has there instead of stalling every reconcile."""
    current = (existing or {}).get("spec") or {}
    if not current:
        return desired
    claim = copy.deepcopy(desired)
    spec = claim["spec"]
    if "storageClassName" in spec and current.get("storageClassName"):
        spec["storageClassName"] = current["storageClassName"]
    size = (current.get("resources") or {}).get("requests", {}).get("storage")
    requests = spec["resources"]["requests"]
    if size and parse_quantity(size) > parse_quantity(requests["storage"]):
        requests["storage"] = size
    return claim


def build_home_secrets(ws: Workspace, settings: OperatorSettings) -> Manifest:
    """Empty at first; the agent fills it with the files under spec.secretPaths.

    The operator must apply it without `data`, so that it never owns (and never
    clears) what the agent wrote. Not owned by the workspace: it is the part of the
    home kept out of object storage, and outlives the workspace like the snapshots.
    Its annotations say where those snapshots are (`kubectl rspark snapshots`).
    """
    repository = snapshot_repository(ws, settings) if ws.spec.snapshot.enabled else None
    annotations = {}
    if repository is not None:
        annotations = {
            names.SNAPSHOT_REPOSITORY_ANNOTATION: repository,
            names.SNAPSHOT_CREDENTIALS_ANNOTATION: snapshot_credentials_secret(ws, settings),
        }
    secret = child(
        ws, "v1", "Secret", names.home_secrets_name(ws.name), annotations=annotations, owned=False
    )
    secret["type"] = "Opaque"
    return secret


def build_passwords_secret(ws: Workspace, restic_password: str, rstudio_password: str) -> Manifest:
    """The restic repository's and the IDE's passwords: created once, never overwritten.

    Not owned by the workspace: the snapshots outlive it, and without this password
    nobody can read them, so a workspace recreated under the same name finds its
    home (and its IDE password) again."""
    secret = child(ws, "v1", "Secret", names.passwords_secret_name(ws.name), owned=False)
    secret["type"] = "Opaque"
    secret["stringData"] = {
        RESTIC_PASSWORD_KEY: restic_password,
        IDE_PASSWORD_KEY: rstudio_password,
    }
    return secret


def build_gateway_credential_secret(ws: Workspace, password: str) -> Manifest:
    """The workspace's own credential at the snapshot gateway (RSPARK_SNAPSHOT_MODE=gateway):
    created once, never overwritten; not owned by the workspace, like the passwords, so a
    workspace recreated under the same name reaches its snapshots again."""
    secret = child(ws, "v1", "Secret", names.gateway_credential_secret_name(ws.name), owned=False)
    secret["type"] = "Opaque"
    secret["stringData"] = {gateway.CREDENTIAL_KEY: password}
    return secret


def build_gateway_users_secret(
    settings: OperatorSettings, htpasswd_text: str, resource_version: str | None
) -> Manifest:
    """The gateway's users Secret (its htpasswd file), in the gateway's namespace. With the
    `resource_version` read, the API server refuses the write if another reconcile wrote
    in between (409), so no workspace's line is lost."""
    metadata: dict[str, Any] = {
        "name": settings.snapshot_gateway_users_secret,
        "namespace": settings.snapshot_gateway_namespace,
        "labels": {names.MANAGED_BY_LABEL: names.FIELD_MANAGER},
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "stringData": {gateway.HTPASSWD_KEY: htpasswd_text},
    }


def build_children(
    ws: Workspace, settings: OperatorSettings, *, to_waker: bool = False
) -> list[Manifest]:
    """Every child but the pod and the passwords Secret; RBAC first, network last.
    `to_waker`: the URL leads to the waker (see `waker.routed_to_waker`)."""
    signin = [build_signin_config_map(ws, settings)] if signin_enabled(settings) else []
    waker = (
        [build_waker_service(ws), build_waker_endpoints(ws, settings)]
        if settings.waker_enabled
        else []
    )
    return [
        *build_identities(ws),
        build_spark_config_map(ws, settings),
        *signin,
        build_home_claim(ws, settings),
        build_home_secrets(ws, settings),
        build_disruption_budget(ws),
        build_ide_service(ws),
        build_spark_driver_service(ws),
        *waker,
        build_ingress(ws, settings, to_waker=to_waker and settings.waker_enabled),
        build_network_policy(ws, settings),
        build_egress_policy(ws, settings),
    ]
