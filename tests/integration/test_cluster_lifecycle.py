"""cluster-up is a no-op on a running cluster; every cluster process listens on loopback;
cluster-down leaves no process and no listening port behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools import localcluster
from devtools.deploy import OperatorProcess

# kwokctl supervises: etcd, apiserver, controller-manager, scheduler, kwok, S3, provisioner.
CLUSTER_PROCESSES = 7


def listeners() -> list[tuple[int, set[int]]]:
    """Listening TCP sockets: (port, owning pids), from `ss -ltnp`."""
    lines = subprocess.run(
        ["ss", "-H", "-ltnp"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return [
        (int(line.split()[3].rsplit(":", 1)[1]), {int(p) for p in re.findall(r"pid=(\d+)", line)})
        for line in lines
    ]


def ticks_since_boot() -> int:
    """Now, in the unit of a process's start time (/proc/<pid>/stat)."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return int(uptime * os.sysconf("SC_CLK_TCK"))


def test_cluster_up_again_is_a_noop(
    local_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = localcluster.cluster_processes()
    localcluster.up()
    assert "already up" in capsys.readouterr().out
    assert localcluster.cluster_processes() == before


def test_every_cluster_process_listens_on_loopback_only(local_cluster: Path) -> None:
    pids = set(localcluster.cluster_processes())
    assert len(pids) == CLUSTER_PROCESSES
    listening = subprocess.run(
        ["ss", "-H", "-ltnp"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    ours = []
    for line in listening:
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            ours.append(line.split()[3])
    assert ours, "no listening socket found for the cluster processes"
    assert all(address.startswith("127.0.0.1:") for address in ours), ours


def test_stragglers_are_killed_after_a_bounded_wait() -> None:
    # A process that ignores SIGTERM, as a component stuck in shutdown would.
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    stuck = subprocess.Popen([sys.executable, "-c", code])
    try:
        started = localcluster.process_start(stuck.pid)
        assert started is not None
        begun = time.monotonic()
        killed = localcluster.stop_stragglers({stuck.pid: started}, grace=1.0)
        assert killed == [stuck.pid]
        assert 1.0 <= time.monotonic() - begun < 10
        assert stuck.wait(timeout=10) == -9
    finally:
        stuck.kill()
        stuck.wait()


def test_stragglers_leave_processes_that_reused_a_pid_alone() -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        started = localcluster.process_start(other.pid)
        assert started is not None
        assert localcluster.stop_stragglers({other.pid: started - 1}, grace=0.2) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.restarts_cluster
def test_cluster_down_leaves_no_process_or_port_then_up_brings_it_back(
    local_cluster: Path,
) -> None:
    """Runs last in a session (tests/integration/conftest.py): after it the cluster is a
    new one, and session fixtures made for the old one (clients, credentials) are stale."""
    processes = localcluster.cluster_processes()
    assert len(processes) == CLUSTER_PROCESSES
    ports = {port for port, owners in listeners() if owners & set(processes)}
    assert len(ports) >= CLUSTER_PROCESSES - 1  # the provisioner listens on nothing
    for operator in list(OperatorProcess.running):  # they talk to the cluster that goes
        operator.stop()
    try:
        before = ticks_since_boot()
        localcluster.down()
        assert localcluster.still_running(processes) == []
        # Only a process started before down() can be ours: a port may be taken
        # again since by a new process (another cluster on this machine).
        left = [
            (port, owners)
            for port, owners in listeners()
            if port in ports
            and any((localcluster.process_start(pid) or sys.maxsize) <= before for pid in owners)
        ]
        assert left == []
        assert not localcluster.KUBECONFIG.exists() and not localcluster.S3_ENV.exists()
    finally:
        localcluster.up()
    assert localcluster.api_is_up()
    assert len(localcluster.cluster_processes()) == CLUSTER_PROCESSES
    assert not set(localcluster.cluster_processes()) & set(processes)
