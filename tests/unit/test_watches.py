"""What the operator asks of kopf: watches that queue workspaces, and nothing kopf
must remember about each object."""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest

from rspark_operator.kube import LIST_PAGE
from rspark_operator.main import WORKER_IDLE_SECONDS, NoDiffBase, configure
from rspark_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

POD = kopf.Body({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {}})


def test_the_operator_has_no_handler_that_needs_kopfs_diff() -> None:
    """NoDiffBase gives kopf nothing to diff: safe only while no change handler, daemon
    or timer is registered (kopf's registry has no public listing; these are its
    change and spawning handlers)."""
    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    assert registry._watching.get_all_handlers()  # the watches that queue workspaces


def test_kopf_keeps_no_index_for_the_operator() -> None:
    """With any `@kopf.index`, kopf holds every object's handler until every index of
    every resource is filled, each object listed waking all the waiting ones: quadratic
    at a start (1.3 GB and most of a CPU for minutes at 10,000 workspaces). The operator
    keeps indexes of its own (`indexes.py`, `main.Indexes`)."""
    registry = kopf.get_default_registry()
    assert registry._indexing.get_all_handlers() == []


def configured() -> kopf.OperatorSettings:
    """kopf's settings as the operator's start leaves them."""
    settings = kopf.OperatorSettings()
    # kopf's decorator types it as its handler protocol; it is the plain function.
    cast(Any, configure)(settings=settings, memo=kopf.Memo(settings=OperatorSettings()))
    return settings


def test_kopf_copies_no_object_it_receives() -> None:
    settings = configured()
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, NoDiffBase)
    assert storage.build(body=POD) == {}
    assert storage.fetch(body=POD) is None


def test_kopf_holds_a_page_of_listed_objects_at_a_time() -> None:
    """At a start kopf lists every workspace and workspace pod; unpaged, and each body
    held by its worker for kopf's default 5 s, 10,000 workspaces took the operator to
    1.3 GB. It lists as the operator's own listings do and lets a worker go soon."""
    settings = configured()
    assert settings.watching.chunk_size == LIST_PAGE
    assert (
        settings.queueing.idle_timeout
        == WORKER_IDLE_SECONDS
        < kopf.OperatorSettings().queueing.idle_timeout
    )
