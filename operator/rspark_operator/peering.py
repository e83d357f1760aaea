"""Which operator replica acts: kopf's peering rule, for the operator's own resync loop.

kopf pauses its watches in every replica but the one of highest priority; the
resync loop (`resync.py`) is not kopf's, so it reads the same peering object and
applies the same rule. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

NAME = "rspark-operator"
API_VERSION = "kopf.dev/v1"
CLUSTER_KIND = "ClusterKopfPeering"
NAMESPACED_KIND = "KopfPeering"
# kopf's default lifetime of a peer that never said otherwise.
DEFAULT_LIFETIME_SECONDS = 60


def acting(peers: Mapping[str, Any] | None, priority: int, now: datetime) -> bool:
    """No other live peer has a priority as high as ours (`peers`: the peering object's
    status, by identity). Priorities are random 31-bit numbers: an entry with ours is us."""
    for peer in (peers or {}).values():
        theirs = int(peer.get("priority", 0))
        if theirs == priority or not _alive(peer, now):
            continue
        if theirs > priority:
            return False
    return True


def _alive(peer: Mapping[str, Any], now: datetime) -> bool:
    lastseen = peer.get("lastseen")
    if not lastseen:
        return True
    lifetime = timedelta(seconds=int(peer.get("lifetime", DEFAULT_LIFETIME_SECONDS)))
    return datetime.fromisoformat(str(lastseen)) + lifetime > now


def manifest(namespace: str | None) -> dict[str, Any]:
    """The peering object: cluster-wide, or the KopfPeering of one served namespace."""
    if namespace is None:
        return {"apiVersion": API_VERSION, "kind": CLUSTER_KIND, "metadata": {"name": NAME}}
    return {
        "apiVersion": API_VERSION,
        "kind": NAMESPACED_KIND,
        "metadata": {"name": NAME, "namespace": namespace},
    }
