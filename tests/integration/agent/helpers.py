"""Snapshot agent test helpers: a real S3 server, real restic, real files.

One S3 server per session (tests that stop storage start their own); each test
gets its own repository path and restic cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.s3 import S3Server
from rspark_operator.agent.core import MAINTENANCE_STAMP
from rspark_operator.conditions import timestamp

ROOT = Path(__file__).resolve().parents[3]
LOCAL_BIN = ROOT / ".local" / "bin"
AGENT = str(Path(sys.executable).parent / "rspark-agent")
BUCKET = "rspark"
PASSWORD = "correct horse battery staple"
# Waits are failure guards, not assertions on speed.
WAIT_SECONDS = 120.0


def restic_binary() -> str:
    return os.environ.get("RSPARK_RESTIC") or str(LOCAL_BIN / "restic")


def without_permission_override() -> list[str]:
    """A command prefix under which file permissions bind, as for the agent in its pod.

    A non-root user is bound already. Root reads a mode-000 file through
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: drop both from the bounding set, so the
    process (and restic under it) is refused like a non-root agent, same uid.
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to make a file unreadable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def wait_until(what: str, predicate: Callable[[], bool], poll: float = 0.2) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"never got to: {what}")


# Processes ----------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) from /proc; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return name, state, int(ppid)


def running(pid: int) -> bool:
    """Alive and not a zombie (a stopped process counts: it resumes where it was)."""
    found = _stat(pid)
    return found is not None and found[1] != "Z"


def restic_child(parent: int, command: str) -> int | None:
    """The pid of a running `restic <command>` started by `parent`, if there is one."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _stat(int(entry.name))
        if found is None or found[0] != "restic" or found[2] != parent or found[1] == "Z":
            continue
        with contextlib.suppress(OSError):
            if command.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                return int(entry.name)
    return None


def _signal_sets(pid: int, *fields: str) -> set[int]:
    """The signals in the union of the masks `fields` of /proc/<pid>/status."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    mask = 0
    for name in fields:
        mask |= int(status[name], 16)
    return {number for number in range(1, 65) if mask & (1 << (number - 1))}


def pending_signals(pid: int) -> set[int]:
    """Signals sent to a process and not yet delivered (a stopped one keeps them)."""
    return _signal_sets(pid, "ShdPnd", "SigPnd")


def handles_sigint(pid: int) -> bool:
    """The process has its own SIGINT handler. Until then (just after exec, before Go's
    runtime sets its handlers) a SIGINT kills it at once, even stopped: the kernel ends a
    process group on a fatal signal whether it runs or not."""
    with contextlib.suppress(OSError):
        return signal.SIGINT in _signal_sets(pid, "SigCgt")
    return False


def log_times(log: str, text: str) -> list[datetime]:
    """When the agent logged lines containing `text` (its log format: asctime first)."""
    return [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for line in log.splitlines()
        if text in line
    ]


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"), bucket=BUCKET)
    server.start()
    # The agent never creates buckets (a missing bucket is an error); make ours once.
    env = {
        **os.environ,
        **server.credentials.env(),
        "RESTIC_REPOSITORY": server.credentials.restic_repository("bootstrap"),
        "RESTIC_PASSWORD": PASSWORD,
        "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache")),
    }
    subprocess.run([restic_binary(), "init"], env=env, check=True, capture_output=True)
    yield server
    server.stop()


@dataclass
class Repo:
    """One restic repository on the S3 server and the environment to reach it."""

    server: S3Server
    path: str
    env: dict[str, str]
    workdir: Path
    bucket: str = BUCKET

    def restic(
        self, *args: str, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [restic_binary(), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS * 3,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"restic {args} failed ({result.returncode}): {result.stderr}")
        return result

    def snapshots(self) -> list[dict[str, Any]]:
        found = json.loads(self.restic("snapshots", "--json", "--no-lock").stdout)
        return sorted(found, key=lambda s: str(s["time"]), reverse=True)

    def objects(self) -> list[str]:
        return self.server.objects(self.bucket, self.path)

    def agent(
        self, *args: str, check: bool = False, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [AGENT, *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS * 3,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"rspark-agent {args} failed ({result.returncode}):\n{result.stderr}"
            )
        return result


def repository_env(server: S3Server, path: str, cache: Path) -> dict[str, str]:
    """The variables of restic and the agent for the repository `path`; their temporary
    files (the agent's excludes, `restic check`'s cache) next to `cache`, in the test's
    own directory, where a killed process's are not left in /tmp."""
    temporary = cache.parent / "tmp"
    temporary.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSPARK_", "RESTIC_"))}
    env.update(server.credentials.env())
    env.update(
        {
            "PATH": f"{LOCAL_BIN}:{env.get('PATH', '')}",
            "RESTIC_REPOSITORY": server.credentials.restic_repository(path),
            "RESTIC_PASSWORD": PASSWORD,
            "XDG_CACHE_HOME": str(cache),
            "TMPDIR": str(temporary),
            "RSPARK_RESTIC": restic_binary(),
        }
    )
    env.pop("KUBECONFIG", None)
    return env


def make_repo(server: S3Server, tmp_path: Path) -> Repo:
    path = f"agent/{uuid.uuid4().hex[:12]}"
    cache = tmp_path / "restic-cache"
    cache.mkdir(exist_ok=True)
    return Repo(server, path, repository_env(server, path, cache), tmp_path)


@pytest.fixture
def repo(s3: S3Server, tmp_path: Path) -> Repo:
    return make_repo(s3, tmp_path)


# Trees ------------------------------------------------------------------------------------


def manifest(root: Path, skip: tuple[str, ...] = (".cache",)) -> dict[str, tuple[Any, ...]]:
    """Everything restic must reproduce: type, mode, mtime, content, link target."""
    out: dict[str, tuple[Any, ...]] = {}
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        if rel_dir != "." and rel_dir.split("/")[0] in skip:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(directory) / name
            rel = os.path.relpath(path, root)
            if rel.split("/")[0] in skip:
                continue
            info = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", str(path.readlink()))
            elif path.is_dir():
                out[rel] = ("dir", info.st_mode, info.st_mtime_ns)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", info.st_mode, info.st_mtime_ns, digest)
    return out


# Left out of snapshots, and kept nowhere when the agent runs standalone.
STANDALONE_SKIP = (".cache", ".ssh")


def contents(root: Path, skip: tuple[str, ...] = (".cache",)) -> dict[str, tuple[Any, ...]]:
    """Like manifest, without directory mtimes (restic sets them; the test's writes move them)."""
    return {k: (v if v[0] != "dir" else v[:2]) for k, v in manifest(root, skip).items()}


# The agent as a sidecar process ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AgentProcess:
    home: Path
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    prefix: list[str] = field(default_factory=list)  # e.g. without_permission_override()

    def start(self, **env: str) -> AgentProcess:
        environment = {
            **self.env,
            "RSPARK_METRICS_PORT": str(self.port),
            "RSPARK_SNAPSHOT_INTERVAL": "1h",
            "RSPARK_SNAPSHOT_DEBOUNCE": "1s",
            "RSPARK_SNAPSHOT_MAX_DELAY": "3s",
            "RSPARK_SNAPSHOT_MIN_SPACING": "1s",
            **env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, AGENT, "run", "--home", str(self.home)],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200
        return dict(json.loads(body))

    def condition(self, type_: str) -> dict[str, Any] | None:
        with contextlib.suppress(OSError):
            for item in self.status().get("conditions", []):
                if item["type"] == type_:
                    return dict(item)
        return None

    def wait_for(self, what: str, predicate: Callable[[], bool], poll: float = 0.2) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.process.returncode}) waiting for {what}:\n{self.log()}"
                )
            with contextlib.suppress(OSError):
                if predicate():
                    return
            time.sleep(poll)
        raise AssertionError(f"agent never got to: {what}\n{self.log()}")

    def wait_ready(self) -> None:
        self.wait_for("ready", lambda: self.get("/readyz")[0] == 200)

    def wait_condition(self, type_: str, reason: str) -> dict[str, Any]:
        self.wait_for(
            f"{type_}={reason}", lambda: (self.condition(type_) or {}).get("reason") == reason
        )
        found = self.condition(type_)
        assert found is not None
        return found

    def restic(self, command: str) -> int | None:
        assert self.process is not None
        return restic_child(self.process.pid, command)

    def freeze_restic(self, command: str, ready: Callable[[], bool] = lambda: True) -> int:
        """SIGSTOP the agent's `restic <command>` once it runs and `ready()` holds."""
        found: list[int] = []

        def caught() -> bool:
            pid = self.restic(command)
            # Frozen before its SIGINT handler, restic would die of the agent's SIGINT
            # instead of removing its lock.
            if pid is None or not handles_sigint(pid) or not ready():
                return False
            os.kill(pid, signal.SIGSTOP)
            found.append(pid)
            return True

        self.wait_for(f"restic {command} running", caught, poll=0.005)
        assert running(found[0]), f"restic {command} ended before it was frozen"
        return found[0]

    def terminate(self) -> int:
        """SIGTERM and wait for the exit code (the agent takes its last snapshot first)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"agent did not exit after SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def agents(request: pytest.FixtureRequest) -> Iterator[list[AgentProcess]]:
    """Agents a test started; killed at the end, their logs printed on failure."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for agent in started:
            print(f"--- agent log {agent.log_path}\n{agent.log()}")


def spawn(agents: list[AgentProcess], repo: Repo, home: Path, **env: str) -> AgentProcess:
    process = AgentProcess(home, repo.env, repo.workdir / f"agent-{len(agents)}.log")
    agents.append(process)
    return process.start(**env)


def make_home(tmp_path: Path, files: dict[str, str | bytes], name: str = "home") -> Path:
    """A home directory holding `files` (paths relative to it; text or bytes)."""
    home = tmp_path / name
    home.mkdir()
    for relative, data in files.items():
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    return home


def write_tree(home: Path) -> None:
    """A small home with what restore must reproduce exactly."""
    (home / "projects" / "analysis").mkdir(parents=True)
    (home / "projects" / "analysis" / "model.R").write_text("fit <- lm(y ~ x)\n" * 50)
    (home / "projects" / "analysis" / "data.bin").write_bytes(os.urandom(200_000))
    script = home / "bin" / "run.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (home / ".ssh").mkdir(mode=0o700)
    key = home / ".ssh" / "id_ed25519"
    key.write_text(PRIVATE_KEY)
    key.chmod(0o600)
    (home / ".ssh" / "current").symlink_to("id_ed25519")
    (home / "private").mkdir(mode=0o700)
    (home / "private" / "notes.txt").write_text("secret notes")
    (home / "private" / "notes.txt").chmod(0o640)
    (home / "empty" / "nested").mkdir(parents=True)
    (home / "dangling").symlink_to("does/not/exist")
    (home / "projects" / "latest").symlink_to("analysis/model.R")
    (home / ".cache" / "pip").mkdir(parents=True)
    (home / ".cache" / "pip" / "wheel.whl").write_bytes(b"cached" * 100)
    os.utime(home / "projects" / "analysis" / "model.R", ns=(1_600_000_000_123_456_789,) * 2)


PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBSeXBhcmstdGVzdC1rZXktbm90LWEtcmVhbC1vbmUtMTIzNAAAAJgAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
KEY_MARKER = b"QyNTUxOQAAACBSeXBhcmstdGVzdC1rZXktbm90LWEtcmVhbC1vbmUtMTIzNAAAAJgAAAAA"


def stamp_maintenance(home: Path, done: datetime) -> None:
    """Maintenance remembered as done at `done` on this volume."""
    stamp = home / MAINTENANCE_STAMP
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(timestamp(done) + "\n")


def clear(directory: Path) -> None:
    """Empty a directory in place, as a lost volume would be."""
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
