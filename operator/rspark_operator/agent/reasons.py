"""Condition reasons the agent writes, and how restic's exit codes and messages map to them.

Exit codes (restic 0.17+, doc/075_scripting.rst): 0 ok, 1 failed, 2 Go runtime
error, 3 backup could not read some files (snapshot still made), 10 repository
does not exist, 11 failed to lock, 12 wrong password, 130 interrupted.
"""

from __future__ import annotations

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
