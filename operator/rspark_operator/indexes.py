"""An in-memory index of watched objects: what each object (by uid) gives, by key.

Each object contributes a mapping of keys to values (a workspace: its namespace to
its name and user); giving a new mapping replaces the old one, a deleted object is
removed. The watches (`main.py`, on kopf's loop) write; the reconciles read from their
threads: every call holds a lock, and what a read returns is a copy.

kopf has indexes of its own (`@kopf.index`), but with any of them every object's
handler waits until every index of every resource is filled, each object's toggle
waking every waiting handler: quadratic in the objects listed at a start (measured:
1.3 GB RSS and about 90% of a CPU for many minutes after a restart at 10,000
workspaces). Pure: no kopf, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Index(Generic[K, V]):
    """Values by key, each from one object (its uid); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # What each object gave (an empty mapping too: the object is known).
        self._given: dict[str, dict[K, V]] = {}
        # The values of each key, by the uid that gave them, in the order first given.
        self._by_key: dict[K, dict[str, V]] = {}

    def set(self, uid: str, mapping: Mapping[K, V]) -> None:
        """What object `uid` gives now, in place of what it gave before."""
        with self._lock:
            self._set(uid, mapping)

    def remove(self, uid: str) -> None:
        """Forget object `uid` (nothing if unknown)."""
        with self._lock:
            self._set(uid, {})
            del self._given[uid]

    def get(self, key: K) -> tuple[V, ...]:
        """The values of `key`, one by object that gives it."""
        with self._lock:
            return tuple(self._by_key.get(key, {}).values())

    def items(self) -> list[tuple[K, V]]:
        """Every key with each of its values."""
        with self._lock:
            return [
                (key, value) for key, values in self._by_key.items() for value in values.values()
            ]

    def __contains__(self, uid: object) -> bool:
        """Whether object `uid` has given something (if only an empty mapping)."""
        with self._lock:
            return uid in self._given

    def _set(self, uid: str, mapping: Mapping[K, V]) -> None:
        new = dict(mapping)
        for key in self._given.get(uid, {}).keys() - new.keys():
            values = self._by_key[key]
            del values[uid]
            if not values:
                del self._by_key[key]
        for key, value in new.items():
            self._by_key.setdefault(key, {})[uid] = value
        self._given[uid] = new
