"""Agent configuration: RSPARK_* variables set by the pod builder (their names:
`rspark_operator.contract`), overridden by CLI flags.

restic reads its own variables (RESTIC_REPOSITORY, RESTIC_PASSWORD, AWS_*) directly;
the agent only checks that they are there.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rspark_operator import names
from rspark_operator.contract import ENV_PREFIX, RETENTION_KEYS
from rspark_operator.idle import DEFAULT_IDLE_QUIET
from rspark_operator.quantity import parse_duration

# The Kubernetes Secret holding the secret paths; the agent never creates it.
DEFAULT_SECRET_PATHS = (".ssh",)


class AgentSettingsError(Exception):
    """Bad agent configuration; the message names every bad variable."""


def seconds(value: str) -> float:
    """A Go duration string ("30s", "5m", "1h30m") in seconds."""
    return parse_duration(value).total_seconds()


def _json_list(value: Any) -> Any:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return value


class AgentSettings(BaseSettings):
    """The snapshot agent's configuration: the pod builder sets the first part from the spec."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    workspace: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="<namespace>/<name>: turns on status reporting and secret keeping.",
    )
    snapshot_host: str | None = Field(
        default=None, description="restic --host; standalone default: the home's basename."
    )
    snapshot_interval: str = Field(
        default="5m", description="Time between snapshots (spec.snapshot.interval)."
    )
    snapshot_exclude: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="JSON list of restic --exclude patterns (spec.snapshot.exclude).",
    )
    secret_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_SECRET_PATHS),
        description="JSON list of home-relative paths kept in a Secret, never in object "
        "storage (spec.secretPaths).",
    )
    retention: Annotated[dict[str, int] | None, NoDecode] = Field(
        default=None,
        description="JSON object of keepLast, keepHourly, keepDaily, keepWeekly "
        "(spec.snapshot.retention); unset: nothing is forgotten.",
    )
    restore_from: str | None = Field(
        default=None,
        description="Snapshot id to restore into an empty home instead of the newest "
        "(spec.snapshot.restoreFrom).",
    )
    secrets_name: str | None = Field(
        default=None,
        validate_default=True,
        description="The Secret that keeps the secret paths; with a workspace, its own "
        "home-secrets Secret by default. Without one, secret paths are not kept at all.",
    )
    metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="Port of /metrics, /readyz and /status."
    )
    idle_quiet: str = Field(
        default=DEFAULT_IDLE_QUIET,
        description="How long nothing is used before the workspace is reported idle "
        "(the operator's RSPARK_IDLE_QUIET).",
    )
    # Not part of the pod contract; tunables with sensible defaults.
    snapshot_debounce: str = Field(
        default="10s", description="Quiet time after the last change before a snapshot."
    )
    snapshot_max_delay: str = Field(
        default="60s", description="A change waits at most this long, even under churn."
    )
    snapshot_min_spacing: str = Field(
        default="30s", description="At most one change-triggered snapshot per this time."
    )
    maintenance_interval: str = Field(
        default="24h", description="Time between maintenance runs (check, forget + prune)."
    )
    shutdown_timeout: str = Field(
        default="25s", description="Budget for the last snapshot after SIGTERM."
    )
    restic_timeout: str = Field(
        default="10m",
        description="Longest run of one restic command; restic retries storage inside it.",
    )
    retry_lock: str = Field(
        default="2m", description="How long restic waits for a repository lock (--retry-lock)."
    )
    check_read_data_subset: str = Field(
        default="5%",
        description="Data `restic check` reads back before each prune (--read-data-subset): "
        "a random 5% finds rot over time without downloading the repository daily.",
    )
    restic: str = Field(default="restic", description="The restic binary.")
    cache_dir: str | None = Field(
        default=None,
        description="restic's cache directory; unset: .cache/rspark-agent/restic in the home.",
    )

    @field_validator("snapshot_exclude", "secret_paths", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _json_list(value)

    @field_validator("secret_paths")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        cleaned = []
        for item in value:
            path = item.strip().strip("/")
            if not path or ".." in Path(path).parts:
                raise ValueError(f"secret path {item!r} must be a path inside the home")
            cleaned.append(path)
        return cleaned

    @field_validator("secrets_name")
    @classmethod
    def _workspace_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        workspace = info.data.get("workspace")
        if value or not workspace:
            return value
        return names.home_secrets_name(workspace.split("/", 1)[1])

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else None
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) - set(RETENTION_KEYS):
            raise ValueError(f"retention takes only {', '.join(RETENTION_KEYS)}")
        for key, count in value.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"retention {key} must be a whole number >= 0")
        return value

    @field_validator(
        "snapshot_interval",
        "idle_quiet",
        "snapshot_debounce",
        "snapshot_max_delay",
        "snapshot_min_spacing",
        "maintenance_interval",
        "shutdown_timeout",
        "restic_timeout",
        "retry_lock",
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        if seconds(value) <= 0:
            raise ValueError(f"{value!r} must be a positive duration")
        return value

    @property
    def namespace_name(self) -> tuple[str, str] | None:
        if not self.workspace:
            return None
        namespace, name = self.workspace.split("/", 1)
        return namespace, name

    def host_for(self, home: PurePath) -> str:
        """Fixed per workspace, never the pod's hostname, so a new pod finds its parent.

        `home` is resolved by the caller.
        """
        return self.snapshot_host or home.name or "home"


def load(**overrides: Any) -> AgentSettings:
    """Settings from the environment; CLI overrides (not None) win. Errors name the variable."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return AgentSettings(**given)
    except (ValidationError, ValueError) as exc:
        raise AgentSettingsError(_describe(exc)) from exc


def _describe(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return f"bad agent configuration: {exc}"
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        lines.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
    return "bad agent configuration: " + "; ".join(lines)
