"""The agent's operations: restore, snapshot, maintenance; each reports what happened."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rspark_operator.agent import reasons
from rspark_operator.agent import secrets as secret_files
from rspark_operator.agent.excludes import build_excludes, home_is_empty, restic_patterns
from rspark_operator.agent.kube import SecretStore
from rspark_operator.agent.metrics import Metrics
from rspark_operator.agent.report import Status, last_snapshot
from rspark_operator.agent.restic import BackupSummary, Restic, ResticError, Snapshot
from rspark_operator.agent.settings import AgentSettings, seconds
from rspark_operator.conditions import HOME_RESTORED, SNAPSHOT_HEALTHY

log = logging.getLogger("rspark.agent")

# Inside the home but under the excluded .cache: survives with the volume, never
# snapshotted. Present while a restore is under way: a restart then restores again
# instead of taking a half-restored home for the user's.
RESTORE_MARKER = Path(".cache/rspark-agent/restoring")


class AgentError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RestoreOutcome:
    reason: str  # Restored, FreshHome or HomePresent
    snapshot_id: str | None = None
    duration_seconds: float = 0.0


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
    ) -> None:
        self.settings = settings
        self.home = home.resolve()
        self.host = settings.host_for(self.home)
        self.status = status or Status()
        self.metrics = metrics or Metrics()
        self.restic = restic or Restic(
            settings.restic,
            cache_dir=settings.cache_dir,
            timeout=seconds(settings.restic_timeout),
            on_storage_retry=self._storage_retry,
        )
        self.secret_store = secret_store if settings.workspace else None
        keep_secrets = self.secret_store is not None
        self.excludes = build_excludes(
            settings.snapshot_exclude, settings.secret_paths if keep_secrets else ()
        )
        self._excludes_dir = Path(tempfile.mkdtemp(prefix="rspark-agent-"))
        self.excludes_file = self._excludes_dir / "excludes"
        self.excludes_file.write_text("\n".join(restic_patterns(self.excludes, self.home)) + "\n")
        self.parent: str | None = None
        self.has_snapshots = False
        self._repository_ready = False
        self._secrets_digest: str | None = None
        self._retry_reported = False
        if keep_secrets:
            log.info(
                "secret paths %s are kept in Secret %s, not in restic",
                settings.secret_paths,
                settings.secrets_name,
            )
        else:
            log.info(
                "standalone: secret paths %s are backed up by restic like any file",
                settings.secret_paths,
            )

    def close(self) -> None:
        shutil.rmtree(self._excludes_dir, ignore_errors=True)

    # Reporting ---------------------------------------------------------------------------

    def _storage_retry(self, line: str) -> None:
        if not self._retry_reported:
            self._retry_reported = True
            log.warning("storage unreachable, restic retrying: %s", line)
            self.metrics.failures.labels(reasons.STORAGE_UNREACHABLE).inc()
            self.status.condition(
                SNAPSHOT_HEALTHY,
                "False",
                reasons.STORAGE_UNREACHABLE,
                f"storage unreachable, retrying: {line}",
            )

    def fail(self, reason: str, message: str, *, restoring: bool = False) -> AgentError:
        log.error("%s: %s", reason, message)
        self.metrics.failures.labels(reason).inc()
        if restoring:
            self.status.condition(HOME_RESTORED, "False", reason, message)
        else:
            self.status.condition(SNAPSHOT_HEALTHY, "False", reason, message)
        return AgentError(reason, message)

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
        """The newest snapshot of this host: parent of the next backup."""
        found = self.snapshots()
        self.has_snapshots = bool(found)
        self.parent = found[0].id if found else None

    # Restore -----------------------------------------------------------------------------

    def restore(
        self, snapshot_id: str | None = None, *, force: bool = False, create: bool = False
    ) -> RestoreOutcome:
        """Restore a snapshot (default: this host's newest) and the secret paths.

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
        try:
            summary = self.restic.restore(target.id, self.home)
        except ResticError as exc:
            raise self.fail(exc.reason, str(exc), restoring=True) from exc
        self._restore_secrets()
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
        if snapshot_id:
            everything = self.snapshots(host_only=False)
            found = [s for s in everything if s.id.startswith(snapshot_id)]
            if not found:
                raise AgentError(reasons.RESTORE_FAILED, f"no snapshot {snapshot_id!r}")
            return found[0]
        mine = self.snapshots()
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
        secrets_error = self._save_secrets()
        self._record(summary, healthy=secrets_error is None)
        if secrets_error is not None:
            raise secrets_error
        return summary

    def _backup(self) -> BackupSummary:
        """One restic call: without a known parent restic picks it by host and path."""
        return self.restic.backup(
            self.home,
            host=self.host,
            excludes_file=self.excludes_file,
            parent=self.parent,
            retry_lock=self.settings.retry_lock,
        )

    def _record(self, summary: BackupSummary, *, healthy: bool) -> None:
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
            self.status.snapshot_taken(
                last_snapshot(
                    finished=now,
                    snapshot_id=summary.snapshot_id,
                    bytes_added=summary.bytes_added,
                    duration_seconds=summary.duration_seconds,
                )
            )
            message = f"snapshot {summary.snapshot_id[:8]} taken"
        if healthy:
            self.status.condition(SNAPSHOT_HEALTHY, "True", reasons.SNAPSHOT_SUCCEEDED, message)

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

    def maintain(self) -> None:
        """Stale locks, check, then forget + prune; nothing is deleted from a bad repository."""
        retention = self.settings.retention
        if retention is None:
            log.info("no retention configured: keeping every snapshot")
            return
        keep = dict(retention)
        try:
            self.restic.unlock()
            self.restic.check(self.settings.check_read_data_subset)
        except ResticError as exc:
            reason = (
                reasons.REPOSITORY_CORRUPT if exc.reason == reasons.SNAPSHOT_FAILED else exc.reason
            )
            raise self.fail(reason, f"check before prune failed, nothing deleted: {exc}") from exc
        try:
            self.restic.forget_prune(self.host, keep, self.settings.retry_lock)
        except ResticError as exc:
            raise self.fail(exc.reason, str(exc)) from exc
        log.info("forget + prune done (keep %s)", keep)
