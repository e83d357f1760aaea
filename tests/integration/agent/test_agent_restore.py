"""Restore fidelity, lost volumes, fresh homes, SIGTERM: the agent CLI and sidecar loop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rspark_operator.agent import reasons
from rspark_operator.agent.core import RESTIC_CACHE, RESTORE_MARKER, restored_from_tag
from tests.integration.agent.helpers import (
    AGENT,
    STANDALONE_SKIP,
    AgentProcess,
    Repo,
    clear,
    contents,
    make_home,
    manifest,
    restic_binary,
    spawn,
    stamp_maintenance,
    write_tree,
)

pytestmark = pytest.mark.integration

# The pod's grace period (operator default 120 s) leaves the agent this much.
SHUTDOWN_BUDGET = 25.0


def test_restore_reproduces_the_tree_exactly(repo: Repo, tmp_path: Path) -> None:
    home, target = tmp_path / "home", tmp_path / "restored"
    home.mkdir()
    target.mkdir()
    write_tree(home)
    repo.agent("snapshot", "--home", str(home), "--host", "alice", check=True)

    repo.agent("restore", "--home", str(target), "--host", "alice", check=True)

    before, after = manifest(home, STANDALONE_SKIP), manifest(target)
    assert after == before  # contents, modes, symlinks (dangling too), mtimes, empty dirs
    assert after["empty/nested"][0] == "dir"
    assert after["projects/analysis/model.R"][2] == 1_600_000_000_123_456_789
    assert after["private/notes.txt"][1] & 0o777 == 0o640
    assert not (target / ".ssh").exists()  # secret paths never go to the bucket
    assert not (target / ".cache" / "pip").exists()  # caches are not snapshotted


def test_restore_refuses_a_non_empty_home_unless_forced(repo: Repo, tmp_path: Path) -> None:
    home = make_home(tmp_path, {"a.R": "one"})
    repo.agent("snapshot", "--home", str(home), check=True)
    (home / "a.R").write_text("two")
    (home / "b.R").write_text("mine")

    refused = repo.agent("restore", "--home", str(home))
    assert refused.returncode == 1
    assert "not empty" in refused.stderr
    assert (home / "a.R").read_text() == "two"

    repo.agent("restore", "--home", str(home), "--force", check=True)
    assert (home / "a.R").read_text() == "one"
    assert (home / "b.R").read_text() == "mine"  # --force overwrites, never deletes


def test_list_newest_first(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for round_ in range(2):
        (home / "f").write_text(str(round_))
        repo.agent("snapshot", "--home", str(home), check=True)
    listed = repo.agent("list", "--json", check=True)
    ids = [item["id"] for item in json.loads(listed.stdout)]
    assert ids == [s["id"] for s in repo.snapshots()]
    assert len(ids) == 2
    text = repo.agent("list", check=True).stdout.splitlines()
    assert [line.split()[0] for line in text] == [i[:8] for i in ids]


def test_empty_home_is_never_snapshotted(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)  # only excluded content: still empty
    result = repo.agent("snapshot", "--home", str(home))
    assert result.returncode == 1
    assert "empty" in result.stderr
    repo.restic("init")  # the agent did not make one: proves no snapshot either way
    assert repo.snapshots() == []


def test_fresh_home_without_snapshot_starts_fresh_and_takes_none(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    agent = spawn(agents, repo, home)
    agent.wait_ready()
    restored = agent.wait_condition("HomeRestored", reasons.FRESH_HOME)
    assert restored["status"] == "True"

    assert agent.terminate() == 0  # SIGTERM makes it attempt a last snapshot
    assert "home is empty: no snapshot yet" in agent.log()
    assert repo.snapshots() == []  # the repository exists (restic init) but stays empty


def test_lost_volume_is_restored_not_overwritten(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    write_tree(home)
    first = spawn(agents, repo, home)
    first.wait_ready()
    assert first.condition("HomeRestored") == first.wait_condition(
        "HomeRestored", reasons.HOME_PRESENT
    )
    assert first.terminate() == 0
    saved = repo.snapshots()
    assert len(saved) == 1
    expected = contents(home, STANDALONE_SKIP)  # standalone: secret paths are kept nowhere

    clear(home)  # the volume is gone; the pod comes back on an empty one
    second = spawn(agents, repo, home)
    second.wait_ready()
    restored = second.wait_condition("HomeRestored", reasons.RESTORED)
    assert saved[0]["short_id"] in restored["message"]
    assert contents(home) == expected
    assert second.terminate() == 0

    after = repo.snapshots()
    assert after[-1]["id"] == saved[0]["id"]  # the good snapshot is still there
    for snapshot in after:  # and no snapshot of an empty home was ever taken
        assert snapshot["summary"]["total_files_processed"] > 0


def test_sigterm_right_after_a_change_is_in_the_last_snapshot(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = make_home(tmp_path, {"notebook.Rmd": "draft 1\n"})
    # Long debounce: only the SIGTERM path can save the change.
    agent = spawn(
        agents,
        repo,
        home,
        RSPARK_SNAPSHOT_DEBOUNCE="1h",
        RSPARK_SNAPSHOT_MAX_DELAY="1h",
        RSPARK_SHUTDOWN_TIMEOUT=f"{SHUTDOWN_BUDGET:.0f}s",
    )
    agent.wait_ready()

    (home / "notebook.Rmd").write_text("draft 2: the change that must survive\n")
    signalled = time.monotonic()
    assert agent.terminate() == 0
    # The bound: out within the shutdown budget (a small home takes a second or
    # two; a lost wake-up would sleep the whole 1h interval).
    assert time.monotonic() - signalled < SHUTDOWN_BUDGET, agent.log()
    assert "last snapshot done" in agent.log()

    target = tmp_path / "restored"
    target.mkdir()
    repo.agent("restore", "--home", str(target), "--host", "home", check=True)
    assert (target / "notebook.Rmd").read_text() == "draft 2: the change that must survive\n"


def test_changes_are_snapshotted_shortly_and_reported(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = make_home(tmp_path, {"a.R": "1"})
    agent = spawn(agents, repo, home)
    agent.wait_ready()
    agent.wait_for("first snapshot", lambda: "lastSnapshot" in agent.status())
    first = agent.status()["lastSnapshot"]["id"]

    (home / "a.R").write_text("2")  # no interval will come (1h): only the watcher
    agent.wait_for("snapshot of the change", lambda: agent.status()["lastSnapshot"]["id"] != first)
    status = agent.status()
    assert status["lastSnapshot"]["bytesAdded"] > 0
    healthy = next(c for c in status["conditions"] if c["type"] == "SnapshotHealthy")
    assert (healthy["status"], healthy["reason"]) == ("True", reasons.SNAPSHOT_SUCCEEDED)
    code, metrics = agent.get("/metrics")
    assert code == 200
    assert b'rspark_agent_snapshots_total{result="created"}' in metrics
    assert b"rspark_agent_snapshot_duration_seconds_count" in metrics
    assert agent.terminate() == 0
    assert "snapshot " + status["lastSnapshot"]["id"][:8] + ":" in agent.log()


LostHome = tuple[Path, dict[str, tuple[object, ...]]]


@pytest.fixture
def lost_home(repo: Repo, tmp_path: Path) -> LostHome:
    """A home snapshotted, then emptied, and what it held: big enough (20 MB in 100
    files) to catch restic restoring it."""
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    for index in range(100):
        (home / "data" / f"part{index:03d}.bin").write_bytes(os.urandom(200_000))
    repo.agent("snapshot", "--home", str(home), check=True)
    expected = contents(home)
    clear(home)
    return home, expected


def test_not_ready_while_restoring_ready_after(
    repo: Repo, lost_home: LostHome, agents: list[AgentProcess]
) -> None:
    home, expected = lost_home
    agent = spawn(agents, repo, home)
    restoring = agent.freeze_restic("restore")
    try:
        assert agent.get("/readyz")[0] == 503
        assert (agent.condition("HomeRestored") or {}).get("reason") == reasons.RESTORING
    finally:
        os.kill(restoring, signal.SIGCONT)
    agent.wait_ready()
    assert agent.get("/readyz")[0] == 200
    assert (agent.condition("HomeRestored") or {}).get("reason") == reasons.RESTORED
    assert contents(home) == expected


def test_restart_after_an_interrupted_restore_restores_again(
    repo: Repo, lost_home: LostHome, agents: list[AgentProcess]
) -> None:
    home, expected = lost_home
    first = spawn(agents, repo, home)
    # Caught with part of the home written: without the marker it would pass for the user's.
    first.freeze_restic("restore", lambda: any((home / "data").glob("part*")))
    first.kill()
    assert (home / RESTORE_MARKER).exists()

    second = spawn(agents, repo, home)
    second.wait_ready()
    assert "did not finish: restoring again" in second.log()
    assert second.wait_condition("HomeRestored", reasons.RESTORED)["status"] == "True"
    assert contents(home) == expected
    assert second.terminate() == 0


def test_restarted_agent_reports_the_last_snapshot_it_did_not_take(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = make_home(tmp_path, {"a.R": "x <- 1\n"})
    first = spawn(agents, repo, home)
    first.wait_for("first snapshot", lambda: "lastSnapshot" in first.status())
    taken = first.status()["lastSnapshot"]
    assert first.terminate() == 0

    second = spawn(agents, repo, home)
    second.wait_ready()
    reported = second.status()["lastSnapshot"]  # from restic's record: nothing new was taken
    assert (reported["id"], reported["bytesAdded"]) == (taken["id"], taken["bytesAdded"])
    assert reported["durationSeconds"] > 0 and reported["time"] <= taken["time"]
    assert second.terminate() == 0
    assert len(repo.snapshots()) == 1


def test_restore_from_applies_once(repo: Repo, tmp_path: Path, agents: list[AgentProcess]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for text in ("the point in time", "newer work"):
        (home / "a.R").write_text(text)
        repo.agent("snapshot", "--home", str(home), check=True)
    point = repo.snapshots()[1]["short_id"]

    # A lost volume with restoreFrom set: that snapshot, not the newest.
    clear(home)
    first = spawn(agents, repo, home, RSPARK_RESTORE_FROM=point)
    first.wait_condition("HomeRestored", reasons.RESTORED)
    assert (home / "a.R").read_text() == "the point in time"
    (home / "a.R").write_text("work after the restore")
    first.wait_for("a snapshot of that work", lambda: len(repo.snapshots()) == 3)
    assert first.terminate() == 0
    assert restored_from_tag(point) in repo.snapshots()[0]["tags"]

    # Lost again, restoreFrom still set: the user's newer work comes back, not the point.
    clear(home)
    second = spawn(agents, repo, home, RSPARK_RESTORE_FROM=point)
    second.wait_condition("HomeRestored", reasons.RESTORED)
    assert (home / "a.R").read_text() == "work after the restore"
    assert second.terminate() == 0


def test_snapshot_refuses_an_emptied_home_while_snapshots_exist(repo: Repo, tmp_path: Path) -> None:
    home = make_home(tmp_path, {"a.R": "x"})
    repo.agent("snapshot", "--home", str(home), check=True)
    clear(home)
    refused = repo.agent("snapshot", "--home", str(home))
    assert refused.returncode == 1
    assert reasons.HOME_EMPTY in refused.stderr
    assert len(repo.snapshots()) == 1


def test_restore_a_chosen_snapshot(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    states = []
    for text in ("first", "second"):
        (home / "a.R").write_text(text)
        repo.agent("snapshot", "--home", str(home), check=True)
        states.append(contents(home))
    older = repo.snapshots()[1]["id"]
    target = tmp_path / "target"
    target.mkdir()
    repo.agent("restore", "--home", str(target), "--snapshot", older[:8], check=True)
    assert contents(target) == states[0]


def test_restore_into_another_directory_names_the_hosts(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "alice-home"
    home.mkdir()
    (home / "a.R").write_text("x")
    repo.agent("snapshot", "--home", str(home), check=True)
    target = tmp_path / "restored"
    target.mkdir()

    missed = repo.agent("restore", "--home", str(target))
    assert missed.returncode == 1
    assert "no snapshot of host 'restored'" in missed.stderr
    assert "alice-home" in missed.stderr and "--host" in missed.stderr
    repo.agent("restore", "--home", str(target), "--host", "alice-home", check=True)
    assert (target / "a.R").read_text() == "x"


def test_restic_cache_lives_in_the_home_and_is_never_snapshotted(
    repo: Repo, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    write_tree(home)
    # As in the pod: HOME=/nonexistent and no XDG cache, so only the home can hold it.
    env = {k: v for k, v in repo.env.items() if k != "XDG_CACHE_HOME"}
    env["HOME"] = "/nonexistent"
    for text in ("one", "two"):
        (home / "a.R").write_text(text)
        run = subprocess.run(
            [AGENT, "snapshot", "--home", str(home)], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
    cache = home / RESTIC_CACHE
    assert (cache / "CACHEDIR.TAG").exists()
    assert any(cache.glob("*/index/*/*")), "restic kept no index in its cache"
    listed = repo.restic("ls", "latest").stdout
    assert "/.cache" not in listed and "CACHEDIR.TAG" not in listed


def test_unexpected_errors_are_reported_and_the_loop_goes_on(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    binary = tmp_path / "bin" / "restic"
    binary.parent.mkdir()
    shutil.copy2(restic_binary(), binary)
    home = make_home(tmp_path, {"a.R": "before"})
    stamp_maintenance(home, datetime.now(UTC))
    agent = spawn(agents, repo, home, RSPARK_RESTIC=str(binary))
    agent.wait_for("first snapshot", lambda: "lastSnapshot" in agent.status())
    first = agent.status()["lastSnapshot"]["id"]

    binary.chmod(0o644)  # exec fails with EACCES, for root too: an OSError in the loop
    (home / "a.R").write_text("while restic could not run")
    condition = agent.wait_condition("SnapshotHealthy", reasons.UNEXPECTED_ERROR)
    assert condition["status"] == "False" and "PermissionError" in condition["message"]
    assert agent.process is not None and agent.process.poll() is None

    binary.chmod(0o755)
    agent.wait_for("the next snapshot", lambda: agent.status()["lastSnapshot"]["id"] != first)
    assert agent.terminate() == 0
    target = tmp_path / "restored"
    target.mkdir()
    repo.restic("restore", "latest", "--target", str(target))
    assert (target / "a.R").read_text() == "while restic could not run"
