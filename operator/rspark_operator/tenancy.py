"""The tenancy model made visible: a workspace's status says when workspaces of other
users share its namespace and the namespace is not a trusted team namespace.

A namespace is where Kubernetes draws its lines: whoever may read Secrets or create
pods in it reaches every workspace's passwords there (docs/security.md, Tenancy). One
namespace per user is the recommendation; a team whose members trust each other labels
its namespace `rspark.dev/team-namespace=true`. Pure: the reconcile passes what it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rspark_operator.api import GROUP
from rspark_operator.conditions import NAMESPACE_SHARED, Advice, condition

# On a namespace: its users trust each other with their workspaces (a team's namespace).
TEAM_NAMESPACE_LABEL = f"{GROUP}/team-namespace"
TEAM_NAMESPACE_VALUE = "true"

# Reasons of the NamespaceShared condition.
OTHER_USERS = "OtherUsersInNamespace"
SINGLE_USER = "SingleUserNamespace"
TEAM_NAMESPACE = "TeamNamespace"
# Other users named in the message; the count says the rest.
USERS_NAMED = 3

ADVICE: dict[str, Advice] = {
    OTHER_USERS: Advice(
        "Workspaces of other users are in this namespace, which is not labelled "
        f"`{TEAM_NAMESPACE_LABEL}={TEAM_NAMESPACE_VALUE}`: whoever may read Secrets or "
        "create pods here (the namespace's `edit`, `admin`) can read this workspace's "
        "passwords and home, and its users share ConfigMaps and can see each other's pods.",
        "Ask for a namespace of your own and move the workspace there (its home follows "
        "through its snapshots: `spec.snapshot.repository` of the old one).",
        "Give each user a namespace of their own; or, if these users trust each other, label "
        f"the namespace: `kubectl label namespace NS {TEAM_NAMESPACE_LABEL}="
        f"{TEAM_NAMESPACE_VALUE}`.",
    ),
    SINGLE_USER: Advice("Only this workspace's user has workspaces in this namespace."),
    TEAM_NAMESPACE: Advice(
        "Other users have workspaces in this namespace, labelled as a trusted team's "
        f"(`{TEAM_NAMESPACE_LABEL}={TEAM_NAMESPACE_VALUE}`): they are meant to share it.",
        admin="Remove the label if these users should not reach each other's workspaces.",
    ),
}


@dataclass(frozen=True)
class Tenancy:
    """Who else has workspaces in the namespace, and whether it is a team's."""

    namespace: str
    other_users: Sequence[str] = ()
    team_namespace: bool = False


def is_team_namespace(namespace: dict[str, Any] | None) -> bool:
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(TEAM_NAMESPACE_LABEL) == TEAM_NAMESPACE_VALUE


def tenancy_condition(
    tenancy: Tenancy,
    *,
    observed_generation: int,
    now: datetime,
    previous: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """NamespaceShared: True only when other users share a namespace not labelled as a team's."""
    others = sorted(set(tenancy.other_users))
    if not others:
        reason = SINGLE_USER
        message = f"no other user has workspaces in namespace {tenancy.namespace}"
    elif tenancy.team_namespace:
        reason = TEAM_NAMESPACE
        message = (
            f"namespace {tenancy.namespace} is a team namespace ({TEAM_NAMESPACE_LABEL}="
            f"{TEAM_NAMESPACE_VALUE}) shared with {_users(others)}"
        )
    else:
        reason = OTHER_USERS
        message = (
            f"workspaces of {_users(others)} share namespace {tenancy.namespace}, which is "
            f"not labelled {TEAM_NAMESPACE_LABEL}={TEAM_NAMESPACE_VALUE}: whoever may read "
            "Secrets or create pods here reaches this workspace's passwords and home"
        )
    return condition(
        NAMESPACE_SHARED,
        "True" if reason == OTHER_USERS else "False",
        reason,
        message,
        observed_generation=observed_generation,
        now=now,
        previous=previous,
    )


def _users(users: Sequence[str]) -> str:
    named = ", ".join(users[:USERS_NAMED])
    more = len(users) - USERS_NAMED
    return f"{named} and {more} more" if more > 0 else named
