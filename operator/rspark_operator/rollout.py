"""How many workspace pods the operator replaces at once for its own reasons.

A pod held for a new image setting or an operator upgrade (`PodAction.HOLD`) is
replaced only when the rollout admits its workspace; the workspace keeps its
place until its new pod is Ready (a new pod that never starts stops the rollout
there, as a Deployment's maxUnavailable would). In memory: after an operator
restart, the workspaces under way finish and the count starts again.
"""

from __future__ import annotations

import threading

Key = tuple[str, str]  # namespace, name


class Rollout:
    def __init__(self, max_pods: int) -> None:
        self.max_pods = max_pods
        self._lock = threading.Lock()
        self._under_way: set[Key] = set()

    def admit(self, key: Key) -> bool:
        """May this workspace's pod be replaced now? It then counts until `finish`."""
        with self._lock:
            if key in self._under_way:
                return True
            if len(self._under_way) >= self.max_pods:
                return False
            self._under_way.add(key)
            return True

    def finish(self, key: Key) -> None:
        """The workspace's pod is current and Ready (or it needs none, or it is gone)."""
        with self._lock:
            self._under_way.discard(key)

    def under_way(self) -> int:
        with self._lock:
            return len(self._under_way)
