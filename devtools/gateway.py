"""The snapshot gateway: `rclone serve restic` in front of an S3 bucket.

What a platform runs in front of the bucket (docs/security.md): each workspace has its
own credential (an htpasswd entry, `rspark_operator.gateway`) that reaches only the
repositories under `/<its user>/` (`--private-repos`) and can add to them but not delete
or overwrite anything but lock files (`--append-only`). The bucket-wide key stays with
the gateway. rclone (v1.76.0, `hack/rclone`) reloads the htpasswd file when its size or
modification time changes (lib/http/htpasswd.go, checked at each request), so a new
workspace's entry needs no restart.

Used by the snapshot tests and benchmarks (a gateway of their own each) and the local
cluster (one on the bridge, where pods reach it).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devtools.s3 import S3Credentials, stop_process_group, wait_for_s3
from rspark_operator.gateway import direct_repository, htpasswd

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The rclone remote the gateway's environment defines (RCLONE_CONFIG_<NAME>_*).
REMOTE = "bucket"


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


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
