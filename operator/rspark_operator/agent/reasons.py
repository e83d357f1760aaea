"""Condition reasons the agent writes, and how restic's exit codes and messages map to them.

Exit codes (restic 0.17+, doc/075_scripting.rst): 0 ok, 1 failed, 2 Go runtime
error, 3 backup could not read some files (snapshot still made), 10 repository
does not exist, 11 failed to lock, 12 wrong password, 130 interrupted.
"""

from __future__ import annotations

from rspark_operator.conditions import Advice

# SnapshotHealthy
SNAPSHOT_SUCCEEDED = "SnapshotSucceeded"
STORAGE_UNREACHABLE = "StorageUnreachable"
REPOSITORY_LOCKED = "RepositoryLocked"
WRONG_PASSWORD = "WrongPassword"
REPOSITORY_MISSING = "RepositoryMissing"
BUCKET_MISSING = "BucketMissing"
REPOSITORY_CORRUPT = "RepositoryCorrupt"
SECRETS_TOO_LARGE = "SecretsTooLarge"
SECRETS_UNAVAILABLE = "SecretsUnavailable"
HOME_EMPTY = "HomeEmpty"
SNAPSHOT_FAILED = "SnapshotFailed"
TIMED_OUT = "TimedOut"
FILES_UNREADABLE = "FilesUnreadable"  # restic exit 3: the snapshot is made, without them
UNEXPECTED_ERROR = "UnexpectedError"  # an OSError of the agent (a permission, a vanished binary)
CHECK_PASSED = "CheckPassed"  # a check found the repository intact again

# HomeRestored
RESTORING = "Restoring"
RESTORED = "Restored"
FRESH_HOME = "FreshHome"
HOME_PRESENT = "HomePresent"
RESTORE_FAILED = "RestoreFailed"

# What each reason means and what to do (docs/reference/troubleshooting.md). The
# failures are SnapshotHealthy=False, or HomeRestored=False when they stop a restore.
_AGENT_LOG = "`kubectl logs NAME -c snapshot-agent`"
ADVICE: dict[str, Advice] = {
    SNAPSHOT_SUCCEEDED: Advice("The last snapshot succeeded (`status.lastSnapshot`)."),
    STORAGE_UNREACHABLE: Advice(
        "Object storage does not answer (connection refused, unknown host, timeout, 503). "
        "The agent retries with backoff; the home is safe on its volume meanwhile.",
        admin="Check the endpoint in `RSPARK_SNAPSHOT_REPOSITORY_BASE` (or "
        "`spec.snapshot.repository`), egress from the namespace, and the storage itself.",
    ),
    REPOSITORY_LOCKED: Advice(
        "Another restic process holds a lock on the repository (often a stale lock of a "
        "killed pod). The agent retries; maintenance removes stale locks.",
        admin=f"If it lasts, read {_AGENT_LOG}; `restic unlock` removes stale locks.",
    ),
    WRONG_PASSWORD: Advice(
        "The repository's password is not the one in the Secret `<name>-passwords`: that "
        "Secret was deleted and made anew, or the repository belongs to another workspace.",
        admin="Apply the backed-up `<name>-passwords` Secret again, or give the workspace "
        "a new repository path (`spec.snapshot.repository`).",
    ),
    REPOSITORY_MISSING: Advice(
        "There is no restic repository at the URL. At start this is normal: the first "
        "snapshot creates it.",
        admin="If snapshots existed, the repository URL changed: check "
        "`RSPARK_SNAPSHOT_REPOSITORY_BASE` and `spec.snapshot.repository`.",
    ),
    BUCKET_MISSING: Advice(
        "The bucket named in the repository URL does not exist.",
        admin="Create the bucket, or fix `RSPARK_SNAPSHOT_REPOSITORY_BASE`.",
    ),
    REPOSITORY_CORRUPT: Advice(
        "restic found damaged data in the repository.",
        "Keep working: the home is intact on its volume.",
        "Run `restic check` and restic's repair commands on the repository "
        f"(password in `<name>-passwords`); {_AGENT_LOG} names what is damaged.",
    ),
    SECRETS_TOO_LARGE: Advice(
        "The files under `spec.secretPaths` do not fit in one Secret (1 MiB).",
        "Move large files out of the secret paths, or list fewer paths.",
    ),
    SECRETS_UNAVAILABLE: Advice(
        "The agent cannot read or write the Secret `<name>-home-secrets`.",
        admin=f"Read {_AGENT_LOG}; the workspace's Role must grant it get and update.",
    ),
    HOME_EMPTY: Advice(
        "The home is empty. True: nothing to save yet. False: snapshots exist, so the agent "
        "refuses to snapshot an empty home (the good ones stay in retention).",
        "If the volume was wiped: suspend, delete the claim `<name>-home`, resume; the "
        "agent restores the newest snapshot.",
    ),
    SNAPSHOT_FAILED: Advice(
        "restic failed for another reason; the message quotes it.",
        admin=f"Read {_AGENT_LOG}.",
    ),
    TIMED_OUT: Advice(
        "A restic command ran longer than its timeout (`RSPARK_RESTIC_TIMEOUT`, 10m).",
        admin="Check the storage's throughput; a very large home needs longer.",
    ),
    FILES_UNREADABLE: Advice(
        "The snapshot was made, without some files the agent could not read.",
        "Make the files the message names readable, or exclude them (`spec.snapshot.exclude`).",
    ),
    UNEXPECTED_ERROR: Advice(
        "The agent hit an operating system error (a permission, a missing binary).",
        admin=f"Read {_AGENT_LOG}; check the agent image (`RSPARK_AGENT_IMAGE`).",
    ),
    CHECK_PASSED: Advice("A repository check found it intact again."),
    RESTORING: Advice("The agent restores the home before RStudio starts."),
    RESTORED: Advice("The home was restored from the snapshot the message names."),
    FRESH_HOME: Advice("Nothing to restore: the repository holds no snapshot yet."),
    HOME_PRESENT: Advice("The home was already on its volume; nothing was restored."),
    RESTORE_FAILED: Advice(
        "The restore failed; the message says why (a `spec.snapshot.restoreFrom` that "
        "names no snapshot, for one).",
        "Fix or remove `spec.snapshot.restoreFrom`.",
        f"Read {_AGENT_LOG}.",
    ),
}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 3
EXIT_NO_REPOSITORY = 10
EXIT_LOCKED = 11
EXIT_WRONG_PASSWORD = 12
EXIT_INTERRUPTED = 130

_BY_EXIT_CODE = {
    EXIT_NO_REPOSITORY: REPOSITORY_MISSING,
    EXIT_LOCKED: REPOSITORY_LOCKED,
    EXIT_WRONG_PASSWORD: WRONG_PASSWORD,
}

# Substrings of restic's stderr, checked in order; the first match names the cause.
_BY_MESSAGE: tuple[tuple[str, str], ...] = (
    ("the specified bucket does not exist", BUCKET_MISSING),
    ("nosuchbucket", BUCKET_MISSING),
    ("wrong password", WRONG_PASSWORD),
    ("ciphertext verification failed", REPOSITORY_CORRUPT),
    ("does not match", REPOSITORY_CORRUPT),  # "hash does not match id"
    ("invalid data returned", REPOSITORY_CORRUPT),
    ("data blob", REPOSITORY_CORRUPT),
    ("pack file", REPOSITORY_CORRUPT),
    ("connection refused", STORAGE_UNREACHABLE),
    ("no such host", STORAGE_UNREACHABLE),
    ("i/o timeout", STORAGE_UNREACHABLE),
    ("connection reset", STORAGE_UNREACHABLE),
    ("unexpected eof", STORAGE_UNREACHABLE),
    ("503 service unavailable", STORAGE_UNREACHABLE),
    ("repository is already locked", REPOSITORY_LOCKED),
)


def classify_message(text: str) -> str | None:
    lowered = text.lower()
    return next((reason for needle, reason in _BY_MESSAGE if needle in lowered), None)


def classify(exit_code: int, stderr: str) -> str:
    """The reason for a failed restic command.

    The exit code wins where restic defines one: a wrong password (12) is never
    taken for a missing repository (10), which would lead to `init`.
    """
    if exit_code in _BY_EXIT_CODE:
        return _BY_EXIT_CODE[exit_code]
    return classify_message(stderr) or SNAPSHOT_FAILED


def is_retry_line(line: str) -> bool:
    """restic's backend says it will retry a storage request."""
    return "retrying after" in line or "returned error, retrying" in line
