"""The generated reference pages are fresh, complete, and say what the code does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from devtools import reference
from rspark_operator import crd, status
from rspark_operator.agent import reasons
from rspark_operator.agent.settings import AgentSettings
from rspark_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("path", list(reference.PAGES), ids=str)
def test_committed_page_is_the_generated_one(path: Path) -> None:
    render: Callable[[], str] = reference.PAGES[path]
    committed = reference.ROOT / path
    assert committed.exists() and committed.read_text() == render(), (
        f"{path} is stale: run `make docs`"
    )


def test_every_ready_reason_has_advice() -> None:
    expected = {str(reason) for reason in status.Reason} | status.CONTAINER_PROBLEMS
    assert set(status.ADVICE) == expected, "add the reason's Advice to status.ADVICE"


def test_every_agent_reason_has_advice() -> None:
    expected = reference.reason_constants(reference.AGENT_REASONS)
    assert set(reasons.ADVICE) == expected, "add the reason's Advice to agent/reasons.ADVICE"


def test_reason_constants_are_found_by_their_camel_case_value(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('A = "PodReady"\nB = "Suspended"\n_LOG = "kubectl logs"\nC = 3\n')
    assert reference.reason_constants(module) == {"PodReady", "Suspended"}


@pytest.mark.parametrize("model", [OperatorSettings, AgentSettings])
def test_every_setting_is_described(model: type[BaseModel]) -> None:
    assert not [name for name, info in model.model_fields.items() if not info.description]


def test_every_spec_field_has_a_variant_for_the_restart_table() -> None:
    fields = set(reference.leaf_fields(crd.spec_schema()))
    assert fields == set(reference.VARIANTS), "add the new field to reference.VARIANTS"


def test_restart_table_follows_the_builders() -> None:
    by_field = {change.field: change for change in reference.changes()}
    assert by_field["image"].pod.startswith("replaced")
    assert by_field["snapshot.interval"].pod.startswith("replaced")  # the agent's env
    assert by_field["suspended"].pod.startswith("stopped")
    assert by_field["user"].pod == by_field["home.storageClassName"].pod == "refused: immutable"
    assert by_field["home.size"].pod == "kept"
    assert "home volume" in by_field["home.size"].children
    assert by_field["spark.conf"].pod == "kept"
    assert "spark-defaults.conf" in by_field["spark.conf"].children


def test_cells_keep_placeholders_visible_and_code_intact() -> None:
    assert reference.cell("<base>/<name> `a|<b>`") == "&lt;base&gt;/&lt;name&gt; `a\\|<b>`"


def test_settings_env_lists_every_operator_setting() -> None:
    text = reference.settings_env()
    for name in OperatorSettings.model_fields:
        variable = reference.env_name(name)
        assert f"\n{variable}=" in text or f"\n# {variable}=" in text, variable


def test_every_chart_value_is_documented() -> None:
    text = (reference.ROOT / reference.CHART / "values.yaml").read_text()
    documented = reference.chart_values(text)
    assert not [value.path for value in documented if not value.description]

    def leaves(node: object, prefix: str = "") -> set[str]:
        if isinstance(node, dict) and node:
            return {leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")}
        return {prefix.rstrip(".")}

    assert {value.path for value in documented} == leaves(yaml.safe_load(text))


def test_chart_values_take_the_comment_just_above_each_leaf() -> None:
    text = "# header\n\n# Replicas.\nreplicas: 2\nimage:\n  # The tag.\n  tag: '1'\nbare: {}\n"
    assert reference.chart_values(text) == [
        reference.Value("replicas", "2", "Replicas."),
        reference.Value("image.tag", "'1'", "The tag."),
        reference.Value("bare", "{}", ""),
    ]
