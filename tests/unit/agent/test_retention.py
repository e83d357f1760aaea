"""The platform's retention (agent/retention.py): which repositories it prunes, how, and
that one workspace's failure leaves the others."""

from __future__ import annotations

from typing import Any

import pytest

from rspark_operator.agent.retention import GoingAway, Job, NoRepository, jobs, run

pytestmark = pytest.mark.unit

BASE = "s3:http://s3.test:8333/rspark/gateway"


def body(name: str, namespace: str = "team-a", **snapshot: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"user": f"{name}@example.com", "snapshot": snapshot},
    }


def test_each_workspace_behind_the_gateway_is_pruned_by_its_own_retention() -> None:
    found = jobs(
        [
            body("alice", retention={"keepLast": 3, "keepHourly": 0}),
            body("bob", namespace="team-b"),
            body("off", enabled=False),
            body("own", repository="s3:http://elsewhere/b", credentialsSecret="mine"),
            body(
                "all", retention={"keepLast": 0, "keepHourly": 0, "keepDaily": 0, "keepWeekly": 0}
            ),
            {"metadata": {"name": "broken", "namespace": "x"}, "spec": {"user": ""}},
        ],
        BASE,
    )

    assert [(job.namespace, job.name) for job in found] == [("team-a", "alice"), ("team-b", "bob")]
    alice, bob = found
    assert alice.repository == f"{BASE}/team-a.alice"
    assert alice.host == "team-a-alice"  # the host the agent snapshots with
    assert alice.retention == {"keepLast": 3, "keepDaily": 7, "keepWeekly": 4}
    assert bob.retention == {"keepLast": 10, "keepHourly": 24, "keepDaily": 7, "keepWeekly": 4}


def test_one_failure_leaves_the_others_and_is_counted() -> None:
    done: list[tuple[str, str]] = []

    def forget(job: Job, password: str) -> None:
        if job.name == "bad":
            raise RuntimeError("locked")
        if job.name == "new":
            raise NoRepository("never snapshotted")
        done.append((job.name, password))

    all_jobs = [Job("ns", name, f"{BASE}/ns.{name}", f"ns-{name}", {"keepLast": 1})
                for name in ("bad", "nopassword", "new", "good")]  # fmt: skip
    failed = run(all_jobs, lambda ns, name: None if name == "nopassword" else f"pw-{name}", forget)

    assert failed == 2  # a workspace without snapshots yet is not a failure
    assert done == [("good", "pw-good")]


def test_a_workspace_whose_namespace_is_being_deleted_is_not_a_failure() -> None:
    done: list[str] = []

    def password_of(namespace: str, name: str) -> str:
        if name == "leaving":
            raise GoingAway(namespace)  # its passwords Secret went first
        return f"pw-{name}"

    all_jobs = [Job("ns", name, f"{BASE}/ns.{name}", f"ns-{name}", {"keepLast": 1})
                for name in ("leaving", "good")]  # fmt: skip
    failed = run(all_jobs, password_of, lambda job, password: done.append(job.name))

    assert failed == 0
    assert done == ["good"]
