"""One resync for the whole operator: a queue of due times by workspace, one loop.

Watch events put workspaces in the queue (now, for a change or a pod event; later,
for the periodic resync); the loop takes each one when it is due and hands it to a
bounded pool of workers, one reconcile at a time per workspace. A workspace has
two due times: a full reconcile (children applied again: drift, lost children,
refused changes) and a status refresh (pod and volume events), so frequent pod
events never push the full resync back. A failed reconcile comes back after a
jittered exponential backoff, at most one resync period later.

No kopf here: `main.py` feeds the queue from kopf's watches and runs the loop.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

from rspark_operator.cluster import pause

Key = tuple[str, str]  # namespace, name
# The first retry of a failed reconcile; it doubles up to the resync period.
RETRY_BASE_SECONDS = 1.0

log = logging.getLogger("rspark-operator")


class Result(Enum):
    DONE = "done"  # reconciled: the next full resync is one period away
    GONE = "gone"  # the workspace no longer exists (or is going): forget it
    FAILED = "failed"  # try again after a backoff


@dataclass
class _Entry:
    full: float | None = None  # when a full reconcile is due
    refresh: float | None = None  # when a status refresh is due
    failures: int = 0

    def due(self) -> float | None:
        dues = [due for due in (self.full, self.refresh) if due is not None]
        return min(dues, default=None)


@dataclass(frozen=True)
class Job:
    key: Key
    children: bool  # a full reconcile (else a status refresh)


class ResyncQueue:
    """Due times by workspace; thread-safe. `clock` is monotonic seconds."""

    def __init__(
        self,
        resync_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.resync_seconds = resync_seconds
        self._clock = clock
        self._rng = rng or random.Random()
        self._ready = threading.Condition()
        self._entries: dict[Key, _Entry] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._order = itertools.count()
        self._running: set[Key] = set()

    def schedule(self, key: Key, delay: float = 0.0, *, children: bool = True) -> None:
        """Reconcile `key` in `delay` seconds (negative: ahead of what is due now), unless
        it is due sooner already."""
        with self._ready:
            entry = self._entries.setdefault(key, _Entry())
            due = self._clock() + delay
            if children and (entry.full is None or due < entry.full):
                entry.full = due
            elif not children and (entry.refresh is None or due < entry.refresh):
                entry.refresh = due
            else:
                return
            heapq.heappush(self._heap, (due, next(self._order), key))
            self._ready.notify()

    def forget(self, key: Key) -> None:
        with self._ready:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        """Workspaces in the queue (a measure of its depth)."""
        with self._ready:
            return len(self._entries)

    def due_at(self, key: Key) -> float | None:
        """When `key` is next due (None: not in the queue)."""
        with self._ready:
            entry = self._entries.get(key)
            return None if entry is None else entry.due()

    def due_now(self) -> int:
        """Workspaces whose reconcile is due now: the backlog."""
        with self._ready:
            now = self._clock()
            return sum(1 for entry in self._entries.values() if (entry.due() or now + 1) <= now)

    def take(self, timeout: float) -> Job | None:
        """The next due workspace that is not being reconciled, now marked running;
        None when none comes due within `timeout` seconds."""
        with self._ready:
            deadline = self._clock() + timeout
            while True:
                now = self._clock()
                job = self._pop_due(now)
                if job is not None:
                    return job
                upcoming = self._heap[0][0] if self._heap else deadline
                wait = min(upcoming, deadline) - now
                if wait <= 0 and now >= deadline:
                    return None
                self._ready.wait(max(wait, 0.001))

    def done(self, job: Job, result: Result) -> None:
        """`job` finished: schedule its next reconcile."""
        with self._ready:
            self._running.discard(job.key)
            if result is Result.GONE:
                self._entries.pop(job.key, None)
                return
            entry = self._entries.setdefault(job.key, _Entry())
            now = self._clock()
            if result is Result.DONE:
                entry.failures = 0
                delay = self.resync_seconds if job.children else None
            else:
                entry.failures += 1
                delay = pause(
                    entry.failures - 1, RETRY_BASE_SECONDS, self.resync_seconds, self._rng
                )
            if delay is not None and (entry.full is None or now + delay < entry.full):
                entry.full = now + delay
            # What came due while it ran (and was set aside) goes back in the heap.
            for due in (entry.full, entry.refresh):
                if due is not None:
                    heapq.heappush(self._heap, (due, next(self._order), job.key))
            self._ready.notify()

    def _pop_due(self, now: float) -> Job | None:
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is None or due not in (entry.full, entry.refresh):
                continue  # forgotten, or rescheduled sooner: a stale item
            if key in self._running:
                continue  # `done` puts it back
            children = entry.full is not None and entry.full <= now
            if children:
                entry.full = None
            if entry.refresh is not None and entry.refresh <= now:
                entry.refresh = None
            self._running.add(key)
            return Job(key, children)
        return None


def run(
    queue: ResyncQueue,
    work: Callable[[Job], Result],
    *,
    workers: int,
    acting: Callable[[], bool],
    stop: threading.Event,
) -> None:
    """Take what is due and reconcile it on up to `workers` threads, while this replica
    acts (`acting`), until `stop` is set."""
    slots = threading.BoundedSemaphore(workers)

    def one(job: Job) -> None:
        try:
            result = work(job)
        except Exception:  # the loop must outlive any bug in one reconcile
            log.exception("%s/%s: reconcile failed", *job.key)
            result = Result.FAILED
        finally:
            slots.release()
        queue.done(job, result)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
        while not stop.is_set():
            if not acting():
                stop.wait(1.0)
                continue
            slots.acquire()
            job = queue.take(timeout=1.0)
            if job is None:
                slots.release()
                continue
            try:
                pool.submit(one, job)
            except RuntimeError:  # the interpreter is exiting: no new threads
                slots.release()
                queue.done(job, Result.FAILED)
                return
