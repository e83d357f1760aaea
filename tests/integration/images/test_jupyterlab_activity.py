"""The agent's activity watch against the real JupyterLab of the image, started by the
image's own script (tests/integration/images/test_jupyterlab_scripts.py): it finds the
server through the files the script writes into the runtime directory (the emptyDir
the pod shares with the agent), and sees a kernel busy while a cell runs."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rspark_operator.agent.activity import ActivityWatch, http_json, read_jupyter
from rspark_operator.agent.report import Status
from tests.integration.images.test_jupyterlab_scripts import (  # noqa: F401 (fixtures)
    PASSWORD,
    Server,
    jupyter_venv,
    login,
    server,
)
from tests.support.kube import wait_until

# A cell that keeps its kernel busy until a file appears (no timed assumption).
BUSY_CELL = """
import pathlib, time
while not pathlib.Path({done!r}).exists():
    time.sleep(0.2)
"""
# Executes one cell in the kernel through its connection file, as JupyterLab would.
EXECUTE = """
import sys
from jupyter_client import BlockingKernelClient
client = BlockingKernelClient(connection_file=sys.argv[1])
client.load_connection_file()
client.start_channels()
client.wait_for_ready(timeout=60)
client.execute_interactive(sys.stdin.read(), timeout=300)
client.stop_channels()
"""


class Sink:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, status: dict[str, Any]) -> None:
        self.published.append(status)


def start_kernel(server: Server) -> str:  # noqa: F811
    session = login(server, PASSWORD)
    headers = {"X-XSRFToken": session.cookies["_xsrf"] or ""}
    started = session.post(
        server.url + "api/kernels", json={"name": "python3"}, headers=headers, timeout=60
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


def busy_kernel(watch: ActivityWatch) -> bool:
    activity = read_jupyter(watch.runtime, http_json)
    return activity is not None and activity.busy


def test_a_running_cell_keeps_the_workspace_active(
    server: Server,  # noqa: F811
    jupyter_venv: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    sink = Sink()
    start = datetime.now(UTC) - timedelta(hours=5)
    clock = [start]
    watch = ActivityWatch(
        home, Status([sink]), runtime=server.runtime, spark_ports=[], clock=lambda: clock[0]
    )
    # A server with no kernel: it answers, through the token the start script wrote.
    found = read_jupyter(server.runtime, http_json)
    assert found is not None and not found.busy and found.last is None
    kernel = start_kernel(server)
    done = tmp_path / "done"
    cell = subprocess.Popen(
        [str(jupyter_venv / "bin" / "python"), "-c", EXECUTE,
         str(server.runtime / f"kernel-{kernel}.json")],
        stdin=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert cell.stdin is not None
    cell.stdin.write(BUSY_CELL.format(done=str(done)))
    cell.stdin.close()
    wait_until("the kernel busy", lambda: busy_kernel(watch), timeout=120)
    # Hours later by the agent's clock, the cell still runs: active, whatever the time.
    clock[0] = start + timedelta(hours=3)
    assert not watch.check()
    assert watch.last == clock[0]
    done.touch()
    assert cell.wait(timeout=120) == 0
    wait_until("the kernel idle again", lambda: not busy_kernel(watch), timeout=60)
    # Quiet since the cell ended (the kernel's last_activity, by the real clock): once
    # the agent's clock is past the report delay, Idle=True, written once.
    clock[0] = datetime.now(UTC) + timedelta(minutes=10)
    assert watch.check()
    idle = [c for c in sink.published[-1]["conditions"] if c["type"] == "Idle"]
    assert idle and idle[0]["status"] == "True"
    assert watch.check()
    assert [c["status"] for s in sink.published for c in s["conditions"]] == ["False", "True"]
