"""The agent's operations: restore, snapshot, maintenance; each reports what happened."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rspark_operator.agent import reasons
from rspark_operator.agent import secrets as secret_files
from rspark_operator.agent.excludes import build_excludes, home_is_empty, restic_patterns
from rspark_operator.agent.kube import SecretStore
from rspark_operator.agent.metrics import Metrics
from rspark_operator.agent.report import Status, last_snapshot, last_snapshot_of
from rspark_operator.agent.restic import BackupSummary, Restic, ResticError, Snapshot
from rspark_operator.agent.settings import AgentSettings, seconds
from rspark_operator.conditions import HOME_RESTORED, SNAPSHOT_HEALTHY, timestamp

log = logging.getLogger("rspark.agent")

# The agent's own files: inside the home but under the excluded .cache, so they
# survive restarts with the volume, go with it, and are never snapshotted.
AGENT_DIR = Path(".cache/rspark-agent")
# Present while a restore is under way: a restart then restores again instead of
# taking a half-restored home for the user's.
RESTORE_MARKER = AGENT_DIR / "restoring"
# When maintenance last succeeded, so a restarted pod does not put it off again.
MAINTENANCE_STAMP = AGENT_DIR / "last-maintenance"
# restic's cache (the index, trees): without it every run re-reads them from S3.
RESTIC_CACHE = AGENT_DIR / "restic"
# Snapshots taken while spec.snapshot.restoreFrom is set carry this tag (with its value).
RESTORED_FROM_TAG = "rspark-restored-from"
# Unreadable paths named in a condition message; the log has them all.
UNREADABLE_NAMED = 5
# Said at start when no Secret keeps the secret paths (standalone: no workspace, no Secret).
NOT_KEPT_MESSAGE = (
    "no Secret keeps the secret paths %s (standalone: RSPARK_WORKSPACE unset): "
    "they are left out of snapshots and will not be restored"
)


class AgentError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RestoreOutcome:
    reason: str  # Restored, FreshHome or HomePresent
    snapshot_id: str | None = None
    duration_seconds: float = 0.0


def restored_from_tag(restore_from: str) -> str:
    return f"{RESTORED_FROM_TAG}={restore_from}"


def restore_choice(restore_from: str | None, mine: Sequence[Snapshot]) -> str | None:
    """The snapshot spec.snapshot.restoreFrom still asks for; None: this host's newest.

    It applies once, without state: a snapshot of this host carrying its tag means
    the user went on working from that point, and the newest snapshot is theirs.
    """
    if not restore_from:
        return None
    tag = restored_from_tag(restore_from)
    return None if any(tag in snapshot.tags for snapshot in mine) else restore_from


def unreadable_message(items: Sequence[str], home: Path) -> str:
    """Up to UNREADABLE_NAMED of restic's unreadable items, relative to the home."""
    names = [_home_relative(item, home) for item in items]
    more = f" and {len(names) - UNREADABLE_NAMED} more" if len(names) > UNREADABLE_NAMED else ""
    return f"{len(names)} unreadable: {', '.join(names[:UNREADABLE_NAMED])}{more}"


def _home_relative(item: str, home: Path) -> str:
    root = str(home).rstrip("/") + "/"
    return item[len(root) :] if item.startswith(root) else item.removeprefix("./")


def parse_stamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover - loop always returns


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        home: Path,
        *,
        restic: Restic | None = None,
        status: Status | None = None,
        metrics: Metrics | None = None,
        secret_store: SecretStore | None = None,
        cache_in_home: bool = True,
    ) -> None:
        self.settings = settings
        self.home = home.resolve()
        self.host = settings.host_for(self.home)
        self.status = status or Status()
        self.metrics = metrics or Metrics()
        # The pod's HOME (/nonexistent) has no cache; the home volume keeps it.
        cache_dir = settings.cache_dir or (str(self.home / RESTIC_CACHE) if cache_in_home else None)
        self.restic = restic or Restic(
            settings.restic,
            cache_dir=cache_dir,
            timeout=seconds(settings.restic_timeout),
            on_storage_retry=self._storage_retry,
        )
        self.secret_store = secret_store if settings.workspace else None
        # Secret paths never go to object storage: kept in a Secret, or not at all.
        self.excludes = build_excludes(settings.snapshot_exclude, settings.secret_paths)
        self._excludes_dir = Path(tempfile.mkdtemp(prefix="rspark-agent-"))
        self.excludes_file = self._excludes_dir / "excludes"
        self.excludes_file.write_text("\n".join(restic_patterns(self.excludes, self.home)) + "\n")
        self.parent: str | None = None
        self.has_snapshots = False
        self._repository_ready = False
        self._secrets_digest: str | None = None
        self._retry_reported = False
        # Set by any report of a damaged repository, cleared only by a passing check.
        self.corrupt: str | None = None
        if self.secret_store is not None:
            log.info(
                "secret paths %s are kept in Secret %s, not in restic",
                settings.secret_paths,
                settings.secrets_name,
            )
        else:
            log.warning(NOT_KEPT_MESSAGE, settings.secret_paths)

    def close(self) -> None:
        shutil.rmtree(self._excludes_dir, ignore_errors=True)

    # Reporting ---------------------------------------------------------------------------

    def _storage_retry(self, line: str) -> None:
        # Reported while restic retries; counted in the metrics only if the attempt fails.
        if not self._retry_reported:
            self._retry_reported = True
            log.warning("storage unreachable, restic retrying: %s", line)
            self.status.condition(
                SNAPSHOT_HEALTHY,
                "False",
                reasons.STORAGE_UNREACHABLE,
                f"storage unreachable, retrying: {line}",
            )

    def fail(self, reason: str, message: str, *, restoring: bool = False) -> AgentError:
        log.error("%s: %s", reason, message)
        self.metrics.failures.labels(reason).inc()
        if reason == reasons.REPOSITORY_CORRUPT:
            self.corrupt = message
        if restoring:
            self.status.condition(HOME_RESTORED, "False", reason, message)
        else:
            self.status.condition(SNAPSHOT_HEALTHY, "False", reason, message)
        return AgentError(reason, message)

    def unexpected(self, exc: OSError, *, restoring: bool = False) -> AgentError:
        return self.fail(
            reasons.UNEXPECTED_ERROR, f"{type(exc).__name__}: {exc}", restoring=restoring
        )

    # Repository --------------------------------------------------------------------------

    def ensure_repository(self, *, create: bool) -> bool:
        """True if the repository exists (after `init` when allowed and missing).

        Only restic's exit code 10 counts as missing: a wrong password (12) or a
        missing bucket is an error, never a reason to init.
        """
        if self._repository_ready:
            return True
        if self.restic.repository_exists():
            self._repository_ready = True
            return True
        if not create:
            return False
        log.info("no repository yet: restic init")
        self.restic.init()
        self._repository_ready = True
        return True

    def snapshots(self, host_only: bool = True) -> list[Snapshot]:
        return self.restic.snapshots(self.host if host_only else None)

    def load_parent(self) -> None:
        """The newest snapshot of this host: parent of the next backup, lastSnapshot."""
        self._remember_newest(self.snapshots())

    def _remember_newest(self, mine: Sequence[Snapshot]) -> None:
        """So a restarted agent reports the lastSnapshot it did not take itself."""
        self.has_snapshots = bool(mine)
        self.parent = mine[0].id if mine else None
        if mine:
            self.status.remember_snapshot(last_snapshot_of(mine[0]))

    # Restore -----------------------------------------------------------------------------

    def restore(
        self, snapshot_id: str | None = None, *, force: bool = False, create: bool = False
    ) -> RestoreOutcome:
        """Restore a snapshot (default: restoreFrom while it applies, else this host's newest)
        and the secret paths.

        With `create`, a missing repository (restic exit code 10 only) is initialized
        and the home starts fresh.
        """
        marker = self.home / RESTORE_MARKER
        pending = marker.read_text().strip() if marker.exists() else None
        if pending:
            log.warning("an earlier restore of %s did not finish: restoring again", pending)
            snapshot_id, force = snapshot_id or pending, True
        if not force and not home_is_empty(self.home, self.excludes):
            raise AgentError(
                reasons.RESTORE_FAILED,
                f"{self.home} is not empty; restore refuses to overwrite it without --force",
            )
        try:
            try:
                target = self._pick(snapshot_id)
            except ResticError as exc:
                if not (create and exc.reason == reasons.REPOSITORY_MISSING):
                    raise
                log.info("no repository yet: restic init")
                self.restic.init()
                target = None
            self._repository_ready = True
        except ResticError as exc:
            raise self.fail(exc.reason, str(exc), restoring=True) from exc
        if target is None:
            self._restore_secrets()
            log.info("no snapshot to restore: fresh home")
            self.status.condition(HOME_RESTORED, "True", reasons.FRESH_HOME, "nothing to restore")
            return RestoreOutcome(reasons.FRESH_HOME)
        log.info("restoring snapshot %s (%s) into %s", target.short_id, target.time, self.home)
        self.status.condition(
            HOME_RESTORED, "False", reasons.RESTORING, f"restoring snapshot {target.short_id}"
        )
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(target.id + "\n")
        # Secret paths first: restic sets every directory's metadata last, so the home
        # keeps the snapshot's mtimes and the next snapshot finds nothing changed.
        self._restore_secrets()
        try:
            summary = self.restic.restore(target.id, self.home)
        except ResticError as exc:
            raise self.fail(exc.reason, str(exc), restoring=True) from exc
        marker.unlink()
        took = time.monotonic() - started
        self.metrics.restore_duration.observe(took)
        self.parent = target.id
        self.has_snapshots = True
        message = f"restored snapshot {target.short_id} of {target.time} in {took:.1f}s"
        log.info(
            "%s: %d files, %s, verified",
            message,
            summary.files_restored,
            human_bytes(summary.bytes_restored),
        )
        self.status.condition(HOME_RESTORED, "True", reasons.RESTORED, message)
        return RestoreOutcome(reasons.RESTORED, target.id, took)

    def _pick(self, snapshot_id: str | None) -> Snapshot | None:
        """The given snapshot, else restoreFrom if still pending, else this host's newest."""
        everything = self.snapshots(host_only=False)
        mine = [s for s in everything if s.hostname == self.host]
        self._remember_newest(mine)
        wanted = snapshot_id or restore_choice(self.settings.restore_from, mine)
        if wanted:
            found = [s for s in everything if s.id.startswith(wanted)]
            if not found:
                raise AgentError(reasons.RESTORE_FAILED, f"no snapshot {wanted!r}")
            return found[0]
        return mine[0] if mine else None

    def _restore_secrets(self) -> None:
        if self.secret_store is None:
            return
        try:
            document = self.secret_store.load()
        except Exception as exc:
            raise self.fail(
                reasons.SECRETS_UNAVAILABLE, f"cannot read Secret: {exc}", restoring=True
            ) from exc
        if not document:
            return
        entries = secret_files.unpack(document)
        secret_files.write(self.home, entries)
        self._secrets_digest = hashlib.sha256(document).hexdigest()
        log.info("restored %d secret path entries from the Secret", len(entries))

    # Snapshot ----------------------------------------------------------------------------

    def snapshot(self) -> BackupSummary | None:
        """One snapshot; None when the home is empty (refused, reported)."""
        self._retry_reported = False
        if home_is_empty(self.home, self.excludes):
            if self.parent is None:
                try:
                    if self.ensure_repository(create=False):
                        self.load_parent()
                except ResticError as exc:
                    raise self.fail(exc.reason, str(exc)) from exc
            if self.has_snapshots:
                message = (
                    "home is empty while snapshots exist: refusing to snapshot it, so the "
                    "good ones stay in retention"
                )
                raise self.fail(reasons.HOME_EMPTY, message)
            log.info("home is empty: no snapshot yet")
            self.status.condition(
                SNAPSHOT_HEALTHY, "True", reasons.HOME_EMPTY, "nothing to save yet"
            )
            return None
        try:
            try:
                summary = self._backup()
            except ResticError as exc:
                # Exit code 10 only: a wrong password or a missing bucket never leads here.
                if exc.reason != reasons.REPOSITORY_MISSING:
                    raise
                log.info("no repository yet: restic init")
                self.restic.init()
                summary = self._backup()
        except ResticError as exc:
            self.metrics.snapshots.labels("failed").inc()
            raise self.fail(exc.reason, str(exc)) from exc
        message = self._record(summary)
        secrets_error = self._save_secrets()
        if secrets_error is not None:
            raise secrets_error
        self._report_health(summary, message)
        return summary

    def _backup(self) -> BackupSummary:
        """One restic call: without a known parent restic picks it by host and path."""
        restore_from = self.settings.restore_from
        return self.restic.backup(
            self.home,
            host=self.host,
            excludes_file=self.excludes_file,
            parent=self.parent,
            retry_lock=self.settings.retry_lock,
            tags=[restored_from_tag(restore_from)] if restore_from else [],
        )

    def _report_health(self, summary: BackupSummary, message: str) -> None:
        """SnapshotHealthy after a snapshot that counts: damage and gaps stay visible."""
        if self.corrupt is not None:
            self.status.condition(
                SNAPSHOT_HEALTHY,
                "False",
                reasons.REPOSITORY_CORRUPT,
                f"{message}, but the repository is damaged until a check passes: {self.corrupt}",
            )
        elif summary.unreadable:
            self.fail(
                reasons.FILES_UNREADABLE,
                f"{message} without {unreadable_message(summary.unreadable, self.home)}",
            )
            log.warning("unreadable: %s", ", ".join(summary.unreadable))
        else:
            self.status.condition(SNAPSHOT_HEALTHY, "True", reasons.SNAPSHOT_SUCCEEDED, message)

    def _record(self, summary: BackupSummary) -> str:
        """Metrics, log and lastSnapshot of a snapshot that counts; returns its summary line."""
        now = datetime.now(UTC)
        self.metrics.last_success.set(now.timestamp())
        self.metrics.snapshot_duration.observe(summary.duration_seconds)
        if summary.snapshot_id is None:
            self.metrics.snapshots.labels("unchanged").inc()
            log.info(
                "no changes since snapshot %s (%.1fs)",
                (self.parent or "?")[:8],
                summary.duration_seconds,
            )
            message = f"home unchanged since snapshot {(self.parent or '?')[:8]}"
        else:
            self.metrics.snapshots.labels("created").inc()
            self.metrics.bytes_added.inc(summary.bytes_added)
            self.parent = summary.snapshot_id
            self.has_snapshots = True
            log.info(
                "snapshot %s: %d new, %d changed files, %s added, %.1fs",
                summary.snapshot_id[:8],
                summary.files_new,
                summary.files_changed,
                human_bytes(summary.bytes_added),
                summary.duration_seconds,
            )
            # Published with SnapshotHealthy by _report_health: one status write.
            self.status.remember_snapshot(
                last_snapshot(
                    finished=now,
                    snapshot_id=summary.snapshot_id,
                    bytes_added=summary.bytes_added,
                    duration_seconds=summary.duration_seconds,
                )
            )
            message = f"snapshot {summary.snapshot_id[:8]} taken"
        return message

    def _save_secrets(self) -> AgentError | None:
        """Store the secret paths in the Secret when they changed; errors are returned."""
        if self.secret_store is None:
            return None
        try:
            document = secret_files.pack(
                secret_files.collect(self.home, self.settings.secret_paths)
            )
        except secret_files.SecretsTooLarge as exc:
            return self.fail(reasons.SECRETS_TOO_LARGE, str(exc))
        digest = hashlib.sha256(document).hexdigest()
        if digest == self._secrets_digest:
            return None
        try:
            self.secret_store.save(document)
        except Exception as exc:
            return self.fail(reasons.SECRETS_UNAVAILABLE, f"cannot write Secret: {exc}")
        self._secrets_digest = digest
        log.info("secret paths saved to Secret %s", self.settings.secrets_name)
        return None

    # Maintenance -------------------------------------------------------------------------

    def last_maintenance(self) -> datetime | None:
        """When maintenance last succeeded on this volume (None: never, or a new volume)."""
        try:
            return parse_stamp((self.home / MAINTENANCE_STAMP).read_text())
        except OSError:
            return None

    def maintain(self, stop: threading.Event | None = None) -> None:
        """Stale locks, check, then forget + prune; nothing is deleted from a bad repository.

        Setting `stop` interrupts it (restic drops its lock on SIGINT): at shutdown the
        last snapshot goes first.
        """
        try:
            self.restic.unlock(stop)
        except ResticError as exc:
            raise self.fail(exc.reason, f"removing stale locks failed: {exc}") from exc
        try:
            self.restic.check(self.settings.retry_lock, self.settings.check_read_data_subset, stop)
        except ResticError as exc:
            reason = (
                reasons.REPOSITORY_CORRUPT if exc.reason == reasons.SNAPSHOT_FAILED else exc.reason
            )
            raise self.fail(reason, f"check failed, nothing deleted: {exc}") from exc
        log.info("check passed")
        if self.corrupt is not None:
            self.corrupt = None
            self.status.condition(
                SNAPSHOT_HEALTHY, "True", reasons.CHECK_PASSED, "repository check passed"
            )
        self.apply_retention(stop)
        self._stamp_maintenance(datetime.now(UTC))

    def apply_retention(self, stop: threading.Event | None = None) -> None:
        """forget + prune by the retention, if one is set. Through the snapshot gateway
        the pod has none (the gateway refuses deletes): the platform applies it, with
        `rspark-agent forget` and the bucket's key (docs/security.md)."""
        retention = self.settings.retention
        if retention is None:
            log.info("no retention set here: keeping every snapshot")
            return
        try:
            self.restic.forget_prune(self.host, dict(retention), self.settings.retry_lock, stop)
        except ResticError as exc:
            raise self.fail(exc.reason, str(exc)) from exc
        log.info("forget + prune done (keep %s)", retention)

    def _stamp_maintenance(self, done: datetime) -> None:
        stamp = self.home / MAINTENANCE_STAMP
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(timestamp(done) + "\n")
        self.metrics.last_maintenance.set(done.timestamp())
