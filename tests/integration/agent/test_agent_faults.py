"""Faults the agent must survive, with real restic, a real S3 server and real files."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from devtools.s3 import S3Server
from rspark_operator.agent import reasons, schedule
from rspark_operator.agent.core import Agent
from rspark_operator.agent.restic import Restic
from rspark_operator.agent.secrets import unpack
from rspark_operator.agent.settings import load
from tests.integration.agent.helpers import (
    AGENT,
    KEY_MARKER,
    WAIT_SECONDS,
    AgentProcess,
    Repo,
    contents,
    log_times,
    make_home,
    make_repo,
    restic_binary,
    restic_child,
    running,
    spawn,
    stamp_maintenance,
    without_permission_override,
    write_tree,
)

pytestmark = pytest.mark.integration

KILLS = 20


def test_kill_9_during_snapshots(repo: Repo, tmp_path: Path) -> None:
    """SIGKILL (agent and restic together, as a pod kill does) at random moments of
    `restic backup`: a kill counts only if restic was still running when it landed."""
    seed = int(os.environ.get("RSPARK_TEST_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    home = tmp_path / "home"
    home.mkdir()
    for index in range(30):
        (home / f"f{index:02d}.bin").write_bytes(os.urandom(rng.randint(1, 200_000)))
    repo.agent("snapshot", "--home", str(home), check=True)
    (home / "f00.bin").write_bytes(os.urandom(100_000))
    process = _snapshot_process(repo, home)
    backup = _wait_for_backup(process)
    started = time.monotonic()
    assert process.wait() == 0
    typical = time.monotonic() - started  # how long restic backup runs here

    states: dict[int, dict[str, tuple[object, ...]]] = {-1: contents(home)}  # -1: before any kill
    kills = iteration = 0
    while kills < KILLS:
        iteration += 1
        assert iteration < KILLS * 3, f"seed {seed}: backups kept finishing before the kill"
        (home / "iteration.txt").write_text(str(iteration))
        for _ in range(3):
            name = home / f"f{rng.randrange(40):02d}.bin"
            name.write_bytes(os.urandom(rng.randint(1, 300_000)))
        states[iteration] = contents(home)
        process = _snapshot_process(repo, home)
        backup = _wait_for_backup(process)
        with contextlib.suppress(ProcessLookupError):  # the agent may be done already
            if backup is not None:
                time.sleep(rng.uniform(0, typical))
                os.killpg(process.pid, signal.SIGSTOP)  # freeze, so the check below holds
                kills += running(backup)
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    # The next snapshot succeeds despite the stale locks and half-written packs.
    (home / "iteration.txt").write_text("final")
    states[0] = contents(home)
    last_killed = repo.snapshots()[0]
    marker = _restore(repo, last_killed["id"], tmp_path / "k") / "iteration.txt"
    last_completed = int(marker.read_text()) if marker.exists() else -1
    assert contents(tmp_path / "k") == states[last_completed], f"seed {seed}"

    repo.agent("snapshot", "--home", str(home), check=True)
    if repo.server.objects(repo.bucket, f"{repo.path}/locks"):
        # check takes an exclusive lock, and restic refuses one beside any other lock,
        # stale or not (lock.go, checkForOtherLocks): the killed backups' locks block it
        # until `unlock` removes them as stale (this host, dead pids), as maintenance does.
        assert repo.restic("check", check=False).returncode == reasons.EXIT_LOCKED
        repo.restic("unlock")
    repo.restic("check", "--read-data")
    assert contents(_restore(repo, "latest", tmp_path / "final")) == states[0]


def _snapshot_process(repo: Repo, home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [AGENT, "snapshot", "--home", str(home)],
        env=repo.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_for_backup(process: subprocess.Popen[bytes]) -> int | None:
    """The pid of the agent's `restic backup` once it runs; None if the agent ended first."""
    while process.poll() is None:
        found = restic_child(process.pid, "backup")
        if found is not None:
            return found
        time.sleep(0.005)
    return None


def _restore(repo: Repo, snapshot: str, target: Path) -> Path:
    target.mkdir()
    repo.restic("restore", snapshot, "--target", str(target))
    return target


@pytest.fixture(scope="module")
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A server this module may stop; its bucket exists before the agent comes."""
    server = S3Server(tmp_path_factory.mktemp("own-s3"))
    server.start()
    repo = make_repo(server, tmp_path_factory.mktemp("bootstrap"))
    repo.restic("init")
    yield server
    server.stop()


def test_storage_outage_is_reported_and_survived(
    own_s3: S3Server, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    repo = make_repo(own_s3, tmp_path)
    home = make_home(tmp_path, {"a.R": "before the outage"})
    stamp_maintenance(home, datetime.now(UTC))  # not due: only snapshots meet the outage
    # The interval caps the backoff: 5 s, then 10 s, then 10 s.
    agent = spawn(agents, repo, home, RSPARK_RESTIC_TIMEOUT="5s", RSPARK_SNAPSHOT_INTERVAL="10s")
    agent.wait_ready()
    agent.wait_for("first snapshot", lambda: "lastSnapshot" in agent.status())
    before = agent.status()["lastSnapshot"]["id"]

    failed = "snapshot failed"
    own_s3.stop()
    try:
        (home / "a.R").write_text("written while storage is down")
        down = agent.wait_condition("SnapshotHealthy", reasons.STORAGE_UNREACHABLE)
        assert down["status"] == "False"
        agent.wait_for("three failed attempts", lambda: len(log_times(agent.log(), failed)) >= 3)
        assert agent.process is not None and agent.process.poll() is None
    finally:
        own_s3.start()

    agent.wait_condition("SnapshotHealthy", reasons.SNAPSHOT_SUCCEEDED)
    agent.wait_for("a new snapshot", lambda: agent.status()["lastSnapshot"]["id"] != before)
    # Backoff: each failure is followed by a pause that grows (from its end: the
    # next failure can only come after it).
    failures = log_times(agent.log(), failed)
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(failures)]
    for count, gap in enumerate(gaps[:2], start=1):
        assert gap >= schedule.backoff(count, 10.0) - 0.05, (gaps, agent.log())
    assert f"{failed} 2 time(s) in a row, next try in 10s" in agent.log()
    # Counted once per attempt that failed for it, though restic reported each retry.
    unreachable = len(log_times(agent.log(), f"ERROR {reasons.STORAGE_UNREACHABLE}:"))
    assert unreachable >= 3
    _, metrics = agent.get("/metrics")
    counted = f'rspark_agent_failures_total{{reason="StorageUnreachable"}} {unreachable}.0'
    assert counted in metrics.decode(), metrics.decode()
    assert "storage unreachable" in agent.log()
    assert agent.terminate() == 0
    target = tmp_path / "restored"
    target.mkdir()
    repo.restic("restore", "latest", "--target", str(target))
    assert (target / "a.R").read_text() == "written while storage is down"


def test_wrong_password_is_an_error_never_an_init(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = make_home(tmp_path, {"a.R": "x"})
    repo.agent("snapshot", "--home", str(home), check=True)
    objects = repo.objects()

    wrong = repo.agent("snapshot", "--home", str(home), RESTIC_PASSWORD="not the password")
    assert wrong.returncode == 1
    assert reasons.WRONG_PASSWORD in wrong.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    agent = spawn(agents, repo, empty, RESTIC_PASSWORD="not the password")
    condition = agent.wait_condition("HomeRestored", reasons.WRONG_PASSWORD)
    assert condition["status"] == "False"
    assert agent.get("/readyz")[0] == 503  # RStudio must not start on this home
    agent.kill()

    assert repo.objects() == objects  # nothing deleted, nothing re-initialized
    assert len(repo.snapshots()) == 1


def test_missing_bucket_is_an_error_and_not_created(
    s3: S3Server, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    repo = make_repo(s3, tmp_path)
    repo.env["RESTIC_REPOSITORY"] = (
        s3.credentials.restic_repository("").rstrip("/").rsplit("/", 1)[0] + "/no-such-bucket/ws"
    )
    home = make_home(tmp_path, {"a.R": "x"})

    result = repo.agent("snapshot", "--home", str(home))
    assert result.returncode == 1
    assert reasons.BUCKET_MISSING in result.stderr

    agent = spawn(agents, repo, tmp_path / "empty")
    (tmp_path / "empty").mkdir(exist_ok=True)
    condition = agent.wait_condition("HomeRestored", reasons.BUCKET_MISSING)
    assert "bucket does not exist" in condition["message"]
    agent.kill()
    assert "no-such-bucket" not in s3.buckets()


def test_corrupted_pack_is_reported_and_nothing_deleted(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = make_home(tmp_path, {"data.bin": os.urandom(300_000)})
    repo.agent("snapshot", "--home", str(home), check=True)
    packs = [key for key in repo.objects() if "/data/" in key]
    biggest = max(packs, key=lambda key: len(repo.server.get_object(repo.bucket, key)))
    intact = repo.server.get_object(repo.bucket, biggest)
    damaged = bytearray(intact)
    damaged[len(damaged) // 2] ^= 0xFF
    repo.server.put_object(repo.bucket, biggest, bytes(damaged))
    objects = repo.objects()

    empty = tmp_path / "empty"
    empty.mkdir()
    agent = spawn(agents, repo, empty, RSPARK_SNAPSHOT_HOST="home")
    condition = agent.wait_condition("HomeRestored", reasons.REPOSITORY_CORRUPT)
    assert condition["status"] == "False"
    assert agent.get("/readyz")[0] == 503
    agent.kill()

    # Maintenance on a corrupt repository checks first and deletes nothing.
    settings = load(
        retention='{"keepLast": 1}', check_read_data_subset="100%", restic=restic_binary()
    )
    keeper = Agent(settings, home, restic=Restic(restic_binary(), env=repo.env))
    with pytest.raises(Exception, match="nothing deleted"):
        keeper.maintain()
    assert repo.objects() == objects

    # Later snapshots count, but the damage stays reported until a check passes.
    (home / "notes.R").write_text("written after the damage")
    taken = keeper.snapshot()
    assert taken is not None and taken.snapshot_id is not None
    assert keeper.status.snapshot()["lastSnapshot"]["id"] == taken.snapshot_id
    assert _healthy(keeper) == ("False", reasons.REPOSITORY_CORRUPT)
    repo.server.put_object(repo.bucket, biggest, intact)  # repaired (restic repair, a backup)
    keeper.maintain()
    assert _healthy(keeper) == ("True", reasons.CHECK_PASSED)
    (home / "notes.R").write_text("and after the repair")
    keeper.snapshot()
    assert _healthy(keeper) == ("True", reasons.SNAPSHOT_SUCCEEDED)
    keeper.close()


def _healthy(agent: Agent) -> tuple[str, str]:
    found = agent.status.get("SnapshotHealthy")
    assert found is not None
    return found["status"], found["reason"]


def test_unreadable_file_is_reported_and_the_rest_snapshotted(
    repo: Repo, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    home = make_home(tmp_path, {"a.R": "readable"})
    locked = home / "private" / "locked.csv"
    locked.parent.mkdir()
    locked.write_text("the agent may not read this")
    locked.chmod(0)
    prefix = without_permission_override()

    once = subprocess.run(
        [*prefix, AGENT, "snapshot", "--home", str(home)],
        env=repo.env,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert once.returncode == reasons.EXIT_PARTIAL, once.stderr
    assert "FilesUnreadable" in once.stderr and "private/locked.csv" in once.stderr

    (home / "a.R").write_text("changed")
    stamp_maintenance(home, datetime.now(UTC))  # no check holding the lock while we look
    agent = AgentProcess(home, repo.env, tmp_path / "agent.log", prefix=prefix)
    agents.append(agent)
    agent.start()
    condition = agent.wait_condition("SnapshotHealthy", reasons.FILES_UNREADABLE)
    assert condition["status"] == "False"
    assert "1 unreadable: private/locked.csv" in condition["message"]
    newest = repo.snapshots()[0]
    assert agent.status()["lastSnapshot"]["id"] == newest["id"]  # the snapshot counts
    listed = repo.restic("ls", newest["id"]).stdout
    assert "/a.R" in listed and "locked.csv" not in listed
    _, metrics = agent.get("/metrics")
    assert b'rspark_agent_failures_total{reason="FilesUnreadable"}' in metrics
    assert "snapshot failed" not in agent.log()  # no backoff: it was taken

    locked.chmod(0o644)  # readable again: the next snapshot is whole and healthy
    agent.wait_condition("SnapshotHealthy", reasons.SNAPSHOT_SUCCEEDED)
    assert agent.terminate() == 0
    assert "locked.csv" in repo.restic("ls", "latest").stdout


class MemorySecrets:
    def __init__(self) -> None:
        self.document: bytes | None = None

    def load(self) -> bytes | None:
        return self.document

    def save(self, document: bytes) -> None:
        self.document = document


def _workspace_agent(repo: Repo, home: Path, store: MemorySecrets) -> Agent:
    settings = load(
        workspace="team-a/alice",
        secrets_name="alice-home-secrets",
        snapshot_host="team-a-alice",
        restic=restic_binary(),
    )
    return Agent(settings, home, restic=Restic(restic_binary(), env=repo.env), secret_store=store)


def test_secret_paths_live_in_the_secret_not_in_the_bucket(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    write_tree(home)
    store = MemorySecrets()
    agent = _workspace_agent(repo, home, store)
    assert agent.snapshot() is not None
    agent.close()

    assert store.document is not None
    entries = {e.path: e for e in unpack(store.document)}
    assert entries[".ssh/id_ed25519"].mode == 0o600
    assert entries[".ssh/current"].target == "id_ed25519"
    listed = repo.restic("ls", "latest").stdout
    assert ".ssh" not in listed
    for key in repo.objects():
        assert KEY_MARKER not in repo.server.get_object(repo.bucket, key), key

    restored = tmp_path / "restored"
    restored.mkdir()
    back = _workspace_agent(repo, restored, store)
    back.restore()
    back.close()
    assert contents(restored) == contents(home)


def test_standalone_leaves_secret_paths_out_and_says_so(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    write_tree(home)
    result = repo.agent("snapshot", "--home", str(home), check=True)
    assert "no Secret keeps the secret paths ['.ssh']" in result.stderr
    assert "left out of snapshots" in result.stderr
    listed = repo.restic("ls", "latest").stdout
    assert "/projects/analysis/model.R" in listed  # the rest of the home is there
    assert ".ssh" not in listed
    for key in repo.objects():
        assert KEY_MARKER not in repo.server.get_object(repo.bucket, key), key


def test_secrets_too_large_fail_loudly(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("small key")
    (home / "a.R").write_text("x")
    store = MemorySecrets()
    agent = _workspace_agent(repo, home, store)
    agent.snapshot()
    saved = store.document
    (home / ".ssh" / "huge.pem").write_bytes(os.urandom(900_000))
    (home / "a.R").write_text("y")

    with pytest.raises(Exception, match=r"huge\.pem"):
        agent.snapshot()
    condition = agent.status.get("SnapshotHealthy")
    agent.close()
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", reasons.SECRETS_TOO_LARGE)
    assert store.document == saved  # the last good document stays; nothing dropped silently
    assert len(repo.snapshots()) == 2  # the rest of the home was still snapshotted
