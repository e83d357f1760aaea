"""The agent's Kubernetes calls against an API server that accepts and never answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from kubernetes import client
from urllib3.exceptions import MaxRetryError, ReadTimeoutError

from rspark_operator.agent import reasons
from rspark_operator.agent.kube import KubeSecretStore, KubeStatusSink
from rspark_operator.agent.report import Status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TIMEOUT = (1.0, 1.0)


@pytest.fixture
def hung_api() -> Iterator[client.ApiClient]:
    """A TCP server that takes connections and requests, and never replies."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.getsockname()[1]}"
    yield client.ApiClient(configuration)
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_status_and_secret_calls_give_up_instead_of_hanging(hung_api: client.ApiClient) -> None:
    sink = KubeStatusSink(hung_api, "team-a", "alice", timeout=TIMEOUT)
    with pytest.raises((ReadTimeoutError, MaxRetryError), match="timed out"):
        sink.publish({"conditions": []})
    store = KubeSecretStore(hung_api, "team-a", "alice-home-secrets", "k", timeout=TIMEOUT)
    with pytest.raises((ReadTimeoutError, MaxRetryError), match="timed out"):
        store.load()
    with pytest.raises((ReadTimeoutError, MaxRetryError), match="timed out"):
        store.save(b"{}")

    # The agent's status keeps going: the failed write is retried at the next change.
    status = Status([sink])
    status.condition("SnapshotHealthy", "True", reasons.SNAPSHOT_SUCCEEDED, "ok")
    assert status.get("SnapshotHealthy") is not None
