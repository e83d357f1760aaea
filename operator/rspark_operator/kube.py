"""The thin layer that talks to the API server: server-side apply, reads, deletes.

Manifests stay plain dicts end to end (no model (de)serialisation): the
builders produce them, this module sends them as JSON, and reads come back as
dicts too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from rspark_operator import __version__
from rspark_operator.api import GROUP, PLURAL, PROFILE_KIND, PROFILE_PLURAL, VERSION
from rspark_operator.names import FIELD_MANAGER

APPLY = "application/apply-patch+yaml"  # JSON is YAML: the API server takes either.
MERGE = "application/merge-patch+json"

# The kinds the operator manages, by apiVersion/kind: (URL prefix, plural).
RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("v1", "Node"): ("/api/v1", "nodes"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "rolebindings",
    ),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    (f"{GROUP}/{VERSION}", "RStudioWorkspace"): (f"/apis/{GROUP}/{VERSION}", PLURAL),
    (f"{GROUP}/{VERSION}", PROFILE_KIND): (f"/apis/{GROUP}/{VERSION}", PROFILE_PLURAL),
    ("v1", "Namespace"): ("/api/v1", "namespaces"),
    ("kopf.dev/v1", "KopfPeering"): ("/apis/kopf.dev/v1", "kopfpeerings"),
}
# Answers that mean "this object, as sent, is refused" (validation, admission,
# quota, immutable fields), not "try again".
REJECTED = frozenset({400, 403, 422})


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def namespace_terminating(self) -> bool:
        return self.status == 403 and "being terminated" in str(self)

    @property
    def rejected(self) -> bool:
        return self.status in REJECTED and not self.namespace_terminating


def load_api_client(connections: int) -> client.ApiClient:
    """In-cluster credentials, else the current kubeconfig (honours KUBECONFIG).

    `connections`: as many as threads call at once; the client's default (5 per CPU)
    would discard the extras and pay a new TLS handshake for each."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    api = client.ApiClient(configuration)
    api.user_agent = f"{FIELD_MANAGER}/{__version__}"
    return api


def url(api_version: str, kind: str, namespace: str, name: str = "", subresource: str = "") -> str:
    """The object's path; an empty `namespace` means a cluster-scoped kind."""
    prefix, plural = RESOURCES[(api_version, kind)]
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class Kube:
    """Raw JSON calls through the kubernetes client's authenticated HTTP pool."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        data = self._call(serialized)
        return json.loads(data) if data else None

    def raw_get(self, path: str) -> str:
        """A non-JSON endpoint such as /metrics, as text."""
        headers = {"Accept": "text/plain"}
        serialized = self.api.param_serialize(
            method="GET", resource_path=path, header_params=headers, auth_settings=["BearerToken"]
        )
        return self._call(serialized).decode()

    def _call(self, serialized: Any) -> bytes:
        try:
            response = self.api.call_api(*serialized)
            response.read()
        except ApiException as error:
            raise KubeError(error.status or 0, _reason(error)) from None
        if response.status >= 400:
            raise KubeError(response.status, _reason_text(response.data))
        return bytes(response.data or b"")

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            found: dict[str, Any] = self.request("GET", url(api_version, kind, namespace, name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return found

    def apply(
        self, manifest: dict[str, Any], subresource: str = "", *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply under our one field manager, taking over conflicting fields.

        A dry run goes through validation and admission and persists nothing."""
        metadata = manifest["metadata"]
        path = url(
            manifest["apiVersion"],
            manifest["kind"],
            metadata["namespace"],
            metadata["name"],
            subresource,
        )
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        applied: dict[str, Any] = self.request(
            "PATCH",
            path,
            body=manifest,
            query=[*query, ("dryRun", "All")] if dry_run else query,
            content_type=APPLY,
        )
        return applied

    def create(self, manifest: dict[str, Any]) -> bool:
        """Create the object unless it exists; True when this call created it."""
        metadata = manifest["metadata"]
        path = url(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
        try:
            self.request("POST", path, body=manifest, query=[("fieldManager", FIELD_MANAGER)])
        except KubeError as error:
            if error.status == 409:
                return False
            raise
        return True

    def dry_run_create(self, manifest: dict[str, Any]) -> None:
        """Would the API server create this object? Raises KubeError when it would not.

        Under a generated name, so that an existing object of the same name (a pod
        about to be replaced) does not answer for the new one."""
        metadata = {k: v for k, v in manifest["metadata"].items() if k != "name"}
        metadata["generateName"] = f"{manifest['metadata']['name']}-"
        path = url(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
        query = [("fieldManager", FIELD_MANAGER), ("dryRun", "All")]
        self.request("POST", path, body={**manifest, "metadata": metadata}, query=query)

    def event(self, obj: dict[str, Any], reason: str, message: str, *, warning: bool) -> None:
        """Record an event on `obj`, one attempt; a namespace being deleted is fine."""
        metadata = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.request("POST", url("v1", "Event", metadata["namespace"]), body=event)
        except KubeError as error:
            if error.status not in (403, 404):
                raise

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
        """Graceful delete (`force`: at once, without waiting for the kubelet); with `uid`,
        only that incarnation of the object. Gone is fine."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if force:
            body["gracePeriodSeconds"] = 0
        try:
            self.request("DELETE", url(api_version, kind, namespace, name), body=body)
        except KubeError as error:
            if error.status not in (404, 409):
                raise


def _reason(error: ApiException) -> str:
    return _reason_text(error.body) if error.body else str(error.reason)


def _reason_text(data: bytes | str | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message") or data)
    except ValueError:
        return str(data)
