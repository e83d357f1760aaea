"""Security contexts and limits of the workspace pod's containers (docs/security.md).

- The agent meets Pod Security `restricted`: not root (the image's uid 1000, the
  home's owner, so it reads every file of the user's), read-only root filesystem
  (a private /tmp instead), no privilege escalation, every capability dropped.
- The IDE container meets `baseline`: its init (Rocker's s6 scripts, then
  rserver) starts as root to set up the user and launch R sessions as that user,
  so it keeps only the capabilities that takes, none of the others Docker grants
  (no NET_RAW, MKNOD, SETFCAP, SETPCAP, SYS_CHROOT, NET_BIND_SERVICE), and no
  privilege escalation (no setuid binary, sudo included, gains anything).
- The pod: the runtime's default seccomp profile for every container.
"""

from __future__ import annotations

from typing import Any

AGENT_UID = 1000
AGENT_TMP_VOLUME = "agent-tmp"
AGENT_TMP = "/tmp"
# The IDE's init: chown/chmod of the user's files and runtime directory, R sessions
# started as the user (setuid, setgid), signals to its own processes, PAM's audit
# record of a login.
IDE_CAPABILITIES = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID",
                    "SETUID"]  # fmt: skip
# restic holds the repository index in memory: a few hundred MiB for a large home.
AGENT_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "64Mi"},
    "limits": {"memory": "1Gi", "ephemeral-storage": "1Gi"},
}


# The sign-in proxy (builders/signin.py): a static Go binary holding sessions in cookies.
SIGNIN_RESOURCES = {
    "requests": {"cpu": "20m", "memory": "32Mi", "ephemeral-storage": "16Mi"},
    "limits": {"memory": "128Mi", "ephemeral-storage": "64Mi"},
}


def pod_security_context() -> dict[str, Any]:
    return {"seccompProfile": {"type": "RuntimeDefault"}}


def agent_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": AGENT_UID,
        "runAsGroup": AGENT_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def signin_security_context() -> dict[str, Any]:
    """The sign-in proxy meets `restricted` as the agent does (as its uid: the agent reads
    the log the proxy writes, mode 0600)."""
    return agent_security_context()


def ide_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": IDE_CAPABILITIES},
    }


def agent_tmp_volume() -> dict[str, Any]:
    """restic's and the agent's temporary files, the root filesystem being read-only."""
    return {"name": AGENT_TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}


def agent_tmp_mount() -> dict[str, Any]:
    return {"name": AGENT_TMP_VOLUME, "mountPath": AGENT_TMP}
