"""hack/deploy.sh (`make deploy`) with a fake kubectl: the caller's own kubectl, its
version checked against the cluster's before anything is applied.

The real path (the pinned kubectl against the local cluster) is in test_install.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devtools.localcluster import ROOT
from tests.integration.images.conftest import FakeBin, run

SCRIPT = str(ROOT / "hack" / "deploy.sh")


@pytest.fixture
def fake_bin(tmp_path: Path) -> FakeBin:
    return FakeBin(tmp_path)


def fake_kubectl(fake_bin: FakeBin, client: str, server: str | None) -> None:
    """`kubectl version -o json` answers as a client `client` talking to `server`
    (None: no server answers); every other command succeeds."""
    versions = {"clientVersion": {"gitVersion": client}, "kustomizeVersion": "v5.6.0"}
    if server is None:
        answer = (
            f"echo '{json.dumps(versions)}'; "
            "echo 'The connection to the server 10.0.0.1:6443 was refused' >&2; exit 1"
        )
    else:
        versions["serverVersion"] = {"gitVersion": server}
        answer = f"echo '{json.dumps(versions, indent=2)}'"
    fake_bin.add("kubectl", f'[ "$1" = version ] && {{ {answer}; }}; exit 0')


def applied(fake_bin: FakeBin) -> list[str]:
    return [call for call in fake_bin.calls() if call.startswith("kubectl apply")]


@pytest.mark.parametrize(
    ("client", "server"), [("v1.33.13", "v1.31.2"), ("v1.30.0", "v1.32.1"), ("v2.0.0", "v1.33.0")]
)
def test_a_kubectl_beyond_the_supported_skew_is_refused_before_anything_is_applied(
    fake_bin: FakeBin, client: str, server: str
) -> None:
    fake_kubectl(fake_bin, client, server)
    result = run(["bash", SCRIPT], fake_bin.env())
    assert result.returncode == 1
    assert "more than one minor version apart" in result.stderr
    assert client.rsplit(".", 1)[0].removeprefix("v") in result.stderr
    assert not applied(fake_bin)


@pytest.mark.parametrize(
    ("client", "server"),
    [("v1.33.13", "v1.33.1"), ("v1.32.4-dispatcher", "v1.33.13"), ("v1.34.0", "v1.33.2+k3s1")],
)
def test_a_kubectl_within_one_minor_version_applies_crds_then_the_kustomization(
    fake_bin: FakeBin, client: str, server: str
) -> None:
    fake_kubectl(fake_bin, client, server)
    result = run(["bash", SCRIPT, "overlay"], fake_bin.env())
    assert result.returncode == 0, result.stderr
    assert applied(fake_bin) == [
        f"kubectl apply --server-side --force-conflicts -k {ROOT / 'crds'}",
        "kubectl apply --server-side --force-conflicts -k overlay",
    ]


def test_no_server_is_a_clear_message(fake_bin: FakeBin) -> None:
    fake_kubectl(fake_bin, "v1.33.13", None)
    result = run(["bash", SCRIPT], fake_bin.env())
    assert result.returncode == 1
    assert "cannot read the cluster's version" in result.stderr
    assert "connection to the server 10.0.0.1:6443 was refused" in result.stderr
    assert not applied(fake_bin)


def test_no_kubectl_is_a_clear_message(fake_bin: FakeBin, tmp_path: Path) -> None:
    result = run(["bash", SCRIPT], fake_bin.env(KUBECTL=str(tmp_path / "nowhere" / "kubectl")))
    assert result.returncode == 1
    assert "install kubectl within one minor version of your cluster" in result.stderr


def test_make_deploy_uses_the_callers_kubectl_and_builds_nothing(fake_bin: FakeBin) -> None:
    fake_kubectl(fake_bin, "v1.33.13", "v1.33.13")
    result = subprocess.run(
        ["make", "-s", "deploy", "KUSTOMIZATION=overlay"],
        cwd=ROOT, env=fake_bin.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert fake_bin.calls()[0] == "kubectl version -o json"  # ours, not .local/bin's
    assert len(applied(fake_bin)) == 2
    assert "[tools]" not in result.stderr
