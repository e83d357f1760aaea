"""The pure modules stay pure: no kopf, no Kubernetes client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rspark_operator

pytestmark = pytest.mark.unit

PACKAGE = Path(rspark_operator.__file__).parent
PURE = [
    "api",
    "ide",
    "builders",
    "status",
    "lifecycle",
    "settings",
    "crd",
    "names",
    "conditions",
    "quantity",
    "validation",
    "cluster",
    "contract",
    "peering",
    "resync",
    "indexes",
    "rollout",
    "metrics",
    "idle",
    "waker",
]
FORBIDDEN = {"kopf", "kubernetes"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def module_files(name: str) -> list[Path]:
    package = PACKAGE / name
    return sorted(package.rglob("*.py")) if package.is_dir() else [PACKAGE / f"{name}.py"]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_neither_kopf_nor_kubernetes(module: str) -> None:
    files = module_files(module)
    assert files and all(path.exists() for path in files)
    for path in files:
        assert not imported_roots(path) & FORBIDDEN, path
