"""cluster-up is a no-op on a running cluster; every cluster process listens on loopback."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import localcluster


def cluster_pids() -> set[int]:
    pid_dir = localcluster.CLUSTER_DIR / "pids"
    return {int(p.read_text().strip()) for p in pid_dir.glob("*.pid")}


def test_cluster_up_again_is_a_noop(
    local_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = cluster_pids()
    localcluster.up()
    assert "already up" in capsys.readouterr().out
    assert cluster_pids() == before


def test_every_cluster_process_listens_on_loopback_only(local_cluster: Path) -> None:
    pids = cluster_pids()
    # kwokctl supervises: etcd, apiserver, controller-manager, scheduler, kwok, S3, provisioner.
    assert len(pids) == 7
    listeners = subprocess.run(
        ["ss", "-H", "-ltnp"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    ours = []
    for line in listeners:
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            ours.append(line.split()[3])
    assert ours, "no listening socket found for the cluster processes"
    assert all(address.startswith("127.0.0.1:") for address in ours), ours
