"""The NamespaceShared condition: other users' workspaces in a namespace that is not a
trusted team's (tenancy.py), computed and written by the reconcile."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import kopf
import pytest

from rspark_operator.api import API_VERSION, KIND
from rspark_operator.conditions import NAMESPACE_SHARED, find
from rspark_operator.main import Indexes, sharing_changed, workspace_event
from rspark_operator.reconcile import reconcile
from rspark_operator.resync import ResyncQueue
from rspark_operator.settings import OperatorSettings
from rspark_operator.tenancy import (
    OTHER_USERS,
    SINGLE_USER,
    TEAM_NAMESPACE,
    TEAM_NAMESPACE_LABEL,
    Tenancy,
    tenancy_condition,
)
from tests.unit.fakeapi import FakeApi
from tests.unit.test_reconcile import (
    NAME,
    NAMESPACE,
    NOW,
    ROLLOUT,
    SETTINGS,
    no_warnings,
    put_workspace,
)

pytestmark = pytest.mark.unit

ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest.mark.parametrize(
    ("others", "team", "status", "reason"),
    [
        ((), False, "False", SINGLE_USER),
        ((), True, "False", SINGLE_USER),
        (("bob@example.com",), False, "True", OTHER_USERS),
        (("bob@example.com",), True, "False", TEAM_NAMESPACE),
    ],
)
def test_the_condition_warns_only_of_other_users_outside_a_team_namespace(
    others: tuple[str, ...], team: bool, status: str, reason: str
) -> None:
    found = tenancy_condition(
        Tenancy("team-a", others, team), observed_generation=3, now=NOW, previous=None
    )
    assert (found["type"], found["status"], found["reason"]) == (NAMESPACE_SHARED, status, reason)
    assert found["observedGeneration"] == 3


def test_the_message_names_the_others_and_the_label() -> None:
    users = [f"user{i}@example.com" for i in range(5)]
    found = tenancy_condition(
        Tenancy("team-a", users), observed_generation=1, now=NOW, previous=None
    )
    assert "user0@example.com, user1@example.com, user2@example.com and 2 more" in found["message"]
    assert f"not labelled {TEAM_NAMESPACE_LABEL}=true" in found["message"]


def test_the_transition_time_moves_only_when_the_status_flips() -> None:
    before = tenancy_condition(
        Tenancy("team-a", ["bob"]), observed_generation=1, now=NOW, previous=None
    )
    later = NOW + timedelta(hours=1)
    same = tenancy_condition(
        Tenancy("team-a", ["bob", "carol"]), observed_generation=1, now=later, previous=[before]
    )
    flipped = tenancy_condition(
        Tenancy("team-a"), observed_generation=1, now=later, previous=[before]
    )
    assert same["lastTransitionTime"] == before["lastTransitionTime"]
    assert flipped["lastTransitionTime"] != before["lastTransitionTime"]


def shared(fake: FakeApi, neighbours: list[tuple[str, str]]) -> dict[str, Any]:
    body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
    assert body is not None

    def of(namespace: str) -> Iterable[tuple[str, str]]:
        return neighbours if namespace == NAMESPACE else ()

    reconcile(fake, SETTINGS, body, no_warnings, ROLLOUT, neighbours=of, now=NOW)
    written = fake.get(API_VERSION, KIND, NAMESPACE, NAME) or {}
    found = find((written.get("status") or {}).get("conditions") or [], NAMESPACE_SHARED)
    assert found is not None
    return found


def namespace(fake: FakeApi, labels: dict[str, str]) -> None:
    fake.put(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels}}
    )


def test_the_reconcile_writes_what_it_sees_of_the_namespace() -> None:
    fake = FakeApi()
    namespace(fake, {})
    put_workspace(fake)
    own = [(NAME, ALICE), ("second", ALICE)]

    assert shared(fake, own)["reason"] == SINGLE_USER
    assert shared(fake, [*own, ("bobs", "bob@example.com")])["reason"] == OTHER_USERS
    namespace(fake, {TEAM_NAMESPACE_LABEL: "true"})
    assert shared(fake, [*own, ("bobs", "bob@example.com")])["reason"] == TEAM_NAMESPACE
    assert shared(fake, own)["reason"] == SINGLE_USER


def workspace_added(
    queue: ResyncQueue,
    name: str,
    user: str,
    kind: str = "ADDED",
    settings: OperatorSettings = SETTINGS,
) -> None:
    """The watch's event (`kind`) of a workspace in a namespace where Alice has two (a1,
    a2) and Bob one (b1)."""
    memo = kopf.Memo(queue=queue, settings=settings, indexes=Indexes())
    for other, who in (("a1", ALICE), ("a2", ALICE), ("b1", BOB)):
        memo.indexes.set_workspace(workspace_body(other, who), None)
    body: Any = workspace_body(name, user)
    event: Any = {"type": kind, "object": body}
    handler: Any = workspace_event  # kopf's typing of a decorated handler
    asyncio.run(
        handler(event=event, type=kind, body=body, namespace=NAMESPACE, name=name, memo=memo)
    )


def workspace_body(name: str, user: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"{name}-uid"},
        "spec": {"user": user},
    }


def test_a_workspace_of_a_user_already_there_refreshes_no_other() -> None:
    queue = ResyncQueue(600, clock=lambda: 0.0)
    workspace_added(queue, "a3", ALICE)
    assert [queue.due_at((NAMESPACE, n)) for n in ("a1", "a2", "b1")] == [None, None, None]


def test_a_workspace_of_a_new_user_refreshes_every_other() -> None:
    queue = ResyncQueue(600, clock=lambda: 0.0)
    workspace_added(queue, "c1", "carol@example.com")
    assert [queue.due_at((NAMESPACE, n)) for n in ("a1", "a2", "b1")] == [0.0, 0.0, 0.0]


def test_the_last_workspace_of_a_user_changes_the_others_sharing() -> None:
    workspaces = [("a1", ALICE), ("a2", ALICE), ("b1", BOB)]
    # Bob's only workspace goes (whether the index still holds it or not).
    assert sharing_changed(workspaces, "b1", BOB) == ["a1", "a2"]
    assert sharing_changed(workspaces[:2], "b1", BOB) == ["a1", "a2"]
    # One of Alice's two: Alice stays among the users of the namespace.
    assert sharing_changed(workspaces, "a2", ALICE) == []
