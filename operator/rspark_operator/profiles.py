"""SparkProfile: the compute a platform team offers to workspaces, and its limits.

A cluster-scoped object of kind `kubernetes` (client mode, executors on this
cluster, sizes bounded) or `connect` (an existing Spark Connect server). The
models are the source of its CRD (see `crd.py`), like the workspace's. A
workspace names one in spec.spark.profile (default: RSPARK_DEFAULT_SPARK_PROFILE);
`attach_profile` reads it at the edge of the reconcile, and the builders get it
as a typed value on `Workspace.profile`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator
from pydantic.config import JsonDict

from rspark_operator.api import (
    DNS_SUBDOMAIN_PATTERN,
    GROUP,
    OPERATOR_MANAGED_SPARK_KEYS,
    PROFILE_KIND,
    SPARK_KEY_MESSAGE,
    SPARK_KEY_PATTERN,
    SPARK_MANAGED_MESSAGE,
    SPARK_VALUE_MESSAGE,
    SPARK_VALUE_RULE,
    VERSION,
    ApiModel,
    DnsName,
    SparkSize,
    Workspace,
)
from rspark_operator.quantity import spark_size_bytes
from rspark_operator.settings import OperatorSettings
from rspark_operator.status import Reason
from rspark_operator.validation import InvalidSpecError

# What a kubernetes profile decides for the workspace: its conf may not set these
# (spec.spark.maxExecutors, executorCores and executorMemory are bounded instead).
PROFILE_GOVERNED_SPARK_KEYS = frozenset(
    {
        "spark.executor.instances",
        "spark.executor.cores",
        "spark.executor.memory",
        "spark.dynamicAllocation.enabled",
        "spark.dynamicAllocation.maxExecutors",
        "spark.kubernetes.executor.request.cores",
        "spark.kubernetes.executor.limit.cores",
        "spark.kubernetes.scheduler.name",
    }
)
PROFILE_GOVERNED_PREFIXES = ("spark.kubernetes.node.selector.", "spark.kubernetes.executor.label.")

# Spark Connect's address: sc://host:port, optionally /;param=value;... (no token:
# that comes from tokenSecret). Parameters are printable ASCII but ';' and space
# ([!-:<-~]): no backslash, so the pattern reads the same in CEL and in Python.
CONNECT_ENDPOINT_PATTERN = (
    r"^sc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[0-9]{1,5}(/;[!-:<-~]+(;[!-:<-~]+)*)?$"
)
CONNECT_ENDPOINT_MESSAGE = (
    "endpoint must be sc://host:port (e.g. sc://spark-connect.spark.svc:15002), "
    "optionally followed by /;param=value"
)
CONNECT_TOKEN_MESSAGE = "the token comes from tokenSecret, never from the endpoint"
DEFAULT_WITHIN_MAX_MESSAGE = "default must not exceed max"
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
_CONNECT_ENDPOINT = re.compile(CONNECT_ENDPOINT_PATTERN)
_SPARK_KEY = re.compile(SPARK_KEY_PATTERN)


def _cel_bytes(field: str) -> str:
    """CEL: a Spark size (4g, 512m, 4Gi, 100b) as a quantity, to compare two sizes."""
    lower = f"self.{field}.lowerAscii()"
    spark_unit = (
        f"{lower}.replace('b', '').replace('k', 'Ki').replace('m', 'Mi')"
        ".replace('g', 'Gi').replace('t', 'Ti').replace('p', 'Pi')"
    )
    kubernetes = f"(self.{field}.endsWith('i') ? self.{field} : {lower}.replace('b', ''))"
    return f"quantity(self.{field}.matches('[kKmMgGtTpP][bB]?$') ? {spark_unit} : {kubernetes})"


def _within(rule: str) -> JsonDict:
    return {
        "x-kubernetes-validations": [
            {
                "rule": f"!has(self.default) || !has(self.max) || {rule}",
                "message": DEFAULT_WITHIN_MAX_MESSAGE,
            }
        ]
    }


class CountRange(ApiModel):
    """A count the workspace chooses: its default and the most it may ask for."""

    model_config = ConfigDict(json_schema_extra=_within("self.default <= self.max"))

    default: int | None = Field(default=None, ge=1, description="When the workspace sets none.")
    max: int | None = Field(default=None, ge=1, description="The most a workspace may set.")

    @model_validator(mode="after")
    def _default_within_max(self) -> CountRange:
        if self.default is not None and self.max is not None and self.default > self.max:
            raise ValueError(DEFAULT_WITHIN_MAX_MESSAGE)
        return self


class SizeRange(ApiModel):
    """A size the workspace chooses (512m, 4g, 4Gi): its default and the most it may ask for."""

    model_config = ConfigDict(
        json_schema_extra=_within(f"{_cel_bytes('default')}.compareTo({_cel_bytes('max')}) <= 0")
    )

    default: SparkSize | None = Field(default=None, description="When the workspace sets none.")
    max: SparkSize | None = Field(default=None, description="The most a workspace may set.")

    @model_validator(mode="after")
    def _default_within_max(self) -> SizeRange:
        if (
            self.default is not None
            and self.max is not None
            and spark_size_bytes(self.default) > spark_size_bytes(self.max)
        ):
            raise ValueError(DEFAULT_WITHIN_MAX_MESSAGE)
        return self


class Toleration(ApiModel):
    """A toleration of the executor pods, as in a Pod."""

    key: str | None = Field(default=None, max_length=317, description="Taint key; none: all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value (Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; none: all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class DynamicAllocation(ApiModel):
    """Executors come and go with the work; shuffle files are tracked (no shuffle service)."""

    enabled: bool = Field(
        default=True,
        description="Scale executors with the work up to the workspace's maxExecutors; "
        "when false, a session starts maxExecutors executors (spark.executor.instances).",
    )
    shuffle_tracking: bool = Field(
        default=True,
        description="Keep executors that hold shuffle files (Kubernetes has no external "
        "shuffle service).",
    )


# A profile's conf is small and written by the platform team: the API server checks its
# keys too (a workspace's conf keys are checked by the operator only).
PROFILE_CONF_KEYS_RULE: JsonDict = {
    "rule": f"self.all(k, k.matches('{SPARK_KEY_PATTERN}'))",
    "message": SPARK_KEY_MESSAGE,
}
PROFILE_CONF_MANAGED_RULE: JsonDict = {
    "rule": "self.all(k, !(k in [{}]))".format(
        ", ".join(f"'{key}'" for key in sorted(OPERATOR_MANAGED_SPARK_KEYS))
    ),
    "message": f"{SPARK_MANAGED_MESSAGE} ({', '.join(sorted(OPERATOR_MANAGED_SPARK_KEYS))})",
}
SparkConf = Annotated[
    dict[str, Annotated[str, Field(max_length=4096)]],
    Field(
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                PROFILE_CONF_KEYS_RULE,
                PROFILE_CONF_MANAGED_RULE,
                SPARK_VALUE_RULE,
            ]
        },
    ),
]
Labels = Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=32)]


class KubernetesProfile(ApiModel):
    """Client mode: the driver in the workspace, executor pods in its namespace."""

    executor_image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Image of the executors, unless the workspace sets spark.executorImage; "
        "else the operator's setting. Same Spark version as the workspace image.",
    )
    executors: CountRange = Field(
        default_factory=CountRange,
        description="Executors per Spark application (the workspace's spark.maxExecutors).",
        json_schema_extra={"default": {}},
    )
    executor_cores: CountRange = Field(
        default_factory=CountRange,
        description="Cores of each executor (spark.executor.cores, requested and limited "
        "to the same).",
        json_schema_extra={"default": {}},
    )
    executor_memory: SizeRange = Field(
        default_factory=SizeRange,
        description="Memory of each executor (spark.executor.memory).",
        json_schema_extra={"default": {}},
    )
    node_selector: Labels = Field(
        default_factory=dict, description="Node labels the executors must run on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=16, description="Taints the executors tolerate."
    )
    priority_class_name: DnsName | None = Field(
        default=None, description="PriorityClass of the executor pods."
    )
    scheduler_name: DnsName | None = Field(
        default=None,
        description="Scheduler of the executor pods (spark.kubernetes.scheduler.name), "
        "e.g. yunikorn or volcano.",
    )
    queue_labels: Labels = Field(
        default_factory=dict,
        description="Labels on the executor pods that choose the scheduler's queue, e.g. "
        "queue: root.analytics for YuniKorn.",
    )
    dynamic_allocation: DynamicAllocation = Field(
        default_factory=DynamicAllocation,
        description="Dynamic allocation, with shuffle tracking.",
        json_schema_extra={"default": {}},
    )
    conf: SparkConf = Field(
        default_factory=dict,
        description="Extra spark-defaults.conf properties (spark.*); a workspace's own conf "
        "wins over them, except where this profile governs a value.",
    )

    @field_validator("conf")
    @classmethod
    def _valid_properties(cls, conf: dict[str, str]) -> dict[str, str]:
        return check_profile_conf(conf)


def check_profile_conf(conf: Mapping[str, str]) -> dict[str, str]:
    """Spark properties only, one per line, none the operator manages."""
    bad_keys = sorted(key for key in conf if not _SPARK_KEY.fullmatch(key))
    if bad_keys:
        raise ValueError(f"{SPARK_KEY_MESSAGE}: {', '.join(bad_keys)}")
    if any("\n" in value or "\r" in value for value in conf.values()):
        raise ValueError(SPARK_VALUE_MESSAGE)
    managed = sorted(OPERATOR_MANAGED_SPARK_KEYS.intersection(conf))
    if managed:
        raise ValueError(f"{SPARK_MANAGED_MESSAGE}: {', '.join(managed)}")
    return dict(conf)


class SecretKey(ApiModel):
    """A key of a Secret in the workspace's namespace."""

    name: DnsName = Field(description="Name of the Secret.")
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in it."
    )


class ConnectProfile(ApiModel):
    """An existing Spark Connect server: every workspace using it shares its driver."""

    endpoint: str = Field(
        max_length=512,
        description="sc://host:port of the server (by convention port 15002).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches('{CONNECT_ENDPOINT_PATTERN}')",
                    "message": CONNECT_ENDPOINT_MESSAGE,
                },
                {"rule": "!self.contains('token=')", "message": CONNECT_TOKEN_MESSAGE},
            ]
        },
    )
    token_secret: SecretKey | None = Field(
        default=None,
        description="The server's pre-shared token (Spark 4.0 and later), from a Secret in "
        "the workspace's namespace.",
    )

    @field_validator("endpoint")
    @classmethod
    def _sc_url(cls, endpoint: str) -> str:
        if "token=" in endpoint:
            raise ValueError(CONNECT_TOKEN_MESSAGE)
        if not _CONNECT_ENDPOINT.fullmatch(endpoint):
            raise ValueError(CONNECT_ENDPOINT_MESSAGE)
        return endpoint


class LabelSelectorRequirement(ApiModel):
    """One requirement on a label, as in a Kubernetes label selector."""

    key: str = Field(max_length=317, pattern=LABEL_KEY_PATTERN, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=64, description="Values for In and NotIn."
    )


class LabelSelector(ApiModel):
    """Namespaces by their labels, as in a Kubernetes label selector."""

    match_labels: Labels = Field(default_factory=dict, description="Labels a namespace has.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Requirements a namespace meets."
    )


KIND_SECTIONS_RULES: list[JsonDict] = [
    {
        "rule": "self.kind != 'kubernetes' || (has(self.kubernetes) && !has(self.connect))",
        "message": "kind kubernetes takes a kubernetes section and no connect section",
    },
    {
        "rule": "self.kind != 'connect' || (has(self.connect) && !has(self.kubernetes))",
        "message": "kind connect takes a connect section and no kubernetes section",
    },
    {
        "rule": "!has(self.namespaces) || size(self.namespaces) == 0 "
        "|| !has(self.namespaceSelector)",
        "message": "set namespaces or namespaceSelector, not both",
    },
]


class SparkProfileSpec(ApiModel):
    """Compute offered to workspaces: executors on this cluster, or a Spark Connect server."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": list[JsonValue](KIND_SECTIONS_RULES)}
    )

    kind: Literal["kubernetes", "connect"] = Field(
        description="kubernetes: executor pods started by the workspace (client mode); "
        "connect: an existing Spark Connect server."
    )
    description: str | None = Field(
        default=None, max_length=1024, description="What this profile is for, for its users."
    )
    kubernetes: KubernetesProfile | None = Field(
        default=None, description="Executors and their limits (kind kubernetes)."
    )
    connect: ConnectProfile | None = Field(
        default=None, description="The Spark Connect server (kind connect)."
    )
    namespaces: list[Annotated[str, Field(max_length=63, pattern=DNS_SUBDOMAIN_PATTERN)]] = Field(
        default_factory=list,
        max_length=256,
        description="Namespaces whose workspaces may use the profile; with neither this nor "
        "namespaceSelector, every namespace may.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose workspaces may use the profile, by labels."
    )

    @model_validator(mode="after")
    def _sections_match_kind(self) -> SparkProfileSpec:
        kubernetes_rule, connect_rule, access_rule = KIND_SECTIONS_RULES
        if self.kind == "kubernetes" and (self.kubernetes is None or self.connect is not None):
            raise ValueError(str(kubernetes_rule["message"]))
        if self.kind == "connect" and (self.connect is None or self.kubernetes is not None):
            raise ValueError(str(connect_rule["message"]))
        if self.namespaces and self.namespace_selector is not None:
            raise ValueError(str(access_rule["message"]))
        return self


@dataclass(frozen=True)
class SparkProfile:
    """One validated SparkProfile."""

    name: str
    spec: SparkProfileSpec


class ProfileRefusal(InvalidSpecError):
    """The workspace's profile refuses it; `reason` is the Ready reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # one of status.SPARK_PROFILE_PROBLEMS


def parse_profile(body: Mapping[str, Any]) -> SparkProfile:
    """The validated profile, or Reason.SPARK_PROFILE_INVALID naming its problems (the CRD catches
    most; the rest, such as conf keys, only here)."""
    name = body["metadata"]["name"]
    try:
        return SparkProfile(name=name, spec=SparkProfileSpec.model_validate(body.get("spec") or {}))
    except ValidationError as error:
        problems = "; ".join(
            ".".join(str(part) for part in ("spec", *issue["loc"]))
            + f": {str(issue['msg']).removeprefix('Value error, ')}"
            for issue in error.errors()
        )
        raise ProfileRefusal(
            Reason.SPARK_PROFILE_INVALID, f"SparkProfile '{name}' is invalid: {problems}"
        ) from None


def limit_problems(ws: Workspace, profile: SparkProfile) -> list[str]:
    """The workspace's own values that exceed what its profile allows."""
    kubernetes, spark = profile.spec.kubernetes, ws.spec.spark
    if kubernetes is None:
        return []
    problems = []
    counts = (
        ("maxExecutors", spark.max_executors, kubernetes.executors.max),
        ("executorCores", spark.executor_cores, kubernetes.executor_cores.max),
    )
    for field, value, limit in counts:
        if value is not None and limit is not None and value > limit:
            problems.append(f"spec.spark.{field} {value} is more than {_allows(profile, limit)}")
    memory, memory_max = spark.executor_memory, kubernetes.executor_memory.max
    if (
        memory is not None
        and memory_max is not None
        and spark_size_bytes(memory) > spark_size_bytes(memory_max)
    ):
        problems.append(
            f"spec.spark.executorMemory {memory} is more than {_allows(profile, memory_max)}"
        )
    governed = sorted(key for key in spark.conf if governed_by_profile(key))
    if governed:
        problems.append(
            f"spec.spark.conf sets {', '.join(governed)}, which profile '{profile.name}' "
            "decides (use spec.spark.maxExecutors, executorCores and executorMemory)"
        )
    return problems


def _allows(profile: SparkProfile, limit: object) -> str:
    return f"profile '{profile.name}' allows ({limit})"


def governed_by_profile(key: str) -> bool:
    return key in PROFILE_GOVERNED_SPARK_KEYS or key.startswith(PROFILE_GOVERNED_PREFIXES)


def may_use(profile: SparkProfile, namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether workspaces of this namespace may use the profile."""
    spec = profile.spec
    if spec.namespaces:
        return namespace in spec.namespaces
    if spec.namespace_selector is not None:
        return selects(spec.namespace_selector, labels)
    return True


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions, ANDed)."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present, value = requirement.key in labels, labels.get(requirement.key)
        matched = {
            "In": present and value in requirement.values,
            "NotIn": not present or value not in requirement.values,
            "Exists": present,
            "DoesNotExist": not present,
        }[requirement.operator]
        if not matched:
            return False
    return True


def not_allowed_message(profile: SparkProfile, namespace: str) -> str:
    spec = profile.spec
    who = (
        f"namespaces {', '.join(spec.namespaces)}"
        if spec.namespaces
        else "namespaces its namespaceSelector selects"
    )
    return f"namespace '{namespace}' may not use profile '{profile.name}' (it allows {who})"


def profile_name(ws_profile: str | None, default: str | None) -> str | None:
    """The profile a workspace uses: its own choice, else the operator's default."""
    return ws_profile or default


def choose_profile(
    ws: Workspace,
    default: str | None,
    get_profile: Callable[[str], Mapping[str, Any] | None],
    namespace_labels: Callable[[], Mapping[str, str]],
) -> Workspace:
    """The workspace with its profile attached, or ProfileRefusal saying why it cannot be.

    A profile named by the workspace must exist; the operator's default may be missing
    (the workspace then uses its own values, as without profiles)."""
    name = profile_name(ws.spec.spark.profile, default)
    if name is None:
        return ws
    body = get_profile(name)
    if body is None:
        if ws.spec.spark.profile is None:
            return ws
        raise ProfileRefusal(
            Reason.SPARK_PROFILE_NOT_FOUND,
            f"spec.spark.profile: SparkProfile '{name}' does not exist "
            "(kubectl get sparkprofiles lists them)",
        )
    profile = parse_profile(body)
    needs_labels = not profile.spec.namespaces and profile.spec.namespace_selector is not None
    if not may_use(profile, ws.namespace, namespace_labels() if needs_labels else {}):
        raise ProfileRefusal(
            Reason.SPARK_PROFILE_NOT_ALLOWED, not_allowed_message(profile, ws.namespace)
        )
    problems = limit_problems(ws, profile)
    if problems:
        raise ProfileRefusal(Reason.SPARK_LIMIT_EXCEEDED, "; ".join(problems))
    return replace(ws, profile=profile)


def spark_status(ws: Workspace) -> dict[str, Any]:
    """status.spark: the profile in use."""
    return {"spark": {"profile": ws.profile.name}} if ws.profile else {}


class Reader(Protocol):
    """What attach_profile needs of the API client (kube.Kube): one read."""

    def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...


def attach_profile(kube: Reader, settings: OperatorSettings, ws: Workspace) -> Workspace:
    """The edge of the reconcile: read the profile (and, for a namespaceSelector, the
    namespace's labels) and attach it; ProfileRefusal when it refuses the workspace."""

    def namespace_labels() -> Mapping[str, str]:
        namespace = kube.get("v1", "Namespace", "", ws.namespace) or {}
        return dict((namespace.get("metadata") or {}).get("labels") or {})

    return choose_profile(
        ws,
        settings.default_spark_profile,
        lambda name: kube.get(f"{GROUP}/{VERSION}", PROFILE_KIND, "", name),
        namespace_labels,
    )
