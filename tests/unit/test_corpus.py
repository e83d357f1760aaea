"""The invalid corpus: the operator's models agree with the CRD, and say the right thing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rspark_operator.validation import InvalidSpecError, parse_workspace, transition_problems
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


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_operator_rejects_every_case(path: Path) -> None:
    case = load(path)
    if case["stage"] == "update":
        assert operator_verdict(case["base"]) is None
        old = parse_workspace(as_stored(case["base"]), settings())
        new = parse_workspace(as_stored(case["manifest"]), settings())
        problems = "; ".join(transition_problems(old.spec, new.spec))
    else:
        problems = operator_verdict(case["manifest"]) or ""
    assert problems, f"{path.stem}: the operator accepts what the CRD rejects"
    if case["caughtBy"] == "operator" or case["stage"] == "update":
        assert case["expect"] in problems
