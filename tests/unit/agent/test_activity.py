"""The agent's activity watch: what it reads (real sample files, answers served over the
loopback by a real HTTP server) and when it writes the workspace status."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rspark_operator import idle
from rspark_operator.agent.activity import (
    JUPYTER_TOKEN_FILE,
    JUPYTER_URL_FILE,
    ActivityWatch,
    ProxyLog,
    http_json,
    read_jupyter,
    read_spark,
)
from rspark_operator.agent.report import Status

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).parents[1] / "samples" / "idle"
TOKEN = "sample-token"
APPLICATION = "local-1795987780824"


class Answers:
    """What the loopback server answers, by path; Jupyter's paths need the token."""

    def __init__(self) -> None:
        self.kernels = "kernels-none.json"
        self.jobs = "spark-jobs-running-none.json"

    def answer(self, path: str, authorization: str | None) -> Any:
        if path.startswith("/user/api/"):
            if authorization != f"token {TOKEN}":
                return None
            name = self.kernels if path == "/user/api/kernels" else "terminals-none.json"
            return json.loads((SAMPLES / "jupyter" / name).read_text())
        if path == "/api/v1/applications":
            return json.loads((SAMPLES / "spark" / "spark-applications.json").read_text())
        if path == f"/api/v1/applications/{APPLICATION}/jobs?status=running":
            return json.loads((SAMPLES / "spark" / self.jobs).read_text())
        return None


@pytest.fixture
def server() -> Iterator[tuple[int, Answers]]:
    answers = Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answers.answer(self.path, self.headers.get("Authorization"))
            if body is None:
                self.send_response(403)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], answers
    httpd.shutdown()
    httpd.server_close()


def runtime_for(tmp_path: Path, url: str) -> Path:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / JUPYTER_URL_FILE).write_text(url + "\n")
    (runtime / JUPYTER_TOKEN_FILE).write_text(TOKEN)
    return runtime


def test_jupyter_is_asked_with_its_token(tmp_path: Path, server: tuple[int, Answers]) -> None:
    port, answers = server
    runtime = runtime_for(tmp_path, f"http://127.0.0.1:{port}/user/")
    assert read_jupyter(runtime, http_json) == idle.Activity("jupyter")
    answers.kernels = "kernels-busy.json"
    activity = read_jupyter(runtime, http_json)
    assert activity is not None and activity.busy


def test_jupyter_only_on_the_loopback_and_only_when_it_runs(tmp_path: Path) -> None:
    assert read_jupyter(tmp_path, http_json) is None  # no server files: RStudio
    runtime = runtime_for(tmp_path, "http://10.0.0.1:8888/")
    assert read_jupyter(runtime, http_json) is None


def test_spark_jobs_of_every_driver_ui(server: tuple[int, Answers]) -> None:
    port, answers = server
    assert not read_spark([port, 1], http_json).busy  # port 1: nothing answers
    answers.jobs = "spark-jobs-running-one.json"
    assert read_spark([1, port], http_json).busy


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, status: dict[str, Any]) -> None:
        self.published.append(status)


def idle_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Idle")


def watch_of(
    home: Path, tmp_path: Path, port: int, clock: Clock, quiet_time: str = idle.DEFAULT_IDLE_QUIET
) -> tuple[ActivityWatch, Sink]:
    sink = Sink()
    status = Status([sink], clock=clock)
    runtime = runtime_for(tmp_path, f"http://127.0.0.1:{port}/user/")
    watch = ActivityWatch(
        home, status, runtime=runtime, spark_ports=[port], clock=clock, quiet_time=quiet_time
    )
    return watch, sink


def test_one_write_per_change_of_verdict(tmp_path: Path, server: tuple[int, Answers]) -> None:
    port, answers = server
    start = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
    clock = Clock(start)
    home = tmp_path / "home"
    home.mkdir()
    watch, sink = watch_of(home, tmp_path, port, clock)
    # The start of the agent is activity: a new pod is not idle for its predecessor's past.
    assert not watch.check()
    assert idle_condition(sink.published[-1])["status"] == "False"
    for minute in range(1, 30):
        clock.now = start + timedelta(minutes=minute)
        watch.check()
    assert len(sink.published) == 2
    reported = idle_condition(sink.published[-1])
    assert (reported["status"], reported["reason"]) == ("True", idle.NO_ACTIVITY)
    # lastTransitionTime is when the activity stopped, not when it was noticed.
    assert reported["lastTransitionTime"] == "2026-11-29T22:00:00Z"
    # A Spark job wakes it at once; then quiet again after the report delay.
    answers.jobs = "spark-jobs-running-one.json"
    clock.now = start + timedelta(minutes=31)
    assert not watch.check()
    assert idle_condition(sink.published[-1])["reason"] == idle.ACTIVE
    assert "spark" in idle_condition(sink.published[-1])["message"]
    answers.jobs = "spark-jobs-running-none.json"
    for minute in range(32, 40):
        clock.now = start + timedelta(minutes=minute)
        watch.check()
    assert len(sink.published) == 4
    assert idle_condition(sink.published[-1])["lastTransitionTime"] == "2026-11-29T22:31:00Z"


def test_the_platforms_quiet_time(tmp_path: Path, server: tuple[int, Answers]) -> None:
    """RSPARK_IDLE_QUIET=1m: the verdict after one minute of quiet, not five."""
    port, _ = server
    start = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
    clock = Clock(start)
    home = tmp_path / "home"
    home.mkdir()
    watch, sink = watch_of(home, tmp_path, port, clock, quiet_time="1m")
    assert not watch.check()
    clock.now = start + timedelta(seconds=59)
    assert not watch.check()
    clock.now = start + timedelta(minutes=1)
    assert watch.check()
    reported = idle_condition(sink.published[-1])
    assert (reported["status"], reported["lastTransitionTime"]) == ("True", "2026-11-29T22:00:00Z")


def test_an_executing_r_session_keeps_it_active(
    tmp_path: Path, server: tuple[int, Answers]
) -> None:
    port, _ = server
    home = tmp_path / "home"
    shutil.copytree(SAMPLES / "rstudio-busy", home)
    start = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
    clock = Clock(start)
    watch, sink = watch_of(home, tmp_path, port, clock)
    for minute in range(0, 60, 5):
        clock.now = start + timedelta(minutes=minute)
        assert not watch.check()
    assert len(sink.published) == 1


def test_a_busy_kernel_keeps_it_active(tmp_path: Path, server: tuple[int, Answers]) -> None:
    port, answers = server
    answers.kernels = "kernels-busy.json"
    home = tmp_path / "home"
    home.mkdir()
    start = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
    clock = Clock(start)
    watch, _ = watch_of(home, tmp_path, port, clock)
    clock.now = start + timedelta(hours=2)
    assert not watch.check()
    answers.kernels = "kernels-after.json"
    clock.now = start + timedelta(hours=2, minutes=10)
    assert watch.check()


def test_the_last_snapshot_of_a_stopping_pod_is_marked_final() -> None:
    clock = Clock(datetime(2026, 11, 29, 23, 0, tzinfo=UTC))
    sink = Sink()
    status = Status([sink], clock=clock)
    status.mark_final()  # nothing snapshotted: nothing to mark
    assert sink.published == []
    status.remember_snapshot({"time": "2026-11-29T22:55:00Z", "id": "4f2a9c1e5d"})
    status.mark_final()
    assert sink.published[-1]["lastSnapshot"]["finalAt"] == "2026-11-29T23:00:00Z"
    # The next snapshot of a new pod is not final until that pod stops.
    status.remember_snapshot({"time": "2026-11-30T08:00:00Z", "id": "9c1e5d02aa"})
    assert "finalAt" not in status.snapshot()["lastSnapshot"]


@pytest.mark.parametrize("published", list(idle.CPU_USAGE_FILES))
def test_cpu_of_the_ide_as_its_image_publishes_it(tmp_path: Path, published: str) -> None:
    """Readings of a real IDE container's cgroup usage, each at its copy's time: busy
    when the IDE used more than the threshold between two copies; a copy no longer
    renewed is not busy."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    watch = ActivityWatch(tmp_path, Status(), runtime=runtime, spark_ports=[])
    assert [a.source for a in watch.signals()] == ["rstudio", "spark"]  # not published
    copy = runtime / published

    def publish(sample: str, at: float) -> list[idle.Activity]:
        shutil.copy(SAMPLES / "cgroup" / f"{sample}.{published}", copy)
        os.utime(copy, (at, at))
        return [a for a in watch.signals() if a.source == "cpu"]

    assert publish("busy-1", 1000.0) == [idle.Activity("cpu")]  # one reading
    assert publish("busy-2", 1010.0) == [idle.Activity("cpu", busy=True)]
    assert publish("busy-2", 1010.0) == [idle.Activity("cpu")]  # not renewed
    assert publish("quiet-1", 1020.0) == [idle.Activity("cpu")]
    assert publish("quiet-2", 1030.0) == [idle.Activity("cpu")]


def request_line(at: datetime, method: str, uri: str, person: str = "alice@example.org") -> str:
    return f'{idle.REQUEST_LOG_MARKER} {at:%Y/%m/%d %H:%M:%S} 200 {method} / "{uri}" {person}\n'


def test_the_sign_in_proxys_requests_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real proxy's log of alice's visit, then a request of hers and JupyterLab's
    polling appended, as the watch checks; its other lines go on to the agent's log."""
    log = tmp_path / "signin-log" / "proxy.log"
    start = datetime(2026, 11, 30, 0, 20, tzinfo=UTC)
    clock = Clock(start)
    watch = ActivityWatch(
        tmp_path, Status(), runtime=tmp_path, signin_log=log, spark_ports=[], clock=clock
    )
    assert "requests" not in [a.source for a in watch.signals()]  # no proxy: no signal
    log.parent.mkdir()
    shutil.copy(SAMPLES / "proxy" / "jupyterlab.log", log)
    clock.now = datetime(2026, 11, 30, 0, 32, tzinfo=UTC)
    with caplog.at_level(logging.INFO, "rspark.agent"):
        assert not watch.check()
    assert watch.last == datetime(2026, 11, 30, 0, 28, 18, tzinfo=UTC)
    assert "signin-proxy: 127.0.0.1 - " in caplog.text  # its sign-in lines
    assert "AuthSuccess" in caplog.text and "rspark-request" not in caplog.text
    saved = datetime(2026, 11, 30, 0, 29, 30, tzinfo=UTC)
    with log.open("a") as proxy:
        proxy.write(request_line(saved, "PUT", "/team-a/alice/api/contents/a.ipynb"))
        proxy.write(request_line(saved + timedelta(seconds=50), "GET", "/team-a/alice/api/kernels"))
        unfinished = request_line(saved + timedelta(seconds=60), "PUT", "/api/contents/b")
        proxy.write(unfinished.rstrip("\n"))
    assert not watch.check()  # the unfinished line waits for its end
    assert watch.last == saved
    clock.now = saved + timedelta(minutes=5)
    assert watch.check()


def test_the_proxys_log_is_followed_when_it_moves_aside(tmp_path: Path) -> None:
    """oauth2-proxy (lumberjack) renames the full file and opens a new one: the lines the
    old one got since the last read count, then the new one from its start."""
    log = tmp_path / "proxy.log"
    proxy_log = ProxyLog(log)
    assert proxy_log.lines() is None
    start = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    log.write_text(request_line(start, "POST", "/api/sessions"))
    assert [idle.parse_request_line(line) for line in proxy_log.lines() or []] != [None]
    with log.open("a") as proxy:
        proxy.write(request_line(start + timedelta(minutes=1), "POST", "/api/kernels"))
    log.rename(tmp_path / "proxy-2026-11-30T01-01-00.000.log")
    log.write_text(request_line(start + timedelta(minutes=2), "PUT", "/api/contents/b"))
    after = proxy_log.lines()
    assert after is not None
    assert idle.request_activity(after).last == start + timedelta(minutes=2)
    assert len(after) == 2
    assert proxy_log.lines() == []
    log.unlink()
    assert proxy_log.lines() is None


def test_answers_of_another_shape_are_no_activity(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, "http://127.0.0.1:1/user/")
    odd: list[Any] = [1, "kernel", None, ["busy"]]
    assert read_jupyter(runtime, lambda url, headers: odd) == idle.Activity("jupyter")
    assert not read_spark([4040], lambda url, headers: odd).busy
    assert read_jupyter(runtime, lambda url, headers: {"message": "Forbidden"}) is None
