"""The pod/agent contract: the names the pod builder sets are the ones the agent reads."""

from __future__ import annotations

import json

import pytest

from rspark_operator import contract
from rspark_operator.agent.settings import AgentSettings
from rspark_operator.api import RetentionSpec
from rspark_operator.builders.pod import agent_env
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit


def test_every_agent_variable_is_an_agent_setting() -> None:
    for variable in contract.AGENT_VARIABLES:
        assert contract.setting_name(variable) in AgentSettings.model_fields, variable


def test_the_agent_reads_what_the_pod_sets() -> None:
    env = {
        var["name"]: var["value"]
        for var in agent_env(workspace(snapshot={"restoreFrom": "0123abcd"}), settings())
        if "value" in var
    }
    ours = {name: value for name, value in env.items() if name.startswith(contract.ENV_PREFIX)}
    assert set(ours) == set(contract.AGENT_VARIABLES)
    parsed = AgentSettings(**{contract.setting_name(k): v for k, v in ours.items()})
    assert parsed.workspace == "team/demo"
    assert parsed.restore_from == "0123abcd"
    assert parsed.retention == json.loads(env[contract.RETENTION])


def test_retention_keys_are_the_spec_fields() -> None:
    assert tuple(RetentionSpec().wire()) == contract.RETENTION_KEYS
