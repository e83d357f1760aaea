"""The snapshot gateway's contract: who a workspace is to the gateway, where its
repository is, and the htpasswd line that lets it in. Pure functions.

The gateway (`rclone serve restic --private-repos --append-only`, run by the platform
in front of the bucket) lets a user reach only the repositories under `/<user>/` and
refuses to delete or overwrite anything but lock files. A workspace's user is
`<namespace>.<name>`: namespaces have no dots, so no two workspaces share one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection

# restic's rest backend reads the credential from these (restic 0.17+), so the
# repository URL itself carries no secret.
REST_USERNAME = "RESTIC_REST_USERNAME"
REST_PASSWORD = "RESTIC_REST_PASSWORD"
# The key of a workspace's credential Secret (names.gateway_credential_secret_name).
CREDENTIAL_KEY = "password"
# The key of the gateway's users Secret: the whole htpasswd file.
HTPASSWD_KEY = "htpasswd"
# The gateway's pods (manifests/base/snapshot-gateway.yaml). A kubelet updates a
# mounted Secret only at its next periodic sync of the pod, up to about a minute and a
# half later, or at once when the pod changes: so after a change of the users Secret the
# operator sets this label on them to the Secret's new resourceVersion, and a new
# workspace's first look at its repository is not refused meanwhile.
GATEWAY_POD_SELECTOR = (
    "app.kubernetes.io/name=rspark-operator,app.kubernetes.io/component=snapshot-gateway"
)
USERS_VERSION_LABEL = "rspark.dev/gateway-users-version"


def gateway_user(namespace: str, name: str) -> str:
    """The workspace's user at the gateway, and the first segment of its repository."""
    return f"{namespace}.{name}"


def user_namespace(user: str) -> str:
    """The namespace of the workspace a gateway user is (see `gateway_user`)."""
    return user.split(".", 1)[0]


def repository(gateway_url: str, user: str) -> str:
    """The restic repository of `user` through the gateway (`rest:` backend)."""
    return f"rest:{gateway_url.rstrip('/')}/{user}/"


def direct_repository(storage_base: str, user: str) -> str:
    """The same repository, straight on the bucket where the gateway keeps it: where
    retention (forget, prune), which the gateway refuses, runs with the full key."""
    return f"{storage_base.rstrip('/')}/{user}"


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry in the `{SHA}` form. The gateway checks a request's password
    against it at every request (restic makes hundreds per snapshot); bcrypt's deliberate
    slowness would be paid each time. The passwords are 256-bit random tokens, never
    chosen by people, so an unsalted fast hash leaves nothing to guess."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}"


def _lines(htpasswd_text: str) -> dict[str, str]:
    """The htpasswd file's lines by user."""
    return {line.split(":", 1)[0]: line for line in htpasswd_text.splitlines() if ":" in line}


def _joined(lines: dict[str, str]) -> str:
    return "".join(lines[name] + "\n" for name in sorted(lines))


def with_entry(htpasswd_text: str, user: str, password: str) -> str:
    """The htpasswd file with `user`'s line set (added or replaced), sorted by user."""
    return _joined(_lines(htpasswd_text) | {user: htpasswd_line(user, password)})


def htpasswd_users(htpasswd_text: str) -> list[str]:
    """The users the htpasswd file lets in, sorted."""
    return sorted(_lines(htpasswd_text))


def only_users(htpasswd_text: str, keep: Collection[str]) -> str:
    """The htpasswd file without the lines of users not in `keep` (workspaces gone: their
    credential would otherwise open their repository for as long as the file lives)."""
    return _joined({user: line for user, line in _lines(htpasswd_text).items() if user in keep})


def htpasswd(entries: dict[str, str]) -> str:
    """The gateway's whole htpasswd file from user -> password, sorted (stable bytes:
    the gateway reloads the file when its size or modification time changes)."""
    return _joined({user: htpasswd_line(user, password) for user, password in entries.items()})
