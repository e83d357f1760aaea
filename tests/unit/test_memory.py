"""The allocator the operator runs itself again with (rspark_operator/memory.py)."""

from __future__ import annotations

import pytest

from rspark_operator import memory

pytestmark = pytest.mark.unit


def test_without_the_variable_the_operator_runs_again_with_the_c_allocator() -> None:
    environ = {"PATH": "/usr/bin", "KUBECONFIG": "/k"}
    assert memory.rerun_environment(environ) == {**environ, "PYTHONMALLOC": "malloc"}


@pytest.mark.parametrize("chosen", ["malloc", "pymalloc", "malloc_debug"])
def test_an_allocator_already_chosen_is_kept(chosen: str) -> None:
    """Its own rerun, or a platform's choice on purpose: no second run."""
    assert memory.rerun_environment({"PYTHONMALLOC": chosen}) is None
