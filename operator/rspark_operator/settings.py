"""Operator configuration, read once at start from RSPARK_* environment variables."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from typing import Annotated, Literal

from pydantic import (
    Field,
    IPvAnyNetwork,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from rspark_operator.api import (
    DNS_SUBDOMAIN_PATTERN,
    INGRESS_PATH_PATTERN,
    ApiModel,
    check_stop_after,
    quiet_time_problem,
)
from rspark_operator.idle import DEFAULT_IDLE_QUIET, SHORTEST_IDLE_QUIET
from rspark_operator.quantity import parse_duration

ENV_PREFIX = "RSPARK_"
# Sample values that fill the URL templates when they are checked at start.
_TEMPLATE_SAMPLE = {"name": "workspace", "namespace": "team-a", "domain": "example.com"}
_DNS_NAME = re.compile(DNS_SUBDOMAIN_PATTERN)
_INGRESS_PATH = re.compile(INGRESS_PATH_PATTERN)
# The name part of a label key, and a label value when not empty.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


OptionalName = Annotated[str | None, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]


def _is_label(key: str, value: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return (
        (not prefix or (len(prefix) <= 253 and bool(_DNS_NAME.fullmatch(prefix))))
        and bool(_LABEL_NAME.fullmatch(name))
        and (not value or bool(_LABEL_NAME.fullmatch(value)))
    )


class Toleration(ApiModel):
    """A toleration as in a Pod, checked the way the API server checks it."""

    key: str | None = Field(default=None, min_length=1)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.key is not None and not _is_label(self.key, ""):
            raise ValueError(f"key {self.key!r} is not a label key")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must have operator Exists")
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists must not have a value")
        if self.value and not _LABEL_NAME.fullmatch(self.value):
            raise ValueError(f"value {self.value!r} is not a label value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self


class SettingsError(Exception):
    """Bad operator configuration; the message names every bad variable."""


class OperatorSettings(BaseSettings):
    """Cluster-wide defaults; a workspace's spec wins where it sets a value."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    workspace_image: str = Field(
        default="ghcr.io/rspark-dev/rstudio:0.1.0",
        min_length=1,
        description="RStudio image: the IDE of workspaces with spec.ide rstudio.",
    )
    jupyterlab_image: str = Field(
        default="ghcr.io/rspark-dev/jupyterlab:0.1.0",
        min_length=1,
        description="JupyterLab image: the IDE of workspaces with spec.ide jupyterlab.",
    )
    agent_image: str = Field(
        default="ghcr.io/rspark-dev/agent:0.1.0",
        min_length=1,
        description="Image of the snapshot agent sidecar (runs `rspark-agent`).",
    )
    spark_executor_image: str = Field(
        default="ghcr.io/rspark-dev/spark:0.1.0",
        min_length=1,
        description="Spark executor image; same Spark version as the workspace image.",
    )
    ingress_mode: Literal["host", "path"] = Field(
        default="host",
        description="host: one host per workspace from the host template; "
        "path: every workspace under the path template on the host ingress_domain.",
    )
    ingress_domain: str = Field(
        default="rspark.localhost",
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="The {domain} of the host template; in path mode the one shared host.",
    )
    ingress_host_template: str = Field(
        default="{name}-{namespace}.{domain}",
        description="Workspace host in host mode; placeholders {name}, {namespace}, {domain}.",
    )
    ingress_path_template: str = Field(
        default="/{namespace}/{name}/",
        description="Workspace path prefix in path mode; placeholders {name}, {namespace}.",
    )
    ingress_class: OptionalName = Field(default=None, description="IngressClass of workspaces.")
    ingress_tls_secret: OptionalName = Field(
        default=None, description="TLS Secret for workspace hosts; URLs are https when set."
    )
    snapshot_repository_base: str | None = Field(
        default=None,
        min_length=1,
        description="restic repository base, e.g. s3:http://s3.example:8333/rspark; "
        "a workspace's repository is <base>/<namespace>/<name>. Required for snapshots "
        "unless every workspace sets spec.snapshot.repository.",
    )
    snapshot_credentials_secret: str = Field(
        default="rspark-s3-credentials",
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Secret (in the workspace namespace) with AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY.",
    )
    snapshot_mode: Literal["direct", "gateway"] = Field(
        default="gateway",
        description="How workspace agents reach the bucket. gateway (the default): through "
        "the snapshot gateway that manifests/base installs in the operator's namespace "
        "(rclone serve restic --private-repos --append-only, RSPARK_SNAPSHOT_GATEWAY_URL): "
        "each workspace gets its own credential, reaching only its own repository and "
        "unable to delete snapshots; no bucket key is in any workspace namespace, and "
        "retention runs where the gateway runs (rspark-agent retention). direct, for "
        "single-user installs only (manifests/components/snapshot-direct): the agent uses "
        "the bucket-wide key of RSPARK_SNAPSHOT_CREDENTIALS_SECRET, so whoever may read "
        "Secrets or create pods in a workspace namespace can read and delete every home of "
        "the bucket.",
    )
    snapshot_gateway_url: str | None = Field(
        default="http://rspark-snapshot-gateway.rspark-system.svc:8000",
        validate_default=True,
        description="The snapshot gateway as workspace pods reach it: the Service of "
        "manifests/base by default. Required with RSPARK_SNAPSHOT_MODE=gateway; a "
        "workspace's repository is <url>/<namespace>.<name>/.",
    )
    snapshot_gateway_namespace: str = Field(
        default="rspark-system",
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Namespace of the snapshot gateway (the operator's): the only one holding "
        "the bucket's key; the operator keeps the gateway's users Secret there.",
    )
    snapshot_gateway_users_secret: str = Field(
        default="rspark-snapshot-gateway-users",
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Secret (in RSPARK_SNAPSHOT_GATEWAY_NAMESPACE) whose key htpasswd the "
        "gateway reads: one line per workspace, written by the operator.",
    )
    allowed_image_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated prefixes (e.g. registry.example.com/rspark/) that "
        "spec.image and spec.spark.executorImage must start with; empty: only the configured "
        "images. The admission policy (manifests/base/admission.yaml) reads the same setting "
        "for executor pods.",
    )
    allowed_ingress_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated domains that spec.ingress.host must be in (the domain "
        "itself or below it); empty: workspaces may not choose their host.",
    )
    block_metadata_egress: bool = Field(
        default=True,
        description="Workspace pods may not reach the cloud metadata address "
        "(169.254.169.254), which hands out the node's cloud credentials.",
    )
    signin: Literal["ide-password", "oidc"] = Field(
        default="ide-password",
        description="How users sign in at a workspace's URL. oidc: an authenticating proxy "
        "(oauth2-proxy) in each workspace pod lets through only spec.user and spec.access, "
        "signed in at the identity provider RSPARK_OIDC_ISSUER_URL; the IDE listens on "
        "127.0.0.1 behind it with its own login off. ide-password (the default, since it "
        "needs no identity provider): the IDE's own login, with the password in the "
        "Secret <name>-passwords.",
    )
    oidc_issuer_url: str | None = Field(
        default=None,
        validate_default=True,
        description="The identity provider's issuer URL (its /.well-known/openid-configuration "
        "is read by each proxy at start), e.g. https://login.example.com/realms/rspark. "
        "Required with RSPARK_SIGNIN=oidc; browsers and workspace pods must both reach it.",
    )
    oidc_client_id: str | None = Field(
        default=None,
        validate_default=True,
        min_length=1,
        description="The OAuth client the platform registered at the provider for workspace "
        "URLs (redirect URIs: each workspace URL followed by oauth2/callback). Required with "
        "RSPARK_SIGNIN=oidc.",
    )
    oidc_secret: str = Field(
        default="rspark-oidc",
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Secret (in each workspace namespace) with the client's secret under "
        "client-secret and the proxies' cookie secret (16, 24 or 32 bytes, which encrypts "
        "their session cookies) under cookie-secret.",
    )
    oidc_user_claim: str = Field(
        default="email",
        min_length=1,
        description="The ID token's claim compared with spec.user and spec.access "
        "(e.g. email, preferred_username).",
    )
    signin_proxy_image: str = Field(
        default="ghcr.io/rspark-dev/oauth2-proxy:7.15.6",
        min_length=1,
        description="Image of the sign-in proxy (oauth2-proxy) with RSPARK_SIGNIN=oidc.",
    )
    storage_class: OptionalName = Field(default=None, description="Storage class of homes.")
    watch_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated namespaces to watch; empty means all namespaces.",
    )
    agent_metrics_port: int = Field(
        default=9090, ge=1, le=65535, description="Port of the agent's /metrics and /readyz."
    )
    ingress_controller_namespace: str = Field(
        default="ingress-nginx",
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Namespace of the ingress controller: the only one that may reach RStudio.",
    )
    ingress_controller_cidrs: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list,
        description="JSON list of CIDRs the ingress controller's traffic comes from when it "
        "runs outside the cluster's pods (on a node's or a host's network), e.g. "
        '["10.200.0.1/32"]; allowed to reach the IDE as its namespace is.',
    )
    metrics_namespace: OptionalName = Field(
        default=None,
        description="Namespace of Prometheus, allowed to scrape the agent's metrics port.",
    )
    node_failure_toleration_seconds: int = Field(
        default=30,
        ge=0,
        description="How long a workspace pod stays on a NotReady or unreachable node before "
        "it is evicted and recreated elsewhere (Kubernetes' default is 300).",
    )
    node_lost_force_delete_seconds: int = Field(
        default=30,
        ge=0,
        description="How long after its deletion deadline a workspace pod left on a node that "
        "is not ready is force-deleted, so the workspace starts on another node (a dead "
        "kubelet never confirms the pod stopped). 0: never; an administrator then deletes the "
        "Node or taints it node.kubernetes.io/out-of-service.",
    )
    volume_lost_after_seconds: int = Field(
        default=600,
        ge=0,
        description="How long the node of a node-local home volume (a PV whose node affinity "
        "names one node) may be not ready before the volume is taken as lost: the operator "
        "then deletes the pod and the claim and the home is restored from its last snapshot "
        "on a new volume; work written after that snapshot is lost, even if the node comes "
        "back. 0: never; a deleted Node always counts as lost.",
    )
    resync_seconds: float = Field(
        default=600,
        gt=0,
        description="How often each workspace is reconciled even without events (drift, "
        "lost children, refused changes tried again). Each resync re-applies every child "
        "of every workspace: shorter means more load on the API server. A failed reconcile "
        "is tried again sooner, with a backoff from 1 s up to this.",
    )
    rollout_max_pods: int = Field(
        default=1,
        ge=0,
        description="How many workspace pods the operator replaces at once for its own "
        "reasons (a new image setting, an operator upgrade); the others show pendingRestart "
        "until their turn or until their users restart them. 0: only their users do.",
    )
    metrics_address: str = Field(
        default="",
        pattern=r"^$|^[^:]*:[0-9]{1,5}$",
        description="host:port where the operator serves its Prometheus /metrics "
        "(e.g. 0.0.0.0:8000 in a pod); empty: not served.",
    )
    waker_address: str = Field(
        default="",
        pattern=r"^$|^[^:]*:[0-9]{1,5}$",
        description="host:port where the operator serves the page of idle workspaces "
        "(e.g. 0.0.0.0:8081 in a pod): while a workspace is stopped for idleness its "
        "Ingress leads there, and a visit of someone allowed in wakes it (with "
        "RSPARK_SIGNIN=ide-password: whoever gives its password). With RSPARK_SIGNIN=oidc "
        "the platform's sign-in proxy stands in front of it (RSPARK_WAKER_PROXY_PORT) and "
        "it must listen on the loopback (127.0.0.1:8081), where only that proxy reaches "
        "it. Empty: not served, idle workspaces wake only by a restart request.",
    )
    waker_ip: str | None = Field(
        default=None,
        validate_default=True,
        min_length=1,
        description="The address workspace Ingresses reach the waker at: the operator "
        "pod's IP (the Deployment sets it from status.podIP). Required with "
        "RSPARK_WAKER_ADDRESS.",
    )
    waker_proxy_port: int = Field(
        default=4180,
        ge=1,
        le=65535,
        description="With RSPARK_SIGNIN=oidc and the waker on: the port of the platform's "
        "sign-in proxy in front of the waker, on RSPARK_WAKER_IP (a container next to the "
        "operator's, docs/installation.md). Workspace Ingresses reach the waker through it.",
    )
    api_timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="How long one call to the API server may take before it counts as failed.",
    )
    api_attempts: int = Field(
        default=4,
        ge=1,
        description="Tries of an API call the server does not answer (or answers 429/5xx), "
        "with a jittered exponential backoff between them (0.5 s doubling, at most 8 s).",
    )
    peering_lifetime_seconds: int = Field(
        default=60,
        ge=5,
        description="How long a silent operator replica keeps its claim before another acts.",
    )
    default_spark_profile: OptionalName = Field(
        default=None,
        description="SparkProfile of workspaces that name none in spec.spark.profile; when "
        "it does not exist, they use their own Spark values, as without profiles.",
    )
    idle_quiet: str = Field(
        default=DEFAULT_IDLE_QUIET,
        description="How long nothing is used before the snapshot agent reports a "
        "workspace idle (a stop comes spec.idle.stopAfter after the last activity, so "
        f"every stopAfter must be 0 or at least this); at least {SHORTEST_IDLE_QUIET}.",
    )
    idle_stop_after: str = Field(
        default="0",
        description="spec.idle.stopAfter of workspaces that do not set it: stop a workspace "
        "after this long without activity (30m, 8h); 0: never.",
    )
    rollout_only_idle: bool = Field(
        default=False,
        description="The rollout replaces only the pods of idle workspaces (the agent "
        "reports Idle), so nobody's session is cut by an operator upgrade; the others "
        "wait for their users' restart or their idleness.",
    )
    termination_grace_seconds: int = Field(
        default=120,
        ge=10,
        description="How long a stopping pod has for RStudio's shutdown and the last snapshot.",
    )

    workspace_node_selector: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="JSON object of node labels that workspace pods and their Spark executors "
        'require, e.g. {"rspark.dev/node-kind": "real"}.',
    )
    workspace_tolerations: Annotated[list[Toleration], NoDecode] = Field(
        default_factory=list,
        description="JSON list of tolerations (as in a Pod) of workspace pods and their Spark "
        'executors, e.g. [{"key": "rspark.dev/node-kind", "operator": "Equal", "value": '
        '"real", "effect": "NoSchedule"}].',
    )

    @field_validator(
        "workspace_node_selector",
        "workspace_tolerations",
        "ingress_controller_cidrs",
        mode="before",
    )
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON ({error})") from None

    @field_validator("idle_quiet")
    @classmethod
    def _quiet_time(cls, value: str) -> str:
        try:
            long_enough = parse_duration(value) >= parse_duration(SHORTEST_IDLE_QUIET)
        except ValueError:
            long_enough = False
        if not long_enough:
            raise ValueError(f"must be a duration of at least {SHORTEST_IDLE_QUIET} (1m, 5m, 15m)")
        return value

    @field_validator("idle_stop_after")
    @classmethod
    def _stop_after(cls, value: str, info: ValidationInfo) -> str:
        value = str(check_stop_after(value))
        quiet_time = info.data.get("idle_quiet")
        problem = quiet_time and quiet_time_problem(value, quiet_time)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("workspace_node_selector")
    @classmethod
    def _node_labels(cls, selector: dict[str, str]) -> dict[str, str]:
        bad = [f"{key}={value}" for key, value in selector.items() if not _is_label(key, value)]
        if bad:
            raise ValueError(f"not node labels: {', '.join(bad)}")
        return selector

    @field_validator(
        "watch_namespaces", "allowed_image_prefixes", "allowed_ingress_domains", mode="before"
    )
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("watch_namespaces")
    @classmethod
    def _namespaces_are_names(cls, namespaces: list[str]) -> list[str]:
        bad = [namespace for namespace in namespaces if not _DNS_NAME.fullmatch(namespace)]
        if bad:
            raise ValueError(f"not namespace names: {', '.join(bad)}")
        return namespaces

    @field_validator("allowed_ingress_domains")
    @classmethod
    def _domains_are_names(cls, domains: list[str]) -> list[str]:
        bad = [domain for domain in domains if not _DNS_NAME.fullmatch(domain)]
        if bad:
            raise ValueError(f"not DNS names: {', '.join(bad)}")
        return domains

    @field_validator("oidc_issuer_url", "oidc_client_id")
    @classmethod
    def _required_with_oidc(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("signin") == "oidc" and not value:
            raise ValueError("required with RSPARK_SIGNIN=oidc")
        return value

    @field_validator("waker_ip")
    @classmethod
    def _required_with_waker(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("waker_address") and not value:
            raise ValueError("required with RSPARK_WAKER_ADDRESS")
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @field_validator("waker_address")
    @classmethod
    def _waker_behind_its_proxy(cls, value: str, info: ValidationInfo) -> str:
        """With oidc sign-in the waker trusts the identity its proxy passes: nothing else
        may reach it."""
        if value and info.data.get("signin") == "oidc" and not _loopback(value.rpartition(":")[0]):
            raise ValueError(
                "with RSPARK_SIGNIN=oidc the waker listens on the loopback (e.g. 127.0.0.1:8081), "
                "behind the sign-in proxy on RSPARK_WAKER_PROXY_PORT"
            )
        return value

    @property
    def waker_enabled(self) -> bool:
        return bool(self.waker_address)

    @property
    def waker_port(self) -> int:
        return int(self.waker_address.rsplit(":", 1)[1])

    @field_validator("snapshot_gateway_url")
    @classmethod
    def _gateway_with_its_mode(cls, url: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("snapshot_mode") == "gateway" and not url:
            raise ValueError("required with RSPARK_SNAPSHOT_MODE=gateway")
        if url is None:
            return url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError("not an http(s) URL, e.g. http://rspark-snapshot-gateway:8000")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL: each workspace has its own")
        return url

    @field_validator("oidc_issuer_url")
    @classmethod
    def _issuer_is_a_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError("not an http(s) URL without a query, e.g. https://login.example.com")
        return url

    def image_allowed(self, image: str, configured: str) -> bool:
        """Under an allowed prefix; without any, only the configured image itself."""
        if self.allowed_image_prefixes:
            return image.startswith(tuple(self.allowed_image_prefixes))
        return image == configured

    @field_validator("snapshot_repository_base")
    @classmethod
    def _no_trailing_slash(cls, base: str | None) -> str | None:
        return base.rstrip("/") if base else base

    @field_validator("ingress_host_template")
    @classmethod
    def _host_template_gives_a_host(cls, template: str) -> str:
        host = _fill(template)
        if not _DNS_NAME.fullmatch(host):
            raise ValueError(f"gives {host!r}, not a DNS name")
        return template

    @field_validator("ingress_path_template")
    @classmethod
    def _path_template_gives_a_prefix(cls, template: str) -> str:
        path = _fill(template)
        if not (_INGRESS_PATH.fullmatch(path) and path.endswith("/")):
            raise ValueError(f"gives {path!r}, not a path starting and ending with '/'")
        return template

    @field_validator("ingress_host_template", "ingress_path_template")
    @classmethod
    def _one_workspace_per_url(cls, template: str, info: ValidationInfo) -> str:
        # Two workspaces must never share a URL, so the active template names both.
        active = f"ingress_{info.data.get('ingress_mode')}_template"
        if info.field_name == active and not ("{name}" in template and "{namespace}" in template):
            raise ValueError("must contain {name} and {namespace}")
        return template


def _fill(template: str) -> str:
    try:
        return template.format(**_TEMPLATE_SAMPLE)
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"unknown placeholder or bad braces ({error}); use {{name}}, {{namespace}}, {{domain}}"
        ) from error


def load_settings() -> OperatorSettings:
    """The settings from the environment, or SettingsError naming every bad variable."""
    try:
        return OperatorSettings()
    except ValidationError as error:
        problems = [
            f"{_variable(issue['loc'])}={issue['input']!r}: "
            + issue["msg"].removeprefix("Value error, ")
            for issue in error.errors()
        ]
        raise SettingsError("bad operator configuration:\n  " + "\n  ".join(problems)) from None
    except PydanticSettingsError as error:
        raise SettingsError(f"bad operator configuration: {error}") from None


def _variable(location: tuple[int | str, ...]) -> str:
    """RSPARK_<FIELD>, followed by where in its JSON value: [0][operator]."""
    field, *inner = location
    return ENV_PREFIX + str(field).upper() + "".join(f"[{part}]" for part in inner)
