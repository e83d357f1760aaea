"""The contract between the workspace pod and the snapshot agent: the variables the
pod builder sets and the agent reads, and the keys of the retention it passes.

Pure names, written once: `builders/pod.py` writes them, `agent/settings.py` reads
them. restic reads RESTIC_* and AWS_* itself; the agent only checks they are set.
"""

from __future__ import annotations

from typing import Final

# Variables restic reads (the pod sets them for the agent).
RESTIC_REPOSITORY: Final = "RESTIC_REPOSITORY"
RESTIC_PASSWORD: Final = "RESTIC_PASSWORD"
S3_CREDENTIAL_KEYS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

# The agent's own variables: ENV_PREFIX + the upper-cased name of its setting.
ENV_PREFIX: Final = "RSPARK_"
WORKSPACE: Final = f"{ENV_PREFIX}WORKSPACE"
SNAPSHOT_HOST: Final = f"{ENV_PREFIX}SNAPSHOT_HOST"
SNAPSHOT_INTERVAL: Final = f"{ENV_PREFIX}SNAPSHOT_INTERVAL"
SNAPSHOT_EXCLUDE: Final = f"{ENV_PREFIX}SNAPSHOT_EXCLUDE"
SECRET_PATHS: Final = f"{ENV_PREFIX}SECRET_PATHS"
RETENTION: Final = f"{ENV_PREFIX}RETENTION"
METRICS_PORT: Final = f"{ENV_PREFIX}METRICS_PORT"
RESTORE_FROM: Final = f"{ENV_PREFIX}RESTORE_FROM"
# The platform's quiet time before a workspace counts as idle (an operator setting too).
IDLE_QUIET: Final = f"{ENV_PREFIX}IDLE_QUIET"
# Every agent variable the pod builder may set (RSPARK_SECRETS_NAME is not one: with
# RSPARK_WORKSPACE the agent derives its home-secrets Secret from the workspace).
AGENT_VARIABLES: Final = (
    WORKSPACE,
    SNAPSHOT_HOST,
    SNAPSHOT_INTERVAL,
    SNAPSHOT_EXCLUDE,
    SECRET_PATHS,
    RETENTION,
    METRICS_PORT,
    RESTORE_FROM,
    IDLE_QUIET,
)

# The IDE's runtime directory, an emptyDir shared by the IDE and the agent (read-only
# there): the JupyterLab image keeps its server's local URL and API token in it
# (JUPYTER_RUNTIME_DIR), which the agent reads to ask about kernels (agent/activity.py).
IDE_RUNTIME_DIR: Final = "/run/rspark/jupyter"
# The sign-in proxy's log (RSPARK_SIGNIN=oidc), an emptyDir of the proxy and the agent
# (read-only there): a line a request (`idle.REQUEST_LOG_FORMAT`), which the agent reads
# for the last request of someone signed in (agent/activity.py), and its other lines.
SIGNIN_LOG_DIR: Final = "/run/rspark/signin-log"
SIGNIN_LOG_FILE: Final = "proxy.log"

# The keys of RSPARK_RETENTION (a JSON object; spec.snapshot.retention on the wire).
RETENTION_KEYS: Final = ("keepLast", "keepHourly", "keepDaily", "keepWeekly")


def setting_name(variable: str) -> str:
    """The agent setting an RSPARK_* variable fills (RSPARK_SNAPSHOT_HOST: snapshot_host)."""
    return variable.removeprefix(ENV_PREFIX).lower()
