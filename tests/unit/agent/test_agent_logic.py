"""Pure logic of the snapshot agent: no I/O."""

from __future__ import annotations

import json

import pytest

from rspark_operator.agent import reasons, schedule
from rspark_operator.agent import secrets as secret_files
from rspark_operator.agent.cli import missing_environment, no_snapshot_message
from rspark_operator.agent.core import restore_choice, restored_from_tag, unreadable_message
from rspark_operator.agent.excludes import (
    BUILTIN_EXCLUDES,
    build_excludes,
    is_excluded,
    restic_patterns,
)
from rspark_operator.agent.report import Status, apply_body, last_snapshot, last_snapshot_of
from rspark_operator.agent.restic import (
    Snapshot,
    backup_args,
    forget_args,
    parse_backup,
    parse_snapshots,
)
from rspark_operator.agent.settings import AgentSettingsError, load, seconds

pytestmark = pytest.mark.unit

BACKUP_SUMMARY = (
    '{"message_type":"status","percent_done":1,"total_files":1}\n'
    '{"message_type":"summary","files_new":1,"files_changed":2,"files_unmodified":3,'
    '"data_added":1340,"data_added_packed":871,"total_bytes_processed":3,'
    '"total_duration":0.69,"snapshot_id":"e21af1ce0e158ecb"}\n'
)
SKIPPED_SUMMARY = (
    '{"message_type":"summary","files_new":0,"files_changed":0,"files_unmodified":1,'
    '"data_added":0,"total_duration":-9223372036.854776,"backup_end":"0001-01-01T00:00:00Z"}\n'
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5m", 300.0), ("30s", 30.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("250ms", 0.25)],
)
def test_durations(text: str, expected: float) -> None:
    assert seconds(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["5", "five minutes", "-5m", ""])
def test_bad_duration_names_the_variable(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_SNAPSHOT_INTERVAL", text)
    with pytest.raises(AgentSettingsError, match="RSPARK_SNAPSHOT_INTERVAL"):
        load()


def test_settings_from_environment_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_WORKSPACE", "team-a/alice")
    monkeypatch.setenv("RSPARK_SNAPSHOT_EXCLUDE", '["data/*.parquet"]')
    monkeypatch.setenv("RSPARK_SECRET_PATHS", '[".ssh", ".config/gh/"]')
    monkeypatch.setenv("RSPARK_RETENTION", '{"keepLast": 3, "keepDaily": 2}')
    monkeypatch.setenv("RSPARK_SNAPSHOT_INTERVAL", "1m")
    settings = load(snapshot_interval="2m", snapshot_host=None)
    assert settings.namespace_name == ("team-a", "alice")
    assert settings.snapshot_exclude == ["data/*.parquet"]
    assert settings.secret_paths == [".ssh", ".config/gh"]
    assert settings.retention is not None
    assert settings.retention == {"keepLast": 3, "keepDaily": 2}
    assert settings.snapshot_interval == "2m"  # the CLI flag wins


def test_secret_path_outside_home_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPARK_SECRET_PATHS", '["../etc"]')
    with pytest.raises(AgentSettingsError, match="RSPARK_SECRET_PATHS"):
        load()


def test_a_workspace_keeps_its_secret_paths_in_its_own_secret_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RSPARK_WORKSPACE", "team-a/alice")
    assert load().secrets_name == "alice-home-secrets"
    monkeypatch.setenv("RSPARK_SECRETS_NAME", "elsewhere")
    assert load().secrets_name == "elsewhere"


def test_standalone_has_no_secret_for_its_secret_paths() -> None:
    assert load().secrets_name is None


def test_standalone_host_is_the_home_basename_not_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import PurePosixPath

    settings = load()
    assert settings.workspace is None
    assert settings.host_for(PurePosixPath("/home/rstudio")) == "rstudio"


def test_exclude_list_keeps_builtins_adds_user_and_secret_paths() -> None:
    patterns = build_excludes(["*.tmp", "/data/scratch", "*.tmp"], [".ssh"])
    assert patterns[: len(BUILTIN_EXCLUDES)] == list(BUILTIN_EXCLUDES)
    assert patterns.count("*.tmp") == 1
    assert patterns[-1] == "/.ssh"


def test_anchored_patterns_become_absolute_for_restic(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from pathlib import PurePosixPath

    home = PurePosixPath("/home/rstudio")
    patterns = restic_patterns(["/.cache", "*.swp"], home)
    assert patterns == ["/home/rstudio/.cache", "*.swp"]


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        (".cache", True),
        (".cache/pip/wheel", True),
        ("project/.cache", False),  # anchored at the home only
        (".local/share/rstudio/sessions/active/session-1/suspended-session-data", True),
        (".local/share/rstudio/sessions/active/session-1/suspended-session-data/x", True),
        (".local/share/rstudio/sessions/active/session-1/properties", True),
        (".local/share/rstudio/sources/session-1/ABCD1234", False),
        (".local/share/rstudio/history_database", False),
        ("notes/.draft.R.swp", True),  # unanchored: any depth
        ("lost+found", True),
        ("projects/analysis.R", False),
        (".ssh/id_ed25519", False),
    ],
)
def test_is_excluded(path: str, excluded: bool) -> None:
    assert is_excluded(path, list(BUILTIN_EXCLUDES)) is excluded


def test_backup_parsing_created_and_skipped() -> None:
    created = parse_backup(BACKUP_SUMMARY, 1.25)
    assert created.snapshot_id == "e21af1ce0e158ecb"
    assert (created.files_new, created.files_changed, created.bytes_added) == (1, 2, 871)
    assert created.duration_seconds == 1.25
    skipped = parse_backup(SKIPPED_SUMMARY, 0.5)
    assert skipped.snapshot_id is None
    assert skipped.duration_seconds == 0.5  # not restic's bogus negative figure


def test_backup_without_summary_is_an_error() -> None:
    from rspark_operator.agent.restic import ResticError

    with pytest.raises(ResticError):
        parse_backup('{"message_type":"status"}\n', 1.0)


def test_snapshots_newest_first_across_precisions() -> None:
    raw = [
        {"id": "a" * 64, "time": "2026-01-01T10:00:00.123456789Z", "hostname": "h", "paths": []},
        {"id": "b" * 64, "time": "2026-01-01T12:00:00+01:00", "hostname": "h", "paths": []},
        {"id": "c" * 64, "time": "2026-01-01T10:00:01Z", "hostname": "h", "paths": []},
    ]
    assert [s.id[0] for s in parse_snapshots(json.dumps(raw))] == ["b", "c", "a"]


@pytest.mark.parametrize(
    ("code", "stderr", "reason"),
    [
        (12, "Fatal: wrong password or no key found", reasons.WRONG_PASSWORD),
        (10, "Fatal: repository does not exist", reasons.REPOSITORY_MISSING),
        (11, "unable to create lock", reasons.REPOSITORY_LOCKED),
        # A wrong password is never mistaken for a missing repository, whatever the text.
        (12, "repository does not exist", reasons.WRONG_PASSWORD),
        (1, "Stat: The specified bucket does not exist", reasons.BUCKET_MISSING),
        (1, "Load(<data/abc>) ciphertext verification failed", reasons.REPOSITORY_CORRUPT),
        (1, "dial tcp 127.0.0.1:9000: connect: connection refused", reasons.STORAGE_UNREACHABLE),
        (1, "something else", reasons.SNAPSHOT_FAILED),
    ],
)
def test_exit_code_and_message_to_reason(code: int, stderr: str, reason: str) -> None:
    assert reasons.classify(code, stderr) == reason


def test_backup_flags() -> None:
    from pathlib import PurePosixPath

    args = backup_args(
        host="ns-ws",
        excludes_file=PurePosixPath("/tmp/x"),  # type: ignore[arg-type]
        parent="abc",
        retry_lock="2m",
    )
    for flag in ("--skip-if-unchanged", "--ignore-inode", "--ignore-ctime", "--json"):
        assert flag in args
    assert args[args.index("--host") + 1] == "ns-ws"
    assert args[args.index("--parent") + 1] == "abc"
    assert args[-1] == "."


def test_forget_flags_keep_only_set_rules() -> None:
    args = forget_args("h", {"keepLast": 5, "keepHourly": 0, "keepDaily": 7})
    assert "--keep-hourly" not in args
    assert args[args.index("--keep-last") + 1] == "5"
    assert args[args.index("--keep-daily") + 1] == "7"
    assert args[args.index("--host") + 1] == "h"


CADENCE = schedule.Cadence(interval=300, debounce=10, max_delay=60, min_spacing=30)


def test_interval_without_changes() -> None:
    assert schedule.next_due(schedule.State(last_attempt=100), CADENCE) == 400


def test_change_waits_for_quiet() -> None:
    state = schedule.record_change(schedule.State(last_attempt=0), 100)
    assert schedule.next_due(state, CADENCE) == 110
    state = schedule.record_change(state, 105)
    assert schedule.next_due(state, CADENCE) == 115


def test_churn_is_saved_after_max_delay() -> None:
    state = schedule.State(last_attempt=0)
    for moment in range(100, 200, 5):  # a write every 5 s, never 10 s of quiet
        state = schedule.record_change(state, moment)
    assert schedule.next_due(state, CADENCE) == 160


def test_rate_is_bounded_by_min_spacing() -> None:
    state = schedule.record_attempt(schedule.State(last_attempt=0), 100, 102, succeeded=True)
    state = schedule.record_change(state, 101)
    assert schedule.next_due(state, CADENCE) == 130


def test_change_during_snapshot_stays_pending() -> None:
    state = schedule.record_change(schedule.State(last_attempt=0), 100)
    state = schedule.record_change(state, 120)  # while the snapshot started at 110 runs
    state = schedule.record_attempt(state, 110, 125, succeeded=True)
    assert state.first_change is not None
    assert schedule.next_due(state, CADENCE) == 140  # 110 + min spacing
    done = schedule.record_attempt(schedule.record_change(state, 100), 150, 151, succeeded=True)
    assert done.first_change is None


def test_failures_back_off_up_to_the_interval() -> None:
    state = schedule.State(last_attempt=0)
    delays = []
    for _ in range(8):
        state = schedule.record_attempt(state, 0, 0, succeeded=False)
        delays.append(schedule.next_due(state, CADENCE))
    assert delays[:4] == [5, 10, 20, 40]
    assert max(delays) == 300
    assert schedule.record_attempt(state, 0, 0, succeeded=True).failures == 0


def test_backoff_counts_from_the_end_of_a_failed_attempt() -> None:
    # An attempt that hung for 20 s until its timeout is still followed by a pause.
    state = schedule.record_attempt(schedule.State(last_attempt=0), 100, 120, succeeded=False)
    assert schedule.next_due(state, CADENCE) == 125
    # A success keeps the interval from its start.
    state = schedule.record_attempt(state, 125, 145, succeeded=True)
    assert schedule.next_due(state, CADENCE) == 425


@pytest.mark.parametrize(
    ("last_done", "now", "wait"),
    [
        (None, 1000.0, 0.0),  # never on this volume (or a new one): due now
        (1000.0 - 3600, 1000.0, 86400.0 - 3600),  # done an hour ago: the rest of the day
        (1000.0 - 2 * 86400, 1000.0, 0.0),  # overdue (the pod was down for days)
        (1000.0 + 3600, 1000.0, 86400.0),  # stamp from the future (clock set back): one day
    ],
)
def test_maintenance_wait_from_the_remembered_time(
    last_done: float | None, now: float, wait: float
) -> None:
    assert schedule.maintenance_wait(last_done, now, 86400.0) == wait


def test_failed_maintenance_retries_gently() -> None:
    base = schedule.MAINTENANCE_RETRY_BASE_SECONDS
    delays = [schedule.backoff(n, 86400.0, base) for n in range(1, 12)]
    assert delays[:3] == [base, 2 * base, 4 * base]
    assert max(delays) == 86400.0


def test_secrets_pack_round_trip() -> None:
    entries = [
        secret_files.Entry(".ssh", "dir", mode=0o700),
        secret_files.Entry(".ssh/id_ed25519", "file", mode=0o600, content=b"\x00key\xff"),
        secret_files.Entry(".ssh/current", "symlink", target="id_ed25519"),
        secret_files.Entry(".ssh/agent.sock", "skip"),
    ]
    document = secret_files.pack(entries)
    back = secret_files.unpack(document)
    assert back == entries[:3]


def test_secrets_over_the_limit_fail_loudly() -> None:
    big = secret_files.Entry(".ssh/huge", "file", mode=0o600, content=b"x" * 2000)
    with pytest.raises(secret_files.SecretsTooLarge, match=r"\.ssh/huge \(2000 bytes\)"):
        secret_files.pack([big], limit=1000)


def test_secret_document_cannot_escape_the_home() -> None:
    evil = json.dumps({"version": 1, "entries": [{"path": "../x", "type": "dir", "mode": 1}]})
    with pytest.raises(ValueError, match="outside the home"):
        secret_files.unpack(evil.encode())


def test_status_keeps_transition_time_and_publishes_only_changes() -> None:
    from datetime import UTC, datetime, timedelta

    published: list[dict[str, object]] = []

    class Sink:
        def publish(self, status: dict[str, object]) -> None:
            published.append(status)

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    status = Status([Sink()], clock=lambda: now[0])
    status.condition("SnapshotHealthy", "True", reasons.SNAPSHOT_SUCCEEDED, "ok")
    now[0] += timedelta(minutes=5)
    status.condition("SnapshotHealthy", "True", reasons.SNAPSHOT_SUCCEEDED, "ok")
    assert len(published) == 1
    status.condition("SnapshotHealthy", "False", reasons.STORAGE_UNREACHABLE, "down")
    conditions = status.snapshot()["conditions"]
    assert conditions[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    entry = last_snapshot(
        finished=now[0], snapshot_id="abc", bytes_added=10, duration_seconds=1.23456
    )
    status.remember_snapshot(entry)
    assert len(published) == 2, "the snapshot goes out with the condition that follows it"
    status.condition("SnapshotHealthy", "True", reasons.SNAPSHOT_SUCCEEDED, "snapshot abc taken")
    assert len(published) == 3
    sent = published[-1]["lastSnapshot"]
    assert isinstance(sent, dict) and sent["id"] == "abc"
    body = apply_body("ns", "ws", status.snapshot())
    assert body["kind"] == "RStudioWorkspace"
    assert set(body["status"]) == {"lastSnapshot", "conditions"}
    assert body["status"]["lastSnapshot"] == {
        "time": "2026-01-01T00:05:00Z",
        "id": "abc",
        "bytesAdded": 10,
        "durationSeconds": 1.235,
    }


UNREADABLE_STDERR = (
    '{"message_type":"error","error":{"message":"/h/sub/secret: open sub/secret: permission '
    'denied"},"during":"archival","item":"/h/sub/secret"}\n'
    '{"message_type":"error","error":{"message":"/h/x: permission denied"},"during":"scan",'
    '"item":"/h/x"}\n'
    '{"message_type":"exit_error","code":3,"message":"Warning: at least one source file could '
    'not be read"}\n'
)


def test_unreadable_files_come_from_restics_json_errors() -> None:
    summary = parse_backup(BACKUP_SUMMARY, 1.0, UNREADABLE_STDERR)
    assert summary.snapshot_id == "e21af1ce0e158ecb"  # the snapshot still counts
    assert summary.unreadable == ("/h/sub/secret", "/h/x")
    assert parse_backup(BACKUP_SUMMARY, 1.0, "").unreadable == ()


def test_unreadable_message_names_paths_in_the_home() -> None:
    from pathlib import PurePosixPath

    home = PurePosixPath("/h")
    message = unreadable_message(["/h/sub/secret", "/h/x"], home)  # type: ignore[arg-type]
    assert message == "2 unreadable: sub/secret, x"
    many = unreadable_message([f"/h/f{i}" for i in range(8)], home)  # type: ignore[arg-type]
    assert many == "8 unreadable: f0, f1, f2, f3, f4 and 3 more"


def _snapshot(ident: str, tags: list[str] | None = None, **summary: object) -> Snapshot:
    return Snapshot(
        id=ident * 8,
        short_id=ident,
        time="2026-01-01T10:00:00.5Z",
        hostname="h",
        paths=["/home"],
        summary=dict(summary),
        tags=tags or [],
    )


def test_restore_from_applies_once() -> None:
    older, newer = _snapshot("a0a0a0a0"), _snapshot("b1b1b1b1")
    # Not yet worked on from the restored point: restoreFrom still applies.
    assert restore_choice("a0a0a0a0", [newer, older]) == "a0a0a0a0"
    # A snapshot taken while restoreFrom was set: the user went on; the newest wins.
    worked = _snapshot("c2c2c2c2", tags=[restored_from_tag("a0a0a0a0")])
    assert restore_choice("a0a0a0a0", [worked, newer, older]) is None
    # Another restoreFrom is a new request.
    assert restore_choice("b1b1b1b1", [worked, newer, older]) == "b1b1b1b1"
    assert restore_choice(None, [worked]) is None


def test_snapshots_carry_their_tags_and_backups_add_them() -> None:
    raw = [{"id": "a" * 64, "time": "2026-01-01T10:00:00Z", "tags": ["x=1"], "paths": []}]
    assert parse_snapshots(json.dumps(raw))[0].tags == ["x=1"]
    from pathlib import PurePosixPath

    args = backup_args(
        host="h",
        excludes_file=PurePosixPath("/tmp/x"),  # type: ignore[arg-type]
        parent=None,
        retry_lock="2m",
        tags=["rspark-restored-from=abc"],
    )
    assert args[args.index("--tag") + 1] == "rspark-restored-from=abc"
    assert args[-1] == "."


def test_last_snapshot_from_restics_record() -> None:
    found = _snapshot(
        "d3d3d3d3",
        backup_start="2026-01-01T10:00:00.250000001Z",
        backup_end="2026-01-01T10:00:02.000000001Z",
        data_added=2000,
        data_added_packed=871,
    )
    assert last_snapshot_of(found) == {
        "time": "2026-01-01T10:00:02Z",
        "id": "d3d3d3d3" * 8,
        "bytesAdded": 871,
        "durationSeconds": 1.75,
    }
    # Snapshots of restic < 0.17 carry no summary: time and id (what the CRD requires).
    assert last_snapshot_of(_snapshot("e4e4e4e4")) == {
        "time": "2026-01-01T10:00:00Z",
        "id": "e4e4e4e4" * 8,
    }


def test_restarted_agents_first_status_write_keeps_last_snapshot() -> None:
    """Server-side apply drops fields a manager stops sending: the first write must carry it."""
    published: list[dict[str, object]] = []

    class Sink:
        def publish(self, status: dict[str, object]) -> None:
            published.append(status)

    status = Status([Sink()])
    status.remember_snapshot(last_snapshot_of(_snapshot("d3d3d3d3")))
    assert published == []  # remembered, not sent on its own (it would drop the conditions)
    status.condition("HomeRestored", "True", reasons.HOME_PRESENT, "home already on its volume")
    assert len(published) == 1
    first = published[0]
    assert first["lastSnapshot"] == {"time": "2026-01-01T10:00:00Z", "id": "d3d3d3d3" * 8}
    body = apply_body("ns", "ws", status.snapshot())
    assert set(body["status"]) == {"lastSnapshot", "conditions"}


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"RESTIC_REPOSITORY": "s3:x", "RESTIC_PASSWORD": "p"}, []),
        ({"RESTIC_REPOSITORY": "s3:x", "RESTIC_PASSWORD_FILE": "/run/pw"}, []),
        ({"RESTIC_REPOSITORY_FILE": "/run/repo", "RESTIC_PASSWORD_COMMAND": "cat pw"}, []),
        (
            {"RESTIC_REPOSITORY": "s3:x"},
            ["RESTIC_PASSWORD or RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND"],
        ),
        (
            {"RESTIC_PASSWORD": "p", "RESTIC_REPOSITORY": ""},
            ["RESTIC_REPOSITORY or RESTIC_REPOSITORY_FILE"],
        ),
    ],
)
def test_required_environment_accepts_restics_alternatives(
    env: dict[str, str], missing: list[str]
) -> None:
    assert missing_environment(env) == missing


def test_no_snapshot_message_names_the_hosts_and_the_flag() -> None:
    message = no_snapshot_message("restored", ["alice", "bob"])
    assert "'restored'" in message
    assert "alice, bob" in message
    assert "--host" in message
    assert "has none" in no_snapshot_message("restored", [])
