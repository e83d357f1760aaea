"""The agent's activity watch: what it reads (real sample files, answers served over the
loopback by a real HTTP server) and when it writes the workspace status."""

from __future__ import annotations

import json
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
    CPU_STAT_FILE,
    JUPYTER_TOKEN_FILE,
    JUPYTER_URL_FILE,
    ActivityWatch,
    http_json,
    read_jupyter,
    read_spark,
)
from rspark_operator.agent.report import Status
from rspark_operator.contract import LAST_USER_REQUEST_FILE

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


def watch_of(home: Path, tmp_path: Path, port: int, clock: Clock) -> tuple[ActivityWatch, Sink]:
    sink = Sink()
    status = Status([sink], clock=clock)
    runtime = runtime_for(tmp_path, f"http://127.0.0.1:{port}/user/")
    watch = ActivityWatch(home, status, runtime=runtime, spark_ports=[port], clock=clock)
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


def test_cpu_of_the_ide_where_its_image_publishes_it(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    ticks = iter([0.0, 10.0, 20.0])
    watch = ActivityWatch(
        tmp_path, Status(), runtime=runtime, spark_ports=[], monotonic=lambda: next(ticks)
    )
    assert [a.source for a in watch.signals()] == ["rstudio", "spark"]  # not published
    for name in ("busy-1.cpu.stat", "busy-2.cpu.stat"):
        shutil.copy(SAMPLES / "cgroup" / name, runtime / CPU_STAT_FILE)
        cpu = [a for a in watch.signals() if a.source == "cpu"]
    assert cpu == [idle.Activity("cpu", busy=True)]


def test_the_proxys_last_user_request_counts(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    start = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
    clock = Clock(start)
    watch = ActivityWatch(tmp_path, Status(), runtime=runtime, spark_ports=[], clock=clock)
    (runtime / LAST_USER_REQUEST_FILE).write_text("2026-11-29T22:20:00Z\n")
    clock.now = start + timedelta(minutes=24)
    assert not watch.check()
    assert watch.last == start + timedelta(minutes=20)
    clock.now = start + timedelta(minutes=25)
    assert watch.check()
    (runtime / LAST_USER_REQUEST_FILE).write_text("not a time")
    assert watch.check()  # unreadable: no activity, not an error


def test_answers_of_another_shape_are_no_activity(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, "http://127.0.0.1:1/user/")
    odd: list[Any] = [1, "kernel", None, ["busy"]]
    assert read_jupyter(runtime, lambda url, headers: odd) == idle.Activity("jupyter")
    assert not read_spark([4040], lambda url, headers: odd).busy
    assert read_jupyter(runtime, lambda url, headers: {"message": "Forbidden"}) is None
