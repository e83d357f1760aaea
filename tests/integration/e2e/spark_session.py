"""A Spark session from R (reticulate + pyspark) in a workspace's IDE container, held
open until the test lets it stop: what a data scientist's console does."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from types import TracebackType

from devtools.localcluster import BIN, KUBECONFIG, tool_env
from rspark_operator.builders.pod import HOME, IDE_CONTAINER

# The session prints one line of these fields, key=value, once its job has run.
REPORTED = ("master", "total", "app", "maxExecutors", "executorMemory")
SESSION_SECONDS = 300
STOP_SECONDS = 180
JOB_ROWS = 10000
EXPECTED_TOTAL = sum(range(JOB_ROWS))  # within R's 32-bit integers (reticulate)


def session_script(stop_file: str, conf: Mapping[str, str]) -> str:
    """R: a session from the operator's spark-defaults.conf plus `conf`, a job, one
    line of REPORTED, then a wait for `stop_file` (at most SESSION_SECONDS)."""
    configured = "".join(f'builder <- builder$config("{k}", "{v}")\n' for k, v in conf.items())
    return f"""
library(reticulate)
pyspark <- import("pyspark.sql")
builder <- pyspark$SparkSession$builder
{configured}spark <- builder$getOrCreate()
total <- spark$range({JOB_ROWS}L, numPartitions = 4L)$selectExpr("sum(id) AS total")$first()$total
sc <- spark$sparkContext
conf <- sc$getConf()
cat(sprintf("master=%s total=%.0f app=%s maxExecutors=%s executorMemory=%s\\n",
    sc$master, total, sc$applicationId,
    conf$get("spark.dynamicAllocation.maxExecutors", "none"),
    conf$get("spark.executor.memory", "none")))
flush(stdout())
waited <- 0
while (!file.exists("{stop_file}") && waited < {SESSION_SECONDS}) {{
    Sys.sleep(0.5); waited <- waited + 0.5 }}
unlink("{stop_file}")
spark$stop()
cat("stopped\\n")
"""


def _exec(namespace: str, pod: str, *command: str) -> list[str]:
    return [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), "exec", pod,
            "-n", namespace, "-c", IDE_CONTAINER, "--", *command]  # fmt: skip


class RSparkSession:
    """`with RSparkSession(ns, pod, "a") as report:` the session has run its job;
    `report` holds REPORTED. On leaving, the session stops and must end cleanly."""

    def __init__(
        self, namespace: str, pod: str, name: str, conf: Mapping[str, str] | None = None
    ) -> None:
        self.namespace, self.pod = namespace, pod
        self.stop_file = f"{HOME}/.e2e-stop-spark-{name}"
        self.conf = dict(conf or {})
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> dict[str, str]:
        script = session_script(self.stop_file, self.conf)
        self.process = subprocess.Popen(
            _exec(self.namespace, self.pod, "Rscript", "-e", script),
            env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("master="):
                report = dict(field.split("=", 1) for field in line.split())
                assert int(report["total"]) == EXPECTED_TOTAL, self.log
                return report
        self.process.wait()
        raise AssertionError(f"the session ended before its job ran:\n{self.log}")

    @property
    def log(self) -> str:
        return "".join(self.output)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.process is not None
        subprocess.run(
            _exec(self.namespace, self.pod, "touch", self.stop_file),
            env=tool_env(), check=False, timeout=60,
        )  # fmt: skip
        rest = self.process.communicate(timeout=STOP_SECONDS)[0]
        self.output.append(rest)
        if kind is None:
            assert self.process.returncode == 0, self.log
            assert "stopped" in rest, self.log
            # Nothing Spark asks of the API server (executor pods, their ConfigMaps at
            # the stop) is refused by the IDE's Role.
            assert "Forbidden" not in self.log, self.log
