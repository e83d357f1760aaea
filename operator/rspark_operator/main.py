"""`rspark-operator`: the entry point, kopf's watches and the one resync loop.

kopf watches the workspaces, their pods (a label selector: only workspace pods
reach the operator), Warning events and cordoned nodes (field selectors), and
keeps the warnings the status quotes and the workspace pods by node in indexes.
Every watch event only puts the workspace in the resync queue (`resync.py`); one
loop takes each workspace when it is due and runs `reconcile.reconcile` on a
bounded pool of threads. No kopf handler changes anything, so kopf keeps no state
on workspaces: no finalizer, no annotations.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from rspark_operator import memory, peering, wakeserver
from rspark_operator.api import GROUP, KIND, PLURAL, PROFILE_PLURAL, VERSION
from rspark_operator.builders.signin import WAKER_PROXY_COMMAND, waker_proxy_args
from rspark_operator.cluster import Failure, KubeError
from rspark_operator.gateway import gateway_user
from rspark_operator.kube import Kube, load_api_client
from rspark_operator.lifecycle import IDLE_EVENTS
from rspark_operator.metrics import OperatorMetrics
from rspark_operator.names import (
    COMPONENT_LABEL,
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    RESTART_ANNOTATION,
    RSTUDIO_COMPONENT,
    WORKSPACE_LABEL,
    workspace_of,
)
from rspark_operator.profiles import profile_name
from rspark_operator.reconcile import reconcile, sweep_gateway_users
from rspark_operator.resync import Job, Result, ResyncQueue
from rspark_operator.resync import run as run_resync
from rspark_operator.rollout import Rollout
from rspark_operator.settings import OperatorSettings, SettingsError, load_settings
from rspark_operator.status import (
    STATUS_WARNINGS,
    VOLUME_PROBLEMS,
    final_snapshot_unseen,
    idle_report_unseen,
    restore_report_unseen,
)

# Reconciles at once; each may hold one API connection.
WORKERS = 16
# Server-side filters of the watches: only workspace pods, only Warning events (a field
# selector cannot say "about a pod or a claim": it has no "or").
POD_SELECTOR = f"{MANAGED_BY_LABEL}={FIELD_MANAGER},{COMPONENT_LABEL}={RSTUDIO_COMPONENT}"
EVENT_SELECTOR = "type=Warning"
# Only cordoned nodes (being drained): a node leaving the selection (uncordoned) comes
# as a deletion.
CORDONED_SELECTOR = "spec.unschedulable=true"
# A change of the spec goes ahead of the status refreshes due now (after a restart,
# every workspace's pod event is due at once).
AHEAD_SECONDS = -60.0
# How often the resync loop reads the peering object to know whether this replica acts.
PEERING_CHECK_SECONDS = 5.0
# The job that drops the gateway's lines of workspaces gone (`sweep_gateway_users`), in
# the resync queue beside the workspaces: no namespace is empty. No finalizer: a
# deleted workspace needs nothing else, and a sweep finds what went while no operator
# ran. It comes a few seconds after a deletion (a namespace's workspaces deleted
# together share one write), and every resync period from the first workspace event on.
GATEWAY_USERS_JOB = ("", "gateway-users")
GATEWAY_SWEEP_DELAY_SECONDS = 5.0
# The finalizer that kopf put on workspaces while the operator used kopf timers.
LEGACY_FINALIZER = f"{GROUP}/finalizer"

log = logging.getLogger("rspark-operator")
KOPF_OBJECT_LOGGER = "kopf.objects"


class StartupError(Exception):
    """What the operator lacks to start: one line for the log, then exit 1."""


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf deep-copies every object its watches deliver, to diff it against the last
    one handled, and uses the diff only for change handlers (on.create, on.update, ...),
    daemons and timers. The operator has none of them (its watches only queue
    workspaces and fill indexes), so there is nothing to copy (`docs/benchmarks.md`:
    a quarter of the samples of a profile, 4% of the CPU a workspace measured)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo.settings
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.peering.mandatory = True
    settings.peering.lifetime = ours.peering_lifetime_seconds
    # Our events go through Kube.event; kopf posts none of its own.
    settings.posting.enabled = False
    settings.networking.request_timeout = ours.api_timeout_seconds
    settings.watching.label_selectors["v1", "pods"] = POD_SELECTOR
    settings.watching.field_selectors["v1", "events"] = EVENT_SELECTOR
    settings.watching.field_selectors["v1", "nodes"] = CORDONED_SELECTOR


@kopf.on.startup()
def start_resync(memo: kopf.Memo, **kwargs: Any) -> None:
    """The one resync loop, in a thread of its own; it reads the warnings index."""
    memo.warnings = kwargs[WARNINGS]
    memo.neighbours = kwargs[BY_NAMESPACE]
    kube: Kube = memo.kube

    def resync() -> None:
        for namespace in memo.settings.watch_namespaces or [""]:  # "": every namespace
            catch_up(kube.list(f"{GROUP}/{VERSION}", KIND, namespace), memo.queue)
        run_resync(
            memo.queue,
            lambda job: _run_job(memo, job),
            workers=WORKERS,
            acting=memo.acting,
            stop=memo.stop,
        )

    memo.thread = threading.Thread(target=resync, name="resync", daemon=True)
    memo.thread.start()


def catch_up(listed: Iterable[Mapping[str, Any]], queue: ResyncQueue) -> None:
    """Queue at once the workspaces changed while no operator ran, from a listing of
    our own: kopf delivers no event before it has filled every index, which takes
    seconds per thousand objects (25 s at 1,000 workspaces in `docs/benchmarks.md`)."""
    try:
        for body in listed:
            if _ahead(body):
                metadata = body["metadata"]
                queue.schedule((metadata["namespace"], metadata["name"]), AHEAD_SECONDS)
    except KubeError as error:  # the watch queues them all the same, later
        log.warning("cannot list the workspaces (%s): %s", error.failure.value, error)


def _ahead(body: Mapping[str, Any]) -> bool:
    """A spec not reconciled yet, or the legacy finalizer to take off a deleted workspace:
    ahead of what is due."""
    metadata, status = body.get("metadata", {}), body.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return LEGACY_FINALIZER in (metadata.get("finalizers") or [])
    return bool(metadata.get("generation") != status.get("observedGeneration"))


@kopf.on.cleanup()
def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    """Take nothing new; let the reconciles under way finish (each call is bounded)."""
    memo.stop.set()
    memo.thread.join(timeout=memo.settings.api_timeout_seconds * memo.settings.api_attempts)


WarningIndex = kopf.Index[str, dict[str, Any]]
# The index of Warning events the status reads: kopf passes it to handlers as a keyword
# argument named after its function (`status_warnings` below).
WARNINGS = "status_warnings"


def _status_warning(body: kopf.Body, **_: Any) -> bool:
    involved = body.get("involvedObject") or {}
    return (
        body.get("reason") in STATUS_WARNINGS
        and workspace_of(str(involved.get("kind")), str(involved.get("name"))) is not None
    )


@kopf.index("v1", "events", when=_status_warning)
async def status_warnings(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Warnings about pods and claims, by the object's uid, kept from the watch: listing
    a namespace's events in each reconcile makes the API server scan all of them."""
    involved = body.get("involvedObject") or {}
    kept = ("type", "reason", "message", "lastTimestamp", "eventTime")
    event = {key: body.get(key) for key in kept}
    event["involvedObject"] = {"uid": involved.get("uid")}
    event["metadata"] = {"creationTimestamp": body.get("metadata", {}).get("creationTimestamp")}
    return {str(involved.get("uid")): event}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def workspace_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Queue the workspace: a change of its spec at once, the agent's restore and idle
    reports as a status refresh, a workspace first seen (start, resumed peering) within a resync
    period; our own status writes need nothing. A workspace created or deleted refreshes
    the others of its namespace when their NamespaceShared condition changes."""
    queue: ResyncQueue = memo.queue
    if namespace is None:  # kopf's typing: workspaces are always namespaced
        return
    key = (namespace, name)
    if event["type"] in ("ADDED", "DELETED"):
        neighbours: NamespaceIndex = kwargs[BY_NAMESPACE]
        for other in sharing_changed(neighbours.get(namespace, ()), name, _user(body)):
            queue.schedule((namespace, other), children=False)
    if memo.settings.snapshot_mode == "gateway":
        # Handlers run once kopf has filled its indexes: the sweep sees every workspace.
        if event["type"] == "DELETED":
            queue.schedule(GATEWAY_USERS_JOB, GATEWAY_SWEEP_DELAY_SECONDS)
        elif queue.due_at(GATEWAY_USERS_JOB) is None:
            queue.schedule(GATEWAY_USERS_JOB, queue.resync_seconds)
    metadata, status = body.get("metadata", {}), body.get("status") or {}
    if event["type"] == "DELETED":
        queue.forget(key)
    elif _ahead(body):
        queue.schedule(key, AHEAD_SECONDS)
    elif metadata.get("deletionTimestamp"):
        return
    elif (
        restore_report_unseen(status)
        or idle_report_unseen(status)
        or final_snapshot_unseen(body.get("spec") or {}, status)
        or (
            event["type"] == "MODIFIED"
            and RESTART_ANNOTATION in (metadata.get("annotations") or {})
        )
    ):
        queue.schedule(key, children=False)
    elif event["type"] is None:  # listed, not changed: spread the first resync
        queue.schedule(key, random.uniform(0, queue.resync_seconds))


@kopf.on.event("v1", "pods")
async def pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A workspace pod changed or went away: refresh the status (replace it if needed)."""
    metadata = body.get("metadata", {})
    workspace = (metadata.get("labels") or {}).get(WORKSPACE_LABEL)
    if workspace and metadata.get("namespace"):
        memo.queue.schedule((metadata["namespace"], workspace), children=False)


def _volume_warning(body: kopf.Body, **_: Any) -> bool:
    return _status_warning(body) and body.get("reason") in VOLUME_PROBLEMS


@kopf.on.event("v1", "events", when=_volume_warning)
async def volume_warning(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A mount, attach or provisioning failure changes neither the pod nor the claim:
    only this event tells, so Ready says it at once rather than at the next resync."""
    involved = body.get("involvedObject") or {}
    workspace = workspace_of(str(involved.get("kind")), str(involved.get("name")))
    if workspace and involved.get("namespace"):
        memo.queue.schedule((involved["namespace"], workspace), children=False)


# Workspaces (name, user) by namespace: who shares it (tenancy.py, NamespaceShared).
BY_NAMESPACE = "workspaces_by_namespace"
NamespaceIndex = kopf.Index[str, tuple[str, str]]


@kopf.index(GROUP, VERSION, PLURAL)
async def workspaces_by_namespace(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, tuple[str, str]]:
    return {} if namespace is None else {namespace: (name, _user(body))}


def _user(body: Mapping[str, Any]) -> str:
    return str((body.get("spec") or {}).get("user") or "")


def sharing_changed(workspaces: Iterable[tuple[str, str]], name: str, user: str) -> list[str]:
    """The workspaces of a namespace whose NamespaceShared condition changes when
    workspace `name` of `user` comes or goes: every other one, unless another workspace
    there has the same user (the condition names the other users, not their workspaces).
    A namespace of one user's 1,000 workspaces refreshed all the others at each creation."""
    others = [(other, who) for other, who in workspaces if other != name]
    if any(who == user for _, who in others):
        return []
    return [other for other, _ in others]


# Workspaces by the node of their pod, so that a cordoned node moves exactly those.
BY_NODE = "workspaces_by_node"


@kopf.index("v1", "pods")
async def workspaces_by_node(body: kopf.Body, **_: Any) -> dict[str, tuple[str | None, str]]:
    metadata = body.get("metadata", {})
    node = (body.get("spec") or {}).get("nodeName")
    workspace = (metadata.get("labels") or {}).get(WORKSPACE_LABEL)
    return {node: (metadata.get("namespace"), workspace)} if node and workspace else {}


@kopf.on.event("v1", "nodes")
async def node_cordoned(
    event: kopf.RawEvent, body: kopf.Body, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A node was cordoned (a drain begins) or uncordoned: its workspaces' pods leave
    their disruption budgets, or come back under them (see `builders/disruption.py`)."""
    cordoned: set[str] = memo.cordoned
    if event["type"] == "DELETED" or not (body.get("spec") or {}).get("unschedulable"):
        if name not in cordoned:
            return
        cordoned.discard(name)
    elif name in cordoned:
        return
    else:
        cordoned.add(name)
    index: kopf.Index[str, tuple[str | None, str]] = kwargs[BY_NODE]
    for namespace, workspace in index.get(name, ()):
        if namespace:
            memo.queue.schedule((namespace, workspace), children=False)


# Workspaces by the SparkProfile they use (their own choice or the default setting), so
# that a changed profile re-renders exactly those.
BY_PROFILE = "workspaces_by_profile"


@kopf.index(GROUP, VERSION, PLURAL)
async def workspaces_by_profile(
    body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[str, tuple[str | None, str]]:
    chosen = ((body.get("spec") or {}).get("spark") or {}).get("profile")
    profile = profile_name(chosen, memo.settings.default_spark_profile)
    return {} if profile is None else {profile: (body.metadata.namespace, body.metadata.name)}


@kopf.on.event(GROUP, VERSION, PROFILE_PLURAL)
async def profile_changed(name: str, type: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A SparkProfile was created, changed or deleted: re-render its workspaces' Spark
    configuration (their pods stay). The initial listing (type None) changes nothing."""
    if type is None:
        return
    index: kopf.Index[str, tuple[str | None, str]] = kwargs[BY_PROFILE]
    for namespace, workspace in index.get(name, ()):
        if namespace:
            memo.queue.schedule((namespace, workspace))


def _run_job(memo: kopf.Memo, job: Job) -> Result:
    """A job of the resync loop: the gateway's sweep, or a workspace's reconcile (only
    those count in the reconcile metrics)."""
    if job.key == GATEWAY_USERS_JOB:
        return _sweep_gateway_users(memo)
    return _reconcile(memo, job)


def _reconcile(memo: kopf.Memo, job: Job) -> Result:
    """Reconcile the workspace as it is now, measured."""
    metrics: OperatorMetrics = memo.metrics
    start = time.monotonic()
    try:
        result = _reconcile_now(memo, job)
    except Exception:
        metrics.reconcile_errors.labels("exception").inc()
        raise
    kind = "full" if job.children else "refresh"
    metrics.reconcile_duration.labels(kind).observe(time.monotonic() - start)
    if result is Result.GONE:
        metrics.phases.forget(job.key)
    return result


def _reconcile_now(memo: kopf.Memo, job: Job) -> Result:
    """Reconcile the workspace as it is now (the watch's copy may be stale)."""
    kube: Kube = memo.kube
    warnings: WarningIndex = memo.warnings
    namespace, name = job.key
    try:
        current = kube.get(f"{GROUP}/{VERSION}", KIND, namespace, name)
        if current is None:
            memo.rollout.finish(job.key)
            return Result.GONE
        if LEGACY_FINALIZER in (current["metadata"].get("finalizers") or []):
            kube.remove_finalizer(current, LEGACY_FINALIZER)
        if current["metadata"].get("deletionTimestamp"):
            memo.rollout.finish(job.key)
            return Result.GONE
        outcome = reconcile(
            kube,
            memo.settings,
            current,
            lambda uid: warnings.get(uid, ()),
            memo.rollout,
            cordoned=memo.cordoned.__contains__,
            neighbours=lambda ns: memo.neighbours.get(ns, ()),
            children=job.children,
        )
        for event in outcome.events:
            kube.event(current, event.reason, event.message, warning=event.warning)
            if event.reason in IDLE_EVENTS:
                memo.metrics.idle_events.labels(event.reason).inc()
        if outcome.due is not None:
            wait = (outcome.due - datetime.now(UTC)).total_seconds()
            memo.queue.schedule(job.key, max(wait, 0.0), children=False)
    except KubeError as error:
        if error.failure is Failure.NAMESPACE_TERMINATING:
            log.info("%s/%s: namespace is being deleted", namespace, name)
            return Result.GONE
        log.warning("%s/%s: API call failed (%s): %s", namespace, name, error.failure.value, error)
        memo.metrics.reconcile_errors.labels(error.failure.value).inc()
        return Result.FAILED
    memo.metrics.phases.set(job.key, outcome.status["phase"])
    if outcome.events:
        log.info(
            "%s/%s: %s; phase %s",
            namespace,
            name,
            ", ".join(event.reason for event in outcome.events),
            outcome.status["phase"],
        )
    return Result.DONE


def _sweep_gateway_users(memo: kopf.Memo) -> Result:
    """Drop the gateway's lines of workspaces gone (see GATEWAY_USERS_JOB)."""
    index: NamespaceIndex = memo.neighbours
    try:
        removed = sweep_gateway_users(memo.kube, memo.settings, lambda: _workspace_users(index))
    except KubeError as error:
        log.warning("gateway users: API call failed (%s): %s", error.failure.value, error)
        memo.metrics.reconcile_errors.labels(error.failure.value).inc()
        return Result.FAILED
    if removed:
        log.info("gateway users: removed %d of workspaces gone: %s", len(removed), removed)
    return Result.DONE


def _workspace_users(index: NamespaceIndex) -> set[str]:
    """The gateway users of every workspace in kopf's index. It is read in the resync's
    thread while kopf's loop updates it: a read that met a change is done again."""
    while True:
        try:
            return {
                gateway_user(namespace, name)
                for namespace, store in list(index.items())
                for name, _owner in list(store)
            }
        except RuntimeError:  # "changed size during iteration"
            continue


class Acting:
    """Whether this replica acts, from the peering objects, read at most every few seconds
    (see `peering.py`)."""

    def __init__(self, kube: Kube, namespaces: list[str], priority: int) -> None:
        self.kube = kube
        self.objects = [peering.manifest(ns) for ns in namespaces] or [peering.manifest(None)]
        self.priority = priority
        self._checked = float("-inf")
        self._acting = False

    def __call__(self) -> bool:
        if time.monotonic() - self._checked >= PEERING_CHECK_SECONDS:
            self._acting = self._read()
            self._checked = time.monotonic()
        return self._acting

    def _read(self) -> bool:
        now = datetime.now(UTC)
        try:
            found = [self.kube.get(o["apiVersion"], o["kind"], _ns(o), peering.NAME)
                     for o in self.objects]  # fmt: skip
        except KubeError as error:
            log.warning(
                "peering: cannot read the peering object (%s): %s", error.failure.value, error
            )
            return False
        return all(
            obj is not None and peering.acting(obj.get("status"), self.priority, now)
            for obj in found
        )


def _ns(manifest: dict[str, Any]) -> str:
    return str(manifest["metadata"].get("namespace", ""))


def ensure_peerings(kube: Kube, namespaces: list[str]) -> None:
    """kopf's peering is mandatory, so without its object the operator would wait forever:
    create it, or say what is missing."""
    served: list[str | None] = [*namespaces] or [None]
    for namespace in served:
        wanted = peering.manifest(namespace)
        kind, where = wanted["kind"], f" in namespace {namespace}" if namespace else ""
        what = f"{kind} {peering.NAME}{where}"
        try:
            if kube.get(wanted["apiVersion"], kind, namespace or "", peering.NAME) is not None:
                continue
            kube.create(wanted)
            log.info("created %s", what)
        except KubeError as error:
            if error.failure is Failure.NOT_FOUND:
                raise StartupError(
                    f"{what} cannot exist: the kopf.dev peering CRDs are not installed "
                    "(kubectl apply -f crds/kopf.dev_peerings.yaml)"
                ) from None
            if error.failure is Failure.FORBIDDEN:
                raise StartupError(
                    f"{what} is needed and {error} (apply manifests/base, which holds the "
                    "ClusterKopfPeering and the ClusterRole)"
                ) from None
            raise StartupError(f"{what}: {error}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="rspark-operator",
        description="Run the rspark-operator against the current kubeconfig (KUBECONFIG) "
        "or the in-cluster service account.",
    )
    parser.add_argument("--verbose", action="store_true", help="log kopf's own debug messages")
    parser.add_argument(
        "--liveness", default=None, help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument(
        "--waker-proxy-args",
        action="store_true",
        help="print the arguments of the sign-in proxy in front of the waker "
        "(RSPARK_SIGNIN=oidc), one a line, and exit",
    )
    parser.add_argument(
        "--waker-proxy",
        action="store_true",
        help=f"run the sign-in proxy in front of the waker ({WAKER_PROXY_COMMAND} from PATH, "
        "with the arguments --waker-proxy-args prints): a container next to the operator's",
    )
    args = parser.parse_args(argv)
    try:
        settings: OperatorSettings = load_settings()
    except SettingsError as error:
        print(f"rspark-operator: bad configuration:\n{error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.waker_proxy_args or args.waker_proxy:
        if settings.signin != "oidc" or not settings.waker_enabled:
            print(
                "rspark-operator: the waker has a sign-in proxy of its own only with "
                "RSPARK_SIGNIN=oidc and RSPARK_WAKER_ADDRESS set",
                file=sys.stderr,
            )
            raise SystemExit(2)
        proxy_args = waker_proxy_args(settings)
        if args.waker_proxy:
            os.execvp(WAKER_PROXY_COMMAND, [WAKER_PROXY_COMMAND, *proxy_args])
        print("\n".join(proxy_args))
        return
    kopf.configure(verbose=args.verbose)
    if not args.verbose:
        # kopf logs each watch handler's success at INFO: a line per pod event that says
        # nothing (30,000 in the first 20 minutes of 10,000 workspaces). Failures still show.
        logging.getLogger(KOPF_OBJECT_LOGGER).setLevel(logging.WARNING)
    metrics = OperatorMetrics()
    kube = Kube(
        load_api_client(connections=WORKERS + 2),
        timeout=settings.api_timeout_seconds,
        attempts=settings.api_attempts,
        on_call=metrics.api_call,
    )
    namespaces = settings.watch_namespaces
    try:
        ensure_peerings(kube, namespaces)
    except StartupError as error:
        log.error("cannot start: %s", error)
        raise SystemExit(1) from None
    # Two replicas must never both act: the one with the highest priority does.
    priority = random.randint(1, 2**31 - 1)
    queue = ResyncQueue(settings.resync_seconds)
    rollout = Rollout(
        settings.rollout_max_pods, wake=lambda key: queue.schedule(key, children=False)
    )
    metrics.queue_workspaces.set_function(queue.__len__)
    metrics.queue_due_workspaces.set_function(queue.due_now)
    metrics.rollout_pods.set_function(rollout.under_way)
    if settings.metrics_address:
        metrics.serve(settings.metrics_address)
    if settings.waker_enabled:
        wakeserver.serve(kube, settings)
    stop = threading.Event()
    threading.Thread(
        target=memory.trim_every, args=(memory.TRIM_SECONDS, stop), name="trim", daemon=True
    ).start()
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        peering_name=peering.NAME,
        priority=priority,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(
            kube=kube,
            settings=settings,
            queue=queue,
            rollout=rollout,
            metrics=metrics,
            acting=Acting(kube, namespaces, priority),
            stop=stop,
            # Names of the cordoned nodes, from the watch (`node_cordoned`).
            cordoned=set(),
        ),
    )
