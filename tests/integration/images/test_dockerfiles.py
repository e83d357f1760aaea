"""The Dockerfiles: linted with hadolint, pinned, and wired to the scripts beside them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from rspark_operator.builders.pod import HOME
from rspark_operator.builders.spark import SPARK_CONF_DIR
from rspark_operator.ide import IDES
from rspark_operator.settings import OperatorSettings
from tests.integration.images.conftest import IMAGES

ROOT = IMAGES.parent
FROM = re.compile(r"^FROM\s+(\S+)", re.MULTILINE)
ARG_IMAGE = re.compile(r"^ARG\s+\w+_IMAGE=(\S+)", re.MULTILINE)
COPY_LINE = re.compile(r"^COPY\s.*$", re.MULTILINE)
NAMES = sorted(p.parent.name for p in IMAGES.glob("*/Dockerfile"))


def dockerfile(name: str) -> str:
    return (IMAGES / name / "Dockerfile").read_text()


def test_hadolint_and_shellcheck_pass() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "lint-images.sh")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_base_image_is_pinned() -> None:
    assert NAMES == [
        "agent",
        "jupyterlab",
        "operator",
        "rspark",
        "spark",
        "spark-connect",
        "spark-debian",
    ]
    for name in NAMES:
        text = dockerfile(name)
        images = [*ARG_IMAGE.findall(text), *FROM.findall(text)]
        external = [i for i in images if not i.startswith("$") and ":" not in i.split("/")[-1]]
        stages = set(re.findall(r"\bAS\s+(\w+)", text))
        assert not [i for i in external if i not in stages], f"{name}: unpinned {external}"
        assert not [i for i in images if i.endswith(":latest")], name


def test_every_copied_file_exists() -> None:
    for name in NAMES:
        for line in COPY_LINE.findall(dockerfile(name)):
            for source in re.findall(r"\bimages/\S+", line):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_images_follow_their_contracts() -> None:
    rspark = dockerfile("rspark")
    assert re.search(r"^FROM rocker/verse:\d+\.\d+\.\d+$", rspark, re.MULTILINE)
    assert 'CMD ["/init"]' in rspark and f"EXPOSE {IDES['rstudio'].port}" in rspark
    assert "/usr/local/bin/" in rspark and "rspark-prestop" in rspark
    assert not re.search(r"^ENV\b.*\bDISABLE_AUTH", rspark, re.MULTILINE)  # auth stays on
    agent = dockerfile("agent")
    assert 'ENTRYPOINT ["rspark-agent"]' in agent and "USER 1000:1000" in agent
    assert "restic/restic:" in agent
    operator = dockerfile("operator")
    assert 'ENTRYPOINT ["rspark-operator"]' in operator and "USER 65532:65532" in operator


def test_executors_run_the_workspaces_spark_and_r() -> None:
    """Spark's entrypoint (`executor` command) and the same Spark, JRE and R as the driver."""
    rspark, spark = dockerfile("rspark"), dockerfile("spark")
    assert 'ENTRYPOINT ["/opt/entrypoint.sh"]' in spark and "USER 185:185" in spark
    assert "COPY --from=spark /opt/entrypoint.sh" in spark
    assert ARG_IMAGE.findall(spark) == ARG_IMAGE.findall(rspark)  # same Spark and JRE
    (verse,) = re.findall(r"^FROM rocker/verse:(\S+)$", rspark, re.MULTILINE)
    (r_ver,) = re.findall(r"^FROM rocker/r-ver:(\S+)$", spark, re.MULTILINE)
    assert verse == r_ver  # rocker/verse is built on rocker/r-ver of its version
    assert "SparkR" in spark and "sparklyr" in spark


def test_make_images_builds_every_image_the_operator_defaults_to() -> None:
    script = (ROOT / "hack" / "images.sh").read_text()
    (pairs,) = re.findall(r"^for pair in (.+); do$", script, re.MULTILINE)
    built = dict(pair.split(":") for pair in pairs.split())
    assert sorted(built) == NAMES
    registry = re.findall(r'REGISTRY="\$\{IMAGE_REGISTRY:-(\S+)\}"', script)[0]
    tag = re.findall(r'TAG="\$\{IMAGE_TAG:-(\S+)\}"', script)[0]
    defaults = OperatorSettings()
    for image in (defaults.workspace_image, defaults.agent_image, defaults.spark_executor_image):
        assert image in {f"{registry}/{name}:{tag}" for name in built.values()}, image


def test_python_images_pin_their_build_backend() -> None:
    for name in ("agent", "operator"):
        text = dockerfile(name)
        assert re.search(r"pip install --no-cache-dir setuptools==\d+\.\d+\.\d+ ", text), name
        assert "pip wheel --no-cache-dir --no-deps --no-build-isolation" in text, name


def test_scripts_are_executable() -> None:
    scripts = [p for p in IMAGES.rglob("*") if p.is_file() and p.read_bytes().startswith(b"#!")]
    assert len(scripts) >= 4
    assert all(p.stat().st_mode & 0o111 for p in scripts), [str(p) for p in scripts]


def test_build_context_excludes_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".local" in ignored and ".git" in ignored
    assert Path(ROOT / "operator").is_dir()


def test_jupyterlab_keeps_the_workspace_contract() -> None:
    """The RStudio image's user, home and R environment; the pod's preStop and Spark's conf."""
    jupyterlab, executor = dockerfile("jupyterlab"), dockerfile("spark-debian")
    assert "useradd --uid 1000 --gid 1000 --home-dir /home/rstudio" in jupyterlab
    assert f"HOME={HOME}" in jupyterlab and "USER 1000:1000" in jupyterlab
    assert "COPY images/rspark/Renviron.site " in jupyterlab  # the same file, not a copy
    (scripts,) = [line for line in COPY_LINE.findall(jupyterlab) if "rspark-prestop" in line]
    assert scripts.endswith(" /usr/local/bin/")  # the pod's preStop: /usr/local/bin/rspark-prestop
    assert "EXPOSE 8888 " in jupyterlab and 'CMD ["/usr/local/bin/rspark-jupyterlab"]' in jupyterlab
    assert f"SPARK_CONF_DIR={SPARK_CONF_DIR}" in executor
    # The workspace's Spark is its executors' Spark: the JupyterLab image is built on them.
    assert re.search(r"^FROM \$\{SPARK_IMAGE\}$", jupyterlab, re.MULTILINE)
    assert "pyspark==3.5.3" in executor
