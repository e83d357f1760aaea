"""The operator's memory given back after a burst (rspark_operator/memory.py): the
process runs itself again with the C library's allocator, and the trim hands the
pages a burst freed back to the kernel."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from devtools.deploy import OperatorProcess
from rspark_operator import memory


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_operator_runs_itself_again_with_the_c_allocator(operator: OperatorProcess) -> None:
    """Started without the variable (as its image and `make dev` start it), the same
    process (its pid: an exec, not a child) runs with it."""
    assert operator.process is not None
    assert memory.ALLOCATOR_VARIABLE not in operator.env
    found = environment_of(operator.process.pid)
    assert found.get(memory.ALLOCATOR_VARIABLE) == memory.ALLOCATOR


# A burst of small objects of which one in a thousand outlives it, in a process with
# the C allocator; its resident memory (MB) after the burst, then after one trim.
BURST = textwrap.dedent(
    """
    import threading, time
    from rspark_operator import memory

    def resident():
        status = open("/proc/self/status").read().splitlines()
        return int(next(l.split()[1] for l in status if l.startswith("VmRSS"))) / 1024

    burst = [{"name": str(i)} for i in range(1_000_000)]
    kept = burst[::1000]
    del burst
    after_burst = resident()
    stop = threading.Event()
    trim = threading.Thread(target=memory.trim_every, args=(0.05, stop))
    trim.start()
    time.sleep(0.5)
    stop.set()
    trim.join()
    print(after_burst, resident(), len(kept))
    """
)


def test_the_trim_hands_back_what_a_burst_freed() -> None:
    env = {memory.ALLOCATOR_VARIABLE: memory.ALLOCATOR}
    out = subprocess.run(
        [sys.executable, "-c", BURST], env=env, capture_output=True, text=True, check=True
    ).stdout
    after_burst, after_trim, kept = out.split()
    assert int(kept) == 1000
    # Most of the burst's pages hold nothing that lives: they go back.
    assert float(after_trim) < float(after_burst) / 2, out
