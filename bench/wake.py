"""Wake time of idle JupyterLab workspaces on the local cluster's real nodes: from the
visit (the first GET of the workspace's URL while it is Idle, through Traefik, to the
operator's waker) to JupyterLab's page answering at that URL (its 200, or its redirect
to its sign-in page: what the waker's page reloads into; a browser polls every
`waker.POLL_MILLISECONDS`, so it lands up to that much later). p50 and p95 per
configuration: an empty home or a 1 GiB one (`bench.real_nodes.FILL`: incompressible
random data and many small files), `releaseVolume` false (the home waits on its
node-local volume) or true (the claim is deleted while idle; the wake restores the
home from object storage).

Every stop is real: the agent reports Idle after the default quiet time
(`idle.DEFAULT_IDLE_QUIET`, 5 min) without activity, the shortest `stopAfter` the
operator then allows, and the operator stops the pod after a last snapshot. To fit
one cluster hold, several workspaces of each
configuration (`Config.names`: fewer of the 1 GiB ones, for the disk) run at once,
so that they go idle at nearly the same time; a workspace is woken once it is Idle
(for `releaseVolume` true, once its claim is gone), and only one wake is in flight at
a time: each wake is measured alone (other workspaces may be stopping or counting
their quiet meanwhile, which uses little CPU but the last snapshot's). One restart per
configuration (below) staggers the quiet of its workspaces, so that their stops do
not all come at once. The run stops waking after BUDGET_MINUTES (`--minutes`), so
the number of wakes per configuration is what fitted (the table says how many), at
most WAKES.

Baseline, in the same run, on the same workspaces: a plain restart through the
restart annotation (what `kubectl rspark restart`, and the waker itself, write), from
the annotation to the new pod's page answering. A wake is that same restart with the
old pod already gone (no shutdown, no last snapshot to wait for), but the first
request goes through the waker and, with
`releaseVolume` true, the home comes back from object storage: the ratio shows what
being idle adds to (or saves from) a start. A cold create would compare against a
workspace with no home to restore and no node chosen, which is not what a returning
user waits for.

The cluster must be up (`make cluster-up`) and held by this run alone:

    .local/venv/bin/python -m bench.wake   # writes its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
from kubernetes import client, config

from bench.operator_scale import write_section
from bench.real_nodes import FILL, first_page
from devtools import localcluster
from devtools.deploy import (
    OperatorProcess,
    credentials_secret,
    ide_password,
    ingress_address,
    install_crds,
    operator_environment,
    push_images,
    real_node_settings,
    waker_settings,
)
from rspark_operator import names, waker
from rspark_operator.agent import reasons
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.conditions import HOME_RESTORED, READY, find, parse_timestamp, timestamp
from rspark_operator.idle import DEFAULT_IDLE_QUIET
from rspark_operator.status import Reason
from tests.integration.e2e.conftest import E2E_RESOURCES, E2E_SPARK
from tests.integration.e2e.test_jupyterlab import ide_exec
from tests.integration.e2e.test_wake import waker_answers
from tests.support.kube import wait_until
from tests.support.workspaces import Workspaces, sample

SECTION = "wake"
# The operator's default quiet time: the shortest stopAfter it allows.
STOP_AFTER = DEFAULT_IDLE_QUIET
NAMESPACE = "bench-wake"
WAKES = 10
# From the start of the run (the cluster already up): the last wake begins before this
# (`--minutes`); the whole run holds the cluster a minute or two longer.
BUDGET_MINUTES = 36.5
READY_SECONDS = 900  # a first pull of the JupyterLab image onto a node
SNAPSHOT_SECONDS = 600
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Config:
    big_home: bool
    release: bool

    @property
    def label(self) -> str:
        home = "1 GiB home" if self.big_home else "empty home"
        return f"{home}, releaseVolume {str(self.release).lower()}"

    @property
    def names(self) -> list[str]:
        """Its workspaces: three with an empty home, two with 1 GiB (a volume and a
        repository of 1 GiB each on this machine's disk)."""
        return [self.workspace(i) for i in range(2 if self.big_home else 3)]

    def workspace(self, index: int) -> str:
        return (
            f"{'big' if self.big_home else 'empty'}-{'release' if self.release else 'keep'}-{index}"
        )


CONFIGS = [Config(big, release) for big in (False, True) for release in (False, True)]


@dataclass
class Figures:
    wakes: list[float] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    restored: int = 0  # wakes whose HomeRestored condition is from that wake


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method: p95 of ten values lies between the two
    largest)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def target(url: str) -> tuple[str, dict[str, str]]:
    """The URL as sent to the ingress controller's address, and its Host header."""
    parts = urlsplit(url)
    return f"http://{ingress_address()}{parts.path or '/'}", {"Host": parts.netloc}


def visit(session: requests.Session, url: str, password: str) -> float:
    """Wake the idle workspace at `url` as its user's browser does; seconds from the
    first GET to JupyterLab's page answering. The session keeps the waker's cookie, so
    after the first wake the GET alone wakes it; the first time it posts the password."""
    address, headers = target(url)
    started = time.monotonic()
    answer = session.get(address, headers=headers, allow_redirects=False, timeout=10)
    assert waker.WAKER_HEADER in answer.headers, (answer.status_code, answer.text[:300])
    if f'name="{waker.PASSWORD_FIELD}"' in answer.text:
        posted = session.post(
            address, data={waker.PASSWORD_FIELD: password}, headers=headers,
            allow_redirects=False, timeout=10,
        )  # fmt: skip
        assert posted.status_code == 303, posted.text
    return first_page(url, started)


def restart(workspaces: Workspaces, name: str, url: str) -> float:
    """The restart annotation on the Running workspace; seconds to the new pod's page."""
    old = workspaces.running_pod(name).metadata.uid
    started = time.monotonic()
    annotations = {names.RESTART_ANNOTATION: timestamp(datetime.now(UTC))}
    workspaces.custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, name, {"metadata": {"annotations": annotations}}
    )

    def only_a_new_pod_running() -> bool:
        pods = workspaces.pods(name)
        return all(p.metadata.uid != old for p in pods) and any(
            p.status.phase == "Running" and not p.metadata.deletion_timestamp for p in pods
        )

    wait_until(f"{name}'s new pod", only_a_new_pod_running, READY_SECONDS, interval=0.2)
    return first_page(url, started)


def ready_to_wake(workspaces: Workspaces, body: dict[str, Any], release: bool, url: str) -> bool:
    """Idle and stopped (no pod), its claim gone with releaseVolume, the waker answering."""
    status = body.get("status") or {}
    ready = find(status.get("conditions") or [], READY) or {}
    if status.get("phase") != "Idle" or ready.get("reason") != Reason.IDLE:
        return False
    name = body["metadata"]["name"]
    if workspaces.pods(name) or (release and not workspaces.home_claim_gone(name)):
        return False
    return waker_answers(url)


def restored_since(body: dict[str, Any], moment: datetime) -> bool:
    """The workspace's HomeRestored condition says Restored, since `moment`."""
    restored = find((body.get("status") or {}).get("conditions") or [], HOME_RESTORED) or {}
    when = str(restored.get("lastTransitionTime") or "")
    done = restored.get("status") == "True" and restored.get("reason") == reasons.RESTORED
    return done and bool(when) and parse_timestamp(when) >= moment


def setup(workspaces: Workspaces) -> dict[str, str]:
    """Every configuration's workspaces, created at once; the 1 GiB homes filled and in a
    snapshot. Their URLs."""
    for config_ in CONFIGS:
        for name in config_.names:
            idle = {"stopAfter": STOP_AFTER, "releaseVolume": config_.release}
            manifest = sample(
                name, ide="jupyterlab", resources=E2E_RESOURCES,
                spark=E2E_SPARK, idle=idle,
            )  # fmt: skip
            workspaces.create(manifest)
    urls = {}
    for config_ in CONFIGS:
        for name in config_.names:
            urls[name] = workspaces.wait_phase(name, "Running", READY_SECONDS)["status"]["url"]
    filled = {}
    for config_ in CONFIGS:
        for name in config_.names if config_.big_home else []:
            filled[name] = datetime.now(UTC)
            ide_exec(NAMESPACE, names.pod_name(name), "python3", "-c", FILL)
            print(f"{name}: 1 GiB written", flush=True)
    for name, moment in filled.items():
        wait_until(
            f"{name}'s snapshot of its 1 GiB home",
            partial(workspaces.snapshot_begun_after, name, moment),
            SNAPSHOT_SECONDS,
        )
    return urls


def measure(workspaces: Workspaces, urls: dict[str, str], until: float) -> dict[Config, Figures]:
    figures = {config_: Figures() for config_ in CONFIGS}
    of = {name: config_ for config_ in CONFIGS for name in config_.names}
    # One restart per configuration, before the first of them goes idle; it also staggers
    # the quiet of that configuration's workspaces.
    for config_ in CONFIGS:
        name = config_.names[0]
        seconds = restart(workspaces, name, urls[name])
        figures[config_].restarts.append(seconds)
        print(f"restart {name}: {seconds:.1f} s", flush=True)
    sessions: defaultdict[str, requests.Session] = defaultdict(requests.Session)
    passwords = {name: ide_password(NAMESPACE, name) for name in of}
    while time.monotonic() < until:
        pending = [c for c in CONFIGS if len(figures[c].wakes) < WAKES]
        if not pending:
            break
        bodies = {b["metadata"]["name"]: b for b in workspaces.custom.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL)["items"]}  # fmt: skip
        idle = [
            name
            for name, config_ in of.items()
            if config_ in pending
            and ready_to_wake(workspaces, bodies[name], config_.release, urls[name])
        ]
        if not idle:
            time.sleep(POLL_SECONDS)
            continue
        # The configuration with the fewest wakes so far goes first.
        name = min(idle, key=lambda n: len(figures[of[n]].wakes))
        moment = datetime.now(UTC).replace(microsecond=0)
        seconds = visit(sessions[name], urls[name], passwords[name])
        figure = figures[of[name]]
        figure.wakes.append(seconds)
        if restored_since(workspaces.get(name) or {}, moment):
            figure.restored += 1
        print(f"wake {name}: {seconds:.1f} s ({len(figure.wakes)} of {of[name].label})", flush=True)
    return figures


def report(figures: dict[Config, Figures], wall: float) -> str:
    lines = [
        "## Waking idle workspaces (`bench/wake.py`)",
        "",
        f"JupyterLab workspaces (requests {E2E_RESOURCES['requests']}) on the two real nodes, "
        "three per configuration with an empty home and two with 1 GiB, running at once, "
        f"`stopAfter: {STOP_AFTER}` "
        "(the shortest with the default quiet time before the agent reports Idle), every "
        "stop real. Wake: "
        "from the first GET of the URL while Idle (through Traefik to the waker; the first "
        "time with its password) to JupyterLab's page answering there; one wake in flight at "
        "a time (other workspaces may be stopping meanwhile). Baseline: a restart of the "
        "Running workspace through the restart annotation, to the new pod's page, on the "
        f"same workspaces. One run on the shared 2-core machine, {wall / 60:.1f} min.",
        "",
        "| configuration | wakes | wake p50 (s) | wake p95 (s) | restarts | restart p50 (s) "
        "| wake p50 / restart p50 | wakes restored from S3 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config_, figure in figures.items():
        wakes, restarts = figure.wakes, figure.restarts
        if not wakes:
            lines.append(f"| {config_.label} | 0 | | | {len(restarts)} | | | |")
            continue
        p50 = percentile(wakes, 50)
        base = percentile(restarts, 50)
        lines.append(
            f"| {config_.label} | {len(wakes)} | {p50:.1f} | {percentile(wakes, 95):.1f} | "
            f"{len(restarts)} | {base:.1f} | {p50 / base:.2f}x | {figure.restored} |"
        )
    lines += [
        "",
        "Each wake's seconds, in order:",
        "",
        *(
            f"- {config_.label}: " + ", ".join(f"{s:.1f}" for s in figure.wakes)
            for config_, figure in figures.items()
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=BUDGET_MINUTES,
                        help="no wake begins after this many minutes of the run")  # fmt: skip
    budget = parser.parse_args().minutes * 60
    began = time.monotonic()
    localcluster.up()
    refs = push_images(("jupyterlab", "agent", "spark"))
    install_crds()
    s3 = localcluster.s3_credentials()
    api = config.new_client_from_config(str(localcluster.KUBECONFIG))
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    credentials_secret(NAMESPACE, s3)
    settings = {**real_node_settings(refs), **waker_settings()}
    log_path = localcluster.LOCAL / "logs" / "operator-bench-wake.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    operator = OperatorProcess(log_path, operator_environment(s3, **settings))
    operator.start()
    workspaces = Workspaces(api, NAMESPACE)
    try:
        urls = setup(workspaces)
        figures = measure(workspaces, urls, began + budget)
    finally:
        operator.stop()
    text = report(figures, time.monotonic() - began)
    write_section(text, SECTION)
    print(text, file=sys.stderr)


if __name__ == "__main__":
    main()
