"""Operator at scale: N workspaces until every one is Running with all its children.

For each N, in the same run and on the same local cluster:
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

Usage: python -m bench.operator_scale [--steady] [N ...]   (default 100 500 1000)
       python -m bench.operator_scale --baseline-only --repeat 3 N
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
CHILDREN_PER_WORKSPACE = 11  # 9 children, the password Secret and the pod
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "operator_scale"
STEADY_SECTION = "operator_steady"
SPREAD_SECTION = "operator_spread"
# The resync period of the steady-state run: every workspace is reconciled once (a
# full reconcile) within each period; the window measured is one period.
STEADY_RESYNC_SECONDS = 120


# The control plane's processes whose memory grows with the workspaces (kwokctl's pid
# files are named after their binaries).
CONTROL_PLANE = ("kube-apiserver", "etcd")


@dataclass
class Run:
    seconds: float
    requests: int
    # Resident memory each control-plane process gained over the run, in MB.
    grown_mb: dict[str, float]
    peak_rss_mb: float | None = None
    start_rss_mb: float | None = None  # the operator's, once started, before any workspace


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


def api() -> client.ApiClient:
    api_client = config.new_client_from_config(str(localcluster.KUBECONFIG))
    api_client.user_agent = "rspark-bench"
    return api_client


def apiserver_requests(api_client: client.ApiClient) -> int:
    """Total requests the API server has served (all clients, all verbs)."""
    text = Kube(api_client).raw_get("/metrics")
    return sum(
        int(float(value))
        for value in re.findall(r"^apiserver_request_total\{[^}]*\} (\S+)$", text, re.M)
    )


def create_namespace(api_client: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    credentials_secret(name, localcluster.s3_credentials())


def delete_namespace(api_client: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api_client)
    core.delete_namespace(name)
    while any(ns.metadata.name == name for ns in core.list_namespace().items):
        time.sleep(1)


def create_workspaces(api_client: client.ApiClient, namespace: str, n: int) -> list[dict[str, Any]]:
    custom = client.CustomObjectsApi(api_client)

    def create(index: int) -> dict[str, Any]:
        created: dict[str, Any] = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, sample(f"ws{index:04d}", resources=RESOURCES)
        )
        return created

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(create, range(n)))


def all_running(api_client: client.ApiClient, namespace: str, n: int) -> bool:
    """Read as plain JSON: the client's model classes would make this poll, once a
    second over thousands of objects, a CPU load that competes with what it measures."""
    kube = Kube(api_client)

    def items(api_version: str, kind: str, selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        path = url(api_version, kind, namespace)
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


def wait(what: str, check: Callable[[], bool], timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(1)


def operator_run(api_client: client.ApiClient, n: int, steady: bool) -> tuple[Run, Steady | None]:
    namespace = f"bench-op-{n}"
    create_namespace(api_client, namespace)
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
        before = apiserver_requests(api_client)
        started = time.monotonic()
        create_workspaces(api_client, namespace, n)
        wait(f"{n} workspaces Running", lambda: all_running(api_client, namespace, n))
        seconds = time.monotonic() - started
        requests = apiserver_requests(api_client) - before
        run = Run(seconds, requests, grown(memory), process.peak_rss_mb(), start_rss)
        print(f"N={n} operator {run}", flush=True)  # before the long deletion
        if steady:
            at_rest = steady_run(api_client, namespace, n, process, log)
            print(f"N={n} {at_rest}", flush=True)
    finally:
        process.stop()
    delete_namespace(api_client, namespace)
    return run, at_rest


@dataclass
class Steady:
    n: int
    requests_per_minute: float
    by_verb: dict[str, float]
    catch_up_seconds: float
    rss_mb: float  # the restarted operator's, at rest


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
    api_client: client.ApiClient, namespace: str, n: int, first: OperatorProcess, log: Path
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
        resync_seconds=str(STEADY_RESYNC_SECONDS),
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
        time.sleep(STEADY_RESYNC_SECONDS)
        before = operator_requests(port)
        time.sleep(STEADY_RESYNC_SECONDS)
        after = operator_requests(port)
        assert process.process is not None
        resident = rss_mb(process.process.pid)
    finally:
        process.stop()
    minutes = STEADY_RESYNC_SECONDS / 60
    by_verb = {verb: (after[verb] - before.get(verb, 0.0)) / minutes for verb in after}
    return Steady(n, sum(by_verb.values()), by_verb, catch_up, resident)


def steady_report(runs: list[Steady]) -> str:
    default = OperatorSettings.model_fields["resync_seconds"].default
    lines = [
        "## Operator at rest and after a restart (`bench/operator_scale.py --steady`)",
        "",
        "After the operator run of each N below: the operator stopped, one workspace "
        "changed, the operator started again (time until that workspace is reconciled, "
        f"from the process start), then with resync period {STEADY_RESYNC_SECONDS} s "
        "(one full reconcile of each workspace per period) and nothing changing, the "
        "requests the operator itself counts over one period, after one period of "
        "settling, and its resident memory then.",
        "",
        f"| N | requests/min (resync {STEADY_RESYNC_SECONDS} s) | by verb | requests/min "
        f"scaled to the default {default:.0f} s | restart to changed workspace "
        "reconciled (s) | operator RSS at rest MB |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        verbs = ", ".join(f"{verb} {rate:.0f}" for verb, rate in sorted(run.by_verb.items())
                          if rate)  # fmt: skip
        lines.append(
            f"| {run.n} | {run.requests_per_minute:.0f} | {verbs} "
            f"| {run.requests_per_minute * STEADY_RESYNC_SECONDS / default:.0f} "
            f"| {run.catch_up_seconds:.1f} | {run.rss_mb:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


def baseline_run(api_client: client.ApiClient, n: int) -> Run:
    namespace = f"bench-base-{n}"
    create_namespace(api_client, namespace)
    settings = OperatorSettings(
        snapshot_repository_base=f"s3:{localcluster.s3_credentials().endpoint}/rspark"
    )
    kube = Kube(api_client)
    memory = control_plane_rss()
    before = apiserver_requests(api_client)
    started = time.monotonic()
    workspaces = create_workspaces(api_client, namespace, n)

    def apply_all(body: dict[str, Any]) -> None:
        ws = parse_workspace(body, settings)
        kube.create(
            build_passwords_secret(ws, secrets.token_urlsafe(32), secrets.token_urlsafe(18))
        )
        for manifest in [*build_children(ws, settings), build_pod(ws, settings)]:
            kube.apply(manifest)

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(apply_all, workspaces))
    wait(f"{n} baseline pods Running", lambda: all_running(api_client, namespace, n))
    seconds = time.monotonic() - started
    run = Run(seconds, apiserver_requests(api_client) - before, grown(memory))
    print(f"N={n} baseline {run}", flush=True)
    delete_namespace(api_client, namespace)
    return run


def report(rows: list[tuple[int, Run, Run]]) -> str:
    lines = [
        "## Operator at scale (`bench/operator_scale.py`)",
        "",
        f"Local cluster (kwok nodes), {CONCURRENCY} threads creating workspaces, operator "
        f"with {CONCURRENCY} workers; baseline = the same rendered objects applied directly "
        "with server-side apply. Time = until every pod is Running and every child exists. "
        "Requests = kube-apiserver `apiserver_request_total` over the run, every client "
        "(kwok, scheduler and controllers included), per workspace. Memory per workspace: "
        "the operator's peak RSS less its RSS once started; kube-apiserver's and etcd's "
        "RSS growth over the operator run (the baseline's namespace deleted before it).",
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
    parser.add_argument("--baseline-only", action="store_true", help="no operator runs")
    parser.add_argument("--repeat", type=int, default=1, help="baseline runs per size")
    args = parser.parse_args()
    localcluster.up()
    install_crds()
    api_client = api()
    print(f"control plane RSS MB at the start: {control_plane_rss()}", flush=True)
    if args.baseline_only:
        spread: dict[int, list[Run]] = {}
        for n in args.sizes:
            for _ in range(args.repeat):
                spread.setdefault(n, []).append(baseline_run(api_client, n))
        write_section(spread_report(spread), SPREAD_SECTION)
        print(spread_report(spread), file=sys.stderr)
        return
    rows, steady = [], []
    for n in args.sizes:
        base = baseline_run(api_client, n)
        op, at_rest = operator_run(api_client, n, args.steady)
        rows.append((n, op, base))
        if at_rest is not None:
            steady.append(at_rest)
    write_section(report(rows))
    print(report(rows), file=sys.stderr)
    if steady:
        write_section(steady_report(steady), STEADY_SECTION)
        print(steady_report(steady), file=sys.stderr)


if __name__ == "__main__":
    main()
