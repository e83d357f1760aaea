"""The snapshot gateway: `rclone serve restic` in front of an S3 bucket.

What a platform runs in front of the bucket (docs/security.md): each workspace has its
own credential (an htpasswd entry, `rspark_operator.gateway`) that reaches only the
repositories under `/<its user>/` (`--private-repos`) and can add to them but not delete
or overwrite anything but lock files (`--append-only`). The bucket-wide key stays with
the gateway. rclone (v1.76.0, `hack/rclone`) reloads the htpasswd file when its size or
modification time changes (lib/http/htpasswd.go, checked at each request), so a new
workspace's entry needs no restart.

Used by the snapshot tests and benchmarks (a gateway of their own each), `make dev`
(`cluster_gateway`) and the local cluster: `python -m devtools.gateway` (once the
cluster is up, in the foreground) runs
one on the bridge (`GATEWAY_PORT` on HOST_ADDRESS, where host and pods reach it) in
front of the cluster's S3 bucket, with the users the operator writes into its Secret,
copied into the htpasswd file as they change (`sync_users`), as a kubelet updates a
mounted Secret. Run the operator with RSPARK_SNAPSHOT_MODE=gateway and
RSPARK_SNAPSHOT_GATEWAY_URL=http://10.200.0.1:8480 (the URL it prints).
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devtools.network import HOST_ADDRESS
from devtools.s3 import S3Credentials, stop_process_group, wait_for_s3
from devtools.services import free_port
from rspark_operator.agent.retention import STORAGE_BASE
from rspark_operator.gateway import HTPASSWD_KEY, direct_repository, htpasswd
from rspark_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The rclone remote the gateway's environment defines (RCLONE_CONFIG_<NAME>_*).
REMOTE = "bucket"
# The local cluster's gateway, on the bridge.
GATEWAY_PORT = 8480
# Where it keeps repositories in the cluster's bucket.
CLUSTER_PREFIX = "gateway"
SYNC_SECONDS = 1.0

log = logging.getLogger("devtools.gateway")


def rclone_binary() -> str:
    return os.environ.get("RSPARK_RCLONE") or str(ROOT / ".local" / "bin" / "rclone")


def gateway_command(rclone: str, remote_path: str, address: str, htpasswd_file: Path) -> list[str]:
    """`rclone serve restic` as a platform runs it: every user confined to their own
    repositories, nothing deleted but locks."""
    return [
        rclone,
        "serve",
        "restic",
        f"{REMOTE}:{remote_path}",
        "--addr",
        address,
        "--htpasswd",
        str(htpasswd_file),
        "--private-repos",
        "--append-only",
    ]


def bucket_secret_data(storage: S3Credentials, prefix: str) -> dict[str, str]:
    """The Secret `rspark-snapshot-bucket` the platform creates for the base's snapshot
    gateway (manifests/base/kustomization.yaml names these variables): the bucket's key
    and where the gateway keeps repositories, for the gateway (rclone's remote) and for
    retention (restic, direct)."""
    remote = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    return {
        f"{remote}ENDPOINT": storage.endpoint,
        f"{remote}ACCESS_KEY_ID": storage.access_key,
        f"{remote}SECRET_ACCESS_KEY": storage.secret_key,
        "RCLONE_CONFIG_REPOS_REMOTE": f"{REMOTE}:{storage.bucket}/{prefix}",
        "AWS_ACCESS_KEY_ID": storage.access_key,
        "AWS_SECRET_ACCESS_KEY": storage.secret_key,
        STORAGE_BASE: storage.restic_repository(prefix),
    }


def gateway_environment(storage: S3Credentials) -> dict[str, str]:
    """rclone's S3 remote from the bucket's credentials (no configuration file)."""
    prefix = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    return {
        f"{prefix}TYPE": "s3",
        f"{prefix}PROVIDER": "Other",
        f"{prefix}ENDPOINT": storage.endpoint,
        f"{prefix}ACCESS_KEY_ID": storage.access_key,
        f"{prefix}SECRET_ACCESS_KEY": storage.secret_key,
        f"{prefix}FORCE_PATH_STYLE": "true",
        # No config file is read or written.
        "RCLONE_CONFIG": "/dev/null",
    }


@dataclass
class Gateway:
    """One gateway process in front of `storage`, keeping repositories under `prefix`."""

    workdir: Path
    storage: S3Credentials
    prefix: str = "gateway"
    host: str = HOST
    port: int = 0
    users: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port(self.host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def htpasswd_file(self) -> Path:
        return self.workdir / "htpasswd"

    @property
    def storage_base(self) -> str:
        """Where the gateway keeps repositories, as a direct restic S3 repository base."""
        return self.storage.restic_repository(self.prefix)

    def direct_repository(self, user: str) -> str:
        return direct_repository(self.storage_base, user)

    def add_user(self, user: str) -> str:
        """A new credential for `user` (a random token); the running gateway picks it up."""
        password = secrets.token_urlsafe(32)
        self.users[user] = password
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.htpasswd_file.write_text(htpasswd(self.users))
        return password

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.htpasswd_file.exists():
            self.htpasswd_file.write_text(htpasswd(self.users))
        log = (self.workdir / "rclone.log").open("ab")
        remote_path = f"{self.storage.bucket}/{self.prefix}"
        self.process = subprocess.Popen(
            gateway_command(
                rclone_binary(), remote_path, f"{self.host}:{self.port}", self.htpasswd_file
            ),
            env={**os.environ, **gateway_environment(self.storage)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_s3(self.url + "/")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
        self.process = None


def sync_users(
    gateway: Gateway, read: Callable[[], str | None], stop: threading.Event
) -> threading.Thread:
    """Copy the users (the htpasswd text `read` returns) into the gateway's file whenever
    they change, replacing the file whole, until `stop` is set."""

    def loop() -> None:
        written: str | None = None
        gateway.workdir.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            try:
                text = read()
            except Exception as exc:  # the API server restarting: try again
                log.warning("cannot read the gateway's users: %s", exc)
                text = None
            if text is not None and text != written:
                partial = gateway.htpasswd_file.with_suffix(".new")
                partial.write_text(text)
                partial.replace(gateway.htpasswd_file)
                written = text
            stop.wait(SYNC_SECONDS)

    thread = threading.Thread(target=loop, name="gateway-users", daemon=True)
    thread.start()
    return thread


def users_secret_reader(api: object, settings: OperatorSettings) -> Callable[[], str | None]:
    """The htpasswd text of the operator's users Secret (None while there is none)."""
    from kubernetes import client

    core = client.CoreV1Api(api)

    def read() -> str | None:
        try:
            secret = core.read_namespaced_secret(
                settings.snapshot_gateway_users_secret, settings.snapshot_gateway_namespace
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        value = (secret.data or {}).get(HTPASSWD_KEY)
        return base64.b64decode(value).decode() if value else None

    return read


@contextmanager
def cluster_gateway() -> Iterator[Gateway]:
    """The local cluster's gateway on the bridge (GATEWAY_PORT on HOST_ADDRESS, where the
    host and pods reach it) in front of its bucket, with the users the operator writes."""
    from kubernetes import config

    from devtools import localcluster

    gateway = Gateway(
        localcluster.LOCAL / "gateway",
        localcluster.s3_credentials(),
        prefix=CLUSTER_PREFIX,
        host=HOST_ADDRESS,
        port=GATEWAY_PORT,
    )
    api = config.new_client_from_config(str(localcluster.KUBECONFIG))
    stop = threading.Event()
    sync_users(gateway, users_secret_reader(api, OperatorSettings()), stop)
    gateway.start()
    log.info("snapshot gateway at %s (RSPARK_SNAPSHOT_GATEWAY_URL); storage %s",
             gateway.url, gateway.storage_base)  # fmt: skip
    try:
        yield gateway
    finally:
        stop.set()
        gateway.stop()


def main() -> int:
    """The local cluster's gateway, in the foreground, until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with cluster_gateway() as gateway:
        try:
            assert gateway.process is not None
            gateway.process.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
