"""The agent's two touch points with Kubernetes, behind small interfaces.

- StatusSink: server-side apply of the agent's fields on the workspace status.
- SecretStore: get/patch of the secret-paths Secret (the operator creates it).
"""

from __future__ import annotations

import base64
import os
from typing import Any, Protocol

from rspark_operator.agent.report import apply_body

FIELD_MANAGER = "rspark-agent"
# (connect, read) seconds per API call: status and Secret writes happen inside a
# snapshot, and a hung API server must not stall snapshots.
REQUEST_TIMEOUT = (5.0, 15.0)


class SecretStore(Protocol):
    def load(self) -> bytes | None: ...

    def save(self, document: bytes) -> None: ...


def api_client() -> Any:
    """In-cluster configuration inside a pod, else KUBECONFIG (or ~/.kube/config)."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(os.environ.get("KUBECONFIG"))


class KubeStatusSink:
    def __init__(
        self,
        api: Any,
        namespace: str,
        name: str,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.name = name
        self.timeout = timeout

    def publish(self, status: dict[str, Any]) -> None:
        from rspark_operator.api import GROUP, PLURAL, VERSION

        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.name,
            apply_body(self.namespace, self.name, status),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
            _request_timeout=self.timeout,
        )


class KubeSecretStore:
    """The Secret is the operator's; the agent reads it and patches one key."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        name: str,
        key: str,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name
        self.key = key
        self.timeout = timeout

    def load(self) -> bytes | None:
        secret = self.core.read_namespaced_secret(
            self.name, self.namespace, _request_timeout=self.timeout
        )
        value = (secret.data or {}).get(self.key)
        return base64.b64decode(value) if value else None

    def save(self, document: bytes) -> None:
        body = {"data": {self.key: base64.b64encode(document).decode()}}
        self.core.patch_namespaced_secret(
            self.name, self.namespace, body, _request_timeout=self.timeout
        )


def list_workspaces(api: Any, timeout: tuple[float, float] = REQUEST_TIMEOUT) -> list[Any]:
    """Every workspace of the cluster (the platform's retention, agent/retention.py)."""
    from kubernetes import client

    from rspark_operator.api import GROUP, PLURAL, VERSION

    found = client.CustomObjectsApi(api).list_cluster_custom_object(
        GROUP, VERSION, PLURAL, _request_timeout=timeout
    )
    return list(found.get("items") or [])


def namespace_terminating(
    api: Any, namespace: str, timeout: tuple[float, float] = REQUEST_TIMEOUT
) -> bool:
    """Whether `namespace` is being deleted (False when that cannot be read)."""
    from kubernetes import client

    try:
        found = client.CoreV1Api(api).read_namespace(namespace, _request_timeout=timeout)
    except Exception:
        return False
    return bool(found.status and found.status.phase == "Terminating")
