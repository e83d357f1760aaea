"""The workspace image's scripts, run as plain processes with fake RStudio commands."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

from rspark_operator.builders.pod import HOME, IDE_CONTAINER, build_pod
from rspark_operator.builders.spark import SPARK_CONF_DIR
from rspark_operator.ide import IDES, PRESTOP_COMMAND
from tests.integration.images.conftest import IMAGES, FakeBin, run
from tests.unit.workspaces import settings, workspace

RSPARK = IMAGES / "rspark"
PRESTOP = str(RSPARK / "rspark-prestop")
HEALTHCHECK = str(RSPARK / "rspark-healthcheck")
HOME_INIT = str(RSPARK / "cont-init.d" / "10-rspark-home")
# Where the Dockerfile installs the shutdown script; the pod's preStop hook execs it.
INSTALLED_PRESTOP = "/usr/local/bin/rspark-prestop"


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


def test_prestop_wait_is_bounded_in_wall_time(fake_bin: FakeBin) -> None:
    """Real sleep: sessions that never finish hold the shutdown for the timeout, not longer."""
    fake_bin.add("rstudio-server")
    sessions_running_for(fake_bin, 1000)
    started = time.monotonic()
    result = run([PRESTOP], fake_bin.env(RSPARK_PRESTOP_TIMEOUT_SECONDS="2"))
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    assert 2 <= elapsed < 10, elapsed
    assert fake_bin.calls()[-1] == "rstudio-server stop"


def test_the_image_installs_the_prestop_script_where_the_pod_execs_it() -> None:
    dockerfile = (RSPARK / "Dockerfile").read_text()
    (copy,) = [line for line in dockerfile.splitlines() if " images/rspark/rspark-prestop " in line]
    assert copy.startswith("COPY --chmod=0755 ") and copy.endswith(" /usr/local/bin/")
    assert "/usr/local/bin/" + Path(PRESTOP).name == INSTALLED_PRESTOP


def test_pod_prestop_hook_suspends_first_and_stops_last(fake_bin: FakeBin) -> None:
    """The pod's hook (the image's script, or the same two commands inline)."""
    fake_bin.add("rstudio-server")
    fake_bin.add("sleep")
    sessions_running_for(fake_bin, 1)
    command = [PRESTOP if part == INSTALLED_PRESTOP else part for part in PRESTOP_COMMAND]
    result = run(command, fake_bin.env())
    assert result.returncode == 0, result.stderr
    calls = fake_bin.calls()
    assert calls[0] == "rstudio-server suspend-all" and calls[-1] == "rstudio-server stop"
    assert calls.count("rstudio-server stop") == 1


def readiness_url() -> str:
    """The URL the workspace pod's readiness probe checks, as seen from inside the pod."""
    pod = build_pod(workspace(), settings())
    (rstudio,) = [c for c in pod["spec"]["containers"] if c["name"] == IDE_CONTAINER]
    probe = rstudio["readinessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in rstudio["ports"]}
    return f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}"


def test_healthcheck_probes_what_the_readiness_probe_probes() -> None:
    script = Path(HEALTHCHECK).read_text()
    (default,) = re.findall(r"RSPARK_HEALTHCHECK_URL:-([^}]+)\}", script)
    assert default == readiness_url() == f"http://127.0.0.1:{IDES['rstudio'].port}/"


def test_healthcheck_passes_on_2xx_and_the_sign_in_redirect_only(
    http_server: tuple[str, dict[str, int]],
) -> None:
    base, statuses = http_server
    env = {**os.environ, "RSPARK_HEALTHCHECK_URL": f"{base}/"}
    for status, healthy in ((200, True), (302, True), (404, False), (503, False)):
        statuses["/"] = status
        assert (run([HEALTHCHECK], env).returncode == 0) is healthy, status


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RSPARK_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/"}
    assert run([HEALTHCHECK], env).returncode != 0


def init_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "RSPARK_HOME": str(tmp_path / "home"),
            "XDG_RUNTIME_DIR": str(tmp_path / "run" / "rspark"),
            "USERID": str(os.getuid()), "GROUPID": str(os.getgid()), **extra}  # fmt: skip


def test_home_init_creates_the_user_library_once_and_keeps_what_is_there(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = init_env(tmp_path)
    first = run(["bash", HOME_INIT], env)
    assert first.returncode == 0, first.stderr
    library = home / "R" / "library"
    assert library.is_dir() and library.stat().st_uid == os.getuid()
    (library / "sparklyr").mkdir()
    again = run(["bash", HOME_INIT], env)
    assert again.returncode == 0, again.stderr
    assert (library / "sparklyr").is_dir()


def test_home_init_keeps_the_runtime_directory_private_and_out_of_the_home(
    tmp_path: Path,
) -> None:
    (tmp_path / "home").mkdir()
    runtime = tmp_path / "run" / "rspark"
    runtime.mkdir(parents=True, mode=0o777)
    runtime.chmod(0o777)
    result = run(["bash", HOME_INIT], init_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    assert runtime.stat().st_uid == os.getuid()
    dockerfile = (RSPARK / "Dockerfile").read_text()
    (declared,) = re.findall(r"XDG_RUNTIME_DIR=(\S+)", dockerfile)
    assert not declared.startswith(HOME)


def renviron() -> dict[str, str]:
    lines = (RSPARK / "Renviron.site").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_r_finds_sparkr_spark_conf_and_a_user_library_in_the_home() -> None:
    env = renviron()
    assert env["R_LIBS_USER"] == f"${{RSPARK_HOME-{HOME}}}/R/library"
    assert env["R_LIBS"].split(":")[:3] == [
        "${R_LIBS_USER}", "/usr/local/lib/R/site-library", "/opt/spark/R/lib",
    ]  # fmt: skip
    assert env["SPARK_HOME"] == "/opt/spark"
    assert env["SPARK_CONF_DIR"] == f"${{SPARK_CONF_DIR-{SPARK_CONF_DIR}}}"


# rocker's install_R_source.sh writes this line into Renviron.site before ours.
ROCKER_R_LIBS = "R_LIBS=${R_LIBS-'/usr/local/lib/R/site-library:/usr/local/lib/R/library'}"
IMAGE_LIBRARIES = ("/usr/local/lib/R/site-library", "/opt/spark/R/lib", "/usr/local/lib/R/library")


def rscript(code: str, home: Path, site_environ: Path) -> str:
    """Real R with the image's Renviron.site (R_ENVIRON); nothing from this machine's R_*."""
    rscript = shutil.which("Rscript")
    assert rscript, "Rscript is needed: apt-get install r-base-core (.ci/run does)"
    env = {key: value for key, value in os.environ.items() if not key.startswith("R_")}
    env |= {"HOME": str(home), "RSPARK_HOME": str(home), "R_ENVIRON": str(site_environ),
            "R_ENVIRON_USER": str(home / ".no-Renviron"),
            "R_PROFILE_USER": str(home / ".no-Rprofile")}  # fmt: skip
    result = subprocess.run(
        [rscript, "-e", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_install_packages_writes_into_the_home_not_the_image(tmp_path: Path) -> None:
    """R builds .libPaths() from R_LIBS, then R_LIBS_USER, then the site libraries;
    install.packages() writes into the first. rocker's site-library is writable by
    the user (group staff): the home's library must come before it."""
    text = ROCKER_R_LIBS + "\n" + (RSPARK / "Renviron.site").read_text()
    libraries = []
    for path in IMAGE_LIBRARIES:  # the image's libraries, moved under tmp_path
        moved = tmp_path / "image" / path.strip("/")
        moved.mkdir(parents=True)
        text = text.replace(path, str(moved))
        libraries.append(str(moved))
    site_environ = tmp_path / "Renviron.site"
    site_environ.write_text(text)
    home = tmp_path / "home"
    user_library = home / "R" / "library"
    user_library.mkdir(parents=True)  # 10-rspark-home creates it
    package = tmp_path / "src" / "rsparkprobe"
    package.mkdir(parents=True)
    (package / "NAMESPACE").write_text("")
    (package / "DESCRIPTION").write_text(
        "Package: rsparkprobe\nVersion: 0.1\nTitle: Probe\nDescription: Probe.\n"
        "License: MIT\nAuthor: rspark\nMaintainer: rspark <rspark@example.com>\n"
    )
    paths = rscript("writeLines(.libPaths())", home, site_environ).split()
    assert paths[:4] == [str(user_library), *libraries]
    rscript(
        f'install.packages("{package}", repos = NULL, type = "source", quiet = TRUE)',
        home, site_environ,
    )  # fmt: skip
    assert (user_library / "rsparkprobe" / "DESCRIPTION").is_file()
    assert not (Path(libraries[0]) / "rsparkprobe").exists()


def test_rstudio_configuration() -> None:
    rserver = (RSPARK / "rstudio" / "rserver.conf").read_text().splitlines()
    assert "www-frame-origin=same" in rserver
    assert "lock-type=advisory" in (RSPARK / "rstudio" / "file-locks").read_text().splitlines()
    database = (RSPARK / "rstudio" / "database.conf").read_text()
    assert "directory=/var/lib/rstudio-server" in database.splitlines()
