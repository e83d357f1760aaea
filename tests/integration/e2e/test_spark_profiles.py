"""SparkProfiles on the real nodes, in one JupyterLab workspace driven from R (reticulate +
pyspark): two Spark applications at once under a small profile both get executors of
its size; a value beyond the profile is refused and leaves the pod alone; a switch to a
large profile rewrites the mounted spark-defaults.conf in place and the next session's
executors have the large size, in the same pod. Last, a `connect` profile pointing at
Spark's Connect server in the cluster (devtools/connect.py): the IDE's environment
changes (SPARK_REMOTE), so a new pod, whose session runs its query on the server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from devtools.connect import deploy_connect_server, remove_connect_server
from devtools.deploy import push_images
from rspark_operator.builders.pod import IDE_CONTAINER
from rspark_operator.builders.spark import SPARK_CONF_DIR, SPARK_DEFAULTS_FILE
from rspark_operator.status import Reason
from tests.integration.e2e.conftest import FIRST_START_SECONDS
from tests.integration.e2e.spark_session import EXPECTED_TOTAL, JOB_ROWS, RSparkSession
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.integration.e2e.test_spark import executor_pods
from tests.support.kube import wait_until
from tests.support.profiles import Profiles
from tests.support.workspaces import Workspaces

# Spark's default overhead depends on the kind of application; fixed, the executor pod's
# memory request is exactly executor memory + this.
OVERHEAD_MIB = 384
# The kubelet refreshes a mounted ConfigMap within its sync period (a minute) plus its
# cache's TTL.
CONFIG_MAP_REFRESH_SECONDS = 180
EXECUTORS_SECONDS = 300


def kubernetes_profile(namespace: str, executors: int, memory_mib: int) -> dict[str, Any]:
    """One core per executor (two real nodes on a 2-core machine); the size and count
    differ between the profiles."""
    return {
        "kind": "kubernetes",
        "namespaces": [namespace],
        "kubernetes": {
            "executors": {"default": executors, "max": executors},
            "executorCores": {"default": 1, "max": 1},
            "executorMemory": {"default": f"{memory_mib}m", "max": f"{memory_mib}m"},
            "conf": {"spark.executor.memoryOverhead": f"{OVERHEAD_MIB}m"},
        },
    }


SMALL_MIB, LARGE_MIB = 512, 1024
SMALL_EXECUTORS, LARGE_EXECUTORS = 1, 2
CONNECT_SERVER_VERSION = "4.0.1"  # images/spark-connect
# Nothing but the workspace's environment: SparkSession.builder connects to SPARK_REMOTE.
CONNECT_FROM_R = f"""
library(reticulate)
pyspark <- import("pyspark.sql")
spark <- pyspark$SparkSession$builder$getOrCreate()
total <- spark$range({JOB_ROWS}L, numPartitions = 4L)$selectExpr("sum(id) AS total")$first()$total
cat(sprintf("session=%s version=%s total=%.0f\\n", class(spark)[1], spark$version, total))
spark$stop()
"""


@pytest.fixture(scope="module")
def connect_endpoint(local_images: dict[str, str]) -> Iterator[str]:
    """Spark's Connect server on the real nodes: its endpoint."""
    (image,) = push_images(("spark-connect",)).values()
    try:
        yield deploy_connect_server(image)
    finally:
        remove_connect_server()


def running_executors(core: client.CoreV1Api, namespace: str, count: int) -> list[Any]:
    """Wait until `count` executor pods of alice run; they."""

    def running() -> list[Any] | None:
        pods = [
            p
            for p in executor_pods(core, namespace, "alice")
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]
        return pods if len(pods) == count else None

    return wait_until(f"{count} running executors", running, timeout=EXECUTORS_SECONDS)


def assert_sized(executor: Any, memory_mib: int) -> None:
    """The executor pod's requests and limits: the profile's one core and its memory."""
    resources = executor.spec.containers[0].resources
    assert resources.requests == {"cpu": "1", "memory": f"{memory_mib + OVERHEAD_MIB}Mi"}
    assert resources.limits == {"cpu": "1", "memory": f"{memory_mib + OVERHEAD_MIB}Mi"}


def mounted_defaults(namespace: str, pod: str) -> str:
    return ide_exec(namespace, pod, "cat", f"{SPARK_CONF_DIR}/{SPARK_DEFAULTS_FILE}")


def test_profiles_switch_in_place_size_the_executors_and_reach_connect(
    kube: client.ApiClient,
    workspace_namespace: str,
    profiles: Profiles,
    real_workspaces: Callable[..., dict[str, Any]],
    connect_endpoint: str,
) -> None:
    ns = workspace_namespace
    core = client.CoreV1Api(kube)
    small = profiles("small", kubernetes_profile(ns, SMALL_EXECUTORS, SMALL_MIB))
    large = profiles("large", kubernetes_profile(ns, LARGE_EXECUTORS, LARGE_MIB))
    workspaces = Workspaces(kube, ns)
    ws = real_workspaces("alice", spark={"profile": small})
    assert ws["status"]["spark"] == {"profile": small}
    pod = workspaces.running_pod("alice")

    # Two applications at once: the second binds the next driver and block manager
    # ports, which the headless Service and the NetworkPolicy allow.
    one_each = {"spark.dynamicAllocation.initialExecutors": "1"}
    with (
        RSparkSession(ns, pod.metadata.name, "first", one_each) as first,
        RSparkSession(ns, pod.metadata.name, "second", one_each) as second,
    ):
        assert first["app"] != second["app"]
        for report in (first, second):
            assert report["maxExecutors"] == str(SMALL_EXECUTORS)
            assert report["executorMemory"] == f"{SMALL_MIB}m"
        executors = running_executors(core, ns, 2)
        apps = {e.metadata.labels["spark-app-selector"] for e in executors}
        assert apps == {first["app"], second["app"]}
        for executor in executors:
            assert_sized(executor, SMALL_MIB)
    wait_until("the executors gone", lambda: not executor_pods(core, ns, "alice"), timeout=120)

    # Beyond the profile: refused with the limit named; nothing changes, the pod stays.
    workspaces.patch("alice", {"spark": {"executorMemory": "2g"}})

    def refused() -> dict[str, Any] | None:
        ready = workspaces.ready_condition("alice")
        return ready if ready and ready["reason"] == Reason.SPARK_LIMIT_EXCEEDED else None

    ready = wait_until("Ready=False SparkLimitExceeded", refused)
    assert ready["status"] == "False"
    assert ready["message"] == (
        f"spec.spark.executorMemory 2g is more than profile '{small}' allows ({SMALL_MIB}m)"
    )
    assert workspaces.running_pod("alice").metadata.uid == pod.metadata.uid

    # The switch: the next session reads the large profile, in the same pod.
    workspaces.patch("alice", {"spark": {"profile": large, "executorMemory": None}})
    switched = workspaces.wait_phase("alice", "Running")
    assert switched["status"]["spark"] == {"profile": large}
    wait_until(
        "the large profile in the mounted spark-defaults.conf",
        lambda: f"spark.executor.memory {LARGE_MIB}m" in mounted_defaults(ns, pod.metadata.name),
        timeout=CONFIG_MAP_REFRESH_SECONDS,
    )
    both = {"spark.dynamicAllocation.initialExecutors": str(LARGE_EXECUTORS)}
    with RSparkSession(ns, pod.metadata.name, "large", both) as report:
        assert report["maxExecutors"] == str(LARGE_EXECUTORS)
        assert report["executorMemory"] == f"{LARGE_MIB}m"
        for executor in running_executors(core, ns, LARGE_EXECUTORS):
            assert_sized(executor, LARGE_MIB)
    current = workspaces.running_pod("alice")
    assert current.metadata.uid == pod.metadata.uid
    ide = next(c for c in current.status.container_statuses if c.name == IDE_CONTAINER)
    assert ide.restart_count == 0
    wait_until("the executors gone", lambda: not executor_pods(core, ns, "alice"), timeout=120)

    connect_spec = {
        "kind": "connect",
        "namespaces": [ns],
        "connect": {"endpoint": connect_endpoint},
    }
    connect = profiles("connect", connect_spec)
    workspaces.patch("alice", {"spark": {"profile": connect}})

    def new_pod() -> Any:
        new = [
            p
            for p in workspaces.pods("alice")
            if p.metadata.uid != pod.metadata.uid and p.status.phase == "Running"
        ]
        return new[0] if new else None

    connected = wait_until("a pod with SPARK_REMOTE", new_pod, timeout=FIRST_START_SECONDS)
    assert workspaces.wait_phase("alice", "Running")["status"]["spark"] == {"profile": connect}
    answer = ide_exec(ns, connected.metadata.name, "Rscript", "-e", CONNECT_FROM_R)
    result = dict(field.split("=", 1) for field in answer.split()[-3:])
    assert result == {
        "session": "pyspark.sql.connect.session.SparkSession",
        "version": CONNECT_SERVER_VERSION,
        "total": str(EXPECTED_TOTAL),
    }, answer
    assert not executor_pods(core, ns, "alice")
