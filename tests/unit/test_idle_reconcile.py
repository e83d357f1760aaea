"""The reconcile of idle workspaces against the in-memory API server: stop, wake, the
release of the home volume, and the rollout of idle workspaces only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from rspark_operator.api import API_VERSION, KIND
from rspark_operator.cluster import Failure, KubeError
from rspark_operator.conditions import READY, find, timestamp
from rspark_operator.lifecycle import POD_CREATED, VOLUME_RELEASED, WOKEN
from rspark_operator.names import RESTART_ANNOTATION
from rspark_operator.reconcile import Outcome, reconcile
from rspark_operator.rollout import Rollout
from rspark_operator.settings import OperatorSettings
from rspark_operator.status import Reason, final_snapshot_unseen, idle_report_unseen
from tests.unit.fakeapi import FakeApi, Write
from tests.unit.test_reconcile import (
    NAME,
    NAMESPACE,
    NOW,
    POD,
    SETTINGS,
    WORKSPACE,
    no_warnings,
    pod_ready,
    put_workspace,
    ready,
)
from tests.unit.workspaces import settings

pytestmark = pytest.mark.unit

CLAIM = ("PersistentVolumeClaim", NAMESPACE, f"{NAME}-home")


def run_at(
    fake: FakeApi,
    now: datetime,
    config: OperatorSettings = SETTINGS,
    rollout: Rollout | None = None,
    *,
    children: bool = False,
) -> Outcome:
    body = fake.get(API_VERSION, KIND, NAMESPACE, NAME)
    assert body is not None
    return reconcile(
        fake, config, body, no_warnings, rollout or Rollout(1), children=children, now=now
    )


def running_with(fake: FakeApi, **idle: Any) -> None:
    put_workspace(fake, idle=idle)
    run_at(fake, NOW, children=True)
    pod_ready(fake)
    run_at(fake, NOW)
    assert ready(fake)["reason"] == Reason.POD_READY


def agent_reports(fake: FakeApi, status: str, when: datetime, **extra: Any) -> None:
    """The agent's own status write (its conditions and lastSnapshot)."""
    stored = fake.objects[WORKSPACE]["status"]
    condition = {"type": "Idle", "status": status, "reason": "NoActivity",
                 "lastTransitionTime": timestamp(when)}  # fmt: skip
    others = [c for c in stored.get("conditions", []) if c["type"] != "Idle"]
    stored["conditions"] = [*others, condition, *extra.pop("conditions", [])]
    stored.update(extra)


def phase(fake: FakeApi) -> str:
    return str(fake.objects[WORKSPACE]["status"]["phase"])


def terminating(fake: FakeApi) -> bool:
    return POD in fake.objects and bool(fake.objects[POD]["metadata"].get("deletionTimestamp"))


def test_an_idle_workspace_stops_after_stop_after_and_a_restart_request_wakes_it() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h")
    quiet_since = NOW + timedelta(minutes=10)
    agent_reports(fake, "True", quiet_since)
    # Idle, not for long enough: the pod stays; the operator comes back when it is due.
    outcome = run_at(fake, NOW + timedelta(minutes=30))
    assert not terminating(fake)
    assert outcome.due == quiet_since + timedelta(hours=1)
    # Due: the pod goes (its preStop saves the sessions, the agent takes a last snapshot).
    stop = NOW + timedelta(minutes=71)
    outcome = run_at(fake, stop)
    assert terminating(fake)
    # One event: the stop is both the action and the new Ready reason.
    assert [e.reason for e in outcome.events] == [Reason.IDLE_STOPPING]
    assert timestamp(quiet_since) in outcome.events[0].message
    assert phase(fake) == "Idle"
    fake.finish_termination(*POD)
    outcome = run_at(fake, stop + timedelta(minutes=1))
    assert POD not in fake.objects
    assert phase(fake) == "Idle"
    assert ready(fake)["reason"] == Reason.IDLE
    assert ready(fake)["lastTransitionTime"] == timestamp(stop)
    assert "home is kept on its volume" in ready(fake)["message"]
    # Stays stopped, and writes nothing while it does (resyncs included).
    fake.writes.clear()
    run_at(fake, stop + timedelta(hours=5), children=True)
    assert POD not in fake.objects
    assert not [w for w in fake.writes if w.key == WORKSPACE or w.key == POD]
    # kubectl annotate ... rspark.dev/restart-requested-at=<now>: the wake.
    woken = stop + timedelta(hours=6)
    fake.objects[WORKSPACE]["metadata"]["annotations"] = {RESTART_ANNOTATION: timestamp(woken)}
    outcome = run_at(fake, woken + timedelta(seconds=5))
    assert POD in fake.objects and not terminating(fake)
    assert [e.reason for e in outcome.events] == [POD_CREATED, WOKEN, Reason.POD_NOT_READY]
    assert phase(fake) == "Pending"
    fake.objects[POD]["metadata"]["creationTimestamp"] = timestamp(woken + timedelta(seconds=5))
    # The new pod's start counts as activity, before its agent says anything...
    outcome = run_at(fake, woken + timedelta(minutes=30))
    assert not terminating(fake)
    assert outcome.due == woken + timedelta(seconds=5, hours=1)
    # ... which it does at its start: active.
    agent_reports(fake, "False", woken + timedelta(seconds=30))
    assert run_at(fake, woken + timedelta(minutes=31)).due is None


@pytest.mark.parametrize("stop_after", ["0", None])
def test_never_stopped_with_stop_after_zero_or_the_default(stop_after: str | None) -> None:
    fake = FakeApi()
    running_with(fake, **({"stopAfter": stop_after} if stop_after else {}))
    agent_reports(fake, "True", NOW)
    outcome = run_at(fake, NOW + timedelta(days=30))
    assert not terminating(fake)
    assert outcome.due is None
    assert phase(fake) == "Running"


def test_the_operator_setting_is_the_default_and_the_spec_wins() -> None:
    fake = FakeApi()
    running_with(fake)
    agent_reports(fake, "True", NOW)
    eight_hours = settings(allowed_image_prefixes=["rstudio:"], idle_stop_after="8h")
    run_at(fake, NOW + timedelta(hours=7), eight_hours)
    assert not terminating(fake)
    run_at(fake, NOW + timedelta(hours=8), eight_hours)
    assert terminating(fake)
    fake.finish_termination(*POD)
    put_workspace(fake, generation=2, idle={"stopAfter": "0"})
    run_at(fake, NOW + timedelta(hours=9), eight_hours, children=True)
    assert POD in fake.objects  # stopAfter 0: never idle, so it starts again


def test_a_stop_after_under_the_platforms_quiet_time_is_refused_and_nothing_goes() -> None:
    """RSPARK_IDLE_QUIET=1m allows stopAfter 2m; a platform that raises it to 15m
    refuses the same spec in the status, and the running pod and its home stay."""
    quick = settings(allowed_image_prefixes=["rstudio:"], idle_quiet="1m")

    def running() -> FakeApi:
        fake = FakeApi()
        put_workspace(fake, idle={"stopAfter": "2m"})
        run_at(fake, NOW, quick, children=True)
        pod_ready(fake)
        run_at(fake, NOW, quick)
        assert ready(fake)["reason"] == Reason.POD_READY
        return fake

    fake = running()
    agent_reports(fake, "True", NOW)
    run_at(fake, NOW + timedelta(minutes=2), quick)
    assert terminating(fake)  # two minutes after the last activity
    fake = running()
    slow = settings(allowed_image_prefixes=["rstudio:"], idle_quiet="15m")
    run_at(fake, NOW + timedelta(minutes=30), slow, children=True)
    assert ready(fake)["reason"] == Reason.INVALID_SPEC
    assert "shorter than this platform's quiet time (15m)" in ready(fake)["message"]
    assert POD in fake.objects and not terminating(fake)
    assert CLAIM in fake.objects


def test_an_active_agent_keeps_it_running() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h")
    agent_reports(fake, "False", NOW)
    outcome = run_at(fake, NOW + timedelta(days=1))
    assert not terminating(fake)
    assert outcome.due is None


def test_suspended_stays_the_users_choice() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h")
    agent_reports(fake, "True", NOW)
    put_workspace(fake, generation=2, idle={"stopAfter": "1h"}, suspended=True)
    run_at(fake, NOW + timedelta(hours=2), children=True)
    fake.finish_termination(*POD)
    run_at(fake, NOW + timedelta(hours=2))
    assert phase(fake) == "Suspended"


def test_a_new_pod_is_not_stopped_for_its_predecessors_idleness() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h")
    agent_reports(fake, "True", NOW - timedelta(hours=5))
    # The pod (created at NOW) started after the idleness its predecessor's agent saw.
    run_at(fake, NOW + timedelta(minutes=59))
    assert not terminating(fake)
    run_at(fake, NOW + timedelta(hours=1))
    assert terminating(fake)


def healthy_final_snapshot(at: datetime) -> dict[str, Any]:
    return {
        "lastSnapshot": {"time": timestamp(at), "id": "4f2a9c1e5d", "finalAt": timestamp(at)},
        "conditions": [
            {
                "type": "SnapshotHealthy",
                "status": "True",
                "reason": "SnapshotSucceeded",
                "lastTransitionTime": timestamp(at),
            }
        ],
    }


def test_release_volume_deletes_the_claim_only_after_the_final_snapshot() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h", releaseVolume=True)
    assert CLAIM in fake.objects
    agent_reports(fake, "True", NOW)
    stop = NOW + timedelta(hours=1)
    run_at(fake, stop)
    fake.finish_termination(*POD)
    # The pod is gone but no final snapshot is reported yet: the claim stays.
    run_at(fake, stop + timedelta(minutes=1), children=True)
    assert CLAIM in fake.objects
    # A final snapshot of an earlier pod (before this stop) does not count.
    agent_reports(fake, "True", NOW, **healthy_final_snapshot(NOW - timedelta(days=1)))
    run_at(fake, stop + timedelta(minutes=2))
    assert CLAIM in fake.objects
    # This pod's final snapshot, after the IDE stopped: the claim goes.
    agent_reports(fake, "True", NOW, **healthy_final_snapshot(stop + timedelta(seconds=40)))
    outcome = run_at(fake, stop + timedelta(minutes=3))
    assert CLAIM not in fake.objects
    assert Write("delete", CLAIM) in fake.writes
    assert [e.reason for e in outcome.events] == [VOLUME_RELEASED]
    assert "4f2a9c1e" in outcome.events[0].message
    assert "object storage only" in ready(fake)["message"]
    # Full resyncs do not make it again while idle.
    run_at(fake, stop + timedelta(hours=3), children=True)
    assert CLAIM not in fake.objects
    # The wake: a new claim (the agent restores the home into it) and a pod.
    woken = stop + timedelta(hours=4)
    fake.objects[WORKSPACE]["metadata"]["annotations"] = {RESTART_ANNOTATION: timestamp(woken)}
    run_at(fake, woken)  # the annotation's event: a status refresh
    assert CLAIM in fake.objects
    assert POD in fake.objects
    assert phase(fake) == "Pending"


def test_a_failed_final_snapshot_keeps_the_claim() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h", releaseVolume=True)
    agent_reports(fake, "True", NOW)
    stop = NOW + timedelta(hours=1)
    run_at(fake, stop)
    fake.finish_termination(*POD)
    report = healthy_final_snapshot(stop + timedelta(seconds=40))
    report["conditions"][0]["status"] = "False"
    agent_reports(fake, "True", NOW, **report)
    run_at(fake, stop + timedelta(minutes=3))
    assert CLAIM in fake.objects


def test_the_rollout_of_idle_workspaces_only() -> None:
    fake = FakeApi()
    running_with(fake)
    only_idle = settings(
        workspace_image="rstudio:upgraded",
        allowed_image_prefixes=["rstudio:"],
        rollout_only_idle=True,
    )
    rollout = Rollout(max_pods=5)
    outcome = run_at(fake, NOW + timedelta(minutes=1), only_idle, rollout)
    assert not terminating(fake)
    assert outcome.status["pendingRestart"] is True
    assert rollout.under_way() == 0  # a busy workspace takes no place in the rollout
    agent_reports(fake, "True", NOW + timedelta(minutes=2))
    run_at(fake, NOW + timedelta(minutes=8), only_idle, rollout)
    assert terminating(fake)
    assert rollout.under_way() == 1


def test_a_failed_pod_of_an_idle_workspace_is_not_made_again() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h")
    agent_reports(fake, "True", NOW)
    fake.objects[POD]["status"]["phase"] = "Failed"
    run_at(fake, NOW + timedelta(hours=2))
    fake.finish_termination(*POD)
    run_at(fake, NOW + timedelta(hours=2, minutes=1))
    assert POD not in fake.objects
    assert find(fake.objects[WORKSPACE]["status"]["conditions"], READY) is not None
    assert phase(fake) == "Idle"


def test_the_agents_reports_that_need_a_status_refresh() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h", releaseVolume=True)
    status = fake.objects[WORKSPACE]["status"]
    assert not idle_report_unseen(status)
    agent_reports(fake, "True", NOW)
    assert idle_report_unseen(status)  # the operator must compute when it stops
    run_at(fake, NOW + timedelta(hours=1))
    fake.finish_termination(*POD)
    run_at(fake, NOW + timedelta(hours=1, minutes=1))
    body = fake.objects[WORKSPACE]
    assert not idle_report_unseen(body["status"])  # stopped: nothing more to see
    assert not final_snapshot_unseen(body["spec"], body["status"])
    agent_reports(fake, "True", NOW, **healthy_final_snapshot(NOW + timedelta(hours=1)))
    assert final_snapshot_unseen(body["spec"], body["status"])
    assert not final_snapshot_unseen({"idle": {}}, body["status"])


def test_a_claim_the_operator_may_not_delete_says_so_and_stays_idle() -> None:
    fake = FakeApi()
    running_with(fake, stopAfter="1h", releaseVolume=True)
    agent_reports(fake, "True", NOW)
    stop = NOW + timedelta(hours=1)
    run_at(fake, stop)
    fake.finish_termination(*POD)
    agent_reports(fake, "True", NOW, **healthy_final_snapshot(stop + timedelta(seconds=40)))

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise KubeError(Failure.FORBIDDEN, 403, "the operator lacks permission to delete "
                        "persistentvolumeclaims in namespace team")  # fmt: skip

    fake.delete = forbidden  # type: ignore[method-assign]
    run_at(fake, stop + timedelta(minutes=3))
    assert CLAIM in fake.objects
    assert phase(fake) == "Idle"
    assert ready(fake)["reason"] == Reason.OPERATOR_FORBIDDEN
