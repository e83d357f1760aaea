"""kubectl rspark's views of a workspace: pure functions of the object."""

from __future__ import annotations

from typing import Any

import pytest

from rspark_operator import plugin

pytestmark = pytest.mark.unit


def workspace(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "alice", "namespace": "team-a"},
        "spec": {"user": "alice@example.com", "suspended": False},
        "status": status,
    }


FAILING = workspace(
    phase="Pending",
    url="https://alice.example.com/",
    pendingRestart=True,
    lastSnapshot={"time": "2026-01-02T03:04:05Z", "id": "4f2a9c1e77"},
    conditions=[
        {"type": "Ready", "status": "False", "reason": "HomeNotRestored", "message": "m"},
        {"type": "HomeRestored", "status": "False", "reason": "WrongPassword", "message": "w"},
        {"type": "SnapshotHealthy", "status": "True", "reason": "NoSuchReason", "message": ""},
    ],
)


def test_summary_of_a_new_workspace_without_status() -> None:
    assert plugin.summary({"metadata": {"name": "a", "namespace": "n"}}) == {
        "namespace": "n", "name": "a", "phase": "", "reason": "", "url": "",
        "lastSnapshot": "", "pendingRestart": False,
    }  # fmt: skip


def test_each_condition_carries_the_advice_of_its_own_reason_table() -> None:
    view = plugin.details(FAILING)
    ready, restored, healthy = view["conditions"]
    assert "HomeRestored" in ready["user"]  # status.ADVICE for Ready
    assert "<name>-passwords" in restored["admin"] and restored["user"] == ""  # the agent's
    assert healthy["user"] == healthy["admin"] == ""  # an unknown reason: no advice
    text = plugin.status_text(view)
    assert "Pending restart: yes" in text and "4f2a9c1e at 2026-01-02T03:04:05Z" in text
    assert "WrongPassword (administrator):" in text


def test_tables_align_columns_like_kubectl() -> None:
    assert plugin.table(["a", "bb"], [["xxx", "y"], ["z", ""]]).splitlines() == [
        "A     BB",
        "xxx   y",
        "z",
    ]
    listed = plugin.list_text([FAILING], all_namespaces=True).splitlines()
    assert listed[1].split()[:4] == ["team-a", "alice", "Pending", "(restart"]


SNAPSHOTS: list[dict[str, Any]] = [
    {"id": "bbbb" + "1" * 60, "time": "2026-01-06T10:00:00.123456789+01:00", "tags": ["x"]},
    {"id": "aaaa" + "2" * 60, "time": "2026-01-05T10:00:00Z"},
    {"id": "aaab" + "3" * 60, "time": "2026-01-05T09:00:00.5Z"},
]


def test_restic_times_with_nanoseconds_and_offsets_are_read() -> None:
    assert plugin.snapshot_time(SNAPSHOTS[0]).isoformat() == "2026-01-06T10:00:00.123456+01:00"
    assert [row["shortId"] for row in plugin.snapshot_rows(SNAPSHOTS)] == [
        "aaab3333", "aaaa2222", "bbbb1111"]  # fmt: skip


def test_a_snapshot_is_chosen_by_unique_id_prefix_or_as_the_newest_before_a_time() -> None:
    assert plugin.choose_snapshot(SNAPSHOTS, "BBBB", None)["id"] == SNAPSHOTS[0]["id"]
    before = plugin.snapshot_time({"time": "2026-01-06T09:30:00+01:00"})
    assert plugin.choose_snapshot(SNAPSHOTS, None, before)["id"] == SNAPSHOTS[1]["id"]
    for snapshot_id, message in (("aaa", "2 snapshots with id aaa"), ("cc", "no snapshot")):
        with pytest.raises(plugin.PluginError) as refused:
            plugin.choose_snapshot(SNAPSHOTS, snapshot_id, None)
        assert refused.value.code == plugin.EXIT_NOT_NOW and message in str(refused.value)
    with pytest.raises(plugin.PluginError, match="no snapshot before"):
        plugin.choose_snapshot(
            SNAPSHOTS, None, plugin.snapshot_time({"time": "2020-01-01T00:00:00Z"})
        )
