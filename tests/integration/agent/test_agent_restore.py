"""Restore fidelity, lost volumes, fresh homes, SIGTERM: the agent CLI and sidecar loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from rspark_operator.agent import reasons
from tests.integration.agent.helpers import (
    AgentProcess,
    Repo,
    clear,
    contents,
    manifest,
    spawn,
    write_tree,
)

pytestmark = pytest.mark.integration


def test_restore_reproduces_the_tree_exactly(repo: Repo, tmp_path: Path) -> None:
    home, target = tmp_path / "home", tmp_path / "restored"
    home.mkdir()
    target.mkdir()
    write_tree(home)
    repo.agent("snapshot", "--home", str(home), "--host", "alice", check=True)

    repo.agent("restore", "--home", str(target), "--host", "alice", check=True)

    before, after = manifest(home), manifest(target)
    assert after == before  # contents, modes, symlinks (dangling too), mtimes, empty dirs
    assert after["empty/nested"][0] == "dir"
    assert after["projects/analysis/model.R"][2] == 1_600_000_000_123_456_789
    assert after[".ssh/id_ed25519"][1] & 0o777 == 0o600
    assert not (target / ".cache" / "pip").exists()  # caches are not snapshotted


def test_restore_refuses_a_non_empty_home_unless_forced(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "a.R").write_text("one")
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
    import json

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
    expected = contents(home)

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
    home = tmp_path / "home"
    home.mkdir()
    (home / "notebook.Rmd").write_text("draft 1\n")
    # Long debounce: only the SIGTERM path can save the change.
    agent = spawn(agents, repo, home, RSPARK_SNAPSHOT_DEBOUNCE="1h", RSPARK_SNAPSHOT_MAX_DELAY="1h")
    agent.wait_ready()

    (home / "notebook.Rmd").write_text("draft 2: the change that must survive\n")
    assert agent.terminate() == 0

    target = tmp_path / "restored"
    target.mkdir()
    repo.agent("restore", "--home", str(target), "--host", "home", check=True)
    assert (target / "notebook.Rmd").read_text() == "draft 2: the change that must survive\n"


def test_changes_are_snapshotted_shortly_and_reported(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "a.R").write_text("1")
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
