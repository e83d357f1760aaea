"""SparkProfiles: their validation, the limits they set, and what a workspace under one gets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rspark_operator.api import Workspace, WorkspaceStatus
from rspark_operator.builders import build_children, build_pod
from rspark_operator.builders.network import build_spark_driver_service
from rspark_operator.builders.pod import pod_spec_hash
from rspark_operator.builders.policy import build_network_policy
from rspark_operator.builders.spark import (
    EXECUTOR_POD_TEMPLATE_FILE,
    SPARK_DEFAULTS_FILE,
    build_spark_config_map,
    executor_pod_template,
    profile_placement,
    spark_properties,
)
from rspark_operator.crd import profile_custom_resource_definition
from rspark_operator.profiles import (
    ProfileRefusal,
    SparkProfile,
    SparkProfileSpec,
    choose_profile,
    parse_profile,
    selects,
    spark_status,
)
from rspark_operator.quantity import spark_mebibytes, spark_size_bytes
from rspark_operator.status import (
    Observed,
    Reason,
    assess,
)
from rspark_operator.validation import InvalidSpecError
from tests.unit.test_corpus import crd_rule_messages
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
CORPUS = ROOT / "tests" / "corpus" / "invalid-profiles"
CASES = sorted(CORPUS.glob("*.yaml"))
SAMPLES = ROOT / "manifests" / "samples" / "sparkprofiles.yaml"

SMALL: dict[str, Any] = {
    "kind": "kubernetes",
    "kubernetes": {
        "executors": {"default": 2, "max": 4},
        "executorCores": {"default": 1, "max": 2},
        "executorMemory": {"default": "2g", "max": "4g"},
    },
}
LARGE: dict[str, Any] = {
    "kind": "kubernetes",
    "namespaces": ["team"],
    "kubernetes": {
        "executorImage": "registry.example/spark:large",
        "executors": {"default": 8, "max": 32},
        "executorCores": {"default": 4, "max": 8},
        "executorMemory": {"default": "16g", "max": "64g"},
        "nodeSelector": {"node.example/pool": "spark"},
        "tolerations": [{"key": "spark", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "batch",
        "schedulerName": "yunikorn",
        "queueLabels": {"queue": "root.analytics"},
        "conf": {"spark.sql.shuffle.partitions": "400", "spark.sql.adaptive.enabled": "true"},
    },
}
CONNECT: dict[str, Any] = {
    "kind": "connect",
    "connect": {
        "endpoint": "sc://spark-connect.spark.svc:15002",
        "tokenSecret": {"name": "spark-connect", "key": "token"},
    },
}


def profile(name: str, spec: dict[str, Any]) -> SparkProfile:
    return SparkProfile(name=name, spec=SparkProfileSpec.model_validate(spec))


def under(ws: Workspace, name: str, spec: dict[str, Any]) -> Workspace:
    return replace(ws, profile=profile(name, spec))


def body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def chosen(ws: Workspace, profiles: dict[str, dict[str, Any]], **kwargs: Any) -> Workspace:
    """choose_profile over these stored profiles (by name) and namespace labels."""
    labels: dict[str, str] = kwargs.pop("labels", {})
    return choose_profile(
        ws,
        kwargs.pop("default", None),
        lambda name: body(name, profiles[name]) if name in profiles else None,
        lambda: labels,
    )


def refusal(ws: Workspace, profiles: dict[str, dict[str, Any]], **kwargs: Any) -> ProfileRefusal:
    with pytest.raises(ProfileRefusal) as refused:
        chosen(ws, profiles, **kwargs)
    return refused.value


# --- sizes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "mebibytes"),
    [
        ("4g", "4096m"),
        ("4G", "4096m"),
        ("4gb", "4096m"),
        ("4Gi", "4096m"),
        ("512m", "512m"),
        ("512M", "512m"),
        ("512Mi", "512m"),
        ("1t", "1048576m"),
        ("1.5g", "1536m"),
        ("2048k", "2m"),
        ("1000k", "1m"),  # rounded up to whole mebibytes
        ("1048576b", "1m"),
    ],
)
def test_spark_sizes_and_quantities_normalise_to_mebibytes(size: str, mebibytes: str) -> None:
    assert spark_mebibytes(size) == mebibytes


@pytest.mark.parametrize("size", ["4096", "4 GB", "4GiB", "-1g", "g", "4Gb ", "1e3", "4gi"])
def test_what_is_not_a_size_is_refused_with_a_clear_message(size: str) -> None:
    with pytest.raises(ValueError, match="must be a size as Spark writes it"):
        spark_size_bytes(size)


def test_workspace_sizes_accept_spark_notation_and_say_clearly_what_is_wrong() -> None:
    ws = workspace(spark={"executorMemory": "4g", "driverMemory": "512m"})
    assert ws.spec.spark.executor_memory == "4g"
    with pytest.raises(ValidationError, match="'2 GB': must be a size as Spark writes it"):
        workspace(spark={"executorMemory": "2 GB"})


# --- the profile API --------------------------------------------------------------


def test_samples_are_valid_profiles() -> None:
    samples = list(yaml.safe_load_all(SAMPLES.read_text()))
    assert {s["spec"]["kind"] for s in samples} == {"kubernetes", "connect"}
    for sample in samples:
        assert sample["kind"] == "SparkProfile"
        parse_profile(sample)


def test_the_profile_corpus_is_well_formed() -> None:
    assert len(CASES) >= 15
    for path in CASES:
        case = yaml.safe_load(path.read_text())
        assert path.read_text().startswith("# "), path
        assert (case["stage"], case["caughtBy"]) == ("create", "apiserver"), path
        assert case["manifest"]["kind"] == "SparkProfile", path


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_the_models_refuse_every_invalid_profile(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    with pytest.raises(ProfileRefusal) as refused:
        parse_profile(case["manifest"])
    assert refused.value.reason == Reason.SPARK_PROFILE_INVALID
    rules = crd_rule_messages(profile_custom_resource_definition())
    if any(case["expect"] in message for message in rules):
        # A CEL rule: the models say it in the same words.
        assert case["expect"] in str(refused.value)


# --- limits and access ------------------------------------------------------------


def test_a_value_beyond_the_profile_is_refused_naming_the_limit_and_the_profile() -> None:
    ws = workspace(spark={"profile": "small", "executorMemory": "16g"})
    refused = refusal(ws, {"small": SMALL})
    assert refused.reason == Reason.SPARK_LIMIT_EXCEEDED
    assert str(refused) == "spec.spark.executorMemory 16g is more than profile 'small' allows (4g)"


def test_every_exceeded_limit_is_named() -> None:
    ws = workspace(spark={"profile": "small", "maxExecutors": 5, "executorCores": 3})
    assert str(refusal(ws, {"small": SMALL})) == (
        "spec.spark.maxExecutors 5 is more than profile 'small' allows (4); "
        "spec.spark.executorCores 3 is more than profile 'small' allows (2)"
    )


def test_sizes_are_compared_across_notations() -> None:
    within = workspace(spark={"profile": "small", "executorMemory": "4096Mi"})
    assert chosen(within, {"small": SMALL}).profile is not None
    beyond = workspace(spark={"profile": "small", "executorMemory": "4097m"})
    assert refusal(beyond, {"small": SMALL}).reason == Reason.SPARK_LIMIT_EXCEEDED


def test_the_workspace_conf_cannot_get_around_the_profile() -> None:
    ws = workspace(spark={"profile": "small", "conf": {"spark.executor.memory": "64g"}})
    refused = refusal(ws, {"small": SMALL})
    assert refused.reason == Reason.SPARK_LIMIT_EXCEEDED
    assert "spark.executor.memory, which profile 'small' decides" in str(refused)


def test_a_namespace_outside_the_list_may_not_use_the_profile() -> None:
    ws = workspace(namespace="team-b", spark={"profile": "large"})
    refused = refusal(ws, {"large": LARGE})
    assert refused.reason == Reason.SPARK_PROFILE_NOT_ALLOWED
    assert (
        str(refused) == "namespace 'team-b' may not use profile 'large' (it allows namespaces team)"
    )


def test_a_namespace_selector_decides_by_the_namespace_labels() -> None:
    spec = {**SMALL, "namespaceSelector": {"matchLabels": {"tier": "prod"}}}
    ws = workspace(spark={"profile": "prod"})
    assert chosen(ws, {"prod": spec}, labels={"tier": "prod"}).profile is not None
    assert (
        refusal(ws, {"prod": spec}, labels={"tier": "dev"}).reason
        == Reason.SPARK_PROFILE_NOT_ALLOWED
    )


@pytest.mark.parametrize(
    ("expressions", "labels", "expected"),
    [
        ([{"key": "tier", "operator": "In", "values": ["a", "b"]}], {"tier": "b"}, True),
        ([{"key": "tier", "operator": "In", "values": ["a"]}], {}, False),
        ([{"key": "tier", "operator": "NotIn", "values": ["a"]}], {}, True),
        ([{"key": "tier", "operator": "NotIn", "values": ["a"]}], {"tier": "a"}, False),
        ([{"key": "gpu", "operator": "Exists"}], {"gpu": ""}, True),
        ([{"key": "gpu", "operator": "DoesNotExist"}], {"gpu": ""}, False),
    ],
)
def test_label_selector_semantics(
    expressions: list[dict[str, Any]], labels: dict[str, str], expected: bool
) -> None:
    selector = SparkProfileSpec.model_validate(
        {**SMALL, "namespaceSelector": {"matchExpressions": expressions}}
    ).namespace_selector
    assert selector is not None
    assert selects(selector, labels) is expected


def test_a_named_profile_must_exist_the_default_need_not() -> None:
    named = workspace(spark={"profile": "gone"})
    refused = refusal(named, {})
    assert refused.reason == Reason.SPARK_PROFILE_NOT_FOUND
    assert "SparkProfile 'gone' does not exist" in str(refused)
    unnamed = workspace()
    assert chosen(unnamed, {}, default="gone") == unnamed
    assert chosen(unnamed, {"small": SMALL}, default="small").profile == profile("small", SMALL)
    assert chosen(unnamed, {"small": SMALL}).profile is None


def test_a_stored_profile_the_models_refuse_refuses_its_workspaces() -> None:
    bad = {**SMALL, "kubernetes": {"conf": {"not.spark": "x"}}}
    refused = refusal(workspace(spark={"profile": "bad"}), {"bad": bad})
    assert refused.reason == Reason.SPARK_PROFILE_INVALID
    assert "SparkProfile 'bad' is invalid" in str(refused)


def test_a_refusal_is_the_ready_reason() -> None:
    refused = refusal(workspace(spark={"profile": "gone"}), {})
    assert isinstance(refused, InvalidSpecError)
    verdict = assess(False, Observed(invalid_spec=str(refused), invalid_reason=refused.reason), [])
    assert verdict == ("Failed", Reason.SPARK_PROFILE_NOT_FOUND, str(refused))
    assert assess(False, Observed(invalid_spec="bad"), [])[1] == Reason.INVALID_SPEC


def test_status_shows_the_profile_in_use() -> None:
    status = spark_status(under(workspace(), "small", SMALL))
    assert status == {"spark": {"profile": "small"}}
    assert WorkspaceStatus.model_validate(status).wire()["spark"] == status["spark"]  # in the CRD
    assert spark_status(workspace()) == {}


# --- what a workspace under a profile gets ----------------------------------------


def test_profile_defaults_size_the_executors_and_their_requests() -> None:
    conf = spark_properties(under(workspace(), "small", SMALL), settings())
    assert (
        conf.items()
        >= {
            "spark.dynamicAllocation.enabled": "true",
            "spark.dynamicAllocation.shuffleTracking.enabled": "true",
            "spark.dynamicAllocation.maxExecutors": "2",
            "spark.executor.cores": "1",
            "spark.kubernetes.executor.request.cores": "1",
            "spark.kubernetes.executor.limit.cores": "1",
            "spark.executor.memory": "2048m",
        }.items()
    )


def test_the_workspace_values_win_within_the_limits() -> None:
    ws = workspace(spark={"maxExecutors": 3, "executorCores": 2, "executorMemory": "3g"})
    conf = spark_properties(under(ws, "small", SMALL), settings())
    assert conf["spark.dynamicAllocation.maxExecutors"] == "3"
    assert conf["spark.kubernetes.executor.request.cores"] == "2"
    assert conf["spark.executor.memory"] == "3072m"


def test_without_a_profile_the_configuration_is_as_before() -> None:
    conf = spark_properties(workspace(), settings())
    assert conf["spark.dynamicAllocation.maxExecutors"] == "4"
    assert not [key for key in conf if "request.cores" in key or "node.selector" in key]
    assert "spark.kubernetes.executor.podTemplateFile" not in conf


def test_placement_scheduler_queue_image_and_conf_of_the_profile() -> None:
    ws = workspace(spark={"conf": {"spark.sql.shuffle.partitions": "8"}})
    ws = under(ws, "large", LARGE)
    conf = spark_properties(ws, settings())
    assert (
        conf.items()
        >= {
            "spark.kubernetes.node.selector.node.example/pool": "spark",
            "spark.kubernetes.scheduler.name": "yunikorn",
            "spark.kubernetes.executor.label.queue": "root.analytics",
            "spark.kubernetes.container.image": "registry.example/spark:large",
            "spark.kubernetes.executor.podTemplateFile": (
                f"/opt/spark/conf/{EXECUTOR_POD_TEMPLATE_FILE}"
            ),
            "spark.sql.adaptive.enabled": "true",
            "spark.sql.shuffle.partitions": "8",  # the workspace's own conf wins
        }.items()
    )
    data = build_spark_config_map(ws, settings())["data"]
    template = yaml.safe_load(data[EXECUTOR_POD_TEMPLATE_FILE])
    assert template == {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {
            "tolerations": [{"key": "spark", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "batch",
        },
    }
    assert template == executor_pod_template(profile_placement(ws))


def test_dynamic_allocation_can_be_turned_off_for_a_fixed_number_of_executors() -> None:
    spec = {**SMALL, "kubernetes": {**SMALL["kubernetes"], "dynamicAllocation": {"enabled": False}}}
    conf = spark_properties(under(workspace(), "fixed", spec), settings())
    assert conf["spark.dynamicAllocation.enabled"] == "false"
    assert conf["spark.executor.instances"] == "2"
    assert "spark.dynamicAllocation.maxExecutors" not in conf


def test_a_connect_profile_points_spark_at_the_server_and_nothing_of_client_mode() -> None:
    ws = under(workspace(spark={"conf": {"spark.sql.ansi.enabled": "true"}}), "shared", CONNECT)
    conf = spark_properties(ws, settings())
    assert conf == {
        "spark.remote": "sc://spark-connect.spark.svc:15002",
        "spark.sql.ansi.enabled": "true",
    }


@pytest.mark.parametrize(
    ("before", "after"),
    [(None, ("small", SMALL)), (("small", SMALL), ("large", LARGE)), (("large", LARGE), None)],
)
def test_switching_profile_rewrites_the_spark_configuration_and_keeps_the_pod(
    before: tuple[str, dict[str, Any]] | None, after: tuple[str, dict[str, Any]] | None
) -> None:
    base = workspace()
    old = under(base, *before) if before else base
    new = under(base, *after) if after else base
    old_pod, new_pod = build_pod(old, settings()), build_pod(new, settings())
    assert pod_spec_hash(old_pod) == pod_spec_hash(new_pod)
    assert old_pod == new_pod
    old_children, new_children = build_children(old, settings()), build_children(new, settings())
    changed = [a["kind"] for a, b in zip(old_children, new_children, strict=True) if a != b]
    assert changed == ["ConfigMap"]
    old_conf = build_spark_config_map(old, settings())["data"][SPARK_DEFAULTS_FILE]
    assert old_conf != build_spark_config_map(new, settings())["data"][SPARK_DEFAULTS_FILE]


# --- several Spark applications in one session ------------------------------------


def test_service_policy_and_conf_agree_on_the_port_ranges() -> None:
    ws = workspace()
    conf = spark_properties(ws, settings())
    retries = int(conf["spark.port.maxRetries"])
    wanted = {
        name: set(range(int(conf[key]), int(conf[key]) + retries + 1))
        for name, key in [
            ("driver", "spark.driver.port"),
            ("blockmgr", "spark.blockManager.port"),
            ("ui", "spark.ui.port"),
        ]
    }
    assert retries >= 1  # a second spark_connect() has a port to move to
    assert not wanted["driver"] & wanted["blockmgr"]  # a retry never takes the other's port
    service_ports = {p["port"] for p in build_spark_driver_service(ws)["spec"]["ports"]}
    assert service_ports == wanted["driver"] | wanted["blockmgr"] | wanted["ui"]
    policy = build_network_policy(ws, settings())
    (executors,) = [r for r in policy["spec"]["ingress"] if "podSelector" in r["from"][0]]
    allowed = {
        port
        for p in executors["ports"]
        for port in range(p["port"], p.get("endPort", p["port"]) + 1)
    }
    assert allowed == wanted["driver"] | wanted["blockmgr"]
