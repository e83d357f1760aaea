"""The idle signals against real samples of what they read, and the verdict.

tests/unit/samples/idle/: `jupyter/` are answers of a real JupyterLab 4.6.6
(jupyter_server 2.21.1) with a Python kernel starting, idle, executing `time.sleep(8)`, and
a terminal open; `spark/` of a real pyspark 3.5.3 driver UI with no job and with a
job running; `cgroup/` two real cgroup v2 cpu.stat readings 10 s apart, of a busy
cgroup and of an empty one, and two cgroup v1 cpuacct.usage readings 10 s apart of
a container of a pod on the local cluster's real nodes (cgroup v1), busy with a
shell loop run by `kubectl exec` and quiet; `rstudio-*/` RStudio session property files as
RStudio's RActiveSession writes them (one file per property; `last_used` in
milliseconds since the epoch), since RStudio cannot run here; `proxy/jupyterlab.log`
the log of the real sign-in proxy (oauth2-proxy 7.15.6 with the operator's arguments)
in front of that JupyterLab, written by
`tests/integration/images/test_jupyterlab_scripts.py`: alice signs in, opens a new
notebook, leaves the tab untouched from 00:28:19 on; bob, not let in, tries.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rspark_operator import idle
from rspark_operator.agent.activity import read_rstudio_sessions

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).parent / "samples" / "idle"
NOW = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)


def sample(*path: str) -> Any:
    return json.loads(SAMPLES.joinpath(*path).read_text())


def test_rstudio_idle_sessions_give_their_last_use() -> None:
    sessions = read_rstudio_sessions(SAMPLES / "rstudio-idle")
    assert sorted(sessions) == ["session-3f2a1b9c", "session-77d0e4aa"]
    activity = idle.rstudio_activity(sessions)
    assert not activity.busy
    assert activity.last == datetime.fromtimestamp(1795983600, UTC)


def test_rstudio_a_session_executing_is_busy() -> None:
    activity = idle.rstudio_activity(read_rstudio_sessions(SAMPLES / "rstudio-busy"))
    assert activity.busy


def test_rstudio_without_sessions_and_with_broken_files() -> None:
    assert idle.rstudio_activity({}) == idle.Activity("rstudio")
    broken = idle.rstudio_activity({"session-1": {"executing": "", "last_used": "soon"}})
    assert broken == idle.Activity("rstudio")


@pytest.mark.parametrize(
    ("kernels", "terminals", "busy", "last"),
    [
        ("kernels-none.json", "terminals-none.json", False, None),
        # A kernel no client connected to yet stays "starting": its start counts, no more.
        ("kernels-starting.json", "terminals-none.json", False, "2026-11-29T21:26:48.054544+00:00"),
        ("kernels-busy.json", "terminals-none.json", True, "2026-11-29T21:26:49.458368+00:00"),
        ("kernels-after.json", "terminals-one.json", False, "2026-11-29T21:27:00.254009+00:00"),
    ],
)
def test_jupyter_kernels_and_terminals(
    kernels: str, terminals: str, busy: bool, last: str | None
) -> None:
    activity = idle.jupyter_activity(sample("jupyter", kernels), sample("jupyter", terminals))
    assert activity.busy is busy
    assert activity.last == (datetime.fromisoformat(last) if last else None)


def test_spark_a_running_job_is_busy() -> None:
    (application,) = sample("spark", "spark-applications.json")
    assert application["id"].startswith("local-")
    assert idle.spark_activity([sample("spark", "spark-jobs-running-one.json")]).busy
    assert not idle.spark_activity([sample("spark", "spark-jobs-running-none.json")]).busy
    assert not idle.spark_activity([]).busy


def cpu(name: str, at: float) -> idle.CpuSample:
    return idle.CpuSample(idle.parse_cpu_stat((SAMPLES / "cgroup" / name).read_text()), at)


@pytest.mark.parametrize("published", list(idle.CPU_USAGE_FILES))
def test_cpu_above_the_threshold_is_busy(published: str) -> None:
    def reading(sample: str, at: float) -> idle.CpuSample:
        text = (SAMPLES / "cgroup" / f"{sample}.{published}").read_text()
        return idle.CpuSample(idle.CPU_USAGE_FILES[published](text), at)

    assert idle.cpu_activity(reading("busy-1", 0), reading("busy-2", 10)).busy
    assert not idle.cpu_activity(reading("quiet-1", 0), reading("quiet-2", 10)).busy


def test_cpu_readings_of_both_cgroup_versions() -> None:
    """The v1 readings of the real node: a busy loop is one core, the quiet container
    next to nothing."""
    usage = idle.CPU_USAGE_FILES["cpuacct.usage"]
    busy = [usage((SAMPLES / "cgroup" / f"busy-{i}.cpuacct.usage").read_text()) for i in (1, 2)]
    assert 0.9 < (busy[1] - busy[0]) / 1e6 / 10 < 1.1
    assert idle.parse_cpu_stat((SAMPLES / "cgroup" / "busy-1.cpu.stat").read_text()) > 0
    # One reading tells nothing; nor does a clock that did not move.
    assert not idle.cpu_activity(None, cpu("busy-2.cpu.stat", 10)).busy
    assert not idle.cpu_activity(cpu("busy-1.cpu.stat", 10), cpu("busy-2.cpu.stat", 10)).busy


def test_cpu_threshold_is_a_share_of_a_core() -> None:
    before = idle.CpuSample(1_000_000, 0.0)
    assert not idle.cpu_activity(before, idle.CpuSample(1_000_000 + 40_000, 1.0)).busy
    assert idle.cpu_activity(before, idle.CpuSample(1_000_000 + 60_000, 1.0)).busy


def test_cpu_stat_without_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="usage_usec"):
        idle.parse_cpu_stat("user_usec 1\n")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/team-a/alice/rpc/get_events"),
        ("POST", "/events/get_events"),
        ("POST", "/rpc/set_client_state"),
        ("GET", "/team-a/alice/api/kernels"),
        ("GET", "/team-a/alice/api/kernels/2c4e1ad2-8c7a-442b-bc81-78dc13fb7548"),
        ("GET", "/api/kernels/2c4e1ad2-8c7a-442b-bc81-78dc13fb7548/channels?session_id=x"),
        ("GET", "/api/sessions"),
        ("GET", "/api/terminals"),
        ("GET", "/team-a/alice/terminals/websocket/1"),
        ("GET", "/api/me?permissions=%7B%7D"),
        ("GET", "/api/status"),
        ("GET", "/api/events/subscribe"),
        ("GET", "/lab/api/workspaces/default"),
        ("PUT", "/team-a/alice/lab/api/workspaces/default?1795998525403"),
        ("GET", "/api/contents/work?content=1"),
        ("GET", "/team-a/alice/static/favicons/favicon-busy-1.ico"),
        ("GET", "/team-a/alice/static/lab/5132.1738325d3b452d0c.js?v=1738325d3b452d0c"),
    ],
)
def test_background_polling_is_not_activity(method: str, path: str) -> None:
    assert not idle.user_request(path, method)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/rpc/console_input"),
        ("POST", "/rpc/execute_code"),
        ("GET", "/team-a/alice/lab?"),
        ("GET", "/team-a/alice/lab/tree/analysis.ipynb"),
        ("PUT", "/api/contents/analysis.ipynb"),
        ("POST", "/api/kernels"),
        ("POST", "/api/sessions"),
        ("DELETE", "/api/kernels/2c4e1ad2-8c7a-442b-bc81-78dc13fb7548"),
        ("GET", "/files/report.html"),
    ],
)
def test_user_requests_are_activity(method: str, path: str) -> None:
    assert idle.user_request(path, method)


def proxy_log() -> list[str]:
    return (SAMPLES / "proxy" / "jupyterlab.log").read_text().splitlines()


def test_the_proxys_request_lines_are_read_its_other_lines_are_not() -> None:
    for line in proxy_log():
        parsed = idle.parse_request_line(line)
        assert (parsed is not None) == line.startswith(idle.REQUEST_LOG_MARKER), line
    patch = idle.parse_request_line(
        'rspark-request 2026/11/30 00:28:18 200 PATCH / "/team-a/alice/api/sessions/8?17" a@x.org'
    )
    assert patch == idle.ProxyRequest(
        datetime(2026, 11, 30, 0, 28, 18, tzinfo=UTC),
        200,
        "PATCH",
        "/",
        "/team-a/alice/api/sessions/8?17",
        "a@x.org",
    )
    quoted = idle.parse_request_line(r'rspark-request 2026/11/30 00:28:18 0 GET / "/a\"b" x y')
    assert quoted is not None and quoted.uri == r"/a\"b" and quoted.person == "x y"


def test_through_the_real_proxy_only_alices_own_requests_count() -> None:
    """Her page load, the notebook she made and its kernel; not JupyterLab's polling
    while the tab stays open, nor the sign-in, nor bob's 403."""
    requests = [r for r in map(idle.parse_request_line, proxy_log()) if r is not None]
    counted = [(r.method, r.uri.split("?")[0]) for r in requests if idle.person_request(r)]
    assert counted == [
        ("GET", "/team-a/alice/"),
        ("GET", "/team-a/alice/lab"),
        ("POST", "/team-a/alice/api/contents"),
        ("POST", "/team-a/alice/api/sessions"),
        ("PATCH", "/team-a/alice/api/sessions/89b09feb-ef7b-47b2-b58d-4e7f24bf2a98"),
        ("PATCH", "/team-a/alice/api/sessions/89b09feb-ef7b-47b2-b58d-4e7f24bf2a98"),
    ]
    untouched = datetime(2026, 11, 30, 0, 28, 19, tzinfo=UTC)
    assert [r for r in requests if r.at > untouched and r.person != idle.NOBODY]  # polling
    assert idle.request_activity(proxy_log()).last == datetime(2026, 11, 30, 0, 28, 18, tzinfo=UTC)
    assert idle.request_activity([]).last is None


def test_last_active_is_now_while_anything_is_busy() -> None:
    before = NOW - timedelta(hours=1)
    seen = [idle.Activity("rstudio", last=before), idle.Activity("spark", busy=True)]
    assert idle.last_active(NOW, before, seen) == NOW


def test_last_active_is_the_latest_seen_never_in_the_future() -> None:
    before = NOW - timedelta(hours=2)
    seen = [idle.Activity("jupyter", last=NOW - timedelta(minutes=20)), idle.Activity("cpu")]
    assert idle.last_active(NOW, before, seen) == NOW - timedelta(minutes=20)
    assert idle.last_active(NOW, NOW - timedelta(minutes=5), seen) == NOW - timedelta(minutes=5)
    ahead = [idle.Activity("jupyter", last=NOW + timedelta(hours=1))]
    assert idle.last_active(NOW, before, ahead) == NOW


def test_quiet_after_the_platforms_quiet_time() -> None:
    for quiet_time in (timedelta(minutes=1), timedelta(minutes=5)):
        assert not idle.quiet(NOW, NOW - quiet_time + timedelta(seconds=1), quiet_time)
        assert idle.quiet(NOW, NOW - quiet_time, quiet_time)


def condition(status: str, when: datetime) -> dict[str, str]:
    return {"type": "Idle", "status": status, "lastTransitionTime": when.strftime("%FT%TZ")}


def test_idle_since_and_when_it_stops() -> None:
    since = NOW - timedelta(hours=3)
    assert idle.idle_since(None) is None
    assert idle.idle_since(condition("False", since)) is None
    assert idle.idle_since(condition("True", since)) == since
    # A later pod start or wake request counts as activity.
    woken = NOW - timedelta(minutes=1)
    assert idle.idle_since(condition("True", since), None, woken) == woken
    assert idle.stop_due(since, timedelta(hours=1)) == since + timedelta(hours=1)
    assert idle.stop_due(since, timedelta(0)) is None
    assert idle.stop_due(None, timedelta(hours=1)) is None
