"""The agent image's health check against a local HTTP server."""

from __future__ import annotations

import os
import socket

from tests.integration.images.conftest import IMAGES, run

HEALTHCHECK = str(IMAGES / "agent" / "rspark-agent-healthcheck")


def test_healthy_only_when_readyz_answers_200(http_server: tuple[str, dict[str, int]]) -> None:
    base, statuses = http_server
    port = base.rsplit(":", 1)[1]
    env = {**os.environ, "RSPARK_METRICS_PORT": port}
    statuses["/readyz"] = 503  # restoring
    result = run([HEALTHCHECK], env)
    assert result.returncode == 1
    statuses["/readyz"] = 200
    assert run([HEALTHCHECK], env).returncode == 0


def test_unhealthy_when_the_agent_does_not_listen() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run([HEALTHCHECK], {**os.environ, "RSPARK_METRICS_PORT": str(port)})
    assert result.returncode == 1
    assert "readyz" in result.stderr
