"""The Dockerfiles: linted with hadolint, pinned, and wired to the scripts beside them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from rspark_operator.builders.pod import RSTUDIO_PORT
from tests.integration.images.conftest import IMAGES

ROOT = IMAGES.parent
FROM = re.compile(r"^FROM\s+(\S+)", re.MULTILINE)
ARG_IMAGE = re.compile(r"^ARG\s+\w+_IMAGE=(\S+)", re.MULTILINE)
COPY_LINE = re.compile(r"^COPY\s.*$", re.MULTILINE)


def dockerfile(name: str) -> str:
    return (IMAGES / name / "Dockerfile").read_text()


def test_hadolint_and_shellcheck_pass() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "lint-images.sh")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_base_image_is_pinned() -> None:
    for name in ("rspark", "agent", "operator"):
        text = dockerfile(name)
        images = [*ARG_IMAGE.findall(text), *FROM.findall(text)]
        external = [i for i in images if not i.startswith("$") and ":" not in i.split("/")[-1]]
        stages = set(re.findall(r"\bAS\s+(\w+)", text))
        assert not [i for i in external if i not in stages], f"{name}: unpinned {external}"
        assert not [i for i in images if i.endswith(":latest")], name


def test_every_copied_file_exists() -> None:
    for name in ("rspark", "agent", "operator"):
        for line in COPY_LINE.findall(dockerfile(name)):
            for source in re.findall(r"\bimages/\S+", line):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_images_follow_their_contracts() -> None:
    rspark = dockerfile("rspark")
    assert re.search(r"^FROM rocker/verse:\d+\.\d+\.\d+$", rspark, re.MULTILINE)
    assert 'CMD ["/init"]' in rspark and f"EXPOSE {RSTUDIO_PORT}" in rspark
    assert "/usr/local/bin/" in rspark and "rspark-prestop" in rspark
    assert not re.search(r"^ENV\b.*\bDISABLE_AUTH", rspark, re.MULTILINE)  # auth stays on
    agent = dockerfile("agent")
    assert 'ENTRYPOINT ["rspark-agent"]' in agent and "USER 1000:1000" in agent
    assert "restic/restic:" in agent
    operator = dockerfile("operator")
    assert 'ENTRYPOINT ["rspark-operator"]' in operator and "USER 65532:65532" in operator


def test_scripts_are_executable() -> None:
    scripts = [p for p in IMAGES.rglob("*") if p.is_file() and p.read_bytes().startswith(b"#!")]
    assert len(scripts) >= 4
    assert all(p.stat().st_mode & 0o111 for p in scripts), [str(p) for p in scripts]


def test_build_context_excludes_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".local" in ignored and ".git" in ignored
    assert Path(ROOT / "operator").is_dir()
