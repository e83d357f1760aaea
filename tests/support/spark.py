"""A Spark session's settings exactly as the operator renders them for a workspace;
a real session with its UI on the workspace's UI port."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.spark import SPARK_S3A, spark_venv
from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.pod import IDE_CONTAINER, IDE_PASSWORD_KEY, build_pod
from rspark_operator.builders.spark import SPARK_DEFAULTS_FILE, UI_PORTS, build_spark_config_map
from rspark_operator.ide import SPARK_CONF_DIR_ENV
from rspark_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(snapshot_repository_base="s3:http://s3.test/rspark")


def resolve(env: list[dict[str, Any]], secrets: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """The container's variables as the kubelet sets them (secretKeyRef from `secrets`)."""
    values = {}
    for var in env:
        if "value" in var:
            values[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            values[var["name"]] = secrets[(ref["name"], ref["key"])]
    return values


def session_env(
    ws: Workspace,
    secrets: Mapping[tuple[str, str], str],
    workdir: Path,
    settings: OperatorSettings = SETTINGS,
) -> dict[str, str]:
    """The IDE container's environment, with its spark-defaults.conf written under workdir
    (the ConfigMap's mount) and nothing of this machine but PATH."""
    conf_dir = workdir / "conf"
    conf_dir.mkdir(exist_ok=True)
    data = build_spark_config_map(ws, settings)["data"]
    (conf_dir / SPARK_DEFAULTS_FILE).write_text(data[SPARK_DEFAULTS_FILE])
    pod = build_pod(ws, settings)
    (ide,) = (c for c in pod["spec"]["containers"] if c["name"] == IDE_CONTAINER)
    password = {(names.passwords_secret_name(ws.name), IDE_PASSWORD_KEY): "a password"}
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        **resolve(ide["env"], {**password, **secrets}),
        SPARK_CONF_DIR_ENV: str(conf_dir),
    }


# A local session that keeps its UI up until its standard input closes; the UI takes
# the port of spark-defaults.conf and fails rather than move to the next one.
UI_SESSION = """
import sys
from pyspark.sql import SparkSession
spark = (
    SparkSession.builder.master("local[1]")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.port.maxRetries", "0")
    .getOrCreate()
)
spark.range(1000).selectExpr("sum(id)").collect()
print("ready", flush=True)
sys.stdin.read()
spark.stop()
"""
UI_STOP_SECONDS = 120


@contextmanager
def spark_ui_session(ws: Workspace, workdir: Path) -> Iterator[str]:
    """A Spark 3.5.3 session with the workspace's spark-defaults.conf, one job done:
    its UI's base URL, on 127.0.0.1 and the UI port the operator routes to."""
    with (workdir / "spark.log").open("w") as log:
        process = subprocess.Popen(
            [str(spark_venv(SPARK_S3A) / "bin" / "python"), "-c", UI_SESSION],
            env=session_env(ws, {}, workdir),
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert process.stdout is not None and process.stdin is not None
        try:
            ready = process.stdout.readline().strip() == "ready"
            assert ready, f"no Spark UI on {UI_PORTS.first}: {(workdir / 'spark.log').read_text()}"
            yield f"http://127.0.0.1:{UI_PORTS.first}"
        finally:
            process.stdin.close()
            process.wait(timeout=UI_STOP_SECONDS)
