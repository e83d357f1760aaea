"""The install manifests on the local cluster, and the operator under their identity.

The operator runs as a local process (kwok nodes run no containers), but with a
kubeconfig holding a token of the manifests' ServiceAccount: every API call it
makes is authorised by the ClusterRole of manifests/base, exactly as in a cluster.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from devtools import localcluster
from devtools.deploy import OperatorProcess, operator_environment
from devtools.localcluster import ROOT, kubectl
from devtools.s3 import S3Credentials

BASE = ROOT / "manifests" / "base"
OVERLAYS = ROOT / "manifests" / "overlays"
COMPONENTS = ROOT / "manifests" / "components"
SYSTEM_NAMESPACE = "rspark-system"
SERVICE_ACCOUNT = "rspark-operator"
SUBJECT = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{SERVICE_ACCOUNT}"
# Messages that mean the operator was refused something it needs.
REFUSALS = ("Forbidden", "forbidden", "Failed to post an event", "APIForbiddenError")


def build(kustomization: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize`: the objects a kustomization produces, in its order."""
    return [doc for doc in yaml.safe_load_all(kubectl("kustomize", str(kustomization))) if doc]


def deploy(kustomization: Path = BASE) -> str:
    """`make deploy` (hack/deploy.sh) against the local cluster."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "deploy.sh"), str(kustomization)],
        env={**localcluster.tool_env(), "KUBECTL": str(localcluster.BIN / "kubectl")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise AssertionError(f"hack/deploy.sh failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def service_account_kubeconfig(
    path: Path, namespace: str = SYSTEM_NAMESPACE, account: str = SERVICE_ACCOUNT
) -> Path:
    """A kubeconfig for the local cluster that authenticates as a ServiceAccount (by
    default the operator's), with a token from the TokenRequest API."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration=2h").strip()
    return token_kubeconfig(path, account, token)


def token_kubeconfig(path: Path, account: str, token: str) -> Path:
    """A kubeconfig for the local cluster that authenticates with `token` only."""
    admin = yaml.safe_load(localcluster.KUBECONFIG.read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def can_i(verb: str, resource: str, namespace: str | None = None) -> bool:
    """`kubectl auth can-i` for the operator's ServiceAccount (impersonated by the admin).

    `resource` may name a subresource, "pods/exec" (not kubectl's TYPE/NAME)."""
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    if "/" in resource:
        resource, subresource = resource.split("/", 1)
        scope.append(f"--subresource={subresource}")
    result = subprocess.run(
        [str(localcluster.BIN / "kubectl"), "--kubeconfig", str(localcluster.KUBECONFIG),
         "auth", "can-i", verb, resource, f"--as={SUBJECT}", *scope],
        env=localcluster.tool_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    answer = result.stdout.strip()
    if answer not in ("yes", "no"):
        raise AssertionError(f"kubectl auth can-i {verb} {resource}: {result.stderr}")
    return answer == "yes"


def service_account_operator(
    log_path: Path, kubeconfig: Path, s3: S3Credentials, **settings: str
) -> OperatorProcess:
    """An `rspark-operator` process that acts as the ServiceAccount of the manifests."""
    env = operator_environment(s3, **settings)
    env["KUBECONFIG"] = str(kubeconfig)
    return OperatorProcess(log_path, env)


@contextmanager
def session_operator_stopped(session_operator: OperatorProcess) -> Iterator[None]:
    """Only one operator may act at a time: stop the session's, start it again after."""
    session_operator.stop()
    try:
        yield
    finally:
        session_operator.start()


def refusals(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(word in line for word in REFUSALS)]
