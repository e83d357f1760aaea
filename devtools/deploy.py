"""Install the operator's CRDs on the local cluster and run the operator as in production.

`python -m devtools.deploy` is `make dev`: cluster up, CRDs installed, a
namespace with S3 credentials and the sample workspace, operator in the foreground.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, ClassVar

from devtools import localcluster
from devtools.localcluster import ROOT, kubectl
from devtools.network import HOST_ADDRESS
from devtools.s3 import S3Credentials, free_port_pair

CRDS = ROOT / "crds"
SAMPLES = ROOT / "manifests" / "samples"
DEV_NAMESPACE = "rspark-dev"
CREDENTIALS_SECRET = "rspark-s3-credentials"
PEERING = """
apiVersion: kopf.dev/v1
kind: ClusterKopfPeering
metadata:
  name: rspark-operator
"""


def install_crds() -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kubectl("apply", "-f", "-", stdin=PEERING)


def credentials_secret(namespace: str, s3: S3Credentials) -> None:
    """The S3 credentials Secret the operator's default setting names."""
    manifest = kubectl(
        "create", "secret", "generic", CREDENTIALS_SECRET, "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
        "--dry-run=client", "-o", "yaml",
    )  # fmt: skip
    kubectl("apply", "-f", "-", stdin=manifest)


def operator_environment(s3: S3Credentials, **settings: str) -> dict[str, str]:
    """The operator's environment on the local cluster: snapshots go to its S3 bucket;
    the ingress controller (Traefik, on the host) reaches pods from the bridge address."""
    return {
        **os.environ,
        "KUBECONFIG": str(localcluster.KUBECONFIG),
        "RSPARK_SNAPSHOT_REPOSITORY_BASE": f"s3:{s3.endpoint}/{s3.bucket}",
        "RSPARK_SNAPSHOT_CREDENTIALS_SECRET": CREDENTIALS_SECRET,
        "RSPARK_INGRESS_CONTROLLER_CIDRS": json.dumps([f"{HOST_ADDRESS}/32"]),
        **{f"RSPARK_{key.upper()}": value for key, value in settings.items()},
    }


def operator_command(liveness_port: int) -> list[str]:
    script = Path(sys.executable).parent / "rspark-operator"
    return [str(script), "--liveness", f"http://127.0.0.1:{liveness_port}/healthz"]


class OperatorProcess:
    """`rspark-operator` as a child process, as it runs in production."""

    # Every one that runs now, so a test that stops the cluster can stop them first.
    running: ClassVar[set[OperatorProcess]] = set()

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file: IO[bytes] | None = None

    def start(self) -> None:
        port = free_port_pair()
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            operator_command(port), env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        OperatorProcess.running.add(self)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"operator did not start:\n{self.log()}") from None
                time.sleep(0.3)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=60)
        self.process = None
        OperatorProcess.running.discard(self)
        if self.log_file:
            self.log_file.close()

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = next(
            line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")
        )
        return int(kilobytes) / 1024

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def dev() -> None:
    localcluster.up()
    install_crds()
    s3 = localcluster.s3_credentials()
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=f"{{apiVersion: v1, kind: Namespace, metadata: {{name: {DEV_NAMESPACE}}}}}",
    )
    credentials_secret(DEV_NAMESPACE, s3)
    kubectl("apply", "-n", DEV_NAMESPACE, "-f", str(SAMPLES))
    print(
        f"[dev] CRDs installed; sample workspace applied in namespace {DEV_NAMESPACE}.\n"
        f"[dev] Watch it:  KUBECONFIG={localcluster.KUBECONFIG} "
        f".local/bin/kubectl -n {DEV_NAMESPACE} get rsw,pods -w\n"
        "[dev] Running the operator in the foreground (Ctrl-C stops it; make cluster-down "
        "stops the cluster).",
        flush=True,
    )
    script = Path(sys.executable).parent / "rspark-operator"
    os.execve(script, [str(script)], operator_environment(s3))


if __name__ == "__main__":
    dev()
