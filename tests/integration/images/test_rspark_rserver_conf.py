"""11-rspark-rserver-conf: RStudio's rserver.conf at container start, as a plain process.

rocker writes rserver.conf when the image is built (rsession-which-r) and its
02_userconf may append to it or replace it before our script runs, at every
start of the same container.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.images.conftest import IMAGES, run

RSPARK = IMAGES / "rspark"
SCRIPT = str(RSPARK / "cont-init.d" / "11-rspark-rserver-conf")
SETTINGS = RSPARK / "rstudio" / "rserver.conf"
# What rocker's install_rstudio.sh leaves in /etc/rstudio/rserver.conf.
ROCKER_CONF = "rsession-which-r=/usr/local/bin/R\n"


def settings_lines() -> list[str]:
    lines = SETTINGS.read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "rserver.conf"
    path.write_text(ROCKER_CONF)
    return path


def apply(conf: Path, root_path: str | None = None, **listen: str) -> tuple[int, str]:
    env = {**os.environ, "RSPARK_RSERVER_CONF": str(conf), "RSPARK_RSERVER_SETTINGS": str(SETTINGS)}
    for name in ("RSPARK_WWW_ROOT_PATH", "RSPARK_WWW_ADDRESS", "RSPARK_WWW_PORT"):
        env.pop(name, None)
    if root_path is not None:
        env["RSPARK_WWW_ROOT_PATH"] = root_path
    env |= {f"RSPARK_WWW_{key.upper()}": value for key, value in listen.items()}
    result = run(["bash", SCRIPT], env)
    return result.returncode, result.stderr


def test_path_prefix_becomes_www_root_path_once_across_restarts(conf: Path) -> None:
    assert apply(conf, "/team-a/alice/") == (0, "")
    first = conf.read_text()
    assert first.splitlines() == [
        ROCKER_CONF.strip(),
        *settings_lines(),
        "www-root-path=/team-a/alice/",
    ]
    for _ in range(2):  # the same container started again: nothing is appended twice
        assert apply(conf, "/team-a/alice/")[0] == 0
    assert conf.read_text() == first


def test_settings_come_back_after_rocker_rewrites_the_file(conf: Path) -> None:
    assert apply(conf, "/alice/")[0] == 0
    # 02_userconf on the next start: the file replaced by rocker's copy, a line appended.
    conf.write_text(ROCKER_CONF + "auth-minimum-user-id=499\n")
    assert apply(conf, "/alice/")[0] == 0
    lines = conf.read_text().splitlines()
    assert lines[:2] == [ROCKER_CONF.strip(), "auth-minimum-user-id=499"]
    assert lines[2:] == [*settings_lines(), "www-root-path=/alice/"]


@pytest.mark.parametrize("root_path", [None, "", "/"])
def test_host_mode_leaves_no_www_root_path(conf: Path, root_path: str | None) -> None:
    conf.write_text(ROCKER_CONF + "www-root-path = /old/\n")  # from an earlier start
    assert apply(conf, root_path)[0] == 0
    assert conf.read_text().splitlines() == [ROCKER_CONF.strip(), *settings_lines()]


@pytest.mark.parametrize("bad", ["alice/", "/alice/\nauth-none=1", "/a b/", "/alice/;x"])
def test_a_value_that_is_not_a_url_path_is_refused(conf: Path, bad: str) -> None:
    code, stderr = apply(conf, bad)
    assert code == 1 and "is not a URL path" in stderr
    assert conf.read_text() == ROCKER_CONF


def test_nothing_rspark_sets_turns_authentication_off() -> None:
    assert settings_lines() and not [s for s in settings_lines() if s.startswith("auth-none")]
    dockerfile = (RSPARK / "Dockerfile").read_text()
    assert "/etc/rstudio/rspark-rserver.conf" in dockerfile
    assert "11-rspark-rserver-conf" in dockerfile


def test_behind_the_sign_in_proxy_rstudio_listens_on_loopback_and_its_own_port(
    conf: Path,
) -> None:
    assert apply(conf, address="127.0.0.1", port="8788") == (0, "")
    lines = conf.read_text().splitlines()
    assert lines[-2:] == ["www-address=127.0.0.1", "www-port=8788"]
    # Without the proxy again (the operator's setting changed): both go.
    assert apply(conf)[0] == 0
    assert conf.read_text().splitlines() == [ROCKER_CONF.strip(), *settings_lines()]


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ({"address": "127.0.0.1\nauth-none=1"}, "is not an IPv4 address"),
        ({"address": "localhost"}, "is not an IPv4 address"),
        ({"port": "8788\nwww-address=0.0.0.0"}, "is not a port"),
    ],
)
def test_an_address_or_port_that_is_not_one_is_refused(
    conf: Path, listen: dict[str, str], message: str
) -> None:
    code, stderr = apply(conf, **listen)
    assert code == 1 and message in stderr
    assert conf.read_text() == ROCKER_CONF
