"""What the agent reads to tell whether its workspace is in use (`rspark_operator.idle`
judges it), and the `Idle` condition it reports from that.

The agent shares the pod with the IDE: the home (RStudio's session files), the
pod's loopback (Jupyter's REST API, Spark's driver UIs) and the IDE's runtime
directory (`IDE_RUNTIME`, an emptyDir of both containers: Jupyter's local URL and
API token, and a copy of the IDE container's cgroup CPU usage, which the IDE
image's `rspark-cpu-stat` writes every few seconds: the agent's container sees
only its own cgroup, and a shared process namespace would hand the agent's
secrets to the user's code) and, with
the sign-in proxy, its log (`SIGNIN_LOG`, read on from where the last check stopped).
Nothing the IDE does not run is an error: a missing file or a refused connection
is no activity. Each check is a few local reads, every `CHECK_SECONDS`; the
workspace status is written only when the verdict changes (`Idle` True or False).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from rspark_operator import contract, idle
from rspark_operator.agent.report import Status
from rspark_operator.conditions import IDLE, timestamp
from rspark_operator.quantity import parse_duration

log = logging.getLogger("rspark.agent")

IDE_RUNTIME = Path(contract.IDE_RUNTIME_DIR)
SIGNIN_LOG = Path(contract.SIGNIN_LOG_DIR) / contract.SIGNIN_LOG_FILE
# At most this much of the proxy's log is read a check (its file moves aside at 1 MB).
LOG_READ_LIMIT = 4 << 20
# Written by the JupyterLab image's start script (images/jupyterlab/rspark-jupyterlab).
JUPYTER_URL_FILE = "rspark-server-url"
JUPYTER_TOKEN_FILE = "rspark-server-token"
CHECK_SECONDS = 30.0
LOOPBACK = "http://127.0.0.1:"
HTTP_TIMEOUT = 5.0

Fetch = Callable[[str, dict[str, str]], Any]


def http_json(url: str, headers: dict[str, str]) -> Any:
    """GET a JSON answer from the pod's loopback; None when nothing answers."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
            return json.load(answer)
    except (OSError, ValueError):
        return None


def read_rstudio_sessions(home: Path) -> dict[str, dict[str, str]]:
    """{session: {property: content}} of RStudio's active sessions in the home."""
    sessions: dict[str, dict[str, str]] = {}
    root = home / idle.RSTUDIO_SESSIONS
    for properties in sorted(root.glob("session-*/properties")):
        values = {}
        for name in ("executing", "last_used"):
            try:
                values[name] = (properties / name).read_text()
            except OSError:
                continue
        sessions[properties.parent.name] = values
    return sessions


def read_jupyter(runtime: Path, fetch: Fetch) -> idle.Activity | None:
    """Kernels and terminals of the JupyterLab server; None without one."""
    try:
        url = (runtime / JUPYTER_URL_FILE).read_text().strip()
        token = (runtime / JUPYTER_TOKEN_FILE).read_text().strip()
    except OSError:
        return None
    if not url.startswith(LOOPBACK):  # the IDE writes it: only ever the pod's own server
        return None
    headers = {"Authorization": f"token {token}"}
    kernels = fetch(f"{url}api/kernels", headers)
    terminals = fetch(f"{url}api/terminals", headers)
    if not isinstance(kernels, list):
        return None
    return idle.jupyter_activity(_objects(kernels), _objects(terminals))


def _objects(answer: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list answer (anything else: none)."""
    return [item for item in answer if isinstance(item, dict)] if isinstance(answer, list) else []


def read_spark(ports: Iterable[int], fetch: Fetch) -> idle.Activity:
    """Running jobs of every Spark application whose driver UI answers on the loopback."""
    running = []
    for port in ports:
        base = f"{LOOPBACK}{port}/api/v1/applications"
        applications = fetch(base, {})
        for application in _objects(applications):
            jobs = fetch(f"{base}/{application.get('id')}/jobs?status=running", {})
            running.append(_objects(jobs))
    return idle.spark_activity(running)


class ProxyLog:
    """The sign-in proxy's log, read on from where the last read stopped, as `tail -F`
    does: the open file is read to its end before its successor (the proxy moves the
    file aside at its size limit and opens a new one) is opened from the start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] | None = None
        self.partial = b""

    def lines(self) -> list[str] | None:
        """The whole lines written since the last call; None while there is no log."""
        complete = self._complete(self._read())
        if self._moved():
            if self.file is not None:
                self.file.close()
            self.file, self.partial = None, b""  # the old file's unfinished line is lost
            complete += self._complete(self._read())
        return complete if self.file is not None or complete else None

    def _complete(self, data: bytes) -> list[str]:
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in complete]

    def _read(self) -> bytes:
        if self.file is None:
            try:
                self.file = self.path.open("rb")
            except OSError:
                return b""
        return self.file.read(LOG_READ_LIMIT)

    def _moved(self) -> bool:
        """Whether the path names another file than the one open (or none)."""
        if self.file is None:
            return False
        try:
            return self.path.stat().st_ino != os.fstat(self.file.fileno()).st_ino
        except OSError:
            return True


def read_requests(proxy_log: ProxyLog) -> idle.Activity | None:
    """The last request of a person through the sign-in proxy since the last read; None
    without the proxy. Its other lines go on to the agent's log."""
    lines = proxy_log.lines()
    if lines is None:
        return None
    for line in lines:
        if line and idle.parse_request_line(line) is None:
            log.info("signin-proxy: %s", line)
    return idle.request_activity(lines)


def read_cpu(runtime: Path) -> idle.CpuSample | None:
    """The IDE's last published reading (`idle.CPU_USAGE_FILES`, copied there by the
    IDE image's images/rspark/rspark-cpu-stat), at the time it was copied: a copy no
    longer renewed is no newer reading, not busy."""
    for name, parse in idle.CPU_USAGE_FILES.items():
        path = runtime / name
        try:
            at = path.stat().st_mtime
            return idle.CpuSample(parse(path.read_text()), at)
        except (OSError, ValueError):
            continue
    return None


def spark_ui_ports() -> range:
    # Imported here: the builders are only needed by the sidecar loop.
    from rspark_operator.builders.spark import UI_PORTS

    return UI_PORTS.ports


class ActivityWatch:
    """Reads the signals and reports Idle when the verdict changes.

    The start of the agent counts as activity: a new pod is never reported idle for
    what happened before it."""

    def __init__(
        self,
        home: Path,
        status: Status,
        *,
        runtime: Path = IDE_RUNTIME,
        signin_log: Path = SIGNIN_LOG,
        fetch: Fetch = http_json,
        spark_ports: Iterable[int] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        quiet_time: str = idle.DEFAULT_IDLE_QUIET,
    ) -> None:
        self.home = home
        self.quiet_time = parse_duration(quiet_time)
        self.status = status
        self.runtime = runtime
        self.proxy_log = ProxyLog(signin_log)
        self.fetch = fetch
        self.spark_ports = list(spark_ui_ports() if spark_ports is None else spark_ports)
        self.clock = clock
        self.last = clock()
        self.cpu: idle.CpuSample | None = None
        self.reported: bool | None = None

    def signals(self) -> list[idle.Activity]:
        seen = [idle.rstudio_activity(read_rstudio_sessions(self.home))]
        jupyter = read_jupyter(self.runtime, self.fetch)
        if jupyter is not None:
            seen.append(jupyter)
        seen.append(read_spark(self.spark_ports, self.fetch))
        requests = read_requests(self.proxy_log)
        if requests is not None:
            seen.append(requests)
        cpu = read_cpu(self.runtime)
        if cpu is not None:
            seen.append(idle.cpu_activity(self.cpu, cpu))
            self.cpu = cpu
        return seen

    def check(self) -> bool:
        """One look; returns whether the workspace is idle (and reports a change)."""
        now = self.clock()
        seen = self.signals()
        self.last = idle.last_active(now, self.last, seen)
        quiet = idle.quiet(now, self.last, self.quiet_time)
        if quiet != self.reported:
            self.report(quiet, [a.source for a in seen if a.busy])
        return quiet

    def report(self, quiet: bool, busy: list[str]) -> None:
        self.reported = quiet
        since = timestamp(self.last)
        if quiet:
            log.info("idle: no activity since %s", since)
            message = f"no activity since {since}"
            self.status.condition(IDLE, "True", idle.NO_ACTIVITY, message, at=self.last)
        else:
            what = ", ".join(busy) or "its user"
            log.info("active: %s", what)
            self.status.condition(IDLE, "False", idle.ACTIVE, f"in use ({what})")
