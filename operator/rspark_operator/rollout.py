"""How many workspace pods the operator replaces at once for its own reasons.

A pod held for a new image setting or an operator upgrade (`PodAction.HOLD`) is
replaced only when the rollout admits its workspace; the workspace keeps its
place until its new pod is Ready (a new pod that never starts stops the rollout
there, as a Deployment's maxUnavailable would), and then the next waiting
workspace is woken. In memory: after an operator restart, the workspaces under
way finish and the count starts again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Key = tuple[str, str]  # namespace, name


class Rollout:
    def __init__(self, max_pods: int, wake: Callable[[Key], None] = lambda key: None) -> None:
        self.max_pods = max_pods
        self._wake = wake
        self._lock = threading.Lock()
        self._under_way: set[Key] = set()
        self._waiting: dict[Key, None] = {}  # in the order they asked

    def admit(self, key: Key) -> bool:
        """May this workspace's pod be replaced now? It then counts until `finish`."""
        with self._lock:
            if key in self._under_way:
                return True
            if len(self._under_way) >= self.max_pods:
                self._waiting[key] = None
                return False
            self._waiting.pop(key, None)
            self._under_way.add(key)
            return True

    def finish(self, key: Key) -> None:
        """The workspace's pod is current and Ready (or it needs none, or it is gone):
        its place goes to the workspace that has waited longest."""
        with self._lock:
            self._waiting.pop(key, None)
            if key not in self._under_way:
                return
            self._under_way.discard(key)
            woken = next(iter(self._waiting), None)
        if woken is not None:
            self._wake(woken)

    def under_way(self) -> int:
        with self._lock:
            return len(self._under_way)
