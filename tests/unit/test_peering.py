"""Which replica acts, as the resync loop reads the peering object (kopf's rule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rspark_operator.peering import acting

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OURS = 500


def peer(priority: int, seen_ago: float = 1, lifetime: int = 60) -> dict[str, Any]:
    lastseen = (NOW - timedelta(seconds=seen_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen}


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        (None, True),
        ({"me": peer(OURS)}, True),
        ({"me": peer(OURS), "other": peer(OURS - 1)}, True),
        ({"me": peer(OURS), "other": peer(OURS + 1)}, False),
        # A silent peer past its lifetime no longer counts.
        ({"me": peer(OURS), "other": peer(OURS + 1, seen_ago=61)}, True),
        ({"other": peer(OURS + 1, seen_ago=5, lifetime=10)}, False),
    ],
)
def test_acting(peers: dict[str, Any] | None, expected: bool) -> None:
    assert acting(peers, OURS, NOW) is expected
