"""restic, driven through its JSON output and exit codes.

Pure parts (command lines, message parsing) are functions; `Restic` runs them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rspark_operator.agent import reasons
from rspark_operator.contract import RETENTION_KEYS

log = logging.getLogger("rspark.agent.restic")

# After SIGINT restic removes its lock and exits; give it this long before SIGKILL.
INTERRUPT_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class ResticError(Exception):
    def __init__(self, reason: str, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.exit_code = exit_code


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str | None  # None: skipped, nothing changed since the parent
    files_new: int
    files_changed: int
    files_unmodified: int
    bytes_added: int
    bytes_processed: int
    duration_seconds: float
    # restic exit code 3: the snapshot was made without these (absolute) paths.
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str
    hostname: str
    paths: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreSummary:
    files_restored: int
    bytes_restored: int
    total_files: int


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(line)
                if isinstance(value, dict):
                    out.append(value)
    return out


def message(messages: Sequence[dict[str, Any]], message_type: str) -> dict[str, Any] | None:
    return next((m for m in reversed(messages) if m.get("message_type") == message_type), None)


def parse_backup(stdout: str, duration_seconds: float, stderr: str = "") -> BackupSummary:
    """The `summary` message of `backup --json`; no snapshot_id means skipped.

    restic prints what it could not read as JSON `error` messages on stderr.
    """
    summary = message(json_lines(stdout), "summary")
    if summary is None:
        raise ResticError(reasons.SNAPSHOT_FAILED, "restic backup printed no summary")
    return BackupSummary(
        snapshot_id=summary.get("snapshot_id"),
        files_new=int(summary.get("files_new", 0)),
        files_changed=int(summary.get("files_changed", 0)),
        files_unmodified=int(summary.get("files_unmodified", 0)),
        bytes_added=int(summary.get("data_added_packed", summary.get("data_added", 0))),
        bytes_processed=int(summary.get("total_bytes_processed", 0)),
        # restic's total_duration is garbage for skipped snapshots; use our clock.
        duration_seconds=duration_seconds,
        unreadable=unreadable_items(stderr),
    )


def unreadable_items(stderr: str) -> tuple[str, ...]:
    """The items of restic's JSON `error` messages (files it could not read), in order."""
    items = (m.get("item") for m in json_lines(stderr) if m.get("message_type") == "error")
    return tuple(dict.fromkeys(str(item) for item in items if item))


def parse_snapshots(stdout: str) -> list[Snapshot]:
    """`snapshots --json`, newest first."""
    raw = json.loads(stdout or "[]")
    items = [
        Snapshot(
            id=s["id"],
            short_id=s.get("short_id", s["id"][:8]),
            time=s["time"],
            hostname=s.get("hostname", ""),
            paths=list(s.get("paths", [])),
            summary=dict(s.get("summary") or {}),
            tags=list(s.get("tags") or []),
        )
        for s in raw
    ]
    return sorted(items, key=lambda s: parse_time(s.time), reverse=True)


def parse_time(stamp: str) -> datetime:
    """A time as restic writes it (RFC 3339, up to nanoseconds)."""
    text = stamp.replace("Z", "+00:00")
    # Python < 3.11 cannot take nanoseconds; cut fractional part to microseconds.
    if "." in text:
        head, rest = text.split(".", 1)
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text)


def parse_restore(stdout: str) -> RestoreSummary:
    summary = message(json_lines(stdout), "summary") or {}
    return RestoreSummary(
        files_restored=int(summary.get("files_restored", 0)),
        bytes_restored=int(summary.get("bytes_restored", 0)),
        total_files=int(summary.get("total_files", 0)),
    )


def backup_args(
    *,
    host: str,
    excludes_file: Path,
    parent: str | None,
    retry_lock: str,
    tags: Sequence[str] = (),
) -> list[str]:
    """`restic backup` flags shared by the agent and the benchmark's baseline."""
    args = [
        "backup",
        "--json",
        "--host",
        host,
        # inode and ctime change on every restore onto a new volume; without
        # these the first snapshot after a restore re-reads the whole home.
        "--ignore-inode",
        "--ignore-ctime",
        "--skip-if-unchanged",
        "--exclude-caches",
        "--exclude-file",
        str(excludes_file),
        "--retry-lock",
        retry_lock,
    ]
    if parent:
        args += ["--parent", parent]
    for tag in tags:
        args += ["--tag", tag]
    return [*args, "."]


def forget_args(host: str, retention: dict[str, int]) -> list[str]:
    args = ["forget", "--json", "--host", host, "--group-by", "host", "--prune"]
    for key in RETENTION_KEYS:
        flag = "--keep-" + key.removeprefix("keep").lower()
        if retention.get(key):
            args += [flag, str(retention[key])]
    return args


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the agent dies, so restic drops its lock."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    duration_seconds: float


class Restic:
    """Runs restic commands; storage trouble is reported while restic retries."""

    def __init__(
        self,
        binary: str,
        *,
        env: dict[str, str] | None = None,
        cache_dir: str | None = None,
        timeout: float = 600.0,
        on_storage_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.binary = binary
        self.env = env
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.on_storage_retry = on_storage_retry
        self.cancel = threading.Event()  # set: interrupt the running command
        self._lock = threading.Lock()

    def _command(self, args: Sequence[str]) -> list[str]:
        command = [self.binary]
        if self.cache_dir:
            command += ["--cache-dir", self.cache_dir]
        return command + list(args)

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        check: bool = True,
        timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Result:
        """Run one command. Fails fast on a missing bucket (restic would retry for 15 min).

        Setting `stop` (like `cancel`, but for this command only) interrupts it.
        """
        with self._lock:
            return self._run(args, cwd=cwd, check=check, timeout=timeout or self.timeout, stop=stop)

    def _run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None,
        check: bool,
        timeout: float,
        stop: threading.Event | None,
    ) -> Result:
        started = time.monotonic()
        process = subprocess.Popen(
            self._command(args),
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        stdout_chunks: list[str] = []
        stderr_lines: list[str] = []
        fatal: list[str] = []

        def read_stdout() -> None:
            assert process.stdout is not None
            stdout_chunks.append(process.stdout.read())

        def read_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                stderr_lines.append(line)
                reason = reasons.classify_message(line)
                if reasons.is_retry_line(line):
                    if reason == reasons.BUCKET_MISSING:
                        fatal.append(reason)
                    elif self.on_storage_retry is not None:
                        self.on_storage_retry(line.strip())

        readers = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr)]
        for reader in readers:
            reader.start()
        deadline = started + timeout
        interrupted_for: str | None = None
        while process.poll() is None:
            if fatal and interrupted_for is None:
                interrupted_for = fatal[0]
                self._interrupt(process)
            elif (self.cancel.is_set() or (stop and stop.is_set())) and interrupted_for is None:
                interrupted_for = "cancelled"
                self._interrupt(process)
            elif time.monotonic() > deadline and interrupted_for is None:
                interrupted_for = reasons.TIMED_OUT
                self._interrupt(process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.1)
        for reader in readers:
            reader.join()
        result = Result(
            exit_code=process.returncode,
            stdout="".join(stdout_chunks),
            stderr="".join(stderr_lines),
            duration_seconds=time.monotonic() - started,
        )
        if check and result.exit_code not in (reasons.EXIT_OK, reasons.EXIT_PARTIAL):
            raise self._error(args, result, interrupted_for)
        return result

    def _interrupt(self, process: subprocess.Popen[str]) -> None:
        """SIGINT lets restic remove its lock; SIGKILL if it does not stop in time."""
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)

        def escalate() -> None:
            try:
                process.wait(timeout=INTERRUPT_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

        threading.Thread(target=escalate, daemon=True).start()

    def _error(
        self, args: Sequence[str], result: Result, interrupted_for: str | None
    ) -> ResticError:
        text = _fatal_text(result.stderr)
        if interrupted_for == reasons.BUCKET_MISSING:
            return ResticError(
                reasons.BUCKET_MISSING,
                "the bucket does not exist; the agent does not create buckets "
                f"(repository {os.environ.get('RESTIC_REPOSITORY', '?')})",
                result.exit_code,
            )
        if interrupted_for == reasons.TIMED_OUT:
            reason = reasons.classify_message(result.stderr) or reasons.TIMED_OUT
            return ResticError(
                reason, f"restic {args[0]} did not finish in time: {text}", result.exit_code
            )
        if interrupted_for == "cancelled":
            return ResticError(reasons.TIMED_OUT, f"restic {args[0]} interrupted", result.exit_code)
        reason = reasons.classify(result.exit_code, result.stderr)
        return ResticError(
            reason, f"restic {args[0]} failed (exit {result.exit_code}): {text}", result.exit_code
        )

    # Operations -------------------------------------------------------------------------

    def repository_exists(self) -> bool:
        """False only on exit code 10; a wrong password or any other failure raises."""
        result = self.run(["cat", "config", "--json"], check=False)
        if result.exit_code == reasons.EXIT_OK:
            return True
        if result.exit_code == reasons.EXIT_NO_REPOSITORY:
            return False
        raise self._error(["cat"], result, _bucket_missing(result.stderr))

    def init(self) -> None:
        self.run(["init", "--json"])

    def snapshots(self, host: str | None = None) -> list[Snapshot]:
        args = ["snapshots", "--json", "--no-lock"]
        if host:
            args += ["--host", host]
        return parse_snapshots(self.run(args).stdout)

    def backup(
        self,
        home: Path,
        *,
        host: str,
        excludes_file: Path,
        parent: str | None,
        retry_lock: str,
        tags: Sequence[str] = (),
    ) -> BackupSummary:
        args = backup_args(
            host=host, excludes_file=excludes_file, parent=parent, retry_lock=retry_lock, tags=tags
        )
        result = self.run(args, cwd=home)
        return parse_backup(result.stdout, result.duration_seconds, result.stderr)

    def restore(self, snapshot: str, target: Path) -> RestoreSummary:
        # --verify reads every restored file back and compares it with the snapshot.
        args = ["restore", "--json", snapshot, "--target", str(target), "--verify"]
        return parse_restore(self.run(args).stdout)

    def unlock(self, stop: threading.Event | None = None) -> None:
        """Removes stale locks only (dead local process or older than 30 min)."""
        self.run(["unlock"], stop=stop)

    def check(
        self,
        retry_lock: str,
        read_data_subset: str | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        # check takes an exclusive lock: wait out a running backup like every command.
        args = ["check", "--retry-lock", retry_lock]
        if read_data_subset:
            args += ["--read-data-subset", read_data_subset]
        self.run(args, stop=stop)

    def forget_prune(
        self,
        host: str,
        retention: dict[str, int],
        retry_lock: str,
        stop: threading.Event | None = None,
    ) -> str:
        args = [*forget_args(host, retention), "--retry-lock", retry_lock]
        return self.run(args, stop=stop).stdout


def _bucket_missing(stderr: str) -> str | None:
    return (
        reasons.BUCKET_MISSING
        if reasons.classify_message(stderr) == reasons.BUCKET_MISSING
        else None
    )


def _fatal_text(stderr: str) -> str:
    """restic's own error line (exit_error message in --json mode), else the last line."""
    for item in reversed(json_lines(stderr)):
        if item.get("message_type") in ("exit_error", "error"):
            return str(item.get("message") or item.get("error", {}).get("message", ""))
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("Fatal:")]
    return (fatal or lines or ["no output"])[-1]
