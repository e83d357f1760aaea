"""A Spark session's settings exactly as the operator renders them for a workspace."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.pod import IDE_CONTAINER, IDE_PASSWORD_KEY, build_pod
from rspark_operator.builders.spark import SPARK_DEFAULTS_FILE, build_spark_config_map
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
