"""`make images-local`: the images build without Docker, reach a registry, and run.

The builds are cached by a hash of their inputs (cold, the first run takes tens of
minutes; warm, seconds). The registry is Debian's docker-registry on 127.0.0.1 with
a storage of its own; each image's main command runs in a container of the image
(`buildah run`), and the pause image's PID 1 in a chroot of its root filesystem.
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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devtools import images, keycloak
from devtools.services import free_port
from rspark_operator.builders.signin import (
    CLIENT_SECRET_KEY,
    COOKIE_SECRET_KEY,
    PING_PATH,
    SECRET_DIR,
)
from rspark_operator.ide import LOOPBACK
from tests.support.kube import wait_until

REGISTRY_START_SECONDS = 30
EXECUTOR_SECONDS = 180


@contextlib.contextmanager
def serving(root: Path) -> Iterator[str]:
    """Debian's docker-registry on a free port of 127.0.0.1, its storage under `root`."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is installed by hack/system-packages.sh (make tools)"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    config = root / "config.yml"
    storage = {"filesystem": {"rootdirectory": str(root / "data")}}
    settings = {"version": 0.1, "log": {"level": "warn"}, "http": {"addr": address}}
    config.write_text(json.dumps(settings | {"storage": storage}))
    process = subprocess.Popen([binary, "serve", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + REGISTRY_START_SECONDS
    while True:
        try:
            requests.get(f"http://{address}/v2/", timeout=2).raise_for_status()
            break
        except requests.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, "registry down"
            time.sleep(0.2)
    try:
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture(scope="session")
def refs(registry: str) -> dict[str, str]:
    return images.build_and_push(list(images.IMAGES), registry)


def test_every_image_is_in_the_registry_by_the_hash_of_its_inputs(
    registry: str, refs: dict[str, str]
) -> None:
    assert set(refs) == {
        "agent", "operator", "spark", "pause", "jupyterlab", "oauth2-proxy", "rclone",
        "spark-connect",
    }  # fmt: skip
    for name, ref in refs.items():
        assert ref == f"{registry}/rspark/{name}:{images.tag(images.IMAGES[name])}"
        manifest = requests.get(
            f"http://{registry}/v2/rspark/{name}/manifests/{ref.rsplit(':', 1)[1]}",
            headers={"Accept": ", ".join(images.MANIFEST_TYPES)},
            timeout=10,
        )
        assert manifest.status_code == 200, (name, manifest.text)
        assert manifest.json()["layers"], name


def test_a_second_run_builds_nothing_and_pushes_nothing(
    registry: str, refs: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    assert images.build_and_push(list(images.IMAGES), registry) == refs
    log = capfd.readouterr().err
    assert "building" not in log and "pushed" not in log
    assert log.count("already in the registry") == len(refs)


def manifest_status(registry: str, name: str, image_tag: str) -> int:
    return requests.head(
        f"http://{registry}/v2/rspark/{name}/manifests/{image_tag}",
        headers={"Accept": ", ".join(images.MANIFEST_TYPES)},
        timeout=10,
    ).status_code


def test_pruning_keeps_the_current_tags_and_frees_the_others_blobs(tmp_path: Path) -> None:
    pause, rclone = images.IMAGES["pause"], images.IMAGES["rclone"]
    with serving(tmp_path) as address:
        images.push(pause, address)
        images.push(rclone, address)
    blobs = tmp_path / "data" / "docker" / "registry" / "v2" / "blobs"
    before = sum(1 for path in blobs.rglob("data"))
    images.prune_registry({(pause.name, images.tag(pause))}, tmp_path / "data")
    assert sum(1 for path in blobs.rglob("data")) < before
    with serving(tmp_path) as address:
        assert manifest_status(address, pause.name, images.tag(pause)) == 200
        assert manifest_status(address, rclone.name, images.tag(rclone)) == 404
        manifest = requests.get(
            f"http://{address}/v2/rspark/{pause.name}/manifests/{images.tag(pause)}",
            headers={"Accept": ", ".join(images.MANIFEST_TYPES)},
            timeout=10,
        ).json()
        for blob in (manifest["config"], *manifest["layers"]):
            url = f"http://{address}/v2/rspark/{pause.name}/blobs/{blob['digest']}"
            assert requests.head(url, timeout=10).status_code == 200, blob


def test_every_image_of_the_checkout_and_its_bases_is_current() -> None:
    assert {name for name, _ in images.current()} == {*images.IMAGES, "debian", "python", "restic"}
    assert (images.AGENT.name, images.tag(images.AGENT)) in images.current()


def run_in(name: str, *command: str) -> str:
    """COMMAND in a container of the image (its user, environment and working directory)."""
    ref = images.ensure_local(images.IMAGES[name])
    container = images.buildah("from", "--quiet", "--pull=never", ref, capture=True)
    try:
        result = subprocess.run(
            [
                "buildah",
                *images.BUILDAH_STORAGE,
                "run",
                "--isolation=chroot",
                container,
                "--",
                *command,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        images.buildah("rm", container, capture=True)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout + result.stderr


@pytest.mark.usefixtures("refs")
def test_agent_runs_the_real_agent_with_restic() -> None:
    assert "run" in run_in("agent", "rspark-agent", "--help")
    assert "restic 0." in run_in("agent", "restic", "version")
    assert "uid=1000" in run_in("agent", "id")


@pytest.mark.usefixtures("refs")
def test_the_sign_in_proxy_is_oauth2_proxy_as_pinned() -> None:
    assert "oauth2-proxy v7.15.6" in run_in("oauth2-proxy", "/bin/oauth2-proxy", "--version")


@pytest.mark.usefixtures("refs")
def test_the_snapshot_gateway_is_rclone_as_pinned() -> None:
    assert "rclone v1.76.0" in run_in("rclone", "/bin/rclone", "version")


@pytest.mark.usefixtures("refs")
def test_operator_runs_the_real_operator() -> None:
    assert "usage" in run_in("operator", "rspark-operator", "--help").lower()


@pytest.mark.usefixtures("refs")
def test_operator_runs_the_wakers_sign_in_proxy(identity_provider: str, tmp_path: Path) -> None:
    """`rspark-operator --waker-proxy` in the operator's image, as the waker-oidc
    component runs it: oauth2-proxy with the operator's arguments, the platform's
    Secret mounted where they say, sends an anonymous visitor to the provider."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / CLIENT_SECRET_KEY).write_text(keycloak.CLIENT_SECRET)
    (secret / COOKIE_SECRET_KEY).write_text(secrets.token_hex(16))
    port = free_port()
    settings = {
        "RSPARK_SIGNIN": "oidc",
        "RSPARK_OIDC_ISSUER_URL": identity_provider,
        "RSPARK_OIDC_CLIENT_ID": keycloak.CLIENT_ID,
        "RSPARK_WAKER_ADDRESS": f"{LOOPBACK}:{free_port()}",
        "RSPARK_WAKER_IP": "10.244.1.9",
        "RSPARK_WAKER_PROXY_PORT": str(port),
        "RSPARK_SNAPSHOT_MODE": "direct",
        "RSPARK_SNAPSHOT_REPOSITORY_BASE": "s3:http://s3.example/bucket",
    }
    ref = images.ensure_local(images.IMAGES["operator"])
    container = images.buildah("from", "--quiet", "--pull=never", ref, capture=True)
    log = (tmp_path / "proxy.log").open("w")
    proxy = subprocess.Popen(
        [
            "buildah", *images.BUILDAH_STORAGE, "run", "--isolation=chroot",
            *(f"--env={name}={value}" for name, value in settings.items()),
            f"--volume={secret}:{SECRET_DIR}:ro",
            container, "--", "rspark-operator", "--waker-proxy",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def answers() -> bool:
            assert proxy.poll() is None, (tmp_path / "proxy.log").read_text()
            try:
                return requests.get(f"http://{LOOPBACK}:{port}{PING_PATH}", timeout=5).ok
            except requests.ConnectionError:
                return False

        wait_until("the waker's sign-in proxy answers", answers, 60, 0.5)
        visit = requests.get(
            f"http://{LOOPBACK}:{port}/team-a/alice/", allow_redirects=False, timeout=10
        )
        assert visit.status_code == 302, visit.text
        assert visit.headers["Location"].startswith(
            f"{identity_provider}/protocol/openid-connect/auth"
        )
        assert f"client_id={keycloak.CLIENT_ID}" in visit.headers["Location"]
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        log.close()
        images.buildah("rm", container, capture=True)


def test_spark_executor_has_java_17_spark_3_5_3_and_r() -> None:
    assert 'version "17.' in run_in("spark", "java", "-version")
    # A build container's host name does not resolve (a pod's does): Spark is told its address.
    assert "version 3.5.3" in run_in(
        "spark", "env", "SPARK_LOCAL_IP=127.0.0.1", "spark-submit", "--version"
    )
    jars = run_in("spark", "sh", "-c", "ls /opt/spark/jars")
    assert "spark-kubernetes_2.12-3.5.3.jar" in jars
    assert "R version 4." in run_in("spark", "Rscript", "-e", "cat(R.version.string)")
    assert "uid=185" in run_in("spark", "id")


@pytest.mark.usefixtures("refs")
def test_spark_executor_entrypoint_calls_the_driver_back() -> None:
    """`executor` with Spark's environment starts KubernetesExecutorBackend, which dials
    the driver URL: here a port where nothing listens, so it fails at once."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    spark = {
        "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{port}",
        "SPARK_EXECUTOR_ID": "1",
        "SPARK_EXECUTOR_CORES": "1",
        "SPARK_EXECUTOR_MEMORY": "512m",
        "SPARK_APPLICATION_ID": "spark-application-1",
        "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
        "SPARK_EXECUTOR_POD_NAME": "alice-exec-1",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_JAVA_OPT_0": f"-Dspark.driver.port={port}",
        # A build container's host name does not resolve (a pod's does).
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    ref = images.ensure_local(images.SPARK)
    container = images.buildah("from", "--quiet", "--pull=never", ref, capture=True)
    try:
        executor = subprocess.run(
            ["buildah", *images.BUILDAH_STORAGE, "run", "--isolation=chroot",
             *(f"--env={key}={value}" for key, value in spark.items()), container,
             "--", "/usr/local/bin/rspark-executor", "executor"],
            capture_output=True, text=True, timeout=EXECUTOR_SECONDS, check=False,
        )  # fmt: skip
    finally:
        images.buildah("rm", container, capture=True)
    output = executor.stdout + executor.stderr
    assert executor.returncode != 0
    assert "KubernetesExecutorBackend: Started daemon" in output
    assert f"Failed to connect to /127.0.0.1:{port}" in output


@pytest.mark.usefixtures("refs")
def test_jupyterlab_has_jupyterlab_irkernel_reticulate_and_pyspark() -> None:
    requirements = (images.ROOT / "images" / "jupyterlab" / "requirements.txt").read_text()
    pinned = requirements.split("jupyterlab==", 1)[1].split()[0]
    assert run_in("jupyterlab", "jupyter", "lab", "--version").strip() == pinned
    run_in("jupyterlab", "Rscript", "-e", "library(IRkernel); library(reticulate)")
    kernels = run_in("jupyterlab", "jupyter", "kernelspec", "list")
    assert "/usr/local/share/jupyter/kernels/ir" in kernels and "python3" in kernels
    assert "3.5.3" in run_in(
        "jupyterlab", "python", "-c", "import pyspark; print(pyspark.__version__)"
    )
    # The R kernel runs a cell.
    cell = "printf '%s\\n' 'cat(6 * 7)' > /tmp/cell.R && jupyter run --kernel=ir /tmp/cell.R"
    assert "42" in run_in("jupyterlab", "sh", "-c", cell).split()
    # R drives Spark through reticulate and pyspark: a local job on the image's Java.
    job = (
        'spark <- reticulate::import("pyspark.sql")$SparkSession$builder$master("local[1]")'
        "$getOrCreate(); "
        'cat("sum", spark$range(101L)$selectExpr("sum(id) AS s")$collect()[[1]]$s, "\\n"); '
        "spark$stop()"
    )
    output = run_in("jupyterlab", "env", "SPARK_LOCAL_IP=127.0.0.1", "Rscript", "-e", job)
    assert "sum 5050" in output
    assert "uid=1000(rstudio) gid=1000(rstudio)" in run_in("jupyterlab", "id")
    home = run_in("jupyterlab", "Rscript", "-e", "cat(Sys.getenv(c('HOME', 'R_LIBS_USER')))")
    assert home.split() == ["/home/rstudio", "/home/rstudio/R/library"]


def pid_1_of(pid: int, command: list[str]) -> int:
    """The one child of `unshare` (PID 1 in its namespace), once it runs COMMAND."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + REGISTRY_START_SECONDS
    while True:
        for child in children.read_text().split():
            with contextlib.suppress(FileNotFoundError):
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")[:-1]
                if cmdline == command:
                    return int(child)
        assert time.monotonic() < deadline, f"process {pid} did not start {command}"
        time.sleep(0.1)


@pytest.mark.usefixtures("refs")
def test_pause_sleeps_as_pid_1_until_sigterm() -> None:
    ref = images.ensure_local(images.PAUSE)
    config = json.loads(images.buildah("inspect", "--type=image", ref, capture=True))
    entrypoint = config["OCIv1"]["config"]["Entrypoint"]
    container = images.buildah("from", "--quiet", "--pull=never", ref, capture=True)
    rootfs = images.buildah("mount", container, capture=True)
    # PID and mount namespaces of its own: the entrypoint is PID 1 and sees a /dev,
    # as in the pod's sandbox.
    chroot = 'mkdir -p "$0/dev" && mount --bind /dev "$0/dev" && exec chroot "$0" "$@"'
    process = subprocess.Popen(
        ["unshare", "--pid", "--mount", "--fork", "--kill-child", "sh", "-c", chroot, rootfs,
         *entrypoint]
    )  # fmt: skip
    try:
        os.kill(pid_1_of(process.pid, entrypoint), signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        images.buildah("umount", container, capture=True)
        images.buildah("rm", container, capture=True)
