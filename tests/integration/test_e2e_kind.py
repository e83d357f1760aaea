"""hack/e2e-kind.sh's preflight, run as a plain process with fake docker, kind, kubectl, curl.

The end-to-end path itself needs Docker and kind; this checks that the script
refuses a kind too old for its pinned node image, and what it pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from devtools.localcluster import ROOT
from tests.integration.images.conftest import FakeBin, run

SCRIPT = str(ROOT / "hack" / "e2e-kind.sh")
KIND_CONFIG = ROOT / "hack" / "e2e-kind" / "kind.yaml"


@pytest.fixture
def fake_bin(tmp_path: Path) -> FakeBin:
    return FakeBin(tmp_path)


def fake_tools(fake_bin: FakeBin, kind_version: str) -> None:
    for tool in ("docker", "kubectl", "curl"):
        fake_bin.add(tool)
    # `kind version` answers; every other kind command fails, which ends the script.
    fake_bin.add("kind", f'[ "$1" = version ] && echo "kind {kind_version} go1.24.2 linux/amd64"')


@pytest.mark.parametrize("version", ["v0.20.0", "v0.28.0", "v0.9.9", "weird"])
def test_a_kind_too_old_for_the_node_image_is_refused(fake_bin: FakeBin, version: str) -> None:
    fake_tools(fake_bin, version)
    result = run(["bash", SCRIPT], fake_bin.env())
    assert result.returncode == 1
    assert "kind 0.29.0 or newer is needed" in result.stderr and version in result.stderr
    assert not [call for call in fake_bin.calls() if call.startswith("kind create")]


@pytest.mark.parametrize("version", ["v0.29.0", "v0.30.0-alpha+1a2b", "v1.0.0"])
def test_a_recent_kind_goes_on_to_create_the_cluster(fake_bin: FakeBin, version: str) -> None:
    fake_tools(fake_bin, version)
    result = run(["bash", SCRIPT], fake_bin.env())
    assert result.returncode != 0  # the fake kind cannot create a cluster
    assert "or newer is needed" not in result.stderr
    creates = [call for call in fake_bin.calls() if call.startswith("kind create cluster")]
    assert creates == [f"kind create cluster --name rspark-e2e --config {KIND_CONFIG} --wait 120s"]


def test_the_node_image_is_pinned_by_digest_for_kubernetes_1_33() -> None:
    (node,) = yaml.safe_load(KIND_CONFIG.read_text())["nodes"]
    assert re.fullmatch(r"kindest/node:v1\.33\.\d+@sha256:[0-9a-f]{64}", node["image"])
