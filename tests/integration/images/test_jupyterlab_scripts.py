"""The JupyterLab image's scripts as plain processes, with the image's pinned JupyterLab.

The pinned requirements (images/jupyterlab/requirements.txt) are installed once into
a cached virtual environment; the real server is started through the image's start
script with a URL prefix and a password, on 127.0.0.1; or with its login off, behind
the real sign-in proxy (oauth2-proxy with the operator's arguments) and Keycloak on
127.0.0.1, in Chromium.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.by import By

from devtools import keycloak
from devtools.spark import hashed_venv
from rspark_operator import contract, idle
from rspark_operator.agent.activity import read_cpu
from tests.integration.images.conftest import IMAGES, run
from tests.support.browser import ARTIFACTS, KERNEL_IDLE, chromium
from tests.support.kube import wait_until
from tests.support.signin import provider_as_secure, sign_in, signin_proxy, walk_through
from tests.support.spark import spark_ui_session
from tests.unit.workspaces import settings, workspace

JUPYTERLAB = IMAGES / "jupyterlab"
START = str(JUPYTERLAB / "rspark-jupyterlab")
PRESTOP = str(JUPYTERLAB / "rspark-prestop")
HEALTHCHECK = str(JUPYTERLAB / "rspark-healthcheck")
REQUIREMENTS = JUPYTERLAB / "requirements.txt"
ROOT_PATH = "/team-a/alice/"
PASSWORD = "correct horse battery"
START_TIMEOUT_SECONDS = 120
# The sign-in proxy on 127.0.0.1 (the pod's is on the IDE's port).
PROXY_PORT = 4180
# Longer than JupyterLab's polling periods of kernels, sessions, terminals and files.
QUIET_TAB_SECONDS = 45
# Any notebook card of the launcher (the test environment has Python's kernel only).
NOTEBOOK_CARD = (By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]')


@pytest.fixture(scope="session")
def jupyter_venv() -> Path:
    """JupyterLab as the image pins it, in a virtual environment cached per requirements."""
    return hashed_venv(REQUIREMENTS, "jupyterlab-test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def script_env(tmp_path: Path, venv: Path, **extra: str) -> dict[str, str]:
    """The image's environment, moved under tmp_path; nothing from this machine's Jupyter."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUPYTER")}
    return env | {
        # The image's /usr/local/bin: its scripts, rspark-cpu-stat included.
        "PATH": f"{venv / 'bin'}:{IMAGES / 'rspark'}:{os.environ['PATH']}",
        "HOME": str(home),
        "RSPARK_HOME": str(home),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "run" / "jupyter"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "RSPARK_JUPYTER_IP": "127.0.0.1",
        **extra,
    }


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    env: dict[str, str]
    runtime: Path


@contextmanager
def started(tmp_path: Path, jupyter_venv: Path, **extra: str) -> Iterator[Server]:
    """The start script on 127.0.0.1 under ROOT_PATH with `extra` variables, until healthy."""
    port = free_port()
    env = script_env(
        tmp_path,
        jupyter_venv,
        RSPARK_WWW_ROOT_PATH=ROOT_PATH.rstrip("/"),
        RSPARK_JUPYTER_PORT=str(port),
        **extra,
    )
    log = (tmp_path / "server.log").open("w")
    # As root here (the image runs it as rstudio): jupyter refuses root unless told.
    process = subprocess.Popen(
        ["bash", START, "--allow-root"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = Server(
        process, f"http://127.0.0.1:{port}{ROOT_PATH}", env, Path(env["JUPYTER_RUNTIME_DIR"])
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while run([HEALTHCHECK], env).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'server.log').read_text()}")
        time.sleep(0.5)
    try:
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture
def server(tmp_path: Path, jupyter_venv: Path) -> Iterator[Server]:
    with started(tmp_path, jupyter_venv, PASSWORD=PASSWORD) as running:
        yield running


def login(server: Server, password: str) -> requests.Session:
    session = requests.Session()
    session.get(server.url + "login", timeout=10).raise_for_status()
    session.post(
        server.url + "login",
        allow_redirects=False,
        timeout=10,
        data={"_xsrf": session.cookies["_xsrf"], "password": password},
    )
    return session


def test_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    env = script_env(tmp_path, tmp_path / "no-venv")
    env.pop("PASSWORD", None)
    result = run(["bash", START], env)
    assert result.returncode == 1
    assert "PASSWORD is not set" in result.stderr


def test_refuses_a_prefix_that_is_not_a_url_path(tmp_path: Path) -> None:
    env = script_env(
        tmp_path,
        tmp_path / "no-venv",
        PASSWORD=PASSWORD,
        RSPARK_WWW_ROOT_PATH="/alice/\nServerApp.ip=0.0.0.0",
    )
    result = run(["bash", START], env)
    assert result.returncode == 1
    assert "is not a URL path" in result.stderr


def test_serves_under_the_prefix_and_requires_a_login(server: Server) -> None:
    # The readiness probe's path answers without a login; nothing is served outside the prefix.
    assert requests.get(server.url + "api", timeout=10).status_code == 200
    root = server.url.removesuffix(ROOT_PATH) + "/api"
    assert requests.get(root, timeout=10).status_code == 404
    lab = requests.get(server.url + "lab", allow_redirects=False, timeout=10)
    assert lab.status_code == 302
    assert lab.headers["Location"].startswith(ROOT_PATH + "login")
    assert requests.get(server.url + "api/kernels", timeout=10).status_code == 403

    assert login(server, "wrong").get(server.url + "api/kernels", timeout=10).status_code == 403
    session = login(server, PASSWORD)
    kernels = session.get(server.url + "api/kernels", timeout=10)
    assert kernels.status_code == 200 and kernels.json() == []


def test_it_publishes_its_cpu_use_for_the_agent(server: Server) -> None:
    """The copy of its cgroup's CPU usage the agent reads (agent/activity.py), renewed
    while the server runs (here, the cgroup of this machine's test)."""

    def newer() -> idle.CpuSample | None:
        now = read_cpu(server.runtime)
        return now if now is not None and now.at > first.at else None

    first = wait_until("the first copy", lambda: read_cpu(server.runtime), 30, 0.5)
    renewed = wait_until("a newer copy", newer, 30, 1)
    assert renewed.usage_usec >= first.usage_usec > 0


def test_the_spark_ui_is_under_the_prefix_behind_the_login(
    tmp_path: Path, jupyter_venv: Path
) -> None:
    """jupyter-server-proxy: <prefix>spark/ is the UI of the session's first Spark
    application (the operator's UI port), only after the login; its links stay under
    the prefix, and the UI itself (port-forwarded) keeps plain ones."""
    ws = workspace(name="alice", namespace="team-a", ide="jupyterlab")
    (tmp_path / "spark").mkdir()
    with (
        spark_ui_session(ws, tmp_path / "spark") as ui,
        started(tmp_path, jupyter_venv, PASSWORD=PASSWORD) as server,
    ):
        spark = f"{server.url}spark/"
        for path in ("", "jobs/", "api/v1/applications"):
            refused = requests.get(spark + path, allow_redirects=False, timeout=10)
            assert refused.status_code == 302, path
            assert refused.headers["Location"].startswith(f"{ROOT_PATH}login"), path
        session = login(server, PASSWORD)
        jobs = session.get(spark, timeout=30)
        assert jobs.status_code == 200 and "Spark Jobs" in jobs.text
        assert f'href="{ROOT_PATH}spark/stages/"' in jobs.text
        stages = session.get(f"{spark}stages/", timeout=30)
        assert stages.status_code == 200 and "Stages for All Jobs" in stages.text
        direct = requests.get(f"{ui}/jobs/", timeout=30)
        assert 'href="/stages/"' in direct.text and ROOT_PATH not in direct.text


def test_the_password_is_hashed_and_not_left_to_the_kernels(server: Server) -> None:
    config = (server.runtime / "rspark-server-config.json").read_text()
    assert PASSWORD not in config and "argon2:" in config
    environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    assert not [entry for entry in environ if entry.startswith(b"PASSWORD=")]
    assert (server.runtime / "rspark-server-config.json").stat().st_mode & 0o077 == 0


def test_prestop_shuts_the_kernels_down_then_stops_the_server(server: Server) -> None:
    session = login(server, PASSWORD)
    headers = {"X-XSRFToken": session.cookies["_xsrf"] or ""}
    started = session.post(
        server.url + "api/kernels", json={"name": "python3"}, headers=headers, timeout=60
    )
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    assert (server.runtime / f"kernel-{kernel}.json").exists()

    result = run([PRESTOP], server.env)
    assert result.returncode == 0, result.stderr
    # The server exits by itself, cleanly; the kernel's connection file is gone with it.
    assert server.process.wait(timeout=60) == 0
    assert not list(server.runtime.glob("kernel-*.json"))
    assert run([HEALTHCHECK], server.env).returncode != 0


def test_behind_the_sign_in_proxy_it_has_no_login_of_its_own(
    tmp_path: Path, jupyter_venv: Path
) -> None:
    """RSPARK_JUPYTER_LOGIN=off (the operator's sign-in proxy in front): no password,
    no token, the API open to whoever reaches 127.0.0.1; prestop still stops it."""
    with started(tmp_path, jupyter_venv, RSPARK_JUPYTER_LOGIN="off") as server:
        kernels = requests.get(server.url + "api/kernels", timeout=10)
        assert kernels.status_code == 200 and kernels.json() == []
        session = requests.Session()
        lab = session.get(server.url + "lab", allow_redirects=False, timeout=10)
        assert lab.status_code == 200
        # Changes still need the XSRF cookie (no other site makes the browser send them).
        assert session.post(server.url + "api/kernels", timeout=10).status_code == 403
        headers = {"X-XSRFToken": session.cookies["_xsrf"] or ""}
        kernel = session.post(
            server.url + "api/kernels", json={"name": "python3"}, headers=headers, timeout=60
        )
        assert kernel.status_code == 201, kernel.text
        result = run([PRESTOP], server.env)
        assert result.returncode == 0, result.stderr
        assert server.process.wait(timeout=60) == 0
        assert not list(server.runtime.glob("kernel-*.json"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"RSPARK_JUPYTER_LOGIN": "off", "RSPARK_JUPYTER_IP": "0.0.0.0"},
            "needs RSPARK_JUPYTER_IP",
        ),
        ({"RSPARK_JUPYTER_LOGIN": "no", "PASSWORD": PASSWORD}, "is 'on' or 'off'"),
    ],
)
def test_the_login_is_off_only_on_loopback(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    env = script_env(tmp_path, tmp_path / "no-venv", **extra)
    result = run(["bash", START], env)
    assert result.returncode == 1
    assert message in result.stderr


@contextmanager
def behind_the_sign_in_proxy(
    tmp_path: Path, jupyter_venv: Path, identity_provider: str
) -> Iterator[tuple[str, Path, Path]]:
    """JupyterLab's start script with its login off, behind the real oauth2-proxy with
    the arguments the operator builds for alice's workspace in path mode (JupyterLab
    under /team-a/alice/), the proxy's files in tmp_path; yields the URL, the proxy's
    list of people and its log (the file the agent reads)."""
    ws = workspace(name="alice", namespace="team-a", ide="jupyterlab", user=keycloak.ALICE.email)
    oidc = settings(
        ingress_mode="path",
        signin="oidc",
        oidc_issuer_url=identity_provider,
        oidc_client_id=keycloak.CLIENT_ID,
    )
    workdir = tmp_path / "signin"
    workdir.mkdir()
    with (
        started(tmp_path, jupyter_venv, RSPARK_JUPYTER_LOGIN="off") as lab,
        signin_proxy(ws, oidc, workdir, PROXY_PORT, int(lab.env["RSPARK_JUPYTER_PORT"])) as allowed,
    ):
        url = f"http://{oidc.ingress_domain}:{PROXY_PORT}{ROOT_PATH}"
        yield url, allowed, workdir / "signin-log" / contract.SIGNIN_LOG_FILE


def test_behind_the_real_sign_in_proxy_only_the_owner_and_spec_access_pass(
    tmp_path: Path, jupyter_venv: Path, identity_provider: str
) -> None:
    """Adding bob rewrites the proxy's list as the kubelet does (a new file renamed over
    the old one)."""
    with behind_the_sign_in_proxy(tmp_path, jupyter_venv, identity_provider) as (url, allowed, _):

        def add_bob() -> None:
            listed = allowed.with_suffix(".new")
            listed.write_text(allowed.read_text() + f"{keycloak.BOB.email}\n")
            listed.rename(allowed)

        walk_through(
            ARTIFACTS / "jupyterlab-behind-the-sign-in-proxy", url, identity_provider, add_bob
        )


def test_through_the_real_sign_in_proxy_only_the_persons_requests_are_activity(
    tmp_path: Path, jupyter_venv: Path, identity_provider: str
) -> None:
    """alice signs in and opens a notebook: her requests are activity. Then her tab
    stays open, untouched, for QUIET_TAB_SECONDS: JupyterLab's own polling goes through
    the proxy and none of it is. bob, signed in but not let in, is no activity either.
    The proxy's log, as the agent reads it, is kept in the artifacts."""
    artifacts = ARTIFACTS / "jupyterlab-requests-through-the-sign-in-proxy"
    with behind_the_sign_in_proxy(tmp_path, jupyter_venv, identity_provider) as (url, _, log):
        secure = provider_as_secure(identity_provider)
        with chromium(artifacts / "alice", secure) as alice:
            alice.driver.get(url)
            sign_in(alice, keycloak.ALICE)
            alice.visible(NOTEBOOK_CARD, timeout=120).click()
            alice.visible(KERNEL_IDLE, timeout=120)
            alice.screenshot("alice-notebook-open")
            time.sleep(1)  # the log's times are to the second
            untouched = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
            time.sleep(QUIET_TAB_SECONDS)
            alice.screenshot("alice-tab-left-open")
        time.sleep(1)
        left = datetime.now(UTC).replace(microsecond=0)
        with chromium(artifacts / "bob", secure) as bob:
            bob.driver.get(url)
            sign_in(bob, keycloak.BOB)
            bob.wait(60).until(lambda driver: "403" in driver.title)
    text = log.read_text()
    (artifacts / "proxy.log").write_text(text)
    requests = [r for r in map(idle.parse_request_line, text.splitlines()) if r is not None]
    alices = [r for r in requests if r.person == keycloak.ALICE.email]
    assert any(idle.person_request(r) for r in alices if r.at < untouched), text
    polling = [r for r in alices if r.at >= untouched]
    assert polling, text  # the tab kept polling through the proxy
    assert not [r for r in polling if idle.person_request(r)], text
    # bob's requests: the proxy knows him only in its sign-in line (its 403 has no session).
    assert f"{keycloak.BOB.email} [" in text and "[AuthFailure]" in text, text
    bobs = [r for r in requests if r.at > left]
    assert bobs, text
    assert not [r for r in bobs if idle.person_request(r)], text
    assert idle.request_activity(text.splitlines()).last == max(
        r.at for r in alices if idle.person_request(r)
    )
