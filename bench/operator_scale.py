"""Operator at scale: N workspaces until every one is Running with all its children.

For each N, in the same run, each on a fresh kwok-only local cluster (`fresh_cluster`):
- baseline: create N RStudioWorkspaces (C threads) with no operator, and apply the
  objects the builders render for them directly with server-side apply (same C threads);
- operator: create the same N workspaces with `rspark-operator` running.
Both end when every workspace pod is Running and every child exists. Reported:
wall time and the ratio operator/baseline, the operator's peak RSS, API requests
per workspace (kube-apiserver's apiserver_request_total, all clients), and what
kube-apiserver's and etcd's resident memory grew by, per workspace.

With --steady, after each operator run, on its N workspaces: (1) a restart of the
operator, and the time until a workspace changed while it was down is reconciled
(from the start of the process to status.observedGeneration); (2) the API
requests per minute the restarted operator makes when nothing changes, over one
resync period after one period of settling (its own counter,
rspark_operator_api_requests_total), and its resident memory then.

With --baseline-only --repeat R: the baseline alone, R times per N (its spread).

It runs on the kwok-only local cluster (`make cluster-up KWOK_ONLY=1`; it brings one up
when none is, and refuses a cluster with real nodes): every pod here is simulated, and
in a real cluster the node services (kube-router, the ingress controller, DNS, the
registry) run on other machines than the API server, while here they would share its
2 cores, following every workspace's NetworkPolicy and Ingress (a third of both cores
at 1,000 workspaces, in the run of 2026-11-30 in docs/benchmarks.md).

Usage: python -m bench.operator_scale [--steady [--resync S]] [N ...]   (default 100 500 1000)
       python -m bench.operator_scale --baseline-only --repeat 3 N
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from devtools import localcluster
from devtools.deploy import (
    OperatorProcess,
    credentials_secret,
    install_crds,
    operator_environment,
)
from devtools.s3 import free_port_pair
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.builders import build_children, build_passwords_secret, build_pod
from rspark_operator.kube import Kube, url
from rspark_operator.settings import OperatorSettings
from rspark_operator.validation import parse_workspace
from tests.support.workspaces import sample

CONCURRENCY = 16
# Small requests, so that 1000 workspaces fit on the two simulated nodes.
RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
# How long a run may take per workspace before the benchmark gives up (0.21 s measured
# at 1,000), and at least an hour.
SECONDS_ALLOWED_PER_WORKSPACE = 0.5
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "operator_scale"
STEADY_SECTION = "operator_steady"
SPREAD_SECTION = "operator_spread"
# The resync period of the steady-state run unless --resync says: every workspace is
# reconciled once (a full reconcile) within each period; the window measured is one
# period. At 10,000 workspaces, 120 s would ask more full reconciles a second than 2
# cores serve: the window would count what the operator manages, not what it needs.
STEADY_RESYNC_SECONDS = 120


# The control plane's processes whose memory grows with the workspaces (kwokctl's pid
# files are named after their binaries).
CONTROL_PLANE = ("kube-apiserver", "etcd")
# Whose CPU time each run prints: where a run's time goes on these 2 cores.
CPU_USERS = (*CONTROL_PLANE, "kube-controller-manager", "kube-scheduler", "kwok-controller")
# How many kinds of request each run prints, the most frequent first.
TOP_REQUESTS = 12


@dataclass
class Run:
    seconds: float
    requests: int
    # The most frequent requests (verb, resource, subresource, dry run), printed only.
    top_requests: dict[str, int]
    # Resident memory each control-plane process gained over the run, in MB.
    grown_mb: dict[str, float]
    peak_rss_mb: float | None = None
    start_rss_mb: float | None = None  # the operator's, once started, before any workspace
    # CPU seconds each process used over the run (the cluster's, and the operator's),
    # printed only.
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # Times a kwok node was seen not Ready during the run (`NodesNotReady`), printed only.
    nodes_not_ready: int = 0


class NodesNotReady:
    """Counts the kwok nodes seen going not Ready during a run, polled every few
    seconds. A simulated kubelet whose lease renewal waits on a saturated API server
    past the grace period gets its node marked NotReady, and the node controller then
    rewrites every pod on it: a run where this happened measured that too."""

    POLL_SECONDS = 10.0

    def __init__(self, api_client: client.ApiClient) -> None:
        self.kube = Kube(api_client)
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="nodes-not-ready", daemon=True)

    def __enter__(self) -> NodesNotReady:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        ready: dict[str, bool] = {}
        selector = [("labelSelector", localcluster.KUBELET_LABEL)]
        while not self._stop.wait(self.POLL_SECONDS):
            with contextlib.suppress(Exception):  # a slow API server: the next poll
                nodes = self.kube.request("GET", url("v1", "Node", ""), query=selector)
                for node in nodes["items"]:
                    conditions = (node.get("status") or {}).get("conditions") or []
                    now = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                    name = node["metadata"]["name"]
                    if ready.get(name, True) and not now:
                        self.count += 1
                    ready[name] = now


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now (VmRSS) or at its peak (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith(field))
    return int(kilobytes) / 1024


def control_plane_rss() -> dict[str, float]:
    pids = localcluster.CLUSTER_DIR / "pids"
    return {name: rss_mb(int((pids / f"{name}.pid").read_text())) for name in CONTROL_PLANE}


def grown(before: dict[str, float]) -> dict[str, float]:
    return {name: mb - before[name] for name, mb in control_plane_rss().items()}


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user and system, in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_pids() -> dict[str, int]:
    pids = localcluster.CLUSTER_DIR / "pids"
    return {name: int((pids / f"{name}.pid").read_text()) for name in CPU_USERS}


def cpu_used(pids: dict[str, int], before: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used since `before` (from the same `pids`); a process
    gone meanwhile (restarted by hand, say) is left out rather than losing the run."""
    used = {}
    for name, pid in pids.items():
        with contextlib.suppress(FileNotFoundError):
            used[name] = round(cpu_seconds(pid) - before[name], 1)
    return used


def api() -> client.ApiClient:
    api_client = config.new_client_from_config(str(localcluster.KUBECONFIG))
    api_client.user_agent = "rspark-bench"
    return api_client


def apiserver_requests(api_client: client.ApiClient) -> Counter[str]:
    """Requests the API server has served (all clients), by verb, resource and dry run."""
    text = Kube(api_client).raw_get("/metrics")
    found: Counter[str] = Counter()
    for labels, value in re.findall(r"^apiserver_request_total\{([^}]*)\} (\S+)$", text, re.M):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        parts = (fields.get("verb"), fields.get("resource"), fields.get("subresource"))
        dry_run = ["dry run"] if fields.get("dry_run") else []
        found[" ".join([*filter(None, parts), *dry_run])] += int(float(value))
    return found


def counted(before: Counter[str], after: Counter[str]) -> tuple[int, dict[str, int]]:
    """The requests between two counts: the total, and the most frequent kinds."""
    served = after - before
    return sum(served.values()), dict(served.most_common(TOP_REQUESTS))


def create_namespace(api_client: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    credentials_secret(name, localcluster.s3_credentials())


def fresh_cluster() -> client.ApiClient:
    """A new kwok-only cluster for one run (the current one must be kwok-only: `main`
    checks). Nothing of an earlier run is left: in one cluster, the 1,000 volumes of a
    deleted namespace took 4.5 minutes to go, and a run started meanwhile waited behind
    their clean-up in the volume controller (3.3 minutes before its first claim was
    bound); and both runs' control-plane growth starts from the same fresh cluster."""
    localcluster.down()
    localcluster.up(kwok_only=True)
    install_crds()
    return api()


@dataclass(frozen=True)
class Spread:
    """Where a run's N workspaces go: `per_namespace` to a namespace (0: all in one, as
    one user's), as a platform's users are spread over their own namespaces."""

    prefix: str
    n: int
    per_namespace: int

    def namespaces(self) -> list[str]:
        if not self.per_namespace:
            return [self.prefix]
        return [f"{self.prefix}-{i:03d}" for i in range(-(-self.n // self.per_namespace))]

    def namespace_of(self, index: int) -> str:
        return self.namespaces()[index // self.per_namespace if self.per_namespace else 0]


def create_namespaces(api_client: client.ApiClient, spread: Spread) -> None:
    for namespace in spread.namespaces():
        create_namespace(api_client, namespace)


def create_workspaces(api_client: client.ApiClient, spread: Spread) -> list[dict[str, Any]]:
    custom = client.CustomObjectsApi(api_client)
    namespaces = spread.namespaces()
    per = spread.per_namespace or spread.n

    def create(index: int) -> dict[str, Any]:
        created: dict[str, Any] = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespaces[index // per], PLURAL,
            sample(f"ws{index:04d}", resources=RESOURCES),
        )  # fmt: skip
        return created

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(create, range(spread.n)))


def all_running(api_client: client.ApiClient, n: int) -> bool:
    """Read as plain JSON: the client's model classes would make this poll, once a
    second over thousands of objects, a CPU load that competes with what it measures.
    Listed across namespaces: a run's fresh cluster holds no other workspace."""
    kube = Kube(api_client)

    def items(api_version: str, kind: str, selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        path = url(api_version, kind, "")
        found: list[dict[str, Any]] = kube.request("GET", path, query=query)["items"]
        return found

    managed = "app.kubernetes.io/managed-by=rspark-operator"
    pods = items("v1", "Pod", managed)
    if sum(1 for p in pods if p.get("status", {}).get("phase") == "Running") < n:
        return False
    claims = items("v1", "PersistentVolumeClaim")
    services = items("v1", "Service", managed)
    ingresses = items("networking.k8s.io/v1", "Ingress")
    return (
        sum(1 for c in claims if c.get("status", {}).get("phase") == "Bound") >= n
        and len(services) >= 2 * n
        and len(ingresses) >= n
    )


def wait(what: str, check: Callable[[], bool], timeout: float = 3600, every: float = 1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(every)


def until_running(api_client: client.ApiClient, n: int, what: str) -> None:
    """Wait until every workspace is Running with its children. The poll lists every
    workspace pod: once a second per 1,000 workspaces, so that at 10,000 it is not
    itself a large part of the load (each poll decodes 10,000 pods)."""
    wait(what, lambda: all_running(api_client, n),
         timeout=max(3600, n * SECONDS_ALLOWED_PER_WORKSPACE), every=max(1, n / 1000))  # fmt: skip


def operator_run(n: int, per_namespace: int, steady: float | None) -> tuple[Run, Steady | None]:
    """`steady`: the resync period of a steady-state run after it (none: no such run)."""
    api_client = fresh_cluster()
    spread = Spread(f"bench-op-{n}", n, per_namespace)
    create_namespaces(api_client, spread)
    log = localcluster.LOCAL / "logs" / f"bench-operator-{n}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)  # this run's log only
    process = OperatorProcess(log, operator_environment(localcluster.s3_credentials()))
    process.start()
    at_rest = None
    try:
        assert process.process is not None
        start_rss = rss_mb(process.process.pid)
        memory = control_plane_rss()
        pids = {**cluster_pids(), "bench": os.getpid(), "operator": process.process.pid}
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        before = apiserver_requests(api_client)
        started = time.monotonic()
        with NodesNotReady(api_client) as not_ready:
            create_workspaces(api_client, spread)
            until_running(api_client, n, f"{n} workspaces Running")
        seconds = time.monotonic() - started
        requests, top = counted(before, apiserver_requests(api_client))
        run = Run(seconds, requests, top, grown(memory), process.peak_rss_mb(), start_rss)
        run.cpu_seconds = cpu_used(pids, cpu)
        run.nodes_not_ready = not_ready.count
        print(f"N={n} operator {run}", flush=True)
        if steady is not None:
            at_rest = steady_run(api_client, spread.namespace_of(0), n, process, log, steady)
            print(f"N={n} {at_rest}", flush=True)
    finally:
        process.stop()
    return run, at_rest


@dataclass
class Steady:
    n: int
    requests_per_minute: float
    by_verb: dict[str, float]
    catch_up_seconds: float
    rss_mb: float  # the restarted operator's, at rest
    resync_seconds: float


def operator_requests(port: int) -> dict[str, float]:
    """The operator's API requests so far, by verb (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for labels, value in re.findall(
        r"^rspark_operator_api_requests_total\{([^}]*)\} (\S+)$", text, re.M
    ):
        verb = re.search(r'verb="([^"]*)"', labels)
        key = verb.group(1) if verb else "?"
        found[key] = found.get(key, 0.0) + float(value)
    return found


def steady_run(
    api_client: client.ApiClient,
    namespace: str,
    n: int,
    first: OperatorProcess,
    log: Path,
    resync: float,
) -> Steady:
    """On the N Running workspaces of `first`: its restart, then the restarted operator
    at rest."""
    custom = client.CustomObjectsApi(api_client)
    first.stop()
    changed = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "ws0000",
        {"spec": {"env": [{"name": "BENCH_CHANGED", "value": "1"}]}},
    )  # fmt: skip
    generation = changed["metadata"]["generation"]
    port = free_port_pair()
    env = operator_environment(
        localcluster.s3_credentials(),
        metrics_address=f"127.0.0.1:{port}",
        resync_seconds=str(resync),
    )
    process = OperatorProcess(log, env)
    started = time.monotonic()
    process.start()
    try:

        def reconciled() -> bool:
            body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ws0000")
            return bool((body.get("status") or {}).get("observedGeneration") == generation)

        wait("the changed workspace reconciled", reconciled)
        catch_up = time.monotonic() - started
        # Let the restart's own reconciles pass: one period with nothing changing.
        time.sleep(resync)
        before = operator_requests(port)
        time.sleep(resync)
        after = operator_requests(port)
        assert process.process is not None
        resident = rss_mb(process.process.pid)
    finally:
        process.stop()
    minutes = resync / 60
    by_verb = {verb: (after[verb] - before.get(verb, 0.0)) / minutes for verb in after}
    return Steady(n, sum(by_verb.values()), by_verb, catch_up, resident, resync)


def steady_report(runs: list[Steady]) -> str:
    default = OperatorSettings.model_fields["resync_seconds"].default
    lines = [
        "## Operator at rest and after a restart (`bench/operator_scale.py --steady`)",
        "",
        "After the operator run of each N below: the operator stopped, one workspace "
        "changed, the operator started again (time until that workspace is reconciled, "
        "from the process start), then with the resync period of its row (one full "
        "reconcile of each workspace per period) and nothing changing, the "
        "requests the operator itself counts over one period, after one period of "
        "settling, and its resident memory then.",
        "",
        f"| N | resync s | requests/min | by verb | requests/min scaled to the default "
        f"{default:.0f} s | restart to changed workspace reconciled (s) "
        "| operator RSS at rest MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        verbs = ", ".join(f"{verb} {rate:.0f}" for verb, rate in sorted(run.by_verb.items())
                          if rate)  # fmt: skip
        lines.append(
            f"| {run.n} | {run.resync_seconds:.0f} | {run.requests_per_minute:.0f} | {verbs} "
            f"| {run.requests_per_minute * run.resync_seconds / default:.0f} "
            f"| {run.catch_up_seconds:.1f} | {run.rss_mb:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


def baseline_run(n: int, per_namespace: int) -> Run:
    api_client = fresh_cluster()
    spread = Spread(f"bench-base-{n}", n, per_namespace)
    create_namespaces(api_client, spread)
    settings = OperatorSettings(
        snapshot_repository_base=f"s3:{localcluster.s3_credentials().endpoint}/rspark"
    )
    kube = Kube(api_client)
    memory = control_plane_rss()
    pids = {**cluster_pids(), "bench": os.getpid()}
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    before = apiserver_requests(api_client)
    started = time.monotonic()

    def apply_all(body: dict[str, Any]) -> None:
        ws = parse_workspace(body, settings)
        kube.create(
            build_passwords_secret(ws, secrets.token_urlsafe(32), secrets.token_urlsafe(18))
        )
        for manifest in [*build_children(ws, settings), build_pod(ws, settings)]:
            kube.apply(manifest)

    with NodesNotReady(api_client) as not_ready:
        workspaces = create_workspaces(api_client, spread)
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(apply_all, workspaces))
        until_running(api_client, n, f"{n} baseline pods Running")
    seconds = time.monotonic() - started
    run = Run(seconds, *counted(before, apiserver_requests(api_client)), grown(memory))
    run.cpu_seconds = cpu_used(pids, cpu)
    run.nodes_not_ready = not_ready.count
    print(f"N={n} baseline {run}", flush=True)
    return run


def report(rows: list[tuple[int, Run, Run]], per_namespace: int) -> str:
    lines = [
        "## Operator at scale (`bench/operator_scale.py`)",
        "",
        f"Local cluster (kwok nodes), {CONCURRENCY} threads creating workspaces, operator "
        f"with {CONCURRENCY} workers; baseline = the same rendered objects applied directly "
        "with server-side apply. Time = until every pod is Running and every child exists. "
        "Requests = kube-apiserver `apiserver_request_total` over the run, every client "
        "(kwok, scheduler and controllers included), per workspace. Memory per workspace: "
        "the operator's peak RSS less its RSS once started; kube-apiserver's and etcd's "
        "RSS growth over the operator run (each run on a fresh kwok-only cluster). "
        + (
            f"{per_namespace} workspaces a namespace." if per_namespace else "All in one namespace."
        ),
        "",
        "| N | operator s | baseline s | ratio | operator peak RSS MB "
        "| requests/ws operator | requests/ws baseline "
        "| KB/ws operator | KB/ws kube-apiserver | KB/ws etcd |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, op, base in rows:
        assert op.peak_rss_mb is not None and op.start_rss_mb is not None
        per_ws = [op.peak_rss_mb - op.start_rss_mb, *(op.grown_mb[p] for p in CONTROL_PLANE)]
        lines.append(
            f"| {n} | {op.seconds:.1f} | {base.seconds:.1f} | {op.seconds / base.seconds:.2f} "
            f"| {op.peak_rss_mb:.0f} | {op.requests / n:.1f} | {base.requests / n:.1f} | "
            + " | ".join(f"{mb * 1024 / n:.0f}" for mb in per_ws)
            + " |"
        )
    lines.append("")
    return "\n".join(lines)


def spread_report(runs: dict[int, list[Run]]) -> str:
    lines = [
        "## Baseline spread (`bench/operator_scale.py --baseline-only --repeat R`)",
        "",
        "The baseline alone (server-side apply of the rendered objects, no operator), "
        "the same N several times in one run on one cluster.",
        "",
        "| N | runs (s) | min s | median s | max s | (max - min) / median |",
        "|---|---|---|---|---|---|",
    ]
    for n, found in runs.items():
        times = sorted(run.seconds for run in found)
        median = statistics.median(times)
        lines.append(
            f"| {n} | {', '.join(f'{t:.1f}' for t in (run.seconds for run in found))} "
            f"| {times[0]:.1f} | {median:.1f} | {times[-1]:.1f} "
            f"| {(times[-1] - times[0]) / median:.0%} |"
        )
    lines.append("")
    return "\n".join(lines)


def write_section(text: str, section: str = SECTION) -> None:
    """Replace this benchmark's section of docs/benchmarks.md, keeping the others."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{text}\n{end}"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    if start in current:
        before, rest = current.split(start, 1)
        current = before + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 500, 1000])
    parser.add_argument(
        "--steady", action="store_true", help="after each operator run, a restart and rest"
    )
    parser.add_argument(
        "--resync", type=float, default=STEADY_RESYNC_SECONDS,
        help="the resync period (s) of the steady-state run, and its window",
    )  # fmt: skip
    parser.add_argument(
        "--per-namespace", type=int, default=0,
        help="workspaces per namespace (default 0: all in one namespace)",
    )  # fmt: skip
    parser.add_argument("--baseline-only", action="store_true", help="no operator runs")
    parser.add_argument(
        "--operator-only", action="store_true",
        help="no baseline runs: the operator's figures printed, the steady section written",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="baseline runs per size")
    args = parser.parse_args()
    localcluster.up(kwok_only=True)  # refuses a cluster with real nodes: not torn down

    if args.baseline_only:
        spread: dict[int, list[Run]] = {}
        for n in args.sizes:
            for _ in range(args.repeat):
                spread.setdefault(n, []).append(baseline_run(n, args.per_namespace))
        write_section(spread_report(spread), SPREAD_SECTION)
        print(spread_report(spread), file=sys.stderr)
        return
    rows, steady = [], []
    for n in args.sizes:
        # Each on a fresh cluster, so in any order: the operator's first, printed while
        # a long baseline still runs.
        op, at_rest = operator_run(n, args.per_namespace, args.resync if args.steady else None)
        if at_rest is not None:
            steady.append(at_rest)
        if not args.operator_only:
            rows.append((n, op, baseline_run(n, args.per_namespace)))
    if rows:
        write_section(report(rows, args.per_namespace))
        print(report(rows, args.per_namespace), file=sys.stderr)
    if steady:
        write_section(steady_report(steady), STEADY_SECTION)
        print(steady_report(steady), file=sys.stderr)


if __name__ == "__main__":
    main()
