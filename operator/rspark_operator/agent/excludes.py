"""What is not worth a snapshot, and when a home counts as empty.

Patterns follow restic: a pattern starting with "/" is anchored at the home
(the agent turns it into an absolute restic pattern), any other pattern matches
at any depth; "*" does not cross "/", "**" does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path, PurePath

# Caches and transient files: rebuilt on demand, large, and churning. Snapshotting
# them costs upload and would wake the agent for every write.
BUILTIN_EXCLUDES: tuple[str, ...] = (
    # XDG cache: pip, R's pak/renv download caches, and restic's own cache when
    # the agent runs with the user's HOME (it must never snapshot itself).
    "/.cache",
    # Created by mkfs on a fresh volume: says nothing about the user's home.
    "/lost+found",
    # RStudio: its R sessions (a session folder restored without the process or the
    # serialized R environment behind it cannot resume: RStudio would report an
    # abnormally terminated session; the environment can be GBs, rewritten on
    # every suspend) and logs. Open documents, history and settings are kept.
    "/.local/share/rstudio/sessions",
    "/.local/share/rstudio/log",
    # Desktop trash and Spark's --packages download cache (ivy), both re-creatable.
    "/.local/share/Trash",
    "/.ivy2/cache",
    # Editor swap/lock files appear and vanish within seconds.
    "*.swp",
    ".#*",
)


def build_excludes(user: Sequence[str], secret_paths: Sequence[str]) -> list[str]:
    """Built-in excludes, then the workspace's, then the secret paths (kept elsewhere)."""
    patterns = list(BUILTIN_EXCLUDES)
    patterns += [p.strip() for p in user if p.strip()]
    patterns += ["/" + p.strip("/") for p in secret_paths]
    return list(dict.fromkeys(patterns))


def restic_patterns(patterns: Iterable[str], home: PurePath) -> list[str]:
    """Anchored patterns become absolute paths under the (resolved) home, as restic sees it."""
    root = str(home).rstrip("/")
    return [root + p if p.startswith("/") else p for p in patterns]


@lru_cache(maxsize=256)
def _component(pattern: str) -> re.Pattern[str]:
    out = []
    for part in re.split(r"(\*\*|\*|\?)", pattern):
        if part == "**":
            out.append(".*")
        elif part == "*":
            out.append("[^/]*")
        elif part == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def is_excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Whether a path relative to the home (no leading "/") falls under a pattern.

    A path is excluded when it, or one of its parent directories, matches.
    """
    parts = relative.strip("/").split("/")
    for pattern in patterns:
        anchored = pattern.startswith("/")
        pattern_parts = pattern.strip("/").split("/")
        size = len(pattern_parts)
        starts = [0] if anchored else range(len(parts))
        for start in starts:
            window = parts[start : start + size]
            if len(window) == size and all(
                _component(p).fullmatch(w) for p, w in zip(pattern_parts, window, strict=True)
            ):
                return True
    return False


def home_is_empty(home: Path, patterns: Sequence[str]) -> bool:
    """True when nothing worth a snapshot is there.

    Excluded entries do not count, and neither does a directory holding only
    excluded entries; a file, symlink or an empty directory of the user's does.
    """
    if not home.exists():
        return True

    def has_content(directory: Path, prefix: str) -> bool:
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = f"{prefix}{entry.name}"
                if is_excluded(relative, patterns):
                    continue
                if not entry.is_dir(follow_symlinks=False):
                    return True
                child = Path(entry.path)
                if not any(child.iterdir()) or has_content(child, relative + "/"):
                    return True
        return False

    return not has_content(home, "")
