"""Spark on this machine as plain processes: the tests' real Spark, no cluster needed.

- `spark_venv(SPARK_S3A)`: pyspark 3.5.3, the Spark distribution the workspace images
  carry (Hadoop 3.3.4), with the Hadoop AWS module the images add (`HADOOP_AWS_JARS`).
- `spark_venv(SPARK_CONNECT)`: pyspark 4.0 with its Spark Connect server and client:
  4.0 is the first Spark whose Connect server checks a pre-shared token (SPARK-51156).
- `ConnectServer`: Spark's own Connect server (SparkConnectServer, what
  sbin/start-connect-server.sh submits) on 127.0.0.1, with a token.

Each environment is installed once from its hashed requirements, cached under
~/.cache/rspark-operator; the jars by the images' own images/hadoop-aws/fetch-jars.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rspark_operator.ide import CONNECT_TOKEN_ENV

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("RSPARK_CACHE", Path.home() / ".cache" / "rspark-operator"))
UV = CACHE / "uv-0.13.8" / "bin" / "uv"
REQUIREMENTS = ROOT / "devtools" / "spark"
SPARK_S3A = REQUIREMENTS / "s3a-requirements.txt"
SPARK_CONNECT = REQUIREMENTS / "connect-requirements.txt"
HADOOP_AWS = ROOT / "images" / "hadoop-aws"
HOST = "127.0.0.1"
CONNECT_START_SECONDS = 180.0
STOP_GRACE_SECONDS = 10.0


def hadoop_aws_jars() -> list[Path]:
    """The Hadoop AWS jars the images add to Spark (images/hadoop-aws), in the cache."""
    fetch, jars = HADOOP_AWS / "fetch-jars", HADOOP_AWS / "jars.txt"
    listing = subprocess.run(
        [sys.executable, str(fetch), str(jars), str(CACHE / "maven")],
        check=True,
        capture_output=True,
        text=True,
    )
    return [Path(line) for line in listing.stdout.splitlines()]


def hashed_venv(requirements: Path, name: str) -> Path:
    """A virtual environment with these hashed requirements, cached per their content."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    venv = CACHE / f"{name}-{digest}"
    if not (venv / ".complete").exists():
        env = {**os.environ, "UV_CACHE_DIR": str(CACHE / "uv")}
        python = str(venv / "bin" / "python")
        subprocess.run(
            [str(UV), "venv", "--quiet", "--allow-existing", "--python", "python3", str(venv)],
            check=True,
            env=env,
        )
        subprocess.run(
            [
                *(str(UV), "pip", "install", "--quiet", "--require-hashes"),
                *("--python", python, "-r", str(requirements)),
            ],
            check=True,
            env=env,
        )
        (venv / ".complete").touch()
    return venv


def spark_venv(requirements: Path) -> Path:
    """SPARK_S3A's or SPARK_CONNECT's environment."""
    return hashed_venv(requirements, f"spark-{requirements.name.split('-')[0]}")


def spark_home(venv: Path) -> Path:
    """pyspark's package directory: a Spark distribution (bin/, jars/)."""
    found = sorted(venv.glob("lib/python3*/site-packages/pyspark"))
    if not found:
        raise RuntimeError(f"no pyspark in {venv}")
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ConnectServer:
    """Spark's Connect server (local[2]) on 127.0.0.1, with a pre-shared token or none."""

    def __init__(self, venv: Path, workdir: Path, token: str | None) -> None:
        self.venv, self.workdir, self.token = venv, workdir, token
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "connect-server.log"

    @property
    def endpoint(self) -> str:
        # `localhost`: the one host to which PySpark sends a token without TLS.
        return f"sc://localhost:{self.port}"

    def start(self) -> None:
        home = spark_home(self.venv)
        env = {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": HOST,
            "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}",
        }
        env.pop(CONNECT_TOKEN_ENV, None)
        if self.token is not None:
            # Spark 4.0's name for the token, read by the server (and by its clients).
            env[CONNECT_TOKEN_ENV] = self.token
        command = [
            str(home / "bin" / "spark-submit"),
            "--master",
            "local[2]",
            "--class",
            "org.apache.spark.sql.connect.service.SparkConnectServer",
            "--conf",
            f"spark.connect.grpc.binding.address={HOST}",
            "--conf",
            f"spark.connect.grpc.binding.port={self.port}",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            f"spark.local.dir={self.workdir}",
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + CONNECT_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Spark Connect server exited:\n{self.log.read_text()}")
            with socket.socket() as sock:
                if sock.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Spark Connect server did not listen:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
