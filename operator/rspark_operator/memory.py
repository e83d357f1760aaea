"""The operator's memory, given back after a burst.

At a start kopf lists every workspace and workspace pod and handles them all at once.
Python's own small-object allocator (pymalloc) keeps each 1 MiB arena of that burst
while a single object in it lives, so the memory of the burst stayed with the process:
190 MB at rest after a restart with 1,000 workspaces, against 100 MB at the peak of
creating them. With the C library's allocator (`PYTHONMALLOC=malloc`), whose free
pages `malloc_trim` hands back to the kernel page by page, the same restart rests at
133 MB three minutes later (docs/benchmarks.md has the runs). The allocator is chosen
before Python starts, so the `rspark-operator` command (`command`) runs itself again
with it, wherever it is started: its image, `make dev`, a benchmark.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from collections.abc import Mapping

ALLOCATOR_VARIABLE = "PYTHONMALLOC"
ALLOCATOR = "malloc"
# How often free memory is handed back; one trim of a 200 MB heap takes milliseconds.
TRIM_SECONDS = 30.0

log = logging.getLogger(__name__)


def rerun_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to run the operator again in, with the C library's allocator;
    None when it already runs with it (or the platform chose another on purpose)."""
    if ALLOCATOR_VARIABLE in environ:
        return None
    return {**environ, ALLOCATOR_VARIABLE: ALLOCATOR}


def trim_every(seconds: float, stop: threading.Event) -> None:
    """Hand the C library's free memory back to the kernel every `seconds` until `stop`.
    A C library without `malloc_trim` (musl) gives its memory back by itself."""
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is None:
        log.info("no malloc_trim in the C library: free memory is not handed back")
        return
    while not stop.wait(seconds):
        trim(0)


def command() -> None:
    """`rspark-operator`: the same process again with the C allocator (an exec, same
    pid), then the operator. Decided before the operator's modules are imported: kopf
    and the rest take 1.5 s, which a rerun from `main` paid twice at every start."""
    environment = rerun_environment(os.environ)
    if environment is not None:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
    from rspark_operator.main import main  # here: after the allocator is chosen

    main()
