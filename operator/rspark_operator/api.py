"""The RStudioWorkspace API: its identity, spec and status models.

The models are the single source of the CRD schema (see `crd.py`): field
descriptions become `kubectl explain` text, defaults become API server defaults.
Validators that have no schema equivalent (marked "operator-only") are what the
operator reports as Ready=False, reason InvalidSpec.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from rspark_operator.contract import IDLE_QUIET, S3_CREDENTIAL_KEYS
from rspark_operator.ide import DEFAULT_IDE, IDES, OPERATOR_MANAGED_ENV, IdeName
from rspark_operator.idle import DEFAULT_IDLE_QUIET, SHORTEST_IDLE_QUIET
from rspark_operator.quantity import (
    DURATION_PATTERN,
    QUANTITY_PATTERN,
    SPARK_SIZE_HINT,
    SPARK_SIZE_PATTERN,
    parse_duration,
    parse_quantity,
    spark_size_bytes,
)

if TYPE_CHECKING:
    from rspark_operator.profiles import SparkProfile

GROUP = "rspark.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RStudioWorkspace"
PLURAL = "rstudioworkspaces"
SINGULAR = "rstudioworkspace"
SHORT_NAME = "rsw"
CATEGORY = "rspark"
# SparkProfile (profiles.py): cluster-scoped, in the same group and version.
PROFILE_KIND = "SparkProfile"
PROFILE_PLURAL = "sparkprofiles"
PROFILE_SINGULAR = "sparkprofile"
PROFILE_SHORT_NAME = "sprof"

Phase = Literal["Pending", "Restoring", "Running", "Suspended", "Idle", "Failed"]

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
RESTIC_ID_PATTERN = r"^[0-9a-f]{8,64}$"
# Safe inside the Ingress path regex, RStudio's www-root-path and Jupyter's base_url.
INGRESS_PATH_PATTERN = r"^/[A-Za-z0-9._~/-]*$"
# Derived names ("<name>-spark-driver" must be a DNS label; Spark limits the
# executor pod name prefix, which is the workspace name, to 47 characters).
WORKSPACE_NAME_MAX_LENGTH = 47
WORKSPACE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# Keys in spark-defaults.conf that wire the driver to this pod and namespace;
# a user value would break the workspace, so the operator refuses it.
OPERATOR_MANAGED_SPARK_KEYS = frozenset(
    {
        "spark.master",
        "spark.submit.deployMode",
        "spark.driver.host",
        "spark.driver.port",
        "spark.driver.bindAddress",
        "spark.blockManager.port",
        "spark.kubernetes.namespace",
        "spark.kubernetes.authenticate.driver.serviceAccountName",
        "spark.kubernetes.driver.pod.name",
        # The driver's and block manager's port ranges (builders.spark) and the
        # executor pod template the operator writes next to spark-defaults.conf.
        "spark.port.maxRetries",
        "spark.kubernetes.executor.podTemplateFile",
    }
)


def _quantity_text(value: object) -> object:
    # The API server keeps int-or-string as sent; the model works with text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if parse_quantity(value) < 0:
        raise ValueError(f"{value!r} must not be negative")
    return value


# Every quantity of the API (sizes, cpu, memory) is a count of something: no sign.
NONNEGATIVE_QUANTITY_PATTERN = QUANTITY_PATTERN.replace(r"^(\+|-)?", r"^\+?", 1)
Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": NONNEGATIVE_QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
DnsName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]


def _check_spark_size(value: str) -> str:
    spark_size_bytes(value)
    return value


# A size where Spark reads one (spark.executor.memory...): "4g" as Spark users write it,
# or "4Gi" (see quantity.SPARK_SIZE_PATTERN); checked by CEL for a readable message.
SparkSize = Annotated[
    str,
    AfterValidator(_check_spark_size),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 32,
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches('{SPARK_SIZE_PATTERN}')",
                    "message": f"must be a size {SPARK_SIZE_HINT}",
                }
            ],
        }
    ),
]


class ApiModel(BaseModel):
    """camelCase on the wire, unknown fields rejected, immutable once parsed."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # Like the API server: "yes" is not a boolean and "5" is not a number.
        strict=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _section(model: type[ApiModel], description: str) -> Any:
    """A nested object defaulting to {}: the API server then fills in its own defaults."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


def _default_requests() -> dict[str, str]:
    return {"cpu": "500m", "memory": "2Gi"}


def _default_limits() -> dict[str, str]:
    return {"memory": "4Gi"}


STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
RESOURCE_NAME_MESSAGE = (
    "resource names are cpu, memory, ephemeral-storage, hugepages-<size> "
    "or an extended resource with a domain (example.com/gpu)"
)
RESOURCE_NAME_RULE: JsonDict = {
    "rule": "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] "
    "|| k.startsWith('hugepages-') || k.contains('/'))",
    "message": RESOURCE_NAME_MESSAGE,
}


def _check_resource_names(resources: dict[str, str]) -> dict[str, str]:
    for name in resources:
        if not (name in STANDARD_RESOURCES or name.startswith("hugepages-") or "/" in name):
            raise ValueError(f"{name!r}: {RESOURCE_NAME_MESSAGE}")
    return resources


ResourceList = Annotated[dict[str, Quantity], AfterValidator(_check_resource_names)]


class ResourceRequirements(ApiModel):
    """Compute resources of the IDE container (the Spark driver runs in it).

    Defaults (requests cpu 500m, memory 2Gi; limits memory 4Gi) apply to each resource
    for which neither a request nor a limit is given."""

    requests: ResourceList = Field(
        default_factory=dict,
        max_length=16,
        description="Minimum resources reserved for the container, e.g. cpu: 500m, memory: 2Gi.",
        json_schema_extra={"x-kubernetes-validations": [RESOURCE_NAME_RULE]},
    )
    limits: ResourceList = Field(
        default_factory=dict,
        max_length=16,
        description="Maximum resources the container may use, e.g. memory: 4Gi.",
        json_schema_extra={"x-kubernetes-validations": [RESOURCE_NAME_RULE]},
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for resource, limit in self.limits.items():
            request = self.requests.get(resource)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                # operator-only: the pod would be refused; say it before building one.
                raise ValueError(
                    f"requests.{resource} ({request}) must not exceed limits.{resource} ({limit})"
                )
        return self

    def with_defaults(self) -> dict[str, dict[str, str]]:
        """The container's resources: the defaults for each resource left unset."""
        given = self.requests.keys() | self.limits.keys()
        return {
            "requests": {**_unset(_default_requests(), given), **self.requests},
            "limits": {**_unset(_default_limits(), given), **self.limits},
        }


def _unset(defaults: dict[str, str], given: Iterable[str]) -> dict[str, str]:
    return {name: value for name, value in defaults.items() if name not in given}


def _default_resources() -> ResourceRequirements:
    return ResourceRequirements(requests=_default_requests(), limits=_default_limits())


ENV_ONE_SOURCE: JsonDict = {
    "rule": "!has(self.value) || !has(self.valueFrom)",
    "message": "set value or valueFrom, not both",
}


class EnvVar(ApiModel):
    """An environment variable of the IDE container, as in a Pod."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [ENV_ONE_SOURCE]})

    name: str = Field(
        min_length=1, max_length=256, pattern=ENV_NAME_PATTERN, description="Name of the variable."
    )
    value: str | None = Field(default=None, description="Literal value of the variable.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Source of the value, as in a Pod's env[].valueFrom "
            "(secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."
        ),
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(str(ENV_ONE_SOURCE["message"]))
        return self


STORAGE_CLASS_IMMUTABLE: JsonDict = {
    "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && "
    "(!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
    "message": "storageClassName is immutable (the claim's storage class cannot change)",
}


class HomeSpec(ApiModel):
    """The persistent volume mounted as the user's home directory."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [STORAGE_CLASS_IMMUTABLE]}
    )

    size: Quantity = Field(
        default="10Gi",
        description="Size of the home volume. It may grow (if the storage class allows "
        "expansion) but never shrink.",
    )
    storage_class_name: DnsName | None = Field(
        default=None,
        description="Storage class of the home volume; defaults to the operator's setting, "
        "then to the cluster default. Immutable.",
    )

    @field_validator("size")
    @classmethod
    def _positive(cls, size: str) -> str:
        if parse_quantity(size) <= 0:
            raise ValueError(HOME_SIZE_POSITIVE_MESSAGE)
        return size


class RetentionSpec(ApiModel):
    """Which snapshots `restic forget --prune` keeps."""

    keep_last: int = Field(default=10, ge=0, description="Keep the last N snapshots.")
    keep_hourly: int = Field(default=24, ge=0, description="Keep the last snapshot of N hours.")
    keep_daily: int = Field(default=7, ge=0, description="Keep the last snapshot of N days.")
    keep_weekly: int = Field(default=4, ge=0, description="Keep the last snapshot of N weeks.")


class SnapshotSpec(ApiModel):
    """Continuous snapshots of the home to object storage, restored on every start."""

    enabled: bool = Field(
        default=True,
        description="Run the snapshot agent. When false the home lives only on its volume.",
    )
    interval: str = Field(
        default="5m",
        description="Time between snapshots, as a Go duration (30s, 5m, 1h30m).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches('{DURATION_PATTERN}') "
                    "&& duration(self) > duration('0s')",
                    "message": "interval must be a positive duration such as 30s, 5m or 1h30m",
                }
            ]
        },
    )
    retention: RetentionSpec = _section(RetentionSpec, "Which snapshots to keep.")
    repository: str | None = Field(
        default=None,
        min_length=1,
        description="restic repository URL (e.g. s3:https://s3.example.com/bucket/path); "
        "defaults to the operator's repository base followed by /<namespace>/<name>.",
    )
    credentials_secret: DnsName | None = Field(
        default=None,
        description="Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the "
        "repository; defaults to the operator's setting.",
    )
    exclude: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list,
        max_length=256,
        description="restic --exclude patterns, relative to the home directory.",
    )
    restore_from: str | None = Field(
        default=None,
        pattern=RESTIC_ID_PATTERN,
        description="Snapshot id (hex, 8 to 64 characters) to restore instead of the latest.",
    )

    @field_validator("interval")
    @classmethod
    def _positive_duration(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("interval must be a positive duration such as 30s, 5m or 1h30m")
        return value


HOME_SIZE_POSITIVE_MESSAGE = "home size must be greater than zero"

STOP_AFTER_MESSAGE = (
    f"stopAfter must be 0 (never) or a duration of at least {SHORTEST_IDLE_QUIET}, "
    "such as 30m, 2h or 1h30m"
)


def check_stop_after(value: str | None) -> str | None:
    """The API's rule: 0 or at least the shortest quiet time a platform may set (the
    platform's own quiet time is checked with its settings, `validation.py`)."""
    if value is None or value == "0":
        return value
    try:
        duration = parse_duration(value)
    except ValueError:
        raise ValueError(STOP_AFTER_MESSAGE) from None
    if duration and duration < parse_duration(SHORTEST_IDLE_QUIET):
        raise ValueError(STOP_AFTER_MESSAGE)
    return value


IDLE_NEEDS_AGENT_MESSAGE = (
    "spec.idle needs spec.snapshot.enabled: the snapshot agent tells whether the workspace "
    "is in use, and keeps its home while it is stopped"
)


def stop_after_duration(value: str) -> timedelta:
    """A valid stopAfter as a duration; zero means never."""
    return timedelta(0) if value == "0" else parse_duration(value)


def quiet_time_problem(stop_after: str, quiet_time: str) -> str | None:
    """Why a valid stopAfter does not fit a platform whose quiet time (RSPARK_IDLE_QUIET)
    is `quiet_time`: the agent would report the workspace idle only after it."""
    duration = stop_after_duration(stop_after)
    if not duration or duration >= parse_duration(quiet_time):
        return None
    return (
        f"stopAfter {stop_after} is shorter than this platform's quiet time ({quiet_time}): "
        f"a workspace counts as idle only after {quiet_time} without activity; use 0 (never) "
        f"or at least {quiet_time}"
    )


class IdleSpec(ApiModel):
    """Stopping the workspace when nobody uses it, and what it keeps meanwhile."""

    stop_after: Annotated[str | None, AfterValidator(check_stop_after)] = Field(
        default=None,
        max_length=32,
        description="Stop the pod after this long without activity (the IDE's own state, "
        "running R or kernels, Spark jobs, CPU use of the IDE), after a last snapshot; "
        "0: never; otherwise at least the platform's quiet time before a workspace counts "
        f"as idle ({IDLE_QUIET}, {DEFAULT_IDLE_QUIET} unless set; never under "
        f"{SHORTEST_IDLE_QUIET}). Defaults to the operator's setting "
        "(RSPARK_IDLE_STOP_AFTER). The phase is then Idle until a wake.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self == '0' || (self.matches('{DURATION_PATTERN}') && "
                    f"(duration(self) == duration('0s') || "
                    f"duration(self) >= duration('{SHORTEST_IDLE_QUIET}')))",
                    "message": STOP_AFTER_MESSAGE,
                }
            ]
        },
    )
    release_volume: bool = Field(
        default=False,
        description="While idle, delete the home volume once a snapshot taken after the IDE "
        "stopped is in object storage; the wake restores the home from it. Saves the "
        "volume's cost, makes the wake as slow as a restore.",
    )


def _check_home_relative(path: str) -> str:
    if path.startswith("/"):
        raise ValueError("secretPaths must be relative to the home directory")
    if ".." in path.split("/"):
        raise ValueError("secretPaths must not contain '..'")
    return path


HomeRelativePath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.startsWith('/')",
                    "message": "secretPaths must be relative to the home directory",
                },
                {
                    "rule": "!self.matches('(^|/)[.][.](/|$)')",
                    "message": "secretPaths must not contain '..'",
                },
            ]
        },
    ),
    AfterValidator(_check_home_relative),
]


def _check_image_reference(image: str | None) -> str | None:
    # operator-only: the kubelet would fail late with InvalidImageName.
    if image is not None and (not image or re.search(r"\s", image)):
        raise ValueError(f"image {image!r} is not a valid image reference")
    return image


# One property per line of spark-defaults.conf: a key or value that could break
# the line would smuggle in another property.
SPARK_KEY_PATTERN = r"^spark[.][A-Za-z0-9._-]+$"
_SPARK_KEY = re.compile(SPARK_KEY_PATTERN)
_LINE_BREAK = re.compile(r"[\r\n]")
SPARK_KEY_MESSAGE = "keys must be Spark properties (spark.<name>, letters, digits, . _ -)"
SPARK_VALUE_MESSAGE = "values must not contain line breaks"
SPARK_MANAGED_MESSAGE = "must not set operator-managed keys"
SPARK_VALUE_RULE: JsonDict = {
    "rule": "self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r'))",
    "message": SPARK_VALUE_MESSAGE,
}


S3_ENDPOINT_PATTERN = r"^https?://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?/?$"


class SparkS3Spec(ApiModel):
    """s3a:// from Spark: the credentials and, for a server other than AWS, its endpoint."""

    credentials_secret: DnsName | None = Field(
        default=None,
        description="Secret in the workspace's namespace holding AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY: the IDE gets them as variables; Spark hands them to its "
        "executors in the job's Hadoop configuration (no Secret on the executors). None: "
        "s3a's own providers (e.g. a cloud identity of the node).",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=512,
        pattern=S3_ENDPOINT_PATTERN,
        description="Endpoint of an S3-compatible server, e.g. http://minio.storage.svc:9000 "
        "(fs.s3a.endpoint); none: AWS.",
    )
    path_style_access: bool | None = Field(
        default=None,
        description="Buckets in the path, not the host name (fs.s3a.path.style.access); "
        "defaults to true with an endpoint, false without.",
    )


class SparkSpec(ApiModel):
    """Spark in client mode: the driver runs in the IDE's R or Python, executors are pods."""

    executor_image: Annotated[str | None, AfterValidator(_check_image_reference)] = Field(
        default=None,
        min_length=1,
        description="Image of the executor pods; defaults to the operator's setting. "
        "It must carry the same Spark version as the workspace image.",
    )
    profile: DnsName | None = Field(
        default=None,
        description="SparkProfile (cluster-wide, `kubectl get sparkprofiles`) that bounds and "
        "completes these values; defaults to the operator's setting. Switching profiles "
        "rewrites spark-defaults.conf without restarting the pod: the next Spark session "
        "uses it.",
    )
    max_executors: int | None = Field(
        default=None,
        ge=1,
        description="Upper bound of dynamic allocation (at least 1; for Spark without "
        "executors, connect with master local[*]); defaults to the profile's, else 4.",
    )
    executor_cores: int | None = Field(
        default=None, ge=1, description="Cores of each executor (spark.executor.cores)."
    )
    executor_memory: SparkSize | None = Field(
        default=None,
        description="Memory of each executor (spark.executor.memory), as Spark writes sizes "
        "(512m, 4g) or as a Kubernetes quantity (4Gi).",
    )
    driver_memory: SparkSize | None = Field(
        default=None,
        description="Memory of the driver's JVM in the workspace (spark.driver.memory), e.g. 2g; "
        "it must fit in the workspace's own memory limit.",
    )
    s3: SparkS3Spec | None = Field(
        default=None, description="s3a:// paths: credentials from a Secret you name, endpoint."
    )
    conf: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=128,
        description="Extra spark-defaults.conf properties; they win over the operator's, "
        "except the ones that connect the driver to this pod and namespace.",
        json_schema_extra={"x-kubernetes-validations": [SPARK_VALUE_RULE]},
    )

    @field_validator("conf")
    @classmethod
    def _valid_properties(cls, conf: dict[str, str]) -> dict[str, str]:
        # operator-only (the API server cannot afford rules over map keys).
        bad_keys = sorted(key for key in conf if not _SPARK_KEY.fullmatch(key))
        if bad_keys:
            raise ValueError(f"{SPARK_KEY_MESSAGE}: {', '.join(bad_keys)}")
        if any(_LINE_BREAK.search(value) for value in conf.values()):
            raise ValueError(SPARK_VALUE_MESSAGE)
        # The driver must stay reachable and in this namespace.
        managed = sorted(OPERATOR_MANAGED_SPARK_KEYS.intersection(conf))
        if managed:
            raise ValueError(f"{SPARK_MANAGED_MESSAGE}: {', '.join(managed)}")
        return conf


class IngressSpec(ApiModel):
    """How the workspace is reached from outside; unset fields come from the operator."""

    host: DnsName | None = Field(default=None, description="Host name of the workspace URL.")
    path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=INGRESS_PATH_PATTERN,
        description="Path prefix of the workspace URL, starting with '/'; the Ingress strips "
        "it for RStudio (told as its www-root-path); JupyterLab serves under it (base_url).",
    )
    class_name: DnsName | None = Field(default=None, description="IngressClass to use.")
    tls_secret_name: DnsName | None = Field(
        default=None, description="Secret with the TLS certificate for the host."
    )


MANAGED_ENV_MESSAGE = "must not set operator-managed variables"
MANAGED_ENV_RULE: JsonDict = {
    "rule": "self.all(e, !(e.name in [{}]))".format(
        ", ".join(f"'{name}'" for name in sorted(OPERATOR_MANAGED_ENV))
    ),
    "message": f"{MANAGED_ENV_MESSAGE} ({', '.join(sorted(OPERATOR_MANAGED_ENV))})",
}


# One person as the sign-in proxy names them: one line of its list, so no separator
# of that list (comma, white space) and no comment ('#').
Identity = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^,#\s]+$")]


class WorkspaceSpec(ApiModel):
    """Desired state of an RStudio or JupyterLab + Spark workspace."""

    user: str = Field(
        min_length=1,
        max_length=253,
        description="Identity of the owner, e.g. an e-mail address. Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "user is immutable"}
            ]
        },
    )
    access: list[Identity] = Field(
        default_factory=list,
        max_length=256,
        description="Other people who may use the workspace at its URL, named as spec.user "
        "is (the identity provider's claim the operator compares, e.g. their e-mail "
        "address). Only with the operator's sign-in proxy (RSPARK_SIGNIN=oidc); a change "
        "takes effect in the running pod, within a minute, without restarting it.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    ide: IdeName = Field(
        default=DEFAULT_IDE,
        description=f"The IDE of the workspace: {' or '.join(IDES)}. Changing it replaces "
        "the pod (after a last snapshot); the home stays.",
    )
    image: Annotated[str | None, AfterValidator(_check_image_reference)] = Field(
        default=None,
        description="Image of the IDE container; defaults to the operator's image for spec.ide.",
    )
    suspended: bool = Field(
        default=False,
        description="Stop the pod (after a last snapshot) but keep the home and everything else.",
    )
    resources: ResourceRequirements = Field(
        default_factory=_default_resources,
        description="Resources of the IDE container.",
        json_schema_extra={"default": _default_resources().wire()},
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=256,
        description="Extra environment variables of the IDE container.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [MANAGED_ENV_RULE],
        },
    )
    home: HomeSpec = _section(HomeSpec, "The home volume.")
    snapshot: SnapshotSpec = _section(SnapshotSpec, "Snapshots of the home to object storage.")
    secret_paths: list[HomeRelativePath] = Field(
        default_factory=lambda: [".ssh"],
        max_length=64,
        description="Home-relative paths kept in a per-workspace Secret, never in object storage.",
        json_schema_extra={"default": [".ssh"]},
    )
    spark: SparkSpec = _section(SparkSpec, "Spark executors started from the workspace.")
    idle: IdleSpec = _section(IdleSpec, "Stopping the workspace when it is idle.")
    ingress: IngressSpec = _section(IngressSpec, "External access to the IDE.")

    @model_validator(mode="after")
    def _idle_needs_the_agent(self) -> WorkspaceSpec:
        # operator-only: without the agent nothing tells whether the workspace is in use.
        idle = self.idle
        stops = idle.stop_after is not None and stop_after_duration(idle.stop_after) > timedelta(0)
        if (stops or idle.release_volume) and not self.snapshot.enabled:
            raise ValueError(IDLE_NEEDS_AGENT_MESSAGE)
        return self

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [var.name for var in env]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate entries for name: {', '.join(duplicates)}")
        # These wire the IDE to its user, password, URL and Spark configuration, or
        # would turn its authentication off.
        managed = sorted(OPERATOR_MANAGED_ENV.intersection(names))
        if managed:
            raise ValueError(f"{MANAGED_ENV_MESSAGE}: {', '.join(managed)}")
        return env

    @model_validator(mode="after")
    def _s3_credentials_once(self) -> WorkspaceSpec:
        # spec.spark.s3 sets the credentials' variables from its Secret.
        if self.spark.s3 is not None and self.spark.s3.credentials_secret is not None:
            both = sorted(set(S3_CREDENTIAL_KEYS).intersection(var.name for var in self.env))
            if both:
                raise ValueError(f"spec.spark.s3 sets {', '.join(both)}: remove it from spec.env")
        return self


class Condition(ApiModel):
    """A standard Kubernetes condition."""

    type: str = Field(description="Ready, HomeRestored, SnapshotHealthy or Idle.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason of the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: datetime = Field(
        strict=False, description="When the status last changed."
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition was computed from."
    )


class LastSnapshot(ApiModel):
    """The last successful snapshot, written by the snapshot agent."""

    time: datetime = Field(strict=False, description="When the snapshot finished.")
    id: str = Field(description="restic snapshot id.")
    bytes_added: int | None = Field(default=None, description="Bytes added to the repository.")
    duration_seconds: float | None = Field(default=None, description="How long it took.")
    final_at: datetime | None = Field(
        default=None,
        strict=False,
        description="Set by the last snapshot of a stopping pod, taken after the IDE "
        "exited: when it confirmed this snapshot holds the home as the IDE left it.",
    )


class SparkStatus(ApiModel):
    """How the workspace's Spark is configured now."""

    profile: str | None = Field(
        default=None, description="The SparkProfile in use (none: the workspace's own values)."
    )


class WorkspaceStatus(ApiModel):
    """Observed state of the workspace."""

    phase: Phase | None = Field(
        default=None, description="Pending, Restoring, Running, Suspended, Idle or Failed."
    )
    url: str | None = Field(default=None, description="Where the user reaches the IDE.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (operator), HomeRestored, SnapshotHealthy and Idle (snapshot agent).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation the status reflects."
    )
    last_snapshot: LastSnapshot | None = Field(default=None, description="The last snapshot.")
    pending_restart: bool | None = Field(
        default=None,
        description="The pod runs an older spec and will be replaced to apply the change.",
    )
    spark: SparkStatus | None = Field(default=None, description="Spark as configured now.")


@dataclass(frozen=True)
class Workspace:
    """One validated RStudioWorkspace: the only input the builders need."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: WorkspaceSpec
    # The SparkProfile in use (profiles.attach_profile), None without one.
    profile: SparkProfile | None = None
