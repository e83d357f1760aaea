"""`make images-local`: the images the local cluster runs, built here without Docker.

Bases are Debian bookworm root filesystems made by mmdebstrap; Debian's buildah
(`--isolation chroot`: the RUN steps run as root, no daemon) builds the same
Dockerfiles as `make images`, with those bases passed as build arguments. Each
image's tag is a hash of its inputs (its Dockerfile, the files it copies, the
images it is built from, the Debian packages and mirrors of its base), and its
OCI archive is cached under ~/.cache/rspark-operator/images: a second run skips
every build whose archive exists and pushes only what the registry lacks.
Images are pushed as REGISTRY/rspark/<name>:<tag> (plain HTTP, skopeo).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.network import REGISTRY
from devtools.services import REGISTRY_BINARY, answers, cache_dir, registry_config

ROOT = Path(__file__).resolve().parents[1]
CACHE = cache_dir() / "images"
REGISTRY_ROOT = cache_dir() / "registry"
ARCHIVES = CACHE / "archives"
REFS_FILE = ROOT / ".local" / "images.json"
LOCAL_PREFIX = "localhost/rspark"
TAG_LENGTH = 16

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# This machine's own certificate authorities (a TLS proxy stands between it and
# PyPI): the bases trust them too, so that pip inside a build reaches PyPI.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
# Part of every base's hash, with the suite, mirrors, packages and hooks.
MMDEBSTRAP_FLAGS = ("--variant=minbase", "--mode=root", "--format=tar")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILDAH_STORAGE = (
    f"--root={CACHE / 'storage'}",
    f"--runroot={CACHE / 'run'}",
    "--storage-driver=overlay",
)
# Part of every Dockerfile image's hash: changing how images are built rebuilds them.
# Docker's format: OCI's has no SHELL and HEALTHCHECK, which the Dockerfiles use.
BUILD_FLAGS = ("--isolation=chroot", "--pull=never", "--layers", "--format=docker")
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass(frozen=True)
class Debian:
    """A Debian root filesystem by mmdebstrap: minbase, these packages, these hooks."""

    name: str
    packages: tuple[str, ...]
    customize: tuple[str, ...] = ()

    def inputs(self) -> Iterator[bytes]:
        lines = (*MMDEBSTRAP_FLAGS, SUITE, *MIRRORS, *self.packages, *self.customize)
        yield from (line.encode() for line in lines)
        for ca in local_cas():
            yield ca.read_bytes()


@dataclass(frozen=True)
class Files:
    """Files from this machine on no distribution at all (a static binary or two)."""

    name: str
    # (file on this machine, path in the image), read when the image is hashed.
    files: Callable[[], tuple[tuple[Path, str], ...]]
    config: tuple[str, ...]  # `buildah config` arguments

    def inputs(self) -> Iterator[bytes]:
        for source, target in self.files():
            yield target.encode()
            yield source.read_bytes()
        yield from (argument.encode() for argument in self.config)


@dataclass(frozen=True)
class Dockerfile:
    """images/<directory>/Dockerfile; each build argument names another image here."""

    name: str
    directory: str
    args: tuple[tuple[str, Image], ...]

    @property
    def path(self) -> Path:
        return ROOT / "images" / self.directory / "Dockerfile"

    def inputs(self) -> Iterator[bytes]:
        yield from (flag.encode() for flag in BUILD_FLAGS)
        yield self.path.read_bytes()
        for copied in sorted(copied_files(self.path.read_text())):
            yield str(copied.relative_to(ROOT)).encode()
            yield copied.read_bytes()
        for arg, image in self.args:
            yield f"{arg}={local_ref(image)}".encode()


Image = Debian | Files | Dockerfile


def local_cas() -> list[Path]:
    return sorted(LOCAL_CA_DIR.glob("*.crt")) if LOCAL_CA_DIR.is_dir() else []


@functools.cache
def go_tool(tool: str, target: str) -> tuple[tuple[Path, str], ...]:
    """A Go tool as hack/tools.sh builds it from hack/<tool> (cached per go.mod), at `target`."""
    subprocess.run(["bash", str(ROOT / "hack" / "tools.sh"), tool], check=True)
    return (((ROOT / ".local" / "bin" / tool).resolve(), target),)


def busybox_static() -> tuple[tuple[Path, str], ...]:
    """Debian's busybox-static (hack/system-packages.sh installs it)."""
    return ((Path("/bin/busybox"), "/bin/busybox"),)


# The sandbox ("pause") container only holds the pod's namespaces: PID 1 sleeps
# and exits at once on SIGTERM or SIGINT.
PAUSE_COMMAND = "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 86400 & wait $!; done"

DEBIAN = Debian("debian", ("ca-certificates",))
# Debian's python3 in place of the python image: pip allowed outside a virtual
# environment (as in the python image), `python` on PATH.
PYTHON = Debian(
    "python",
    ("ca-certificates", "python3", "python3-pip", "python3-venv", "python-is-python3"),
    ('rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',),
)
RESTIC = Files("restic", functools.partial(go_tool, "restic", "/usr/bin/restic"), ())
# The workspaces' sign-in proxy (builders/signin.py): a static binary, nothing else.
OAUTH2_PROXY = Files(
    "oauth2-proxy",
    functools.partial(go_tool, "oauth2-proxy", "/bin/oauth2-proxy"),
    ("--entrypoint", json.dumps(["/bin/oauth2-proxy"]), "--user", "65532:65532"),
)
# The snapshot gateway (manifests/base/snapshot-gateway.yaml): rclone, nothing else.
RCLONE = Files(
    "rclone",
    functools.partial(go_tool, "rclone", "/bin/rclone"),
    ("--entrypoint", json.dumps(["/bin/rclone"]), "--user", "65532:65532"),
)
OPERATOR = Dockerfile(
    "operator", "operator", (("PYTHON_IMAGE", PYTHON), ("OAUTH2_PROXY_IMAGE", OAUTH2_PROXY))
)
PAUSE = Files(
    "pause",
    busybox_static,
    ("--entrypoint", json.dumps(["/bin/busybox", "sh", "-c", PAUSE_COMMAND])),
)
AGENT = Dockerfile("agent", "agent", (("PYTHON_IMAGE", PYTHON), ("RESTIC_IMAGE", RESTIC)))
SPARK = Dockerfile("spark", "spark-debian", (("BASE_IMAGE", DEBIAN), ("PYTHON_IMAGE", PYTHON)))
JUPYTERLAB = Dockerfile("jupyterlab", "jupyterlab", (("SPARK_IMAGE", SPARK),))
# Spark's Connect server for the local cluster's `connect` SparkProfile (devtools/connect.py).
SPARK_CONNECT = Dockerfile(
    "spark-connect", "spark-connect", (("SPARK_IMAGE", SPARK), ("PYTHON_IMAGE", PYTHON))
)
# What the cluster runs, in build order; the others are only built from.
IMAGES: dict[str, Image] = {
    image.name: image
    for image in (PAUSE, AGENT, OPERATOR, SPARK, JUPYTERLAB, OAUTH2_PROXY, RCLONE, SPARK_CONNECT)
}


def copied_files(dockerfile: str) -> set[Path]:
    """Every file of the build context that the Dockerfile's COPY/ADD lines copy."""
    files: set[Path] = set()
    text = dockerfile.replace("\\\n", " ")
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) < 3 or words[0].upper() not in ("COPY", "ADD"):
            continue
        if any(word.startswith("--from=") for word in words):
            continue
        sources = [word for word in words[1:-1] if not word.startswith("--")]
        for source in sources:
            path = ROOT / source
            files |= {path} if path.is_file() else set(tree(path))
    return files


def tree(directory: Path) -> Iterator[Path]:
    """Files under a directory as the build sees them (.dockerignore's caches left out)."""
    for path in directory.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if path.is_file() and "__pycache__" not in parts and not path.match("*.egg-info/*"):
            yield path


@functools.cache
def tag(image: Image) -> str:
    """The hash of the image's inputs, read once per run: an edit during a build
    cannot give the image a tag of inputs it was not built from."""
    digest = hashlib.sha256(type(image).__name__.encode())
    for chunk in image.inputs():
        digest.update(hashlib.sha256(chunk).digest())
    return digest.hexdigest()[:TAG_LENGTH]


def local_ref(image: Image) -> str:
    return f"{LOCAL_PREFIX}/{image.name}:{tag(image)}"


def registry_ref(image: Image, registry: str) -> str:
    return f"{registry}/rspark/{image.name}:{tag(image)}"


def archive(image: Image) -> Path:
    return ARCHIVES / f"{image.name}-{tag(image)}.tar"


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def buildah(*args: str, capture: bool = False) -> str:
    result = subprocess.run(
        ["buildah", *BUILDAH_STORAGE, *args],
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return (result.stdout or "").strip()


def in_storage(ref: str) -> bool:
    found = subprocess.run(
        ["buildah", *BUILDAH_STORAGE, "inspect", "--type=image", ref],
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


def ensure_local(image: Image) -> str:
    """The image in buildah's storage (from its archive, or built): its local name."""
    ref = local_ref(image)
    if in_storage(ref):
        return ref
    if archive(image).exists():
        image_id = buildah("pull", "--quiet", f"oci-archive:{archive(image)}", capture=True)
        buildah("tag", image_id, ref)
        return ref
    return build(image)


def build(image: Image) -> str:
    ref = local_ref(image)
    started = time.monotonic()
    log(f"building {ref}")
    if isinstance(image, Debian):
        build_debian(image, ref)
    elif isinstance(image, Files):
        build_files(image, ref)
    else:
        build_dockerfile(image, ref)
    ARCHIVES.mkdir(parents=True, exist_ok=True)
    partial = archive(image).with_suffix(".partial")
    partial.unlink(missing_ok=True)
    buildah("push", "--quiet", ref, f"oci-archive:{partial}:{ref}")
    partial.rename(archive(image))
    log(f"built {ref} in {time.monotonic() - started:.0f} s")
    return ref


@contextlib.contextmanager
def scratch_container() -> Iterator[str]:
    """An empty working container: `buildah commit --rm` removes it, or this on a failure."""
    container = buildah("from", "--quiet", "scratch", capture=True)
    try:
        yield container
    except BaseException:
        buildah("rm", container, capture=True)
        raise


def build_debian(image: Debian, ref: str) -> None:
    rootfs = CACHE / f"{image.name}-{tag(image)}.rootfs.tar"
    hooks = list(image.customize)
    cas = local_cas()
    if cas:
        hooks.append("copy-in " + " ".join(map(str, cas)) + f" {LOCAL_CA_DIR}/")
        hooks.append('chroot "$1" update-ca-certificates')
    command = [
        "mmdebstrap", *MMDEBSTRAP_FLAGS, "--quiet",
        "--include=" + ",".join(image.packages),
        *(f"--customize-hook={hook}" for hook in hooks),
        SUITE, str(rootfs), *MIRRORS,
    ]  # fmt: skip
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(command, check=True)
        with scratch_container() as container:
            buildah("add", "--quiet", container, str(rootfs), "/")
            buildah(
                "config",
                f"--env=PATH={BASE_PATH}",
                "--env=LANG=C.UTF-8",
                "--cmd=/bin/bash",
                container,
            )
            buildah("commit", "--quiet", "--rm", container, ref)
    finally:
        rootfs.unlink(missing_ok=True)


def build_files(image: Files, ref: str) -> None:
    with scratch_container() as container:
        for source, target in image.files():
            buildah("copy", "--quiet", "--chmod=0755", container, str(source), target)
        if image.config:
            buildah("config", *image.config, container)
        buildah("commit", "--quiet", "--rm", container, ref)


def build_dockerfile(image: Dockerfile, ref: str) -> None:
    build_args = [f"--build-arg={arg}={ensure_local(base)}" for arg, base in image.args]
    # --force-rm: a failed build leaves no working container behind (not part of the hash).
    buildah(
        "bud",
        *BUILD_FLAGS,
        "--force-rm",
        *build_args,
        f"--file={image.path}",
        f"--tag={ref}",
        str(ROOT),
    )


def in_registry(image: Image, registry: str) -> bool:
    name, reference = registry_ref(image, registry).split("/", 1)[1].rsplit(":", 1)
    request = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/{reference}",
        method="HEAD",
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


def push(image: Image, registry: str) -> None:
    ref = registry_ref(image, registry)
    try:
        present = in_registry(image, registry)
    except urllib.error.URLError as error:
        raise SystemExit(
            f"images-local: the registry {registry} does not answer ({error.reason}); start it"
            " (make cluster-up) or pass REGISTRY=host:port. The images are built and cached."
        ) from error
    if present:
        log(f"{ref} already in the registry")
        return
    started = time.monotonic()
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
         f"oci-archive:{archive(image)}", f"docker://{ref}"],
        check=True,
    )  # fmt: skip
    log(f"pushed {ref} in {time.monotonic() - started:.1f} s")


def build_and_push(names: list[str], registry: str) -> dict[str, str]:
    """Each named image built (unless its archive is cached) and in the registry."""
    refs = {}
    for name in names:
        image = IMAGES[name]
        if not archive(image).exists():
            build(image)
        push(image, registry)
        refs[name] = registry_ref(image, registry)
    return refs


def current() -> set[tuple[str, str]]:
    """(name, tag) of every image this checkout builds, the bases they are built from included."""
    found: set[tuple[str, str]] = set()
    pending: list[Image] = list(IMAGES.values())
    while pending:
        image = pending.pop()
        found.add((image.name, tag(image)))
        if isinstance(image, Dockerfile):
            pending.extend(base for _, base in image.args)
    return found


def prune() -> None:
    """Forget every image whose tag this checkout no longer builds: its archive, its copy
    in buildah's storage (with the layers only it used) and its tag in the local
    registry's storage (with the blobs only it used; only while the registry is down)."""
    keep = current()
    keep_refs = {f"{LOCAL_PREFIX}/{name}:{image_tag}" for name, image_tag in keep}
    for path in sorted(ARCHIVES.glob("*.tar")) if ARCHIVES.is_dir() else []:
        name, _, image_tag = path.stem.rpartition("-")
        if (name, image_tag) not in keep:
            log(f"removing {path.name}")
            path.unlink()
    listed = buildah("images", "--format", "{{.Name}}:{{.Tag}}", capture=True)
    stale = [ref for ref in listed.split() if ref.startswith(LOCAL_PREFIX) and ref not in keep_refs]
    if stale:
        log(f"removing {len(stale)} superseded images from buildah's storage")
        buildah("rmi", *stale, capture=True)
    buildah("rmi", "--prune", capture=True)
    if answers(f"http://{REGISTRY}/v2/"):
        log(f"the registry on {REGISTRY} runs (make cluster-down first): its storage is kept")
    else:
        prune_registry(keep, REGISTRY_ROOT)


def prune_registry(keep: set[tuple[str, str]], root: Path) -> None:
    """Untag what `keep` lacks in the storage of a registry that is not running, and
    delete the manifests and blobs no tag reaches any more."""
    repositories = root / "docker" / "registry" / "v2" / "repositories" / "rspark"
    if not repositories.is_dir():
        return
    for tag_dir in sorted(repositories.glob("*/_manifests/tags/*")):
        name = tag_dir.parents[2].name
        if (name, tag_dir.name) not in keep:
            shutil.rmtree(tag_dir)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
        json.dump(registry_config(root), config)
        config.flush()
        subprocess.run(
            [REGISTRY_BINARY, "garbage-collect", "--delete-untagged", config.name],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    log("the registry's storage keeps only the current tags")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make images-local", description=__doc__)
    parser.add_argument("--registry", default=REGISTRY, help=f"host:port (default {REGISTRY})")
    parser.add_argument(
        "--prune",
        action="store_true",
        help="only forget the images (archives, buildah storage, registry storage) "
        "whose tags this checkout no longer builds",
    )
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(IMAGES)} (default: all)")
    arguments = parser.parse_args(argv)
    unknown = set(arguments.names) - set(IMAGES)
    if unknown:
        parser.error(f"unknown images: {', '.join(sorted(unknown))}")
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if arguments.prune:
        prune()
        return
    names = arguments.names or list(IMAGES)
    refs = build_and_push(names, arguments.registry)
    REFS_FILE.parent.mkdir(parents=True, exist_ok=True)
    REFS_FILE.write_text(json.dumps(refs, indent=2) + "\n")
    for ref in refs.values():
        print(ref)


if __name__ == "__main__":
    main()
