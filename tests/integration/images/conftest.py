"""Helpers for running the images' scripts as plain processes, with fakes on PATH."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from devtools import keycloak
from rspark_operator.ide import LOOPBACK

IMAGES = Path(__file__).resolve().parents[3] / "images"


class FakeBin:
    """A directory of fake commands that append their name and arguments to one log."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "bin"
        self.dir.mkdir()
        self.log = root / "calls.log"
        self.log.touch()

    def add(self, name: str, body: str = "exit 0") -> None:
        script = self.dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{self.log}"\n{body}\n')
        script.chmod(0o755)

    def calls(self) -> list[str]:
        return [line.strip() for line in self.log.read_text().splitlines()]

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.dir}:{os.environ['PATH']}", **extra}


@pytest.fixture
def fake_bin(tmp_path: Path) -> FakeBin:
    return FakeBin(tmp_path)


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


class Responder(http.server.BaseHTTPRequestHandler):
    status_by_path: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        self.send_response(self.status_by_path.get(self.path, 404))
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, int]]]:
    """A local HTTP server answering each path with the status set in the returned dict."""
    statuses: dict[str, int] = {}
    handler = type("Handler", (Responder,), {"status_by_path": statuses})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", statuses
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def identity_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Keycloak with the local realm on 127.0.0.1 (the cluster's is on the bridge)."""
    process = keycloak.KeycloakProcess(
        tmp_path_factory.mktemp("keycloak") / "keycloak.log", address=LOOPBACK
    )
    process.start()
    yield process.issuer
    process.stop()
