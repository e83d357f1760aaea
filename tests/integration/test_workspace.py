"""A workspace on the local cluster, with the operator running as in production."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from devtools.deploy import OperatorProcess
from devtools.localcluster import NODE_RESOURCES, SHUTTING_DOWN_ANNOTATION
from rspark_operator import names
from rspark_operator.builders.pod import IDE_CONTAINER
from rspark_operator.settings import OperatorSettings
from tests.integration.test_nodes import kubectl as node_kubectl
from tests.support.kube import fail_node, recover_node, wait_until
from tests.support.workspaces import Workspaces, sample

CHILD_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "PersistentVolumeClaim",
               "Secret", "Service", "Ingress", "NetworkPolicy", "PodDisruptionBudget",
               "Pod")  # fmt: skip
# What outlives the workspace, with its snapshots: the key to them and the secret paths.
KEPT_SECRETS = {"alice-passwords", "alice-home-secrets"}
DEFAULT_IMAGES = OperatorSettings.model_fields


def workspace_events(core: client.CoreV1Api, namespace: str, reason: str) -> list[Any]:
    selector = f"involvedObject.kind=RStudioWorkspace,reason={reason}"
    return list(core.list_namespaced_event(namespace, field_selector=selector).items)


def children(kube: client.ApiClient, namespace: str, name: str) -> dict[str, list[Any]]:
    selector = f"{names.WORKSPACE_LABEL}={name}"
    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    net = client.NetworkingV1Api(kube)
    listers = {
        "ServiceAccount": core.list_namespaced_service_account,
        "Role": rbac.list_namespaced_role,
        "RoleBinding": rbac.list_namespaced_role_binding,
        "ConfigMap": core.list_namespaced_config_map,
        "PersistentVolumeClaim": core.list_namespaced_persistent_volume_claim,
        "Secret": core.list_namespaced_secret,
        "Service": core.list_namespaced_service,
        "Ingress": net.list_namespaced_ingress,
        "NetworkPolicy": net.list_namespaced_network_policy,
        "PodDisruptionBudget": client.PolicyV1Api(kube).list_namespaced_pod_disruption_budget,
        "Pod": core.list_namespaced_pod,
    }
    return {
        kind: lister(namespace, label_selector=selector).items for kind, lister in listers.items()
    }


def test_create_makes_every_child_and_runs(
    kube: client.ApiClient, workspace_namespace: str
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    created = workspaces.create(sample("alice"))
    ws = workspaces.wait_phase("alice", "Running")
    status = ws["status"]
    assert status["url"] == f"http://alice-{workspace_namespace}.rspark.localhost/"
    assert status["pendingRestart"] is False
    ready = workspaces.ready_condition("alice")
    assert ready is not None and ready["status"] == "True"
    assert ready["observedGeneration"] == ws["metadata"]["generation"]

    found = children(kube, workspace_namespace, "alice")
    for kind in CHILD_KINDS:
        assert found[kind], f"no {kind}"
        for obj in found[kind]:
            assert obj.metadata.labels[names.MANAGED_BY_LABEL] == "rspark-operator"
            assert obj.metadata.labels[names.USER_LABEL] == names.label_safe("alice@example.com")
            if obj.metadata.name in KEPT_SECRETS:
                assert not obj.metadata.owner_references
                continue
            owner = obj.metadata.owner_references[0]
            assert (owner.kind, owner.uid, owner.controller) == (
                "RStudioWorkspace", created["metadata"]["uid"], True)  # fmt: skip
    # And the agent's token, owned by the workspace (builders/identity.py).
    assert {s.metadata.name for s in found["Secret"]} == {*KEPT_SECRETS, "alice-rspark-agent-token"}
    driver = next(s for s in found["Service"] if s.spec.cluster_ip == "None")
    assert driver.spec.publish_not_ready_addresses is True
    pod = found["Pod"][0]
    sidecar = pod.spec.init_containers[0]
    assert sidecar.restart_policy == "Always" and sidecar.startup_probe is not None


def test_password_secret_is_never_overwritten(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    core = client.CoreV1Api(kube)
    before = core.read_namespaced_secret("alice-passwords", workspace_namespace).data
    assert set(before) == {"restic-password", "rstudio-password"}
    alice.patch("alice", {"image": "example.org/rspark:2"})
    alice.wait_phase("alice", "Running")
    assert core.read_namespaced_secret("alice-passwords", workspace_namespace).data == before


def hold(core: client.CoreV1Api, pod: Any) -> None:
    """Keep the pod Terminating once deleted, as a slow RStudio shutdown would."""
    annotations = {SHUTTING_DOWN_ANNOTATION: "true"}
    core.patch_namespaced_pod(
        pod.metadata.name, pod.metadata.namespace, {"metadata": {"annotations": annotations}}
    )


def release(core: client.CoreV1Api, pod: Any) -> None:
    """The shutdown is over: the kubelet finishes deleting the pod."""
    annotations = {SHUTTING_DOWN_ANNOTATION: None}
    core.patch_namespaced_pod(
        pod.metadata.name, pod.metadata.namespace, {"metadata": {"annotations": annotations}}
    )


def test_image_change_replaces_the_pod_once_the_old_one_is_gone(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    core = client.CoreV1Api(kube)
    old = alice.running_pod("alice")
    hold(core, old)
    alice.patch("alice", {"image": "example.org/rspark:2"})

    def waiting() -> dict[str, Any] | None:
        status = (alice.get("alice") or {}).get("status") or {}
        ready = alice.ready_condition("alice") or {}
        return status if ready.get("reason") == "PodReplacing" else None

    status = wait_until("Ready=False PodReplacing", waiting)
    assert status["pendingRestart"] is True
    # Never two pods: the new one waits for the old one to be gone.
    (pod,) = alice.pods("alice")
    assert pod.metadata.uid == old.metadata.uid and pod.metadata.deletion_timestamp
    release(core, old)

    def replaced() -> Any:
        pod = alice.running_pod("alice")
        return pod if pod.metadata.uid != old.metadata.uid else None

    new = wait_until("the pod replaced", replaced)
    assert new.spec.containers[0].image == "example.org/rspark:2"
    ws = alice.wait_phase("alice", "Running")
    assert ws["status"]["pendingRestart"] is False


def test_jupyterlab_workspace_runs_and_switching_the_ide_keeps_the_home(
    kube: client.ApiClient, workspace_namespace: str
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("lab", ide="jupyterlab"))
    workspaces.wait_phase("lab", "Running")
    found = children(kube, workspace_namespace, "lab")
    (pod,) = found["Pod"]
    (ide,) = pod.spec.containers
    assert ide.name == "ide" and ide.image == DEFAULT_IMAGES["jupyterlab_image"].default
    assert {p.name: p.container_port for p in ide.ports}["http"] == 8888
    assert ide.readiness_probe.http_get.path == "/api"
    ide_service = next(s for s in found["Service"] if s.spec.cluster_ip != "None")
    assert [p.port for p in ide_service.spec.ports] == [8888]
    (claim,) = found["PersistentVolumeClaim"]

    workspaces.patch("lab", {"ide": "rstudio"})

    def replaced() -> Any:
        new = workspaces.running_pod("lab")
        return new if new.metadata.uid != pod.metadata.uid else None

    new = wait_until("the pod replaced by an RStudio one", replaced)
    assert new.spec.containers[0].image == DEFAULT_IMAGES["workspace_image"].default
    assert new.spec.containers[0].ports[0].container_port == 8787
    workspaces.wait_phase("lab", "Running")
    (same_claim,) = children(kube, workspace_namespace, "lab")["PersistentVolumeClaim"]
    assert same_claim.metadata.uid == claim.metadata.uid


def test_home_grows_without_replacing_the_pod(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    pod = alice.running_pod("alice")
    alice.patch("alice", {"home": {"size": "20Gi"}})
    core = client.CoreV1Api(kube)

    def grown() -> bool:
        claim = core.read_namespaced_persistent_volume_claim("alice-home", workspace_namespace)
        return (claim.status.capacity or {}).get("storage") == "20Gi"

    wait_until("the claim at 20Gi", grown)
    alice.wait_phase("alice", "Running")
    assert alice.running_pod("alice").metadata.uid == pod.metadata.uid


def test_deleted_pod_comes_back(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    old = alice.running_pod("alice")
    client.CoreV1Api(kube).delete_namespaced_pod("alice", workspace_namespace)
    wait_until("a new pod", lambda: alice.running_pod("alice").metadata.uid != old.metadata.uid)
    alice.wait_phase("alice", "Running")


def test_node_failure_moves_the_pod_with_its_claim(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    """The node's kubelet dies: nobody confirms the evicted pod stopped, so the operator
    force-deletes it past its deadline and the workspace starts on the other node."""
    old = alice.running_pod("alice")
    core = client.CoreV1Api(kube)
    fail_node(core, old.spec.node_name)
    try:

        def moved() -> Any:
            pod = alice.running_pod("alice")
            return pod if pod.metadata.uid != old.metadata.uid else None

        new = wait_until("the pod on another node", moved, timeout=180)
        assert new.spec.node_name != old.spec.node_name
        claims = [v.persistent_volume_claim.claim_name for v in new.spec.volumes
                  if v.persistent_volume_claim]  # fmt: skip
        assert claims == ["alice-home"]
        alice.wait_phase("alice", "Running")
        lost = workspace_events(core, workspace_namespace, "NodeLost")
        assert lost and lost[0].type == "Warning"
        assert old.spec.node_name in lost[0].message
    finally:
        recover_node(core, old.spec.node_name)


def test_a_drain_moves_the_pod_gracefully_and_completes(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    """`kubectl drain`: the workspace's disruption budget refuses the eviction, the
    operator sees the node cordoned and deletes the pod gracefully (its own grace
    period: the last snapshot; kwok runs no containers, the e2e suite on real nodes
    shows the snapshot), the next pod starts on the other node and the drain ends."""
    old = alice.running_pod("alice")
    core = client.CoreV1Api(kube)

    def counted() -> Any:
        budget = client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget(
            "alice", workspace_namespace
        )
        status = budget.status
        current = status.observed_generation == budget.metadata.generation
        return budget if current and status.current_healthy == 1 else None

    assert wait_until("the budget counts the Ready pod", counted).status.disruptions_allowed == 0
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction(
            "alice",
            workspace_namespace,
            client.V1Eviction(metadata=client.V1ObjectMeta(name="alice")),
        )
    assert refused.value.status == 429  # Too Many Requests: the budget allows none
    assert alice.running_pod("alice").metadata.uid == old.metadata.uid
    try:
        # Only this test's workspace pod: other tests' pods share the kwok node (the
        # in-cluster operator's own budget refuses its eviction, as it should).
        drain = node_kubectl("drain", old.spec.node_name, "--ignore-daemonsets",
                             "--delete-emptydir-data", "--timeout=50s",
                             f"--pod-selector={names.WORKSPACE_LABEL}=alice")  # fmt: skip
        assert drain.returncode == 0, drain.stderr
        assert "drained" in drain.stdout
        new = alice.running_pod("alice")
        assert new.metadata.uid != old.metadata.uid
        assert new.spec.node_name != old.spec.node_name
        moved = workspace_events(core, workspace_namespace, "NodeDrained")
        assert moved and moved[0].type == "Normal"
        assert old.spec.node_name in moved[0].message
        alice.wait_phase("alice", "Running")
    finally:
        node_kubectl("uncordon", old.spec.node_name)


def test_suspend_keeps_everything_but_the_pod_and_resume_brings_it_back(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    core = client.CoreV1Api(kube)
    pod = alice.running_pod("alice")
    hold(core, pod)
    alice.patch("alice", {"suspended": True})
    wait_until(
        "Ready=False Suspending",
        lambda: (alice.ready_condition("alice") or {}).get("reason") == "Suspending",
    )
    # A graceful stop: RStudio's shutdown and the agent's last snapshot get their time.
    stopping = core.read_namespaced_pod("alice", workspace_namespace)
    assert (
        stopping.metadata.deletion_grace_period_seconds == pod.spec.termination_grace_period_seconds
    )
    release(core, pod)
    alice.wait_phase("alice", "Suspended")
    found = children(kube, workspace_namespace, "alice")
    assert not found["Pod"]
    assert all(found[kind] for kind in CHILD_KINDS if kind != "Pod")
    alice.patch("alice", {"suspended": False})
    alice.wait_phase("alice", "Running")
    assert len(alice.pods("alice")) == 1


def test_delete_removes_children_by_garbage_collection(
    kube: client.ApiClient, workspace_namespace: str, alice: Workspaces
) -> None:
    alice.delete("alice")
    wait_until("workspace gone", lambda: alice.get("alice") is None)

    def all_gone() -> bool:
        found = children(kube, workspace_namespace, "alice")
        kept = {s.metadata.name for s in found.pop("Secret")}
        return not any(found.values()) and kept == KEPT_SECRETS

    wait_until("children collected, the secrets of the home kept", all_gone)


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    kube: client.ApiClient, workspace_namespace: str, operator: OperatorProcess
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    operator.stop()
    for index in range(3):
        workspaces.create(sample(f"ws{index}"))
    operator.start()
    # Kill it while the three reconciles are under way, then start it again.
    wait_until("a child created", lambda: any(
        children(kube, workspace_namespace, f"ws{i}")["ServiceAccount"] for i in range(3)),
        interval=0.05)  # fmt: skip
    operator.stop(kill=True)
    operator.start()
    for index in range(3):
        workspaces.wait_phase(f"ws{index}", "Running", timeout=120)
        assert len(workspaces.pods(f"ws{index}")) == 1


def test_unschedulable_workspace_says_why_at_once(
    kube: client.ApiClient, workspace_namespace: str
) -> None:
    workspaces = Workspaces(kube, workspace_namespace)
    # More CPU than any node of the local cluster has (the kwok nodes have the most).
    cpu = str(2 * int(NODE_RESOURCES["cpu"]))
    too_big = {
        "requests": {"cpu": cpu, "memory": "2Gi"},
        "limits": {"cpu": cpu, "memory": "4Gi"},
    }
    workspaces.create(sample("alice", resources=too_big))

    def failed_scheduling() -> dict[str, Any] | None:
        ready = workspaces.ready_condition("alice")
        # The first verdict may be about the claim not bound yet; wait for the cpu one.
        if ready and ready["reason"] == "FailedScheduling" and "cpu" in ready["message"]:
            return ready
        return None

    ready = wait_until("Ready=False FailedScheduling", failed_scheduling)
    assert ready["status"] == "False"
    assert "Insufficient cpu" in ready["message"]
    assert (workspaces.get("alice") or {})["status"]["phase"] == "Pending"


def test_resync_brings_back_lost_and_drifted_children(
    kube: client.ApiClient,
    workspace_namespace: str,
    operator_with: Callable[..., OperatorProcess],
) -> None:
    """No event tells the operator about these: only its resync timer can."""
    operator_with(resync_seconds="2")
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("alice"))
    workspaces.wait_phase("alice", "Running")
    core = client.CoreV1Api(kube)
    original = core.read_namespaced_config_map("alice-spark", workspace_namespace).data
    core.delete_namespaced_service("alice-rstudio", workspace_namespace)
    client.NetworkingV1Api(kube).delete_namespaced_network_policy("alice", workspace_namespace)
    core.patch_namespaced_config_map(
        "alice-spark",
        workspace_namespace,
        {"data": {"spark-defaults.conf": "spark.master local\n"}},
    )

    def healed() -> bool:
        found = children(kube, workspace_namespace, "alice")
        spark = core.read_namespaced_config_map("alice-spark", workspace_namespace)
        return (
            any(s.metadata.name == "alice-rstudio" for s in found["Service"])
            and bool(found["NetworkPolicy"])
            and spark.data == original
        )

    wait_until("lost and drifted children restored", healed)


def test_a_provisioning_failure_is_reported_as_it_happens(
    kube: client.ApiClient,
    workspace_namespace: str,
    operator_with: Callable[..., OperatorProcess],
) -> None:
    """A provisioner's Warning changes neither the pod nor the claim: the operator hears
    of it from the event itself (its resync is an hour away here)."""
    operator_with(resync_seconds="3600")
    storage = client.StorageV1Api(kube)
    unserved = f"unserved-{workspace_namespace}"[:63]
    storage.create_storage_class(
        {
            "metadata": {"name": unserved},
            "provisioner": "example.com/broken",
            "volumeBindingMode": "Immediate",
        }
    )
    try:
        workspaces = Workspaces(kube, workspace_namespace)
        workspaces.create(sample("alice", home={"size": "10Gi", "storageClassName": unserved}))
        wait_until(
            "Ready=False FailedScheduling (the claim is unbound)",
            lambda: (workspaces.ready_condition("alice") or {}).get("reason") == "FailedScheduling",
        )
        core = client.CoreV1Api(kube)
        claim = core.read_namespaced_persistent_volume_claim("alice-home", workspace_namespace)
        # What the (absent) external provisioner example.com/broken would report.
        core.create_namespaced_event(
            workspace_namespace,
            {
                "metadata": {"generateName": "alice-home."},
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "name": "alice-home",
                    "namespace": workspace_namespace,
                    "uid": claim.metadata.uid,
                },
                "type": "Warning",
                "reason": "ProvisioningFailed",
                "message": "failed to provision volume: quota exceeded in zone a",
                "source": {"component": "example.com/broken"},
            },
        )

        def reported() -> dict[str, Any] | None:
            ready = workspaces.ready_condition("alice") or {}
            return ready if ready.get("reason") == "ProvisioningFailed" else None

        ready = wait_until("Ready=False ProvisioningFailed", reported)
        assert "quota exceeded in zone a" in ready["message"]
    finally:
        storage.delete_storage_class(unserved)


def test_placement_settings_put_the_pod_on_a_tainted_pool(
    kube: client.ApiClient,
    workspace_namespace: str,
    operator_with: Callable[..., OperatorProcess],
) -> None:
    """The node selector and tolerations of the operator's settings reach the pod (the
    API server accepts them, the scheduler follows them) and the executors' config."""
    core = client.CoreV1Api(kube)
    node = "kwok-node-b"
    taint = {"key": "rspark.dev/test-pool", "value": "workspaces", "effect": "NoSchedule"}
    before = core.read_node(node).spec.taints or []
    core.patch_node(node, {"spec": {"taints": [*before, taint]}})
    try:
        operator_with(
            workspace_node_selector=json.dumps({"kubernetes.io/hostname": node}),
            workspace_tolerations=json.dumps([{**taint, "operator": "Equal"}]),
        )
        workspaces = Workspaces(kube, workspace_namespace)
        workspaces.create(sample("alice"))
        workspaces.wait_phase("alice", "Running")
        pod = workspaces.running_pod("alice")
        assert pod.spec.node_name == node
        config = core.read_namespaced_config_map("alice-spark", workspace_namespace).data
        assert (
            f"spark.kubernetes.node.selector.kubernetes.io/hostname {node}"
            in config["spark-defaults.conf"].splitlines()
        )
        template = yaml.safe_load(config["executor-pod-template.yaml"])
        assert template["spec"]["tolerations"] == [{**taint, "operator": "Equal"}]
    finally:
        core.patch_node(node, {"spec": {"taints": before or None}})


def test_an_operator_watching_listed_namespaces_peers_there_and_acts(
    kube: client.ApiClient,
    workspace_namespace: str,
    operator_with: Callable[..., OperatorProcess],
) -> None:
    """kopf peers per namespace when it serves a list of them: the operator makes the
    KopfPeering it needs (mandatory peering would otherwise keep it waiting)."""
    operator_with(watch_namespaces=workspace_namespace)
    peering = wait_until(
        "the namespace's KopfPeering",
        lambda: client.CustomObjectsApi(kube).list_namespaced_custom_object(
            "kopf.dev", "v1", workspace_namespace, "kopfpeerings"
        )["items"],
    )
    assert [p["metadata"]["name"] for p in peering] == ["rspark-operator"]
    workspaces = Workspaces(kube, workspace_namespace)
    workspaces.create(sample("alice"))
    workspaces.wait_phase("alice", "Running")


# Small requests, so that 50 workspaces fit on the two simulated nodes.
SMALL = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}


def test_an_image_setting_change_replaces_at_most_the_allowed_pods_at_once(
    kube: client.ApiClient,
    workspace_namespace: str,
    operator_with: Callable[..., OperatorProcess],
) -> None:
    """An operator upgrade must not end every user's session at once: 50 running
    workspaces, a new image setting, never more than 3 pods replaced at once."""
    at_once, count, new_image = 3, 50, "example.com/rstudio:upgraded"
    first = operator_with(rollout_max_pods=str(at_once))
    workspaces = Workspaces(kube, workspace_namespace)
    ids = [f"ws{index:02}" for index in range(count)]
    for name in ids:
        workspaces.create(sample(name, resources=SMALL))
    for name in ids:
        workspaces.wait_phase(name, "Running", timeout=300)
    core = client.CoreV1Api(kube)
    selector = f"{names.COMPONENT_LABEL}={names.RSTUDIO_COMPONENT}"
    listed = core.list_namespaced_pod(workspace_namespace, label_selector=selector)
    first.stop()
    operator_with(rollout_max_pods=str(at_once), workspace_image=new_image)

    # Every change of every workspace pod, from the moment the new operator starts.
    pods: dict[str, Any] = {pod.metadata.name: pod for pod in listed.items}

    def replaced_now() -> int:
        """Workspaces without a pod that serves: none, Terminating, or not Ready yet."""
        return sum(1 for name in ids if not _serving(pods.get(name)))

    def upgraded() -> bool:
        return all(_serving(pods.get(n)) and _image(pods[n]) == new_image for n in ids)

    most = 0
    stream = watch.Watch()
    for event in stream.stream(core.list_namespaced_pod, workspace_namespace,
                               label_selector=selector,
                               resource_version=listed.metadata.resource_version,
                               timeout_seconds=600):  # fmt: skip
        pod = event["object"]
        if event["type"] == "DELETED":
            pods.pop(pod.metadata.name, None)
        else:
            pods[pod.metadata.name] = pod
        most = max(most, replaced_now())
        assert most <= at_once, f"{most} workspaces without a serving pod at once"
        if upgraded():
            stream.stop()
    assert upgraded(), {n: _image(p) for n, p in pods.items()}
    assert most >= 1
    wait_until(
        "no restart pending",
        lambda: not any((workspaces.get(n) or {})["status"]["pendingRestart"] for n in ids),
    )


def _serving(pod: Any) -> bool:
    if pod is None or pod.metadata.deletion_timestamp:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _image(pod: Any) -> str:
    return str(next(c.image for c in pod.spec.containers if c.name == IDE_CONTAINER))
