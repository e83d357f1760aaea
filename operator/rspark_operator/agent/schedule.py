"""When the next snapshot is due: pure arithmetic on monotonic timestamps (seconds)."""

from __future__ import annotations

from dataclasses import dataclass

# First retry after a failure; doubles up to the snapshot interval.
BACKOFF_BASE_SECONDS = 5.0


@dataclass(frozen=True)
class Cadence:
    interval: float  # snapshot at least this often while the agent runs
    debounce: float  # after a change, wait for this much quiet
    max_delay: float  # ... but no longer than this after the first unsaved change
    min_spacing: float  # change-triggered snapshots at most once per this


@dataclass(frozen=True)
class State:
    last_attempt: float  # when the last snapshot attempt started (agent start at first)
    first_change: float | None = None  # first change not yet in a snapshot
    last_change: float | None = None
    failures: int = 0  # consecutive failed attempts


def backoff(failures: int, cap: float) -> float:
    return float(min(cap, BACKOFF_BASE_SECONDS * 2 ** max(0, failures - 1)))


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


def record_attempt(state: State, started: float, succeeded: bool) -> State:
    """Changes seen after `started` stay pending; earlier ones are in the snapshot."""
    pending = state.last_change is not None and state.last_change > started
    if succeeded:
        first = max(state.first_change or started, started) if pending else None
        return State(started, first, state.last_change if pending else None, 0)
    return State(started, state.first_change, state.last_change, state.failures + 1)
