"""Maintenance (unlock, check, forget + prune): when it runs, across restarts, and
what it deletes, with real restic, a real S3 server and real files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rspark_operator.agent import reasons
from rspark_operator.agent.core import MAINTENANCE_STAMP, parse_stamp
from tests.integration.agent.helpers import (
    WAIT_SECONDS,
    AgentProcess,
    Repo,
    make_home,
    pending_signals,
    restic_binary,
    spawn,
    stamp_maintenance,
    wait_until,
)

pytestmark = pytest.mark.integration

KEEP_TWO = '{"keepLast": 2}'


def _metric(agent: AgentProcess, name: str) -> float:
    _, body = agent.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}:\n{body.decode()}")


def _snapshots_of(repo: Repo, home: Path, count: int) -> None:
    for index in range(count):
        (home / "a.R").write_text(f"version {index}")
        repo.agent("snapshot", "--home", str(home), check=True)


def test_retention_runs_after_the_first_snapshot_and_is_remembered(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _snapshots_of(repo, home, 4)
    before = repo.snapshots()
    stamp = home / MAINTENANCE_STAMP

    # Never maintained on this volume: due right after the first snapshot.
    (home / "a.R").write_text("newest")
    first = spawn(agents, repo, home, RSPARK_RETENTION=KEEP_TWO)
    first.wait_for("maintenance", stamp.exists)
    newest = first.status()["lastSnapshot"]["id"]
    assert [s["id"] for s in repo.snapshots()] == [newest, before[0]["id"]]
    log = first.log()
    assert log.index(f"snapshot {newest[:8]}:") < log.index("check passed")
    assert log.index("check passed") < log.index("forget + prune done")
    assert first.terminate() == 0
    done = parse_stamp(stamp.read_text())
    assert done is not None

    # Restarted within the interval: the remembered time holds, nothing is due.
    second = spawn(agents, repo, home, RSPARK_RETENTION=KEEP_TWO)
    second.wait_ready()
    assert _metric(second, "rspark_agent_last_maintenance_timestamp_seconds") == done.timestamp()
    due = re.search(r"maintenance due in (\d+)s", second.log())
    assert due is not None and int(due.group(1)) > 86_400 - 3600, second.log()
    assert second.terminate() == 0

    # Restarted after the pod was away for two days: overdue, runs at start-up.
    stamp_maintenance(home, datetime.now(UTC) - timedelta(days=2))
    _snapshots_of(repo, home, 2)
    newest = repo.snapshots()[0]["id"]
    assert len(repo.snapshots()) == 4
    third = spawn(agents, repo, home, RSPARK_RETENTION='{"keepLast": 1}')
    third.wait_for("maintenance again", lambda: "forget + prune done" in third.log())
    assert [s["id"] for s in repo.snapshots()] == [newest]
    assert third.terminate() == 0
    again = parse_stamp(stamp.read_text())
    assert again is not None and again > done


def test_stale_exclusive_lock_is_cleared_without_waiting_a_day(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    """A check or prune killed mid-way leaves an exclusive lock that stops every backup."""
    home = make_home(tmp_path, {"data.bin": os.urandom(20_000_000)})
    repo.agent("snapshot", "--home", str(home), check=True)
    locks = f"{repo.path}/locks"
    check = subprocess.Popen(
        [restic_binary(), "check", "--read-data"],
        env=repo.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until("check's lock", lambda: bool(repo.server.objects(repo.bucket, locks)), 0.01)
    os.killpg(check.pid, signal.SIGKILL)
    check.wait()
    assert check.returncode == -signal.SIGKILL  # killed holding its lock, not finished
    # restic itself refuses a backup beside it, stale as it is (a dead pid on this host).
    blocked = repo.restic("backup", "--host", "elsewhere", str(home), check=False)
    assert blocked.returncode == reasons.EXIT_LOCKED, blocked.stderr

    stamp_maintenance(home, datetime.now(UTC))  # the daily maintenance is a day away
    (home / "b.R").write_text("written behind the lock")
    agent = spawn(agents, repo, home, RSPARK_RETRY_LOCK="1s")
    agent.wait_condition("SnapshotHealthy", reasons.SNAPSHOT_SUCCEEDED)
    log = agent.log()
    assert "maintenance brought forward" in log
    assert log.index("RepositoryLocked") < log.index("check passed")
    assert agent.terminate() == 0
    assert repo.server.objects(repo.bucket, locks) == []
    assert "/b.R" in repo.restic("ls", "latest").stdout


def test_sigterm_interrupts_maintenance_for_the_last_snapshot(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = make_home(tmp_path, {"data.bin": os.urandom(5_000_000)})
    # A budget far longer than the test waits: only the agent itself can stop the check.
    agent = spawn(
        agents, repo, home, RSPARK_CHECK_READ_DATA_SUBSET="100%", RSPARK_SHUTDOWN_TIMEOUT="1h"
    )
    check = agent.freeze_restic("check")
    (home / "a.R").write_text("saved at shutdown")
    assert agent.process is not None
    agent.process.send_signal(signal.SIGTERM)
    try:
        wait_until(
            "the agent interrupts its check", lambda: signal.SIGINT in pending_signals(check)
        )
    finally:
        os.kill(check, signal.SIGCONT)  # restic takes the SIGINT: drops its lock, exits
    assert agent.process.wait(timeout=WAIT_SECONDS) == 0
    assert "last snapshot done" in agent.log()
    assert repo.server.objects(repo.bucket, f"{repo.path}/locks") == []
    target = tmp_path / "restored"
    target.mkdir()
    repo.restic("restore", "latest", "--target", str(target))
    assert (target / "a.R").read_text() == "saved at shutdown"
