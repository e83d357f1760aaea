"""API writes due to idle tracking: the agent's real verdict code over a day of use.

Each simulated workspace runs the agent's `ActivityWatch.check` (and its `Status`,
which publishes only what changed) every `CHECK_SECONDS` for 24 hours, fed by a
synthetic but plausible day of its user instead of the IDE's files: a workday of
working spans (an action a minute) and pauses (mostly short, some long), now and
then a long computation (busy for up to 90 minutes), nothing at night. What the
sink receives is what the agent would write to the API server. The operator's own
writes are one status write per stop and a few per wake; they are counted as
stops and wakes.

Compared with Kubeflow's culler, which writes an annotation on every notebook at
every check (one per notebook per minute).

Usage: python -m bench.idle_writes [--workspaces 1000] [--stop-after-minutes 60]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rspark_operator import idle
from rspark_operator.agent.activity import CHECK_SECONDS, ActivityWatch
from rspark_operator.agent.report import Status

DAY = timedelta(days=1)
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
KUBEFLOW_WRITES_PER_MINUTE = 1.0


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime
    busy: bool  # a computation (busy), or the user's actions (last use moves on)


def user_day(rng: random.Random) -> list[Span]:
    """A workday from about 9:00 to 17:30: working spans and pauses, maybe a computation."""
    at = START + timedelta(hours=9, minutes=rng.uniform(-30, 30))
    end_of_day = START + timedelta(hours=17, minutes=30 + rng.uniform(-30, 30))
    spans = []
    while at < end_of_day:
        work = timedelta(minutes=rng.expovariate(1 / 25))
        spans.append(Span(at, at + work, busy=False))
        at += work
        kind = rng.random()
        mean = 3 if kind < 0.7 else 15 if kind < 0.95 else 60
        at += timedelta(minutes=rng.expovariate(1 / mean))
    if rng.random() < 0.5:
        begin = START + timedelta(hours=rng.uniform(10, 16))
        spans.append(Span(begin, begin + timedelta(minutes=rng.uniform(20, 90)), busy=True))
    return spans


class SimulatedWatch(ActivityWatch):
    """The agent's watch, with the day's spans in place of the IDE's files and answers."""

    def __init__(self, spans: list[Span], clock: list[datetime], status: Status) -> None:
        super().__init__(Path("/nonexistent"), status, spark_ports=[], clock=lambda: clock[0])
        self.spans = spans
        self.now = clock

    def signals(self) -> list[idle.Activity]:
        now = self.now[0]
        busy = any(s.busy and s.start <= now < s.end for s in self.spans)
        used = [min(s.end, now) for s in self.spans if not s.busy and s.start <= now]
        return [idle.Activity("rstudio", busy=busy, last=max(used, default=None))]


class Counter:
    def __init__(self) -> None:
        self.writes = 0

    def publish(self, status: dict[str, Any]) -> None:
        self.writes += 1


def simulate(rng: random.Random, stop_after: timedelta) -> tuple[int, int]:
    """(agent writes, stops) of one workspace over the day."""
    clock = [START]
    counter = Counter()
    watch = SimulatedWatch(user_day(rng), clock, Status([counter], clock=lambda: clock[0]))
    stops, stopped = 0, False
    step = timedelta(seconds=CHECK_SECONDS)
    while clock[0] < START + DAY:
        quiet = watch.check()
        due = quiet and clock[0] - watch.last >= stop_after
        if due and not stopped:
            stops += 1
        stopped = due
        clock[0] += step
    return counter.writes, stops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--stop-after-minutes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    results = [
        simulate(rng, timedelta(minutes=args.stop_after_minutes)) for _ in range(args.workspaces)
    ]
    writes = sum(w for w, _ in results)
    stops = sum(s for _, s in results)
    seconds = DAY.total_seconds()
    kubeflow = args.workspaces * KUBEFLOW_WRITES_PER_MINUTE * seconds / 60
    print(f"workspaces: {args.workspaces}, one day, a check every {CHECK_SECONDS:.0f} s")
    print(f"agent writes: {writes} ({writes / args.workspaces:.1f} per workspace per day, "
          f"max {max(w for w, _ in results)}), {writes / seconds:.4f} per second")  # fmt: skip
    print(f"stops at stopAfter {args.stop_after_minutes} min: {stops} "
          f"({stops / args.workspaces:.2f} per workspace per day)")  # fmt: skip
    print(f"Kubeflow's culler: {kubeflow:.0f} writes, {kubeflow / seconds:.2f} per second")


if __name__ == "__main__":
    main()
