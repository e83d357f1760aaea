"""Change detection in the home with inotify, ignoring excluded paths.

If inotify is not available (or its watch limit is reached) the agent falls
back to interval snapshots only, and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from inotify_simple import INotify, flags

from rspark_operator.agent.excludes import is_excluded

log = logging.getLogger("rspark.agent.watch")


class Watcher:
    def __init__(
        self, home: Path, excludes: Sequence[str], on_change: Callable[[str], None]
    ) -> None:
        self.home = home
        self.excludes = list(excludes)
        self.on_change = on_change
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="watch", daemon=True)
        self._paths: dict[int, str] = {}  # watch descriptor -> path relative to home

    def start(self) -> bool:
        try:
            self.inotify = INotify()
        except OSError as exc:
            log.warning("inotify unavailable (%s): snapshots on the interval only", exc)
            return False
        self.mask = (
            flags.MODIFY
            | flags.CLOSE_WRITE
            | flags.CREATE
            | flags.DELETE
            | flags.MOVED_FROM
            | flags.MOVED_TO
            | flags.ATTRIB
            | flags.DELETE_SELF
        )
        self.flags = flags
        try:
            self._add_tree("")
        except OSError as exc:
            log.warning("cannot watch the whole home (%s): snapshots on the interval only", exc)
            self.inotify.close()
            return False
        log.info("watching %d directories for changes", len(self._paths))
        self.thread.start()
        return True

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.inotify.close()

    def _add_tree(self, relative: str) -> None:
        root = self.home / relative if relative else self.home
        for directory, dirnames, _ in os.walk(root):
            rel = os.path.relpath(directory, self.home)
            rel = "" if rel == "." else rel
            dirnames[:] = [
                d for d in dirnames if not is_excluded(f"{rel}/{d}".strip("/"), self.excludes)
            ]
            try:
                wd = self.inotify.add_watch(directory, self.mask)
            except FileNotFoundError:
                continue
            self._paths[wd] = rel

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                events = self.inotify.read(timeout=500)
            except OSError:
                return
            changed: str | None = None
            for event in events:
                if event.mask & self.flags.IGNORED:
                    self._paths.pop(event.wd, None)
                    continue
                parent = self._paths.get(event.wd)
                if parent is None:
                    continue
                relative = f"{parent}/{event.name}".strip("/")
                if relative and is_excluded(relative, self.excludes):
                    continue
                if event.mask & self.flags.ISDIR and event.mask & (
                    self.flags.CREATE | self.flags.MOVED_TO
                ):
                    with contextlib.suppress(OSError):
                        self._add_tree(relative)
                changed = relative or "."
            if changed is not None:
                self.on_change(changed)
