"""`rspark-agent run`: the sidecar loop.

restore if needed -> ready -> snapshot on the interval and after changes, and
maintenance when due (its last success is remembered on the volume) -> on
SIGTERM one last snapshot within the shutdown budget -> exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from rspark_operator.agent import reasons, schedule
from rspark_operator.agent.activity import CHECK_SECONDS, ActivityWatch
from rspark_operator.agent.core import RESTORE_MARKER, Agent, AgentError
from rspark_operator.agent.excludes import home_is_empty
from rspark_operator.agent.metrics import Server
from rspark_operator.agent.restic import ResticError
from rspark_operator.agent.settings import seconds
from rspark_operator.agent.watch import Watcher
from rspark_operator.conditions import HOME_RESTORED

log = logging.getLogger("rspark.agent")


class Runner:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        settings = agent.settings
        self.cadence = schedule.Cadence(
            interval=seconds(settings.snapshot_interval),
            debounce=seconds(settings.snapshot_debounce),
            max_delay=seconds(settings.snapshot_max_delay),
            min_spacing=seconds(settings.snapshot_min_spacing),
        )
        self.maintenance_every = seconds(settings.maintenance_interval)
        self.next_maintenance = time.monotonic()  # set from the volume's stamp at start
        self.maintenance_failures = 0
        self.shutdown_budget = seconds(settings.shutdown_timeout)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.ready = threading.Event()
        self._state_lock = threading.Lock()
        self.state = schedule.State(last_attempt=time.monotonic())
        self.server = Server(
            agent.metrics, settings.metrics_port, self.ready.is_set, agent.status.snapshot
        )

    # Signals and changes -----------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s: last snapshot, then exit", signal.Signals(signum).name)
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.wake.set()
        if not self.ready.is_set():
            self.agent.restic.cancel.set()  # never snapshot a half-restored home
            return
        # The running snapshot and the last one share the budget; past it restic is
        # interrupted (it releases its lock) and the agent exits.
        timer = threading.Timer(self.shutdown_budget, self.agent.restic.cancel.set)
        timer.daemon = True
        timer.start()

    def _on_change(self, path: str) -> None:
        with self._state_lock:
            self.state = schedule.record_change(self.state, time.monotonic())
        self.wake.set()

    # Loop --------------------------------------------------------------------------------

    def run_with_signals(self) -> int:
        self.install_signal_handlers()
        return self.run()

    def run(self) -> int:
        self.server.start()
        log.info(
            "agent for %s (host %s), metrics on :%d",
            self.agent.home,
            self.agent.host,
            self.server.port,
        )
        try:
            if not self._startup():
                return 0
            self._schedule_maintenance_from_stamp()
            watcher = Watcher(self.agent.home, self.agent.excludes, self._on_change)
            watching = watcher.start()
            self._watch_activity()
            try:
                self._loop()
            finally:
                if watching:
                    watcher.stop()
            self._last_snapshot()
            return 0
        finally:
            self.server.stop()
            self.agent.close()

    def _startup(self) -> bool:
        """Restore when the home is empty; retry with backoff until it works or we stop."""
        failures = 0
        while not self.stopping.is_set():
            try:
                outcome = self._restore_or_present()
            except (AgentError, ResticError, OSError) as exc:
                if isinstance(exc, OSError):
                    self.agent.unexpected(exc, restoring=True)
                failures += 1
                delay = schedule.backoff(failures, self.cadence.interval)
                log.warning("startup failed (%s), retrying in %.0fs", exc, delay)
                self.stopping.wait(delay)
                continue
            log.info("ready (%s)", outcome)
            # First snapshot right away: the home may have changed while no agent ran.
            with self._state_lock:
                self.state = schedule.State(last_attempt=time.monotonic() - self.cadence.interval)
            self.ready.set()
            self.agent.metrics.ready.set(1)
            return True
        return False

    def _restore_or_present(self) -> str:
        agent = self.agent
        interrupted = (agent.home / RESTORE_MARKER).exists()
        if interrupted or home_is_empty(agent.home, agent.excludes):
            # Only the repository can tell whether there is something to restore:
            # until it answers, the home stays unready.
            outcome = agent.restore(create=True)  # restoreFrom, once, or the newest
            return f"{outcome.reason} {outcome.snapshot_id or ''}".strip()
        # The home is on its volume: RStudio may start even if storage is away;
        # snapshot trouble shows on SnapshotHealthy.
        try:
            agent.load_parent()  # lastSnapshot goes out with the condition below
        except ResticError as exc:
            if exc.reason != reasons.REPOSITORY_MISSING:  # missing: the first snapshot inits
                log.warning("snapshots not listed (%s): lastSnapshot comes with the next", exc)
        agent.status.condition(
            HOME_RESTORED, "True", reasons.HOME_PRESENT, "home already on its volume"
        )
        return reasons.HOME_PRESENT

    def _watch_activity(self) -> None:
        """In a workspace, whether it is in use: the Idle condition (agent/activity.py).
        A daemon thread: it ends with the loop, or with the process."""
        if not self.agent.settings.workspace:
            return
        watch = ActivityWatch(
            self.agent.home, self.agent.status, quiet_time=self.agent.settings.idle_quiet
        )

        def loop() -> None:
            while not self.stopping.is_set():
                try:
                    watch.check()
                except Exception as exc:  # never end the watch: a stale Idle=True would stay
                    log.warning("activity not read: %s", exc)
                self.stopping.wait(CHECK_SECONDS)

        threading.Thread(target=loop, name="activity", daemon=True).start()

    def _schedule_maintenance_from_stamp(self) -> None:
        done = self.agent.last_maintenance()
        if done is not None:
            self.agent.metrics.last_maintenance.set(done.timestamp())
        wait = schedule.maintenance_wait(
            done.timestamp() if done else None, time.time(), self.maintenance_every
        )
        self.next_maintenance = time.monotonic() + wait
        log.info("maintenance due in %.0fs (last: %s)", wait, done or "never on this volume")

    def _loop(self) -> None:
        while not self.stopping.is_set():
            # Clear before reading the schedule: a signal or change from here on ends the wait.
            self.wake.clear()
            with self._state_lock:
                due = schedule.next_due(self.state, self.cadence)
            now = time.monotonic()
            if now >= due:  # snapshots first: the first one at start-up precedes maintenance
                self._attempt()
            elif now >= self.next_maintenance:
                self._maintain()
            else:
                self.wake.wait(min(due, self.next_maintenance) - now)

    def _attempt(self) -> bool:
        started = time.monotonic()
        error = self._guarded(self.agent.snapshot)
        with self._state_lock:
            self.state = schedule.record_attempt(
                self.state, started, time.monotonic(), error is None
            )
            failures = self.state.failures
        if failures:
            delay = schedule.backoff(failures, self.cadence.interval)
            log.warning("snapshot failed %d time(s) in a row, next try in %.0fs", failures, delay)
        if getattr(error, "reason", None) == reasons.REPOSITORY_LOCKED:
            # restic lets no backup past an exclusive lock, stale or not (restic 0.18
            # lock.go, checkForOtherLocks): maintenance starts by removing stale ones.
            log.warning("repository locked: maintenance brought forward to clear stale locks")
            self.next_maintenance = time.monotonic()
        return error is None

    def _maintain(self) -> None:
        # Never concurrent from two places: one pod per workspace (the operator's
        # guarantee) runs this loop, and check/prune hold restic's exclusive lock.
        # SIGTERM interrupts it: the last snapshot needs the shutdown budget.
        error = self._guarded(lambda: self.agent.maintain(self.stopping))
        if error is None:
            self.maintenance_failures = 0
            delay = self.maintenance_every
        else:
            self.maintenance_failures += 1
            delay = schedule.backoff(
                self.maintenance_failures,
                self.maintenance_every,
                schedule.MAINTENANCE_RETRY_BASE_SECONDS,
            )
            log.warning("maintenance failed, next try in %.0fs", delay)
        self.next_maintenance = time.monotonic() + delay

    def _guarded(self, operation: Callable[[], object]) -> Exception | None:
        """Run one operation; its failure is reported and returned, never raised."""
        try:
            operation()
        except (AgentError, ResticError) as exc:
            log.warning("will retry: %s", exc)
            return exc
        except OSError as exc:
            # Not restic's: a permission, a vanished binary. Reported; the loop goes on.
            error = self.agent.unexpected(exc)
            log.warning("will retry: %s", error)
            return error
        return None

    def _last_snapshot(self) -> None:
        if self.agent.restic.cancel.is_set():
            log.error("shutdown budget spent: no last snapshot")
        elif self._attempt():
            # SIGTERM reaches a native sidecar once the IDE has exited.
            self.agent.status.mark_final()
            log.info("last snapshot done, exiting")
        else:
            log.error("last snapshot failed, exiting")
