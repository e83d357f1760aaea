"""Snapshot agent benchmark: the agent against bare restic, same flags, same data.

Generates a home of 10,000 files / ~1 GiB (R library tree, source code, small
files, a few large binaries), starts a local S3 server, and times for each of
the agent and bare restic (one repository each):

  first snapshot, unchanged snapshot, 1% of files changed, full restore (with
  verification), and the first snapshot after that restore (the restore goes to
  a fresh directory at the same path, as a new volume would: every inode and
  ctime is new).

The agent is timed as the sidecar runs it (in-process `Agent` calls, each one
restic process); the one-shot CLI (`rspark-agent snapshot`, a new Python process
each time) is timed too for the unchanged case. Results go to stdout and, with
--write, into the "Snapshot agent" section of docs/benchmarks.md.

With --gateway it times instead the agent straight to S3 against the agent through
the snapshot gateway (`rclone serve restic --private-repos --append-only` in front
of the same S3 server, devtools/gateway.py), in the same run, alternating, each
step repeated (--repeat, the median kept), into the "Snapshot gateway" section.

    .local/venv/bin/python bench/snapshot.py --write
    .local/venv/bin/python bench/snapshot.py --gateway --write
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from devtools.gateway import Gateway, rclone_binary  # noqa: E402
from devtools.s3 import S3Server  # noqa: E402
from rspark_operator.agent.core import Agent  # noqa: E402
from rspark_operator.agent.restic import Restic, backup_args  # noqa: E402
from rspark_operator.agent.settings import load  # noqa: E402
from rspark_operator.gateway import REST_PASSWORD, REST_USERNAME, repository  # noqa: E402

HOST = "bench"
PASSWORD = "bench-password"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Snapshot agent"
START, END = "<!-- snapshot_agent:start -->", "<!-- snapshot_agent:end -->"
GATEWAY_SECTION = "## Snapshot gateway"
GATEWAY_MARKS = ("<!-- snapshot_gateway:start -->", "<!-- snapshot_gateway:end -->")
GATEWAY_USER = "bench.home"


def generate_home(home: Path, files: int, large_mib: int, seed: int) -> tuple[int, int]:
    """An R user's home: mostly small files, a few large ones. Returns (files, bytes)."""
    rng = random.Random(seed)
    words = [f"{w}_{i}" for i, w in enumerate(("fit", "df", "spark", "mutate", "sdf", "lm"))]
    count = total = 0

    def write(path: Path, data: bytes) -> None:
        nonlocal count, total
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        count += 1
        total += len(data)

    def text(size: int) -> bytes:
        line = " ".join(rng.choice(words) for _ in range(8)) + "\n"
        return (line * (size // len(line) + 1))[:size].encode()

    large = 6
    r_library = int(files * 0.6)
    sources = int(files * 0.3)
    small = files - r_library - sources - large
    for index in range(r_library):  # R/x86_64-pc-linux-gnu-library/4.4/<pkg>/...
        package = f"pkg{index // 40:03d}"
        kind = ("R", "help", "html", "doc", "libs")[index % 5]
        size = rng.randint(500, 12_000)
        payload = os.urandom(size) if kind == "libs" else text(size)
        write(home / "R" / "library" / package / kind / f"f{index:05d}", payload)
    for index in range(sources):
        project = f"project{index // 300:02d}"
        write(
            home / "work" / project / "src" / f"script{index:05d}.R",
            text(rng.randint(1_000, 16_000)),
        )
    for index in range(small):
        write(home / "misc" / f"note{index:05d}.txt", text(rng.randint(50, 2_000)))
    chunk = 1 << 20
    for index in range(large):
        path = home / "data" / f"table{index}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            for _ in range(large_mib // large):
                handle.write(os.urandom(chunk))
        count += 1
        total += (large_mib // large) * chunk
    return count, total


def change_one_percent(home: Path, seed: int) -> int:
    rng = random.Random(seed)
    paths = sorted(p for p in home.rglob("*") if p.is_file() and p.stat().st_size < 1 << 20)
    chosen = rng.sample(paths, max(1, len(paths) // 100))
    for path in chosen:
        with path.open("ab") as handle:
            handle.write(b"# changed\n")
    return len(chosen)


@dataclass
class Row:
    step: str
    agent: float
    restic: float

    @property
    def ratio(self) -> float:
        return self.agent / self.restic if self.restic else float("nan")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--large-mib", type=int, default=900, help="MiB in the large binaries")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--gateway", action="store_true", help="the agent through the gateway vs straight to S3"
    )
    parser.add_argument("--repeat", type=int, default=3, help="--gateway: runs of each step")
    args = parser.parse_args()
    if args.gateway:
        return main_gateway(args)

    restic_bin = os.environ.get("RSPARK_RESTIC") or str(ROOT / ".local" / "bin" / "restic")
    work = Path(tempfile.mkdtemp(prefix="rspark-bench-", dir=args.workdir))
    server = S3Server(work / "s3")
    server.start()
    try:
        rows, facts = run(args, work, server, restic_bin)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = render(rows, facts)
    print(report)
    if args.write:
        write_section(report)
    return 0


def main_gateway(args: argparse.Namespace) -> int:
    restic_bin = os.environ.get("RSPARK_RESTIC") or str(ROOT / ".local" / "bin" / "restic")
    work = Path(tempfile.mkdtemp(prefix="rspark-bench-", dir=args.workdir))
    server = S3Server(work / "s3")
    server.start()
    gateway = Gateway(work / "gateway", server.credentials)
    gateway.add_user(GATEWAY_USER)
    gateway.start()
    try:
        rows, facts = run_gateway(args, work, server, gateway, restic_bin)
    finally:
        gateway.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = render_gateway(rows, facts)
    print(report)
    if args.write:
        write_section(report, GATEWAY_MARKS)
    return 0


@dataclass
class GatewayRow:
    step: str
    direct: float
    gateway: float

    @property
    def ratio(self) -> float:
        return self.gateway / self.direct if self.direct else float("nan")


def run_gateway(
    args: argparse.Namespace, work: Path, server: S3Server, gateway: Gateway, restic_bin: str
) -> tuple[list[GatewayRow], dict[str, str]]:
    home = work / "home"
    files, size = generate_home(home, args.files, args.large_mib, args.seed)
    print(f"home: {files} files, {size / 2**30:.2f} GiB", flush=True)
    direct_env = environment(server, "direct", work / "cache-direct")
    gateway_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "RSPARK_"))},
        "RESTIC_REPOSITORY": repository(gateway.url, GATEWAY_USER),
        REST_USERNAME: GATEWAY_USER,
        REST_PASSWORD: gateway.users[GATEWAY_USER],
        "RESTIC_PASSWORD": PASSWORD,
        "XDG_CACHE_HOME": str(work / "cache-gateway"),
    }
    for env in (direct_env, gateway_env):
        subprocess.run([restic_bin, "init"], env=env, check=True, capture_output=True)
    settings = load(snapshot_host=HOST, restic=restic_bin)
    agents = {
        name: Agent(settings, home, restic=Restic(restic_bin, env=env), cache_in_home=False)
        for name, env in (("direct", direct_env), ("gateway", gateway_env))
    }

    def snapshot(name: str) -> float:
        return timed(lambda: agents[name].snapshot())

    rows = [GatewayRow("first snapshot", snapshot("direct"), snapshot("gateway"))]
    print(rows[-1], flush=True)
    steps: list[tuple[str, Callable[[int], object] | None]] = [
        ("unchanged snapshot", None),
        ("1% of files changed", lambda run: change_one_percent(home, args.seed + run)),
    ]
    for step, prepare in steps:
        times: dict[str, list[float]] = {"direct": [], "gateway": []}
        for run in range(args.repeat):
            if prepare is not None:
                prepare(run)
            # Alternate who goes first: a load spike of the machine hits both alike.
            order = ("direct", "gateway") if run % 2 == 0 else ("gateway", "direct")
            for name in order:
                times[name].append(snapshot(name))
        rows.append(GatewayRow(step, median(times["direct"]), median(times["gateway"])))
        print(rows[-1], times, flush=True)
    for agent in agents.values():
        agent.close()
    version = subprocess.run(
        [rclone_binary(), "version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    facts = {
        "home": f"{files} files, {size / 2**30:.2f} GiB",
        "machine": f"{os.cpu_count()} cores",
        "rclone": version,
        "repeat": str(args.repeat),
    }
    return rows, facts


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def render_gateway(rows: list[GatewayRow], facts: dict[str, str]) -> str:
    aimed = [row for row in rows if row.step != "first snapshot"]
    lines = [
        GATEWAY_SECTION,
        "",
        f"`bench/snapshot.py --gateway` on a generated home of {facts['home']}, one local "
        f"SeaweedFS S3 server, {facts['machine']}: the agent straight to S3 against the agent "
        f"through the snapshot gateway ({facts['rclone']}, `serve restic --private-repos "
        "--append-only`, htpasswd `{SHA}` entries) in front of the same server, each in its "
        "own repository, in the same run. The unchanged and 1% steps ran "
        f"{facts['repeat']} times each, alternating which goes first; the median is shown.",
        "",
        "| step | direct (s) | through the gateway (s) | gateway / direct |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r.step} | {r.direct:.2f} | {r.gateway:.2f} | {r.ratio:.2f}x |" for r in rows]
    met = all(row.ratio <= 1.3 for row in aimed)
    lines += [
        "",
        f"- Aim: within 1.3x of direct for an unchanged and a 1%-changed home: "
        f"{'met' if met else 'not met'}.",
        "",
    ]
    return "\n".join(lines)


def environment(server: S3Server, path: str, cache: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "RSPARK_"))},
        **server.credentials.env(),
        "RESTIC_REPOSITORY": server.credentials.restic_repository(path),
        "RESTIC_PASSWORD": PASSWORD,
        "XDG_CACHE_HOME": str(cache),
    }


def run(
    args: argparse.Namespace, work: Path, server: S3Server, restic_bin: str
) -> tuple[list[Row], dict[str, str]]:
    home = work / "home"
    files, size = generate_home(home, args.files, args.large_mib, args.seed)
    print(f"home: {files} files, {size / 2**30:.2f} GiB", flush=True)
    agent_env = environment(server, "agent", work / "cache-agent")
    restic_env = environment(server, "restic", work / "cache-restic")
    subprocess.run([restic_bin, "init"], env=agent_env, check=True, capture_output=True)
    subprocess.run([restic_bin, "init"], env=restic_env, check=True, capture_output=True)

    settings = load(snapshot_host=HOST, restic=restic_bin)

    def new_agent() -> Agent:
        return Agent(settings, home, restic=Restic(restic_bin, env=agent_env))

    agent = new_agent()

    def bare_backup() -> None:
        # The agent's own flags and exclude file: the baseline differs only by the agent.
        command = [
            restic_bin,
            *backup_args(
                host=HOST, excludes_file=agent.excludes_file, parent=None, retry_lock="2m"
            ),
        ]
        subprocess.run(command, cwd=home, env=restic_env, check=True, capture_output=True)

    def bare_restore() -> None:
        command = [
            restic_bin,
            "restore",
            "--json",
            "latest",
            "--host",
            HOST,
            "--target",
            str(home),
            "--verify",
        ]
        subprocess.run(command, env=restic_env, check=True, capture_output=True)

    def agent_snapshot() -> None:
        assert agent.snapshot() is not None

    def fresh_volume() -> None:
        shutil.move(home, work / f"old-{time.monotonic_ns()}")
        home.mkdir()

    rows = []
    steps: list[tuple[str, Callable[[], object] | None]] = [
        ("first snapshot", None),
        ("unchanged snapshot", None),
        ("1% of files changed", lambda: change_one_percent(home, args.seed)),
    ]
    for step, prepare in steps:
        if prepare is not None:
            prepare()
        agent_time = timed(agent_snapshot)
        restic_time = timed(bare_backup)
        rows.append(Row(step, agent_time, restic_time))
        print(rows[-1], flush=True)

    # One-shot CLI, unchanged home: a new Python process each time.
    cli = [
        str(Path(sys.executable).parent / "rspark-agent"),
        "snapshot",
        "--home",
        str(home),
        "--host",
        HOST,
        "--restic",
        restic_bin,
    ]
    cli_time = timed(lambda: subprocess.run(cli, env=agent_env, check=True, capture_output=True))

    # Full restore onto a fresh volume at the same path, then the first snapshot on it.
    fresh_volume()
    agent.close()
    agent = new_agent()
    agent_restore = timed(lambda: agent.restore())
    agent_after = timed(agent_snapshot)
    fresh_volume()
    restic_restore = timed(bare_restore)
    restic_after = timed(bare_backup)
    rows.append(Row("full restore (verified)", agent_restore, restic_restore))
    rows.append(Row("first snapshot after restore", agent_after, restic_after))
    agent.close()
    facts = {
        "home": f"{files} files, {size / 2**30:.2f} GiB",
        "cli": f"{cli_time:.2f}",
        "machine": f"{os.cpu_count()} cores",
        "restic": subprocess.run(
            [restic_bin, "version"], capture_output=True, text=True, check=True
        ).stdout.split(" compiled")[0],
    }
    return rows, facts


def render(rows: list[Row], facts: dict[str, str]) -> str:
    unchanged = next(r for r in rows if r.step == "unchanged snapshot")
    after = next(r for r in rows if r.step == "first snapshot after restore")
    lines = [
        SECTION,
        "",
        f"`bench/snapshot.py` on a generated home of {facts['home']} (R library tree, R "
        "sources, small notes, six large incompressible binaries), one local SeaweedFS S3 "
        f"server, {facts['restic']}, {facts['machine']}. The agent is timed as the sidecar "
        "runs it (in-process, one restic process per operation); bare restic runs the same "
        "flags and exclude file on the same data, in its own repository.",
        "",
        "| step | agent (s) | bare restic (s) | agent / restic |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r.step} | {r.agent:.2f} | {r.restic:.2f} | {r.ratio:.2f}x |" for r in rows]
    lines += [
        "",
        f"- One-shot CLI `rspark-agent snapshot` on the unchanged home: {facts['cli']} s "
        "(includes starting Python and loading the agent).",
        f"- Aim: agent within 1.1x of restic: "
        f"{'met' if all(r.ratio <= 1.1 for r in rows) else 'not met on every step'}.",
        f"- Aim: unchanged 10,000-file home under 2 s: agent {unchanged.agent:.2f} s "
        f"({'met' if unchanged.agent < 2 else 'not met'}).",
        f"- Aim: first snapshot after a restore under 2x an unchanged one: "
        f"{after.agent / unchanged.agent:.2f}x "
        f"({'met' if after.agent < 2 * unchanged.agent else 'not met'}).",
        "",
    ]
    return "\n".join(lines)


def write_section(report: str, marks: tuple[str, str] = (START, END)) -> None:
    """Replace (or append) the section between `marks`; other sections stay as they are."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    first, last = marks
    block = f"{first}\n{report.rstrip()}\n{last}"
    start, end = text.find(first), text.find(last)
    if start == -1 or end == -1:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        text = text[:start] + block + text[end + len(last) :]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
