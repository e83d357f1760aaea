"""Prometheus metrics, readiness and a JSON view of the agent's status, on one port.

GET /metrics  Prometheus text format.
GET /readyz   200 once the startup restore is complete and verified (startupProbe), else 503.
GET /status   the agent's part of the workspace status as JSON (also standalone).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.last_success = Gauge(
            "rspark_agent_last_snapshot_success_timestamp_seconds",
            "Unix time of the last successful (or skipped-as-unchanged) snapshot.",
            registry=self.registry,
        )
        self.snapshot_duration = Histogram(
            "rspark_agent_snapshot_duration_seconds",
            "Duration of snapshot attempts that succeeded.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.restore_duration = Histogram(
            "rspark_agent_restore_duration_seconds",
            "Duration of restores, verification included.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.bytes_added = Counter(
            "rspark_agent_snapshot_bytes_added",
            "Bytes added to the repository by snapshots (after compression).",
            registry=self.registry,
        )
        self.snapshots = Counter(
            "rspark_agent_snapshots",
            "Snapshot attempts by result (created, unchanged, failed).",
            ["result"],
            registry=self.registry,
        )
        self.failures = Counter(
            "rspark_agent_failures",
            "Failed operations by condition reason.",
            ["reason"],
            registry=self.registry,
        )
        self.last_maintenance = Gauge(
            "rspark_agent_last_maintenance_timestamp_seconds",
            "Unix time maintenance (unlock, check, forget + prune) last succeeded on this volume.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "rspark_agent_ready",
            "1 once the home is restored and verified.",
            registry=self.registry,
        )


class Server:
    """The HTTP endpoint, in a daemon thread."""

    def __init__(
        self,
        metrics: Metrics,
        port: int,
        is_ready: Callable[[], bool],
        status: Callable[[], dict[str, Any]],
        host: str = "0.0.0.0",
    ) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/readyz":
                    ready = is_ready()
                    body = b"ok\n" if ready else b"restoring\n"
                    self._send(200 if ready else 503, body, "text/plain")
                elif self.path == "/status":
                    self._send(200, json.dumps(status()).encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds would drown the log

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
