"""`rspark-agent run`: the sidecar loop.

restore if needed -> ready -> snapshot on the interval and after changes -> on
SIGTERM one last snapshot within the shutdown budget -> exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from rspark_operator.agent import reasons, schedule
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
            watcher = Watcher(self.agent.home, self.agent.excludes, self._on_change)
            watching = watcher.start()
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
            except (AgentError, ResticError) as exc:
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
            outcome = agent.restore(agent.settings.restore_from or None, create=True)
            return f"{outcome.reason} {outcome.snapshot_id or ''}".strip()
        # The home is on its volume: RStudio may start even if storage is away;
        # snapshot trouble shows on SnapshotHealthy.
        agent.status.condition(
            HOME_RESTORED, "True", reasons.HOME_PRESENT, "home already on its volume"
        )
        return reasons.HOME_PRESENT

    def _loop(self) -> None:
        next_maintenance = time.monotonic() + self.maintenance_every
        while not self.stopping.is_set():
            with self._state_lock:
                due = schedule.next_due(self.state, self.cadence)
            now = time.monotonic()
            if now >= next_maintenance:
                self._guarded(self.agent.maintain)
                next_maintenance = time.monotonic() + self.maintenance_every
                continue
            if now < due:
                self.wake.clear()
                self.wake.wait(min(due, next_maintenance) - now)
                continue
            self._attempt()

    def _attempt(self) -> bool:
        started = time.monotonic()
        ok = self._guarded(self.agent.snapshot)
        with self._state_lock:
            self.state = schedule.record_attempt(self.state, started, ok)
        return ok

    def _guarded(self, operation: object) -> bool:
        try:
            operation()  # type: ignore[operator]
        except (AgentError, ResticError) as exc:
            log.warning("will retry: %s", exc)
            return False
        return True

    def _last_snapshot(self) -> None:
        if self.agent.restic.cancel.is_set():
            log.error("shutdown budget spent: no last snapshot")
        elif self._attempt():
            log.info("last snapshot done, exiting")
        else:
            log.error("last snapshot failed, exiting")
