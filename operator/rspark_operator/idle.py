"""Idleness of a workspace: the signals, each a pure function of what it reads, and the
verdict. No I/O here: the agent (`agent/activity.py`) reads the files and answers and
hands them to these functions; the operator (`lifecycle.py`) reads the verdict from
the workspace's `Idle` condition.

Signals, each an `Activity` (busy now, and the last time it saw its user):

- RStudio: the property files of each session under
  `~/.local/share/rstudio/sessions/active/session-*/properties/` (RStudio's
  `RActiveSession`): `executing` ("1" while R runs code) and `last_used`
  (milliseconds since the epoch, moved on by the user's requests);
- JupyterLab: `GET api/kernels` (a kernel whose `execution_state` is `busy`, and
  each kernel's `last_activity`) and `GET api/terminals` (each
  terminal's `last_activity`);
- Spark: `GET /api/v1/applications/<id>/jobs?status=running` of each driver UI: a
  running job is busy;
- CPU: the IDE container's cgroup usage (cgroup v2 `cpu.stat`'s `usage_usec`, or
  cgroup v1 `cpuacct.usage` in nanoseconds) read twice, each reading with the time
  it was taken: more than `CPU_BUSY_CORES` between the two
  is busy (a long computation with the browser closed and no Spark, from a
  notebook, a terminal or `kubectl exec` alike);
- requests through the sign-in proxy (RSPARK_SIGNIN=oidc): its log, one line a
  request in `REQUEST_LOG_FORMAT` (`parse_request_line`, `request_activity`); a
  request counts when it reached the IDE for someone signed in and is not the IDE's
  own background polling (`user_request`: RStudio's `get_events` long poll,
  Jupyter's kernel, session, terminal, status and file-listing polling).

The agent reports `Idle=True` once nothing was active for the platform's quiet time
(RSPARK_IDLE_QUIET, `DEFAULT_IDLE_QUIET` unless set), with lastTransitionTime the last
activity, and `Idle=False` as soon as something is: two writes per pause, never one
per check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rspark_operator.conditions import Advice
from rspark_operator.contract import IDLE_QUIET

# The agent says Idle only after this long without activity (the platform's quiet time,
# RSPARK_IDLE_QUIET); spec.idle.stopAfter is 0 (never) or at least this.
DEFAULT_IDLE_QUIET = "5m"
# The shortest quiet time a platform may set: the agent looks every 30 s, and a verdict
# needs a few looks. The API's floor of spec.idle.stopAfter.
SHORTEST_IDLE_QUIET = "1m"
# More CPU than this (cores, averaged between two readings) is a computation running.
CPU_BUSY_CORES = 0.05
# RStudio's per-session state, relative to the home.
RSTUDIO_SESSIONS = ".local/share/rstudio/sessions/active"
# Jupyter's kernels in these states are working for their user ("starting" is not: a
# kernel no client ever connected to stays "starting" for good, JupyterLab's included
# until a notebook attaches; its last_activity counts instead).
JUPYTER_BUSY_STATES = frozenset({"busy"})

# Condition reasons of Idle (the agent's), and what they mean (troubleshooting.md).
ACTIVE = "Active"
NO_ACTIVITY = "NoActivity"
ADVICE: dict[str, Advice] = {
    ACTIVE: Advice(
        "Someone uses the workspace now, or did within the platform's quiet time "
        f"({IDLE_QUIET}, {DEFAULT_IDLE_QUIET} unless set); the message names what "
        "was busy (rstudio, jupyter, spark, cpu) or says its user."
    ),
    NO_ACTIVITY: Advice(
        "Nothing used the workspace since the condition's lastTransitionTime; with "
        "`spec.idle.stopAfter` it stops that long after it.",
        "Use the IDE: the verdict turns Active within 30 s. Or set "
        '`spec.idle.stopAfter: "0"` to never stop it.',
    ),
}


@dataclass(frozen=True)
class Activity:
    """What one signal saw: `busy` (working now) and `last` (the last time its user acted)."""

    source: str
    busy: bool = False
    last: datetime | None = None


def _epoch_ms(text: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(text.strip()) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 / RFC 3339 time as the IDEs and the proxy write it (naive: UTC);
    None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _latest(times: Iterable[datetime | None]) -> datetime | None:
    return max((t for t in times if t is not None), default=None)


def rstudio_activity(sessions: Mapping[str, Mapping[str, str]]) -> Activity:
    """RStudio from its sessions' property files: {session id: {file name: content}}."""
    busy = any(props.get("executing", "").strip() == "1" for props in sessions.values())
    last = _latest(_epoch_ms(props.get("last_used", "")) for props in sessions.values())
    return Activity("rstudio", busy=busy, last=last)


def jupyter_activity(kernels: Sequence[Mapping[str, Any]], terminals: Sequence[Any]) -> Activity:
    """JupyterLab from the answers of `api/kernels` and `api/terminals`."""
    busy = any(kernel.get("execution_state") in JUPYTER_BUSY_STATES for kernel in kernels)
    last = _latest(parse_time(item.get("last_activity")) for item in [*kernels, *terminals])
    return Activity("jupyter", busy=busy, last=last)


def spark_activity(running_jobs: Sequence[Sequence[Mapping[str, Any]]]) -> Activity:
    """Spark from `jobs?status=running` of each application: any job is busy."""
    return Activity("spark", busy=any(jobs for jobs in running_jobs))


@dataclass(frozen=True)
class CpuSample:
    """A reading of a cgroup's CPU usage (`CPU_USAGE_FILES`) and when it was taken
    (seconds)."""

    usage_usec: int
    at: float


def parse_cpu_stat(text: str) -> int:
    """`usage_usec` of a cgroup v2 cpu.stat."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    raise ValueError("cpu.stat has no usage_usec")


def parse_cpuacct_usage(text: str) -> int:
    """Microseconds of a cgroup v1 cpuacct.usage (nanoseconds)."""
    return int(text.strip()) // 1000


# The IDE container's cgroup files the IDE image publishes (the one its cgroup
# version has) and how each reads as microseconds of CPU.
CPU_USAGE_FILES = {"cpu.stat": parse_cpu_stat, "cpuacct.usage": parse_cpuacct_usage}


def cpu_activity(before: CpuSample | None, after: CpuSample) -> Activity:
    """Busy when the cgroup used more than CPU_BUSY_CORES between the two readings."""
    if before is None or after.at <= before.at:
        return Activity("cpu")
    cores = (after.usage_usec - before.usage_usec) / 1e6 / (after.at - before.at)
    return Activity("cpu", busy=cores > CPU_BUSY_CORES)


# Requests the IDEs send by themselves while a tab is open, whoever sits at it.
BACKGROUND_REQUESTS = (
    # RStudio: the event long poll and the periodic client state and connection checks.
    re.compile(r"/rpc/(get_events|set_client_state|client_init_ping)$"),
    re.compile(r"/events/get_events$"),
    # Jupyter Server: the kernels', terminals' and events' websockets (open while a tab
    # is; logged when they close, with the time they opened).
    re.compile(r"/api/kernels/[^/]+/channels$"),
    re.compile(r"/terminals/websocket/[^/]+$"),
    # JupyterLab saves its layout every 10 s (PUT lab/api/workspaces/default).
    re.compile(r"/lab/api/(workspaces|settings|translations)(/.*)?$"),
    re.compile(r"/api/contents(/.*)?/checkpoints$"),
)
# Reads a Jupyter page sends by itself, seen through the real proxy in front of
# JupyterLab (tests/unit/samples/idle/proxy): its polling of the REST APIs every 10 s
# (kernels, sessions, terminals, the file browser's listing), and files it loads on
# its own (code chunks loaded late, kernel logos, the favicon it swaps while a kernel
# is busy). The same APIs written to (a kernel started, a notebook saved) and the pages
# opened (lab, lab/tree/..., files/...) are the user's.
BACKGROUND_READS = (
    re.compile(r"/(api|lab/api|lsp)/"),
    re.compile(r"/(static|kernelspecs)/"),
)
READS = frozenset({"GET", "HEAD"})


def user_request(path: str, method: str = "GET") -> bool:
    """Whether a request through the workspace's proxy is the user's (not background polling).

    `path` may carry a query and any URL prefix."""
    path = path.split("?", 1)[0]
    background = [*BACKGROUND_REQUESTS, *(BACKGROUND_READS if method.upper() in READS else ())]
    return not any(pattern.search(path) for pattern in background)


# The sign-in proxy's line for each request (oauth2-proxy's --request-logging-format,
# a Go template): a marker, when it started (UTC with --logging-local-time=false, to
# the second), its status (0: a websocket, answered by the upstream on the hijacked
# connection), method, the upstream that answered (`-`: the proxy itself: sign-in,
# 403...), the URI (Go-quoted) and last who was signed in (`-`: nobody).
REQUEST_LOG_MARKER = "rspark-request"
REQUEST_LOG_FORMAT = " ".join(
    (
        REQUEST_LOG_MARKER,
        "{{.Timestamp}} {{.StatusCode}} {{.RequestMethod}} {{.Upstream}}",
        "{{.RequestURI}} {{.Username}}",
    )
)
_REQUEST_LINE = re.compile(
    rf"^{REQUEST_LOG_MARKER} (\d{{4}}/\d\d/\d\d \d\d:\d\d:\d\d) (\d+) (\S+) (\S+) "
    r'"((?:[^"\\]|\\.)*)" (.+)$'
)
NOBODY = "-"


@dataclass(frozen=True)
class ProxyRequest:
    """One request as the sign-in proxy logged it."""

    at: datetime
    status: int
    method: str
    upstream: str
    uri: str
    person: str


def parse_request_line(line: str) -> ProxyRequest | None:
    """A request line of the sign-in proxy's log; None for its other lines (sign-in
    attempts, its own messages)."""
    match = _REQUEST_LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    at, status, method, upstream, uri, person = match.groups()
    when = datetime.strptime(at, "%Y/%m/%d %H:%M:%S").replace(tzinfo=UTC)
    return ProxyRequest(when, int(status), method, upstream, uri, person)


def person_request(request: ProxyRequest) -> bool:
    """A request someone signed in sent to the IDE themselves: it reached an upstream
    (the proxy's own answers, a 403 of someone not let in included, do not) and is not
    background polling."""
    return (
        request.person != NOBODY
        and request.upstream != NOBODY
        and user_request(request.uri, request.method)
    )


def request_activity(lines: Iterable[str]) -> Activity:
    """The sign-in proxy's log lines: the start of the last request a person sent."""
    requests = (parse_request_line(line) for line in lines)
    last = _latest(r.at for r in requests if r is not None and person_request(r))
    return Activity("requests", last=last)


def last_active(now: datetime, previous: datetime, activities: Iterable[Activity]) -> datetime:
    """The last activity known: now if anything is busy, else the latest seen (never earlier
    than `previous`, and never later than now: a clock ahead does not keep it awake)."""
    seen = list(activities)
    if any(activity.busy for activity in seen):
        return now
    latest = _latest([previous, *(activity.last for activity in seen)])
    assert latest is not None
    return min(latest, now)


def quiet(now: datetime, last: datetime, quiet_time: timedelta) -> bool:
    """Long enough without activity (`quiet_time`) for the agent to report Idle."""
    return now - last >= quiet_time


def idle_since(condition: Mapping[str, Any] | None, *later: datetime | None) -> datetime | None:
    """When the workspace became idle, from the agent's Idle condition: its
    lastTransitionTime while True, moved on by `later` times that count as activity
    (the pod's start, a wake request). None when it is not idle."""
    if not condition or condition.get("status") != "True":
        return None
    since = parse_time(condition.get("lastTransitionTime"))
    if since is None:
        return None
    return _latest([since, *later])


def stop_due(since: datetime | None, stop_after: timedelta) -> datetime | None:
    """When an idle workspace stops (None: never; stop_after 0 means never)."""
    if since is None or stop_after <= timedelta(0):
        return None
    return since + stop_after
