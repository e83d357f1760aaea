"""Idle stop and wake on the local cluster (kwok nodes, so no agent runs: the test writes
the agent's Idle report and final snapshot itself, with the agent's own identity)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from rspark_operator import names
from rspark_operator.agent.kube import FIELD_MANAGER as AGENT_FIELD_MANAGER
from rspark_operator.agent.report import apply_body
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.conditions import timestamp
from rspark_operator.idle import SHORTEST_IDLE_QUIET
from rspark_operator.quantity import parse_duration
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample


def agent_client(kube: client.ApiClient, namespace: str, workspace: str) -> client.ApiClient:
    """An API client with the workspace agent's token, as its pod would have it."""
    core = client.CoreV1Api(kube)
    secret_name = names.agent_token_secret_name(workspace)

    def token() -> str | None:
        data = core.read_namespaced_secret(secret_name, namespace).data or {}
        return base64.b64decode(data["token"]).decode() if "token" in data else None

    configuration = client.Configuration()
    configuration.host = kube.configuration.host
    configuration.ssl_ca_cert = kube.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {wait_until('agent token', token)}"}
    return client.ApiClient(configuration)


def agent_reports(agent: client.ApiClient, namespace: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(agent).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "alice",
        apply_body(namespace, "alice", status),
        field_manager=AGENT_FIELD_MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def idle_since(when: datetime) -> dict[str, Any]:
    return {
        "type": "Idle",
        "status": "True",
        "reason": "NoActivity",
        "message": f"no activity since {timestamp(when)}",
        "lastTransitionTime": timestamp(when),
    }


def awake_again(kube: client.ApiClient, namespace: str) -> None:
    """alice Running again, and her new pod's agent says so at its start (Idle=False),
    as a real one does: else the old verdict stops her stopAfter after the pod's start."""
    Workspaces(kube, namespace).wait_phase("alice", "Running", timeout=120)
    active = {"type": "Idle", "status": "False", "reason": "Active", "message": "in use",
              "lastTransitionTime": timestamp(datetime.now(UTC))}  # fmt: skip
    agent_reports(agent_client(kube, namespace, "alice"), namespace, {"conditions": [active]})


def workspace_events(core: client.CoreV1Api, namespace: str, reason: str) -> list[Any]:
    selector = f"involvedObject.kind=RStudioWorkspace,reason={reason}"
    return list(core.list_namespaced_event(namespace, field_selector=selector).items)


# The platform's shortest quiet time (RSPARK_IDLE_QUIET), and so the shortest stopAfter.
QUICK_IDLE = {"idle_quiet": SHORTEST_IDLE_QUIET}


def test_an_idle_workspace_stops_releases_its_volume_and_wakes(
    kube: client.ApiClient, workspace_namespace: str, operator_with: Callable[..., Any]
) -> None:
    namespace = workspace_namespace
    operator_with(**QUICK_IDLE)
    core = client.CoreV1Api(kube)
    workspaces = Workspaces(kube, namespace)
    stop_after = parse_duration(SHORTEST_IDLE_QUIET)
    workspaces.create(
        sample("alice", idle={"stopAfter": SHORTEST_IDLE_QUIET, "releaseVolume": True})
    )
    workspaces.wait_phase("alice", "Running")
    pod = workspaces.running_pod("alice")
    started = pod.metadata.creation_timestamp
    agent = agent_client(kube, namespace, "alice")
    # The agent says: nobody since an hour ago. The pod started later: that counts.
    agent_reports(agent, namespace, {"conditions": [idle_since(started - timedelta(hours=1))]})
    stopped = workspaces.wait_phase("alice", "Idle", timeout=stop_after.total_seconds() + 90)
    assert datetime.now(UTC) >= started + stop_after
    ready = next(c for c in stopped["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] in ("IdleStopping", "Idle")
    assert workspace_events(core, namespace, "IdleStopping")
    wait_until("the idle pod gone", lambda: not workspaces.pods("alice"))
    claim = names.home_claim_name("alice")
    assert core.read_namespaced_persistent_volume_claim(claim, namespace)  # no final snapshot yet
    # The agent's last snapshot, after the IDE stopped: the claim may go.
    final = datetime.now(UTC)
    agent_reports(
        agent,
        namespace,
        {
            "lastSnapshot": {
                "time": timestamp(final),
                "id": "4f2a9c1e5d",
                "finalAt": timestamp(final),
            },
            "conditions": [
                idle_since(started - timedelta(hours=1)),
                {
                    "type": "SnapshotHealthy",
                    "status": "True",
                    "reason": "SnapshotSucceeded",
                    "message": "snapshot 4f2a9c1e",
                    "lastTransitionTime": timestamp(final),
                },
            ],
        },
    )

    def claim_gone() -> bool:
        claims = core.list_namespaced_persistent_volume_claim(namespace).items
        return not any(c.metadata.name == claim for c in claims)

    wait_until("the home claim released", claim_gone, timeout=60)
    assert workspace_events(core, namespace, "VolumeReleased")
    idle = workspaces.wait_phase("alice", "Idle")
    assert "object storage only" in next(
        c["message"] for c in idle["status"]["conditions"] if c["type"] == "Ready"
    )
    assert not workspaces.pods("alice")
    # kubectl annotate rsw alice rspark.dev/restart-requested-at=<now> --overwrite
    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "alice",
        {"metadata": {"annotations": {names.RESTART_ANNOTATION: timestamp(datetime.now(UTC))}}},
    )
    awake_again(kube, namespace)
    assert core.read_namespaced_persistent_volume_claim(claim, namespace)
    assert len(workspaces.pods("alice")) == 1
