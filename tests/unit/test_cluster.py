"""How API failures are told apart, and the retry schedule."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rspark_operator.cluster import Failure, KubeError, backoff, classify
from rspark_operator.kube import LIST_PAGE, Kube

pytestmark = pytest.mark.unit

# As kube-apiserver 1.33 answers a create in a namespace being deleted.
TERMINATING = {
    "kind": "Status",
    "message": 'pods "p-" is forbidden: unable to create new content in namespace team '
    "because it is being terminated",
    "reason": "Forbidden",
    "details": {
        "name": "p-",
        "kind": "pods",
        "causes": [
            {
                "reason": "NamespaceTerminating",
                "message": "namespace team is being terminated",
                "field": "metadata.namespace",
            }
        ],
    },
    "code": 403,
}


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [
        (0, None, Failure.UNAVAILABLE),  # not reached, or no answer in time
        (429, None, Failure.UNAVAILABLE),
        (500, None, Failure.UNAVAILABLE),
        (503, {"reason": "ServiceUnavailable"}, Failure.UNAVAILABLE),
        (504, None, Failure.UNAVAILABLE),
        (404, {"reason": "NotFound"}, Failure.NOT_FOUND),
        (409, {"reason": "Conflict"}, Failure.CONFLICT),
        (422, {"reason": "Invalid"}, Failure.REJECTED),
        (400, {"reason": "BadRequest"}, Failure.REJECTED),
        (403, TERMINATING, Failure.NAMESPACE_TERMINATING),
        # RBAC, quota and Pod Security all answer 403 Forbidden: an access review tells.
        (403, {"reason": "Forbidden"}, Failure.FORBIDDEN),
        (403, None, Failure.FORBIDDEN),
    ],
)
def test_classify(status: int, body: dict[str, Any] | None, failure: Failure) -> None:
    assert classify(status, body) is failure


def test_refused_means_rejected_or_forbidden() -> None:
    refused = {f for f in Failure if KubeError(f, 0, "").refused}
    assert refused == {Failure.REJECTED, Failure.FORBIDDEN}


def test_backoff_grows_exponentially_within_its_bounds() -> None:
    pauses = list(backoff(6, base=0.5, cap=4.0, rng=random.Random(7)))
    assert len(pauses) == 5  # between six tries
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0]
    for pause, ceiling in zip(pauses, ceilings, strict=True):
        assert ceiling / 2 <= pause <= ceiling


def test_backoff_is_jittered() -> None:
    schedules = {tuple(backoff(4, 1.0, 60.0, random.Random(seed))) for seed in range(5)}
    assert len(schedules) == 5


def test_one_attempt_means_no_retry() -> None:
    assert list(backoff(1, 1.0, 10.0, random.Random(0))) == []


class Pages(Kube):
    """A Kube whose API server answers a listing in pages of two."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.queries: list[dict[str, Any]] = []

    def request(self, method: str, path: str, **options: Any) -> Any:
        query = dict(options["query"])
        self.queries.append(query)
        start = int(query.get("continue", 0))
        more = start + 2 < len(self.items)
        return {
            "items": self.items[start : start + 2],
            "metadata": {"continue": str(start + 2)} if more else {},
        }


def test_a_listing_follows_its_pages_to_the_end() -> None:
    """The items come with their apiVersion and kind, which a list's items lack and the
    calls on one object (label, delete) read."""
    items = [{"metadata": {"name": name}} for name in "abcde"]
    kube = Pages(items)
    assert list(kube.list("v1", "Pod", "team", "app=x")) == [
        {"apiVersion": "v1", "kind": "Pod", **item} for item in items
    ]
    assert [q.get("continue") for q in kube.queries] == [None, "2", "4"]
    assert all(q["limit"] == LIST_PAGE and q["labelSelector"] == "app=x" for q in kube.queries)
