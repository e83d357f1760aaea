"""When the next snapshot is due: pure arithmetic on monotonic timestamps (seconds)."""

from __future__ import annotations

from dataclasses import dataclass

# First retry after a failure; doubles up to the snapshot interval.
BACKOFF_BASE_SECONDS = 5.0
# First retry of failed maintenance: a check reads data, so retry gently.
MAINTENANCE_RETRY_BASE_SECONDS = 300.0


@dataclass(frozen=True)
class Cadence:
    interval: float  # snapshot at least this often while the agent runs
    debounce: float  # after a change, wait for this much quiet
    max_delay: float  # ... but no longer than this after the first unsaved change
    min_spacing: float  # change-triggered snapshots at most once per this


@dataclass(frozen=True)
class State:
    last_attempt: float  # last success's start, last failure's end (agent start at first)
    first_change: float | None = None  # first change not yet in a snapshot
    last_change: float | None = None
    failures: int = 0  # consecutive failed attempts


def backoff(failures: int, cap: float, base: float = BACKOFF_BASE_SECONDS) -> float:
    return float(min(cap, base * 2 ** max(0, failures - 1)))


def maintenance_wait(last_done: float | None, now: float, every: float) -> float:
    """Seconds until maintenance is due, from the wall-clock time it last succeeded.

    Never done here (or the volume is new): due now. A time ahead of `now` (the
    clock was set back) counts as `now`, so maintenance is never put off longer.
    """
    if last_done is None:
        return 0.0
    return max(0.0, min(last_done, now) + every - now)


def next_due(state: State, cadence: Cadence) -> float:
    """The moment of the next snapshot attempt."""
    if state.failures:
        return state.last_attempt + backoff(state.failures, cadence.interval)
    due = state.last_attempt + cadence.interval
    if state.first_change is not None and state.last_change is not None:
        settled = min(state.last_change + cadence.debounce, state.first_change + cadence.max_delay)
        due = min(due, max(settled, state.last_attempt + cadence.min_spacing))
    return due


def record_change(state: State, now: float) -> State:
    first = state.first_change if state.first_change is not None else now
    return State(state.last_attempt, first, now, state.failures)


def record_attempt(state: State, started: float, finished: float, succeeded: bool) -> State:
    """Changes seen after `started` stay pending; earlier ones are in the snapshot.

    The interval runs from a success's start; a backoff from a failure's end, so
    an attempt that hangs until its timeout is still followed by a pause.
    """
    pending = state.last_change is not None and state.last_change > started
    if succeeded:
        first = max(state.first_change or started, started) if pending else None
        return State(started, first, state.last_change if pending else None, 0)
    return State(finished, state.first_change, state.last_change, state.failures + 1)
