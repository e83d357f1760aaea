"""The workspace image's scripts, run as plain processes with fake RStudio commands."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from rspark_operator.builders.pod import HOME, PRESTOP_COMMAND
from rspark_operator.builders.spark import SPARK_CONF_DIR
from tests.integration.images.conftest import IMAGES, FakeBin, run

RSPARK = IMAGES / "rspark"
PRESTOP = str(RSPARK / "rspark-prestop")
HEALTHCHECK = str(RSPARK / "rspark-healthcheck")
HOME_INIT = str(RSPARK / "cont-init.d" / "10-rspark-home")


def sessions_running_for(fake_bin: FakeBin, checks: int) -> None:
    """A fake pgrep that finds rsession `checks` times, then no more."""
    counter = fake_bin.dir.parent / "pgrep.count"
    counter.write_text("0")
    fake_bin.add(
        "pgrep",
        f'n=$(cat "{counter}"); echo $((n + 1)) > "{counter}"; [ "$n" -lt {checks} ]',
    )


def test_prestop_suspends_waits_for_sessions_then_stops(fake_bin: FakeBin) -> None:
    fake_bin.add("rstudio-server")
    fake_bin.add("sleep")
    sessions_running_for(fake_bin, 2)
    result = run([PRESTOP], fake_bin.env())
    assert result.returncode == 0, result.stderr
    assert fake_bin.calls() == [
        "rstudio-server suspend-all",
        "pgrep -x rsession",
        "sleep 1",
        "pgrep -x rsession",
        "sleep 1",
        "pgrep -x rsession",
        "rstudio-server stop",
    ]


def test_prestop_stops_even_when_suspend_fails(fake_bin: FakeBin) -> None:
    fake_bin.add("rstudio-server", '[ "$1" = stop ]')
    fake_bin.add("sleep")
    sessions_running_for(fake_bin, 0)
    result = run([PRESTOP], fake_bin.env())
    assert result.returncode == 0
    assert "suspend-all failed" in result.stderr
    assert fake_bin.calls() == [
        "rstudio-server suspend-all",
        "pgrep -x rsession",
        "rstudio-server stop",
    ]


def test_prestop_gives_up_waiting_after_its_timeout(fake_bin: FakeBin) -> None:
    fake_bin.add("rstudio-server")
    fake_bin.add("sleep")
    sessions_running_for(fake_bin, 1000)
    result = run([PRESTOP], fake_bin.env(RSPARK_PRESTOP_TIMEOUT_SECONDS="3"))
    assert result.returncode == 0
    assert "still running after 3s" in result.stderr
    calls = fake_bin.calls()
    assert calls.count("sleep 1") == 3
    assert calls[0] == "rstudio-server suspend-all" and calls[-1] == "rstudio-server stop"


def test_pod_prestop_hook_runs_the_same_commands_in_the_same_order(fake_bin: FakeBin) -> None:
    fake_bin.add("rstudio-server")
    result = run(PRESTOP_COMMAND, fake_bin.env())
    assert result.returncode == 0
    assert fake_bin.calls() == ["rstudio-server suspend-all", "rstudio-server stop"]


def test_healthcheck_follows_rstudio_health_endpoint(
    http_server: tuple[str, dict[str, int]],
) -> None:
    base, statuses = http_server
    env = {**os.environ, "RSPARK_HEALTHCHECK_URL": f"{base}/health-check"}
    statuses["/health-check"] = 200
    assert run([HEALTHCHECK], env).returncode == 0
    statuses["/health-check"] = 503
    assert run([HEALTHCHECK], env).returncode != 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RSPARK_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/health-check"}
    assert run([HEALTHCHECK], env).returncode != 0


def test_home_init_creates_the_user_library_once_and_keeps_what_is_there(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "RSPARK_HOME": str(home),
           "USERID": str(os.getuid()), "GROUPID": str(os.getgid())}  # fmt: skip
    first = run(["bash", HOME_INIT], env)
    assert first.returncode == 0, first.stderr
    library = home / "R" / "library"
    assert library.is_dir() and library.stat().st_uid == os.getuid()
    (library / "sparklyr").mkdir()
    again = run(["bash", HOME_INIT], env)
    assert again.returncode == 0, again.stderr
    assert (library / "sparklyr").is_dir()


def renviron() -> dict[str, str]:
    lines = (RSPARK / "Renviron.site").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_r_finds_sparkr_spark_conf_and_a_user_library_in_the_home() -> None:
    env = renviron()
    assert env["R_LIBS_USER"] == f"${{RSPARK_HOME-{HOME}}}/R/library"
    assert "/opt/spark/R/lib" in env["R_LIBS"].split(":")
    assert env["SPARK_HOME"] == "/opt/spark"
    assert env["SPARK_CONF_DIR"] == f"${{SPARK_CONF_DIR-{SPARK_CONF_DIR}}}"


def test_rstudio_configuration() -> None:
    rserver = (RSPARK / "rstudio" / "rserver.conf.append").read_text().splitlines()
    assert "www-frame-origin=same" in rserver
    assert "lock-type=advisory" in (RSPARK / "rstudio" / "file-locks").read_text().splitlines()
    database = (RSPARK / "rstudio" / "database.conf").read_text()
    assert "directory=/var/lib/rstudio-server" in database.splitlines()
