"""Create, read and wait on RStudioWorkspaces in integration tests."""

from __future__ import annotations

import base64
import copy
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from rspark_operator import names
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.builders.pod import RESTIC_PASSWORD_KEY
from rspark_operator.conditions import READY, find, parse_timestamp
from tests.support.kube import wait_until

SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "workspace.yaml"


def sample(name: str = "alice", **spec: Any) -> dict[str, Any]:
    """The sample workspace of manifests/samples, renamed, with spec fields overridden."""
    manifest: dict[str, Any] = copy.deepcopy(yaml.safe_load(SAMPLE.read_text()))
    manifest["metadata"] = {"name": name}
    manifest["spec"].update(spec)
    return manifest


class Workspaces:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest, field_validation="Strict"
        )
        return created

    def patch(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        patched: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )
        return patched

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def wait_phase(self, name: str, phase: str, timeout: float = 90) -> dict[str, Any]:
        """Wait until the status reflects the latest generation and has `phase`."""

        def reached() -> dict[str, Any] | None:
            ws = self.get(name)
            if ws is None:
                return None
            status = ws.get("status") or {}
            current = status.get("observedGeneration") == ws["metadata"]["generation"]
            return ws if current and status.get("phase") == phase else None

        return wait_until(f"workspace {name} {phase}", reached, timeout=timeout)

    def ready_condition(self, name: str) -> dict[str, Any] | None:
        ws = self.get(name) or {}
        return find((ws.get("status") or {}).get("conditions") or [], READY)

    def snapshot_begun_after(self, name: str, moment: datetime) -> dict[str, Any] | None:
        """The last snapshot (status.lastSnapshot) if it began after `moment` (it finished
        at `time`, `durationSeconds` long), so it holds what was written before."""
        snapshot = ((self.get(name) or {}).get("status") or {}).get("lastSnapshot")
        if not snapshot:
            return None
        took = timedelta(seconds=snapshot.get("durationSeconds") or 0)
        began = parse_timestamp(snapshot["time"]) - took
        return dict(snapshot) if began > moment else None

    def home_claim_gone(self, name: str) -> bool:
        try:
            self.core.read_namespaced_persistent_volume_claim(
                names.home_claim_name(name), self.namespace
            )
        except client.ApiException as error:
            return bool(error.status == 404)
        return False

    def pods(self, name: str) -> list[Any]:
        selector = f"rspark.dev/workspace={name}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def running_pod(self, name: str) -> Any:
        def running() -> Any:
            pods = [
                p
                for p in self.pods(name)
                if p.status.phase == "Running" and not p.metadata.deletion_timestamp
            ]
            return pods[0] if len(pods) == 1 else None

        return wait_until(f"one running pod of {name}", running)


def restic_env(kube: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    """The repository of a workspace and its keys, as the operator noted them."""
    core = client.CoreV1Api(kube)
    notes = core.read_namespaced_secret(
        names.home_secrets_name(name), namespace
    ).metadata.annotations
    password = core.read_namespaced_secret(names.passwords_secret_name(name), namespace).data
    credentials = core.read_namespaced_secret(
        notes[names.SNAPSHOT_CREDENTIALS_ANNOTATION], namespace
    ).data

    def decode(data: dict[str, str], key: str) -> str:
        return base64.b64decode(data[key]).decode()

    return {
        **os.environ, "TZ": "UTC",
        "RESTIC_REPOSITORY": notes[names.SNAPSHOT_REPOSITORY_ANNOTATION],
        "RESTIC_PASSWORD": decode(password, RESTIC_PASSWORD_KEY),
        **{key: decode(credentials, key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    }  # fmt: skip
