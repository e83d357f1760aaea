"""SparkProfiles as a platform team writes them: applied with kubectl, under names unique
to a test, deleted after it (the `profiles` fixture of tests/integration/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import yaml

from devtools.localcluster import kubectl
from rspark_operator.api import GROUP, PROFILE_KIND, PROFILE_PLURAL, VERSION

# Create a profile from a base name and its spec; the answer is its unique name.
Profiles = Callable[[str, dict[str, Any]], str]


def apply(manifest: dict[str, Any]) -> None:
    """What a platform team does: kubectl apply --server-side."""
    kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest))


def profile_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": PROFILE_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def unique_profiles() -> Iterator[Profiles]:
    """Create SparkProfiles under names unique to the caller; delete them afterwards."""
    created: list[str] = []

    def create(name: str, spec: dict[str, Any]) -> str:
        unique = f"{name}-{uuid.uuid4().hex[:5]}"
        apply(profile_manifest(unique, spec))
        created.append(unique)
        return unique

    yield create
    for name in created:
        kubectl("delete", PROFILE_PLURAL, name, "--ignore-not-found")
