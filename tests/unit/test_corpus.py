"""The invalid corpus: the operator's models agree with the CRD, and say the right thing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rspark_operator.crd import custom_resource_definition
from rspark_operator.validation import InvalidSpecError, parse_workspace
from tests.unit.workspaces import settings

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).parents[1] / "corpus" / "invalid"
CASES = sorted(CORPUS.glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load(path.read_text())
    return case


def as_stored(manifest: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "metadata": {"namespace": "team", "uid": "uid", **manifest["metadata"]}}


def operator_verdict(manifest: dict[str, Any]) -> str | None:
    """The InvalidSpec message the operator would set, or None if it accepts."""
    try:
        parse_workspace(as_stored(manifest), settings())
    except InvalidSpecError as error:
        return str(error)
    return None


def test_the_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 22
    for path in CASES:
        case = load(path)
        assert path.read_text().startswith("# "), path
        assert case["stage"] in ("create", "update"), path
        assert case["caughtBy"] in ("apiserver", "operator"), path
        assert case["expect"], path
        assert ("base" in case) == (case["stage"] == "update"), path
        assert case["manifest"]["kind"] == "RStudioWorkspace", path


def crd_rule_messages(node: Any) -> list[str]:
    """Every x-kubernetes-validations message of the generated CRD."""
    if isinstance(node, list):
        return [message for item in node for message in crd_rule_messages(item)]
    if not isinstance(node, dict):
        return []
    own = [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    return own + [message for value in node.values() for message in crd_rule_messages(value)]


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_operator_rejects_every_case(path: Path) -> None:
    case = load(path)
    if case["stage"] == "update":
        # Both sides are valid on their own: only a CRD transition rule can refuse the change.
        assert operator_verdict(case["base"]) is None
        assert operator_verdict(case["manifest"]) is None
        messages = crd_rule_messages(custom_resource_definition())
        assert any(case["expect"] in message for message in messages), path.stem
        return
    problems = operator_verdict(case["manifest"])
    assert problems, f"{path.stem}: the operator accepts what the CRD rejects"
    if case["caughtBy"] == "operator":
        assert case["expect"] in problems
