"""A workspace's identities and the admission policy, on the local cluster.

The attacks of issue 10 ("Why"), tried with the tokens a workspace pod holds: the
IDE container's (a TokenRequest for the pod's own account, as the kubelet projects
it) and the agent container's (its token Secret, filled in by Kubernetes). Every
attack is a server-side dry run and must be refused; what Spark and the agent need
must pass. The workspace is created by the session's operator, under the
manifests' ClusterRole, with manifests/base (admission policy included) installed.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from kubernetes import client

from rspark_operator import names
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.builders import build_pod
from rspark_operator.builders.spark import DRIVER_PORT, SPARK_CONF_DIR, SPARK_DEFAULTS_FILE
from rspark_operator.settings import OperatorSettings
from rspark_operator.validation import parse_workspace
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

pytestmark = pytest.mark.integration

DRY_RUN = "All"
S3_SECRET = "rspark-s3-credentials"
RBAC_GROUP = "rbac.authorization.k8s.io"
REFUSAL = "may only create, change or delete its own Spark executors"


def token_client(admin: client.ApiClient, token: str) -> client.ApiClient:
    """An API client for the same server that authenticates with `token` only."""
    configuration = copy.copy(admin.configuration)
    configuration.cert_file = None
    configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def ide_token(kube: client.ApiClient, namespace: str, workspace: str) -> str:
    """The IDE container's token: the pod's own account's, as the kubelet requests it."""
    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    answer = client.CoreV1Api(kube).create_namespaced_service_account_token(
        names.service_account_name(workspace), namespace, request
    )
    return str(answer.status.token)


def agent_token(kube: client.ApiClient, namespace: str, workspace: str) -> str:
    """The agent container's token: the Secret mounted into it, once Kubernetes fills it."""
    core = client.CoreV1Api(kube)

    def filled() -> str | None:
        secret = core.read_namespaced_secret(names.agent_token_secret_name(workspace), namespace)
        token = (secret.data or {}).get("token")
        return base64.b64decode(token).decode() if token else None

    return str(wait_until("the agent's token Secret filled in", filled))


def spark_conf(kube: client.ApiClient, namespace: str, workspace: str) -> dict[str, str]:
    """spark-defaults.conf as the operator wrote it for the driver."""
    config_map = client.CoreV1Api(kube).read_namespaced_config_map(
        names.spark_config_map_name(workspace), namespace
    )
    lines = config_map.data[SPARK_DEFAULTS_FILE].splitlines()
    return dict(line.split(" ", 1) for line in lines if line.strip())


def _field(path: str) -> dict[str, Any]:
    return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}


def spark_executor(conf: dict[str, str], driver_uid: str, number: int = 1) -> dict[str, Any]:
    """An executor pod as Spark's driver builds it (BasicExecutorFeatureStep and friends)
    from that configuration: its labels, image, account, environment and volumes."""
    prefix = conf["spark.kubernetes.executor.podNamePrefix"]
    app = "spark-application-1764433000000"
    label_prefix = "spark.kubernetes.executor.label."
    labels = {
        k.removeprefix(label_prefix): v for k, v in conf.items() if k.startswith(label_prefix)
    }
    name = f"{prefix}-exec-{number}"
    driver = conf["spark.kubernetes.driver.pod.name"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                "spark-app-selector": app,
                "spark-app-name": "sparklyr",
                "spark-exec-id": str(number),
                "spark-exec-resourceprofile-id": "0",
                "spark-role": "executor",
                **labels,
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": driver,
                    "uid": driver_uid,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "hostname": name,
            "restartPolicy": "Never",
            "serviceAccountName": conf["spark.kubernetes.authenticate.executor.serviceAccountName"],
            "containers": [
                {
                    "name": "spark-kubernetes-executor",
                    "image": conf["spark.kubernetes.container.image"],
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["executor"],
                    "env": [
                        {"name": "SPARK_USER", "value": "rstudio"},
                        {
                            "name": "SPARK_DRIVER_URL",
                            "value": "spark://CoarseGrainedScheduler@"
                            f"{conf['spark.driver.host']}:{DRIVER_PORT}",
                        },
                        {"name": "SPARK_EXECUTOR_CORES", "value": "1"},
                        {"name": "SPARK_EXECUTOR_MEMORY", "value": "4096m"},
                        {"name": "SPARK_APPLICATION_ID", "value": app},
                        {"name": "SPARK_CONF_DIR", "value": SPARK_CONF_DIR},
                        {"name": "SPARK_EXECUTOR_ID", "value": str(number)},
                        {"name": "SPARK_RESOURCE_PROFILE_ID", "value": "0"},
                        {"name": "SPARK_EXECUTOR_POD_IP", "valueFrom": _field("status.podIP")},
                        {"name": "SPARK_EXECUTOR_POD_NAME", "valueFrom": _field("metadata.name")},
                        # spark.authenticate: the application's secret, as a plain value.
                        {"name": "_SPARK_AUTH_SECRET", "value": "0123456789abcdef"},
                        {"name": "SPARK_LOCAL_DIRS", "value": "/var/data/spark-1"},
                    ],
                    "ports": [{"name": "blockmanager", "containerPort": 7079}],
                    "resources": {
                        "requests": {"cpu": "1", "memory": "4505Mi"},
                        "limits": {"memory": "4505Mi"},
                    },
                    "volumeMounts": [
                        {"name": "spark-local-dir-1", "mountPath": "/var/data/spark-1"},
                        {"name": "spark-conf-volume-exec", "mountPath": SPARK_CONF_DIR},
                    ],
                }
            ],
            "volumes": [
                {"name": "spark-local-dir-1", "emptyDir": {}},
                {
                    "name": "spark-conf-volume-exec",
                    "configMap": {"name": f"spark-exec-{app[-8:]}-conf-map", "defaultMode": 420},
                },
            ],
        },
    }


def refused(call: Callable[[], Any]) -> str:
    """The API server's refusal (403) of `call`, as text."""
    with pytest.raises(client.ApiException) as error:
        call()
    assert error.value.status == 403, error.value.body
    return str(error.value.body)


@pytest.fixture
def alice(kube: client.ApiClient, workspace_namespace: str) -> dict[str, Any]:
    """Workspace alice, its pod and Spark configuration; another user's passwords and pod
    in the same namespace (a shared namespace: the worst case)."""
    namespace = workspace_namespace
    workspaces = Workspaces(kube, namespace)
    workspaces.create(sample("alice"))
    pod = workspaces.running_pod("alice")
    core = client.CoreV1Api(kube)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "bob-passwords"}, "stringData": {"restic-password": "x"}}
    )
    conf = spark_conf(kube, namespace, "alice")
    bob_executor = spark_executor(conf, pod.metadata.uid)
    bob_executor["metadata"] |= {"name": "bob-exec-1", "ownerReferences": []}
    bob_executor["metadata"]["labels"][names.WORKSPACE_LABEL] = "bob"
    core.create_namespaced_pod(namespace, bob_executor)
    return {"namespace": namespace, "pod": pod, "conf": conf}


def attack_pod(conf: dict[str, str], driver_uid: str) -> dict[str, Any]:
    """Issue 10's attack: a pod that mounts the bucket key and another user's passwords,
    dressed as one of alice's executors so that only the Secret rule can stop it."""
    pod = spark_executor(conf, driver_uid, number=66)
    pod["spec"]["volumes"] += [
        {"name": "bucket", "secret": {"secretName": S3_SECRET}},
        {"name": "bob", "secret": {"secretName": "bob-passwords"}},
    ]
    return pod


def test_the_ide_identity_can_run_spark_executors_and_nothing_else(
    kube: client.ApiClient, alice: dict[str, Any]
) -> None:
    namespace, conf, pod = alice["namespace"], alice["conf"], alice["pod"]
    ide = token_client(kube, ide_token(kube, namespace, "alice"))
    core = client.CoreV1Api(ide)
    executor = spark_executor(conf, pod.metadata.uid)

    # What Spark does: create, list and delete its executors.
    core.create_namespaced_pod(namespace, executor, dry_run=DRY_RUN)
    core.list_namespaced_pod(namespace, label_selector="spark-role=executor")
    own = client.CoreV1Api(kube).create_namespaced_pod(namespace, executor)
    core.delete_namespaced_pod(own.metadata.name, namespace, dry_run=DRY_RUN)

    # The attack pod, plain: not an executor of alice's.
    plain = attack_pod(conf, pod.metadata.uid)
    plain["metadata"]["labels"] = {"app": "innocent"}
    plain["spec"]["serviceAccountName"] = "default"
    assert REFUSAL in refused(lambda: core.create_namespaced_pod(namespace, plain, dry_run=DRY_RUN))
    # Dressed as an executor: the Secret volumes are refused.
    message = refused(
        lambda: core.create_namespaced_pod(
            namespace, attack_pod(conf, pod.metadata.uid), dry_run=DRY_RUN
        )
    )
    assert "may not read Secrets" in message
    # Or reading them through the environment.
    through_env = spark_executor(conf, pod.metadata.uid, number=67)
    through_env["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": S3_SECRET}}]
    assert "may not read Secrets" in refused(
        lambda: core.create_namespaced_pod(namespace, through_env, dry_run=DRY_RUN)
    )

    # Another user's executor, the workspace pod itself: not its to delete or change.
    for victim in ("bob-exec-1", pod.metadata.name):
        assert REFUSAL in refused(
            partial(core.delete_namespaced_pod, victim, namespace, dry_run=DRY_RUN)
        )
    relabel = {"metadata": {"labels": {names.WORKSPACE_LABEL: "alice"}}}
    assert REFUSAL in refused(
        lambda: core.patch_namespaced_pod("bob-exec-1", namespace, relabel, dry_run=DRY_RUN)
    )

    # Exec into a pod, read a Secret, rewrite its own workspace's status: not granted.
    review = client.AuthorizationV1Api(ide).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"namespace": namespace, "verb": "create",
                                         "resource": "pods", "subresource": "exec"}}}
    )  # fmt: skip
    assert review.status.allowed is False
    refused(lambda: core.read_namespaced_secret(S3_SECRET, namespace))
    status = {"status": {"url": "https://attacker.example/"}}
    refused(
        lambda: client.CustomObjectsApi(ide).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "alice", status, dry_run=DRY_RUN
        )
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda p: p["spec"].update(serviceAccountName="alice-rspark-agent"),
            "run as ServiceAccount",
        ),
        (lambda p: p["spec"]["containers"][0].update(image="evil.example/miner:1"), "must be"),
        (lambda p: p["spec"].update(hostNetwork=True), "host network"),
        (lambda p: p["spec"].update(hostPID=True), "host network"),
        (
            lambda p: p["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
            "may not read Secrets or mount",
        ),
        (
            lambda p: p["spec"]["containers"][0].update(securityContext={"privileged": True}),
            "run privileged",
        ),
        (
            lambda p: p["spec"]["containers"][0].update(
                securityContext={"capabilities": {"add": ["NET_ADMIN"]}}
            ),
            "add capabilities",
        ),
        (
            lambda p: p["spec"]["volumes"].append(
                {"name": "home", "persistentVolumeClaim": {"claimName": "bob-home"}}
            ),
            "may not read Secrets or mount",
        ),
    ],
    ids=["other-account", "image", "host-network", "host-pid", "host-path", "privileged",
         "capabilities", "other-home"],
)  # fmt: skip
def test_an_executor_lookalike_is_refused(
    kube: client.ApiClient,
    alice: dict[str, Any],
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    namespace = alice["namespace"]
    core = client.CoreV1Api(token_client(kube, ide_token(kube, namespace, "alice")))
    pod = spark_executor(alice["conf"], alice["pod"].metadata.uid)
    change(pod)
    assert expected in refused(lambda: core.create_namespaced_pod(namespace, pod, dry_run=DRY_RUN))


def test_only_the_agent_identity_reports_the_workspace_status(
    kube: client.ApiClient, alice: dict[str, Any]
) -> None:
    namespace = alice["namespace"]
    agent = client.CustomObjectsApi(token_client(kube, agent_token(kube, namespace, "alice")))
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RStudioWorkspace",
        "metadata": {"name": "alice"},
        "status": {"lastSnapshot": {"id": "0123456789abcdef", "time": "2026-11-29T18:00:00Z"}},
    }
    agent.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "alice", body, dry_run=DRY_RUN,
        field_manager="rspark-agent", force=True,
        _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    core = client.CoreV1Api(agent.api_client)
    core.read_namespaced_secret(names.home_secrets_name("alice"), namespace)
    # Nothing else: not another user's Secrets, not pods.
    refused(lambda: core.read_namespaced_secret("bob-passwords", namespace))
    refused(lambda: core.read_namespaced_secret(S3_SECRET, namespace))
    refused(lambda: core.list_namespaced_pod(namespace))


def impersonating(admin: client.ApiClient, user: str) -> client.ApiClient:
    """The admin's client acting as `user` (Kubernetes impersonation), with no groups
    but system:authenticated: only what RBAC grants `user` in the tests."""
    api = client.ApiClient(admin.configuration)
    api.set_default_header("Impersonate-User", user)
    return api


def test_namespace_roles_reach_workspaces_and_their_url_without_secrets(
    kube: client.ApiClient, workspace_namespace: str
) -> None:
    namespace = workspace_namespace
    rbac = client.RbacAuthorizationV1Api(kube)
    for user, role in (("carol", "edit"), ("dave", "view")):
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": f"{user}-{role}"},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user}],
            },
        )
    editor, viewer = impersonating(kube, "carol"), impersonating(kube, "dave")

    # Namespace `edit` (rspark-editor aggregated into it): create, change, read.
    Workspaces(editor, namespace).create(sample("carol"))
    Workspaces(editor, namespace).patch("carol", {"suspended": True})
    # Namespace `view` (rspark-viewer): the workspace and its URL, not its Secrets.
    readers = Workspaces(viewer, namespace)
    url = wait_until(
        "the URL in the status",
        lambda: ((readers.get("carol") or {}).get("status") or {}).get("url"),
    )
    assert "carol" in url
    refused(lambda: readers.patch("carol", {"suspended": False}))
    core = client.CoreV1Api(viewer)
    refused(lambda: core.read_namespaced_secret(names.passwords_secret_name("carol"), namespace))
    refused(lambda: core.list_namespaced_secret(namespace))


def test_the_agent_meets_restricted_and_the_workspace_pod_baseline(
    kube: client.ApiClient, namespace: str
) -> None:
    """Pod Security admission of the API server judges the pod the operator builds."""
    core = client.CoreV1Api(kube)
    body = sample("alice")
    body["metadata"] |= {"namespace": namespace, "uid": "00000000-0000-0000-0000-000000000001"}
    settings = OperatorSettings(snapshot_repository_base="s3:http://s3.test:8333/rspark")
    pod = build_pod(parse_workspace(body, settings), settings)
    pod["metadata"].pop("ownerReferences")
    pod["metadata"].pop("namespace")
    # The agent alone: its container (a plain one here) and the volumes it mounts.
    agent = copy.deepcopy(pod)
    (container,) = agent["spec"].pop("initContainers")
    container.pop("restartPolicy")
    agent["spec"]["containers"] = [container]
    mounted = {m["name"] for m in container["volumeMounts"]}
    agent["spec"]["volumes"] = [v for v in agent["spec"]["volumes"] if v["name"] in mounted]
    levels = {}
    for level in ("baseline", "restricted"):
        levels[level] = f"{namespace}-{level}"[:63]
        labels = {"pod-security.kubernetes.io/enforce": level}
        core.create_namespace({"metadata": {"name": levels[level], "labels": labels}})
        account = {"metadata": {"name": pod["spec"]["serviceAccountName"]}}
        core.create_namespaced_service_account(levels[level], account)
    try:
        core.create_namespaced_pod(levels["baseline"], pod, dry_run=DRY_RUN)
        core.create_namespaced_pod(levels["restricted"], agent, dry_run=DRY_RUN)
        # The whole pod is not `restricted`: the IDE's init starts as root.
        message = refused(
            lambda: core.create_namespaced_pod(levels["restricted"], pod, dry_run=DRY_RUN)
        )
        assert 'violates PodSecurity \\"restricted:latest\\"' in message
    finally:
        for name in levels.values():
            core.delete_namespace(name)
