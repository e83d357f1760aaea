"""Secret paths (default `.ssh`): packed into one JSON document for a Kubernetes Secret.

Document (key `secret-paths.json` of the Secret):
    {"version": 1, "entries": [
        {"path": ".ssh", "type": "dir", "mode": 448},
        {"path": ".ssh/id_ed25519", "type": "file", "mode": 384, "content": "<base64>"},
        {"path": ".ssh/current", "type": "symlink", "target": "id_ed25519"}]}
Paths are relative to the home; modes are the permission bits (0600 = 384).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET_KEY = "secret-paths.json"
# A Secret holds at most 1 MiB of data; the API server stores it base64-encoded in
# etcd next to metadata. Keep a quarter for that overhead and the other keys.
MAX_DOCUMENT_BYTES = 768 * 1024
VERSION = 1


class SecretsTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    path: str
    type: str  # "dir" | "file" | "symlink"
    mode: int = 0
    content: bytes = b""
    target: str = ""
    mtime_ns: int = 0

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "type": self.type}
        if self.type == "symlink":
            out["target"] = self.target
        else:
            out["mode"] = self.mode
        if self.mtime_ns:
            out["mtime"] = self.mtime_ns
        if self.type == "file":
            out["content"] = base64.b64encode(self.content).decode()
        return out


def collect(home: Path, secret_paths: Sequence[str]) -> list[Entry]:
    """Files, directories and symlinks under each secret path, parents first."""
    entries: list[Entry] = []
    for relative in secret_paths:
        root = home / relative
        if not root.exists() and not root.is_symlink():
            continue
        entries.append(_entry(home, root))
        if root.is_dir() and not root.is_symlink():
            for directory, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(dirnames) + sorted(filenames):
                    entries.append(_entry(home, Path(directory) / name))
    return entries


def _entry(home: Path, path: Path) -> Entry:
    relative = str(path.relative_to(home))
    info = path.lstat()
    mode, mtime = stat.S_IMODE(info.st_mode), info.st_mtime_ns
    if stat.S_ISLNK(info.st_mode):
        return Entry(relative, "symlink", target=str(path.readlink()), mtime_ns=mtime)
    if stat.S_ISDIR(info.st_mode):
        return Entry(relative, "dir", mode=mode, mtime_ns=mtime)
    if stat.S_ISREG(info.st_mode):
        return Entry(relative, "file", mode=mode, content=path.read_bytes(), mtime_ns=mtime)
    # Sockets (ssh-agent) and pipes are runtime objects: nothing to keep.
    return Entry(relative, "skip")


def pack(entries: Sequence[Entry], limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The JSON document; raises SecretsTooLarge past the limit (never drops entries)."""
    document = json.dumps(
        {"version": VERSION, "entries": [e.wire() for e in entries if e.type != "skip"]},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if len(document) > limit:
        biggest = sorted(
            (e for e in entries if e.type == "file"), key=lambda e: len(e.content), reverse=True
        )[:3]
        names = ", ".join(f"{e.path} ({len(e.content)} bytes)" for e in biggest)
        raise SecretsTooLarge(
            f"secret paths take {len(document)} bytes, more than the {limit} a Secret can "
            f"hold here; largest: {names}. Move large files out of the secret paths."
        )
    return document


def unpack(document: bytes) -> list[Entry]:
    data = json.loads(document)
    if data.get("version") != VERSION:
        raise ValueError(f"unknown secret document version {data.get('version')!r}")
    entries = []
    for item in data.get("entries", []):
        path = str(item["path"])
        if path.startswith("/") or ".." in Path(path).parts:
            raise ValueError(f"secret entry {path!r} points outside the home")
        entries.append(
            Entry(
                path=path,
                type=str(item["type"]),
                mode=int(item.get("mode", 0)),
                content=base64.b64decode(item.get("content", "")),
                target=str(item.get("target", "")),
                mtime_ns=int(item.get("mtime", 0)),
            )
        )
    return entries


def write(home: Path, entries: Sequence[Entry]) -> None:
    """Write entries back with their modes: files land with their mode before content."""
    for entry in entries:
        path = home / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry.type == "dir":
            path.mkdir(exist_ok=True)
        elif entry.type == "symlink":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            path.symlink_to(entry.target)
        elif entry.type == "file":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, entry.mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(entry.content)
            path.chmod(entry.mode)
    # Directory modes and all mtimes last, deepest first: writing a child moves its
    # parent's mtime, and a 0500 directory would refuse its own children.
    for entry in reversed(entries):
        path = home / entry.path
        if entry.type == "dir":
            path.chmod(entry.mode)
        if entry.mtime_ns and entry.type != "skip":
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
