"""Time from a Spark session's start in a workspace to its executors registered.

On the local cluster's real nodes (`make cluster-up` first), one JupyterLab workspace
under the operator with the real-node settings (what `make dev` runs). In its IDE
container, R (reticulate + pyspark, as a user's console) starts a session from the
operator's spark-defaults.conf alone, asking for RUNS_EXECUTORS executors at start,
and waits until that many have registered with the driver; the session stops, its
executor pods go, and the next run starts. Baseline, in the same pod and run: a
local-mode session (`local[2]`, no executors), i.e. what starting the JVM and the
driver costs by itself. Each figure is the p50 of RUNS runs, and their ratio.
On Kubernetes the session object comes once 80% of the executors asked for have
registered (Spark's spark.scheduler.minRegisteredResourcesRatio): both figures of a
cluster run are nearly the same.

Usage: python -m bench.spark_start   (writes its section of docs/benchmarks.md)
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import yaml

from bench.operator_scale import write_section
from devtools import localcluster
from devtools.deploy import (
    OperatorProcess,
    credentials_secret,
    install_crds,
    operator_environment,
    push_images,
    real_node_settings,
    workspace_status,
)
from devtools.localcluster import kubectl
from rspark_operator import names
from rspark_operator.builders.pod import IDE_CONTAINER
from tests.support.workspaces import sample

SECTION = "spark_start"
NAMESPACE = "rspark-bench-spark"
WORKSPACE = "bench"
RUNS = 5
RUNS_EXECUTORS = 2
READY_SECONDS = 900  # a first pull of the JupyterLab image onto a node
RUN_SECONDS = 300
SPEC = {
    "ide": "jupyterlab",
    "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
    "spark": {"maxExecutors": RUNS_EXECUTORS, "executorMemory": "512m"},
}


def session_script(local: bool) -> str:
    """R: seconds to the session object, then to RUNS_EXECUTORS executors registered
    (getExecutorMemoryStatus counts the driver too)."""
    builder = (
        'builder$master("local[2]")'
        if local
        else f'builder$config("spark.dynamicAllocation.initialExecutors", "{RUNS_EXECUTORS}")'
    )
    wanted = 1 if local else RUNS_EXECUTORS + 1
    return f"""
library(reticulate)
pyspark <- import("pyspark.sql")
builder <- pyspark$SparkSession$builder
started <- Sys.time()
spark <- {builder}$getOrCreate()
session <- as.numeric(Sys.time() - started, units = "secs")
jvm <- spark$sparkContext$`_jsc`$sc()
while (jvm$getExecutorMemoryStatus()$size() < {wanted}L) Sys.sleep(0.05)
ready <- as.numeric(Sys.time() - started, units = "secs")
cat(sprintf("session=%.3f ready=%.3f\\n", session, ready))
spark$stop()
"""


@dataclass(frozen=True)
class Run:
    session: float  # seconds to the SparkSession object
    ready: float  # seconds to the executors registered


def run(pod: str, local: bool) -> Run:
    answer = kubectl(
        "exec", pod, "-n", NAMESPACE, "-c", IDE_CONTAINER, "--",
        "Rscript", "-e", session_script(local), timeout=RUN_SECONDS,
    )  # fmt: skip
    fields = dict(f.split("=", 1) for f in answer.split() if "=" in f)
    return Run(float(fields["session"]), float(fields["ready"]))


def executors_gone() -> None:
    selector = (
        f"{names.WORKSPACE_LABEL}={WORKSPACE},"
        f"{names.COMPONENT_LABEL}={names.SPARK_EXECUTOR_COMPONENT}"
    )
    deadline = time.monotonic() + RUN_SECONDS
    while kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "name").strip():
        if time.monotonic() > deadline:
            raise RuntimeError("executor pods still there after the session stopped")
        time.sleep(1)


def running_workspace() -> str:
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=f"{{apiVersion: v1, kind: Namespace, metadata: {{name: {NAMESPACE}}}}}",
    )
    credentials_secret(NAMESPACE, localcluster.s3_credentials())
    manifest = sample(WORKSPACE, **SPEC)
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(manifest))
    deadline = time.monotonic() + READY_SECONDS
    while workspace_status(NAMESPACE, WORKSPACE).get("phase") != "Running":
        if time.monotonic() > deadline:
            raise RuntimeError(f"workspace not Running: {workspace_status(NAMESPACE, WORKSPACE)}")
        time.sleep(2)
    return names.pod_name(WORKSPACE)


def p50(values: list[float]) -> float:
    return statistics.median(values)


def report(cluster: list[Run], local: list[Run]) -> str:
    def seconds(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    ready = p50([r.ready for r in cluster])
    baseline = p50([r.ready for r in local])

    return "\n".join(
        [
            "## Spark session to executors (`bench/spark_start.py`)",
            "",
            "A JupyterLab workspace on the local cluster's real nodes; R (reticulate + "
            "pyspark) starts a session from the operator's spark-defaults.conf with "
            f"{RUNS_EXECUTORS} executors at start (`spark.dynamicAllocation.initialExecutors`) "
            f"and waits until both have registered with the driver. p50 of {RUNS} runs, "
            "each after the previous session's executor pods are gone; the executor image "
            "is already on the nodes. Baseline in the same pod and run: a local-mode "
            "session (`local[2]`), the JVM and driver alone. 2 cores shared with other "
            "sessions' builds and tests: read the figures as upper bounds.",
            "",
            "| what | p50 s | runs s |",
            "|---|---|---|",
            f"| session start to {RUNS_EXECUTORS} executors registered "
            f"| {ready:.1f} | {seconds([r.ready for r in cluster])} |",
            f"| of which: session start to the SparkSession object "
            f"| {p50([r.session for r in cluster]):.1f} "
            f"| {seconds([r.session for r in cluster])} |",
            f"| baseline: local-mode session start | {baseline:.1f} "
            f"| {seconds([r.ready for r in local])} |",
            "",
            f"Ratio (p50 to executors / p50 baseline): {ready / baseline:.2f}x.",
            "",
        ]
    )


def main() -> None:
    localcluster.up()
    refs = push_images()
    install_crds()
    log_path = localcluster.LOCAL / "logs" / "operator-bench-spark.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    s3 = localcluster.s3_credentials()
    operator = OperatorProcess(log_path, operator_environment(s3, **real_node_settings(refs)))
    operator.start()
    try:
        pod = running_workspace()
        run(pod, local=True)  # warm-up: page cache, the executor image onto both nodes
        run(pod, local=False)
        executors_gone()
        cluster: list[Run] = []
        local: list[Run] = []
        for _ in range(RUNS):
            local.append(run(pod, local=True))
            cluster.append(run(pod, local=False))
            executors_gone()
        print(
            json.dumps({"cluster": [vars(r) for r in cluster], "local": [vars(r) for r in local]})
        )
        write_section(report(cluster, local), SECTION)
    finally:
        kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
        operator.stop()


if __name__ == "__main__":
    main()
