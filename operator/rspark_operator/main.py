"""`rspark-operator`: the entry point, kopf's watches and the one resync loop.

kopf watches the workspaces, their pods (a label selector: only workspace pods
reach the operator), Warning events and cordoned nodes (field selectors). The watch
handlers keep the operator's own indexes (`Indexes`: the warnings the status quotes,
the workspaces by namespace and by profile, the workspace pods by node) and put the
workspace in the resync queue (`resync.py`); one loop takes each workspace when it
is due and runs `reconcile.reconcile` on a bounded pool of threads. No kopf handler
changes anything, so kopf keeps no state on workspaces: no finalizer, no
annotations. No kopf index either (`@kopf.index`): see `indexes.py`.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from rspark_operator import memory, peering, wakeserver
from rspark_operator.api import GROUP, KIND, PLURAL, PROFILE_PLURAL, VERSION
from rspark_operator.builders.signin import WAKER_PROXY_COMMAND, waker_proxy_args
from rspark_operator.cluster import Failure, KubeError
from rspark_operator.gateway import gateway_user
from rspark_operator.indexes import Index
from rspark_operator.kube import LIST_PAGE, Kube, load_api_client
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
from rspark_operator.resync import Job, Key, Result, ResyncQueue
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
# How long kopf keeps an object's worker (and the body it last handled) after its
# last event; kopf's default is 5 s.
WORKER_IDLE_SECONDS = 0.1
# How long kopf's start (its watches, its liveness endpoint) waits for the operator's own
# first listing of the workspaces (`start_resync`): well within the Deployment's
# liveness probe, which kills a process that does not answer for 50 s.
FIRST_LISTING_SECONDS = 30.0
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
    workspaces and fill the operator's indexes), so there is nothing to copy
    (`docs/benchmarks.md`: a quarter of the samples of a profile, 4% of the CPU a
    workspace measured)."""

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
    # At a start kopf lists every workspace and workspace pod (a pod is about 60 KB in
    # Python) and each object's worker holds its body until it has idled for
    # `idle_timeout`: whole listings at once, 1.3 GB at 10,000 workspaces. A page at a
    # time, each worker gone soon after its event: 210 MB (docs/benchmarks.md).
    settings.watching.chunk_size = LIST_PAGE
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS


@kopf.on.startup()
def start_resync(memo: kopf.Memo, **_: Any) -> None:
    """The one resync loop, in a thread of its own. It takes nothing before a listing of
    its own, each time this replica begins to act (`ListedWhenActing`). kopf starts its
    watches when this returns: after the first listing (at most `FIRST_LISTING_SECONDS`),
    so that the listing has the API server and the process to itself. Alongside kopf's
    listings of every workspace and pod, 10,000 workspaces took 30 to 45 s to list,
    against 8 s alone, and every reconcile waits for it."""
    acting = ListedWhenActing(memo.acting, lambda: seed(memo))

    def resync() -> None:
        run_resync(
            memo.queue,
            lambda job: _run_job(memo, job),
            workers=WORKERS,
            acting=acting,
            stop=memo.stop,
        )

    memo.thread = threading.Thread(target=resync, name="resync", daemon=True)
    memo.thread.start()
    if not acting.first_look.wait(FIRST_LISTING_SECONDS):
        log.warning(
            "the first listing of the workspaces takes more than %.0f s: watching meanwhile",
            FIRST_LISTING_SECONDS,
        )


class ListedWhenActing:
    """Whether this replica acts (`acting`), once every workspace has been listed
    (`seed`) since it began to act: no job (reconcile or gateway sweep) runs on a
    workspace index that kopf's watch is still filling, nor on one left from before a
    pause, when kopf did not watch. A failed listing is done again at the loop's next
    look, a second later; the resync loop calls this from its one thread."""

    def __init__(self, acting: Callable[[], bool], seed: Callable[[], bool]) -> None:
        self._acting = acting
        self._seed = seed
        self._listed = False
        # Set once the first look is over: listed, not acting, or the listing failed.
        self.first_look = threading.Event()

    def __call__(self) -> bool:
        try:
            if not self._acting():
                self._listed = False
                return False
            if not self._listed:
                self._listed = self._seed()
            return self._listed
        finally:
            self.first_look.set()


def seed(memo: kopf.Memo) -> bool:
    """List every workspace (`catch_up`); whether the listing was whole. A workspace the
    indexes hold and the listing lacks was deleted while kopf did not watch (kopf tells
    of no deletion it did not see), or created since: its reconcile tells, at once."""
    kube: Kube = memo.kube
    indexes: Indexes = memo.indexes
    listed: set[Key] = set()
    try:
        for namespace in memo.settings.watch_namespaces or [""]:  # "": every namespace
            listed |= catch_up(
                kube.list(f"{GROUP}/{VERSION}", KIND, namespace),
                memo.queue,
                indexes,
                memo.settings.default_spark_profile,
            )
    except KubeError as error:
        log.warning("cannot list the workspaces (%s): %s", error.failure.value, error)
        return False
    for key in indexes.workspace_keys() - listed:
        memo.queue.schedule(key, children=False)
    return True


def catch_up(
    listed: Iterable[Mapping[str, Any]],
    queue: ResyncQueue,
    indexes: Indexes,
    default_profile: str | None,
) -> set[Key]:
    """One pass over a listing of workspaces (a page at a time); the ones listed. Each
    goes in the workspace indexes, unless a watch event put it there already (kopf's
    stream of it is the newer, or will be), then in the queue: at once when it changed
    while no operator ran (kopf's first events may come after the first reconciles),
    else within a resync period, like kopf's first event of it (the earlier due time
    wins: `ResyncQueue.schedule`). So a workspace deleted before kopf's own listing, of
    which no watch event will ever tell, is found gone by its reconcile
    (`_index_current`). Raises KubeError."""
    keys: set[Key] = set()
    for body in listed:
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        indexes.add_workspace(body, default_profile)  # before its reconcile
        delay = AHEAD_SECONDS if _ahead(body) else random.uniform(0, queue.resync_seconds)
        queue.schedule(key, delay)
        keys.add(key)
    return keys


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


# Warnings about pods and claims, by the object's uid (what the status quotes).
WarningIndex = Index[str, dict[str, Any]]
# Workspaces (name, user) by namespace: who shares it (tenancy.py, NamespaceShared), and
# which gateway lines stay (`_sweep_gateway_users`).
NamespaceIndex = Index[str, tuple[str, str]]
# Workspaces (namespace, name) by the node of their pod, or by the SparkProfile they use.
WorkspaceIndex = Index[str, tuple[str | None, str]]


class Indexes:
    """The operator's indexes (kopf has none: see `indexes.py`). The watch handlers keep
    them, on kopf's loop, each before it queues anything; the reconciles read them from
    the resync's threads. The workspaces' are first filled by the operator's own listing
    (`catch_up`), and a reconcile takes out what it finds gone (`_index_current`)."""

    def __init__(self) -> None:
        self.warnings: WarningIndex = Index()
        self.by_node: WorkspaceIndex = Index()
        # The workspaces': each changes with the others (under `_workspaces`), so that
        # one is in all of them or in none.
        self.by_namespace: NamespaceIndex = Index()
        self.by_profile: WorkspaceIndex = Index()
        # Their uids by namespace and name: those of a name the API server no longer has.
        self.uids: Index[Key, str] = Index()
        self._workspaces = threading.Lock()

    def set_workspace(self, body: Mapping[str, Any], default_profile: str | None) -> None:
        """What a watch event of a workspace tells (not its deletion): it replaces what
        its uid gave before."""
        with self._workspaces:
            self._write_workspace(body, default_profile)

    def add_workspace(self, body: Mapping[str, Any], default_profile: str | None) -> None:
        """A workspace, unless the indexes know its uid already."""
        with self._workspaces:
            if _uid(body) not in self.uids:
                self._write_workspace(body, default_profile)

    def forget_workspaces(self, uids: Iterable[str]) -> None:
        with self._workspaces:
            for uid in uids:
                for index in (self.by_namespace, self.by_profile, self.uids):
                    index.remove(uid)

    def workspace_keys(self) -> set[Key]:
        """The namespace and name of every workspace in the indexes."""
        return {key for key, _uid in self.uids.items()}

    def _write_workspace(self, body: Mapping[str, Any], default_profile: str | None) -> None:
        metadata = body.get("metadata", {})
        uid, namespace, name = _uid(body), metadata.get("namespace"), metadata.get("name", "")
        chosen = ((body.get("spec") or {}).get("spark") or {}).get("profile")
        profile = profile_name(chosen, default_profile)
        self.by_namespace.set(uid, {} if namespace is None else {namespace: (name, _user(body))})
        self.by_profile.set(uid, {} if profile is None else {profile: (namespace, name)})
        self.uids.set(uid, {} if namespace is None else {(namespace, name): uid})


def _uid(body: Mapping[str, Any]) -> str:
    """What an object is known by in the indexes: its uid (every object the API server
    serves has one)."""
    metadata = body.get("metadata", {})
    return str(metadata.get("uid") or f"{metadata.get('namespace')}/{metadata.get('name')}")


def _status_warning(body: kopf.Body, **_: Any) -> bool:
    involved = body.get("involvedObject") or {}
    return (
        body.get("reason") in STATUS_WARNINGS
        and workspace_of(str(involved.get("kind")), str(involved.get("name"))) is not None
    )


@kopf.on.event("v1", "events", when=_status_warning)
async def warning_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Warnings about pods and claims, kept from the watch (`Indexes.warnings`): listing
    a namespace's events in each reconcile makes the API server scan all of them. One
    listed (a start) refreshes its workspace: a reconcile may have run before it came."""
    indexes: Indexes = memo.indexes
    if type == "DELETED":
        indexes.warnings.remove(_uid(body))
    else:
        indexes.warnings.set(_uid(body), _warning_entry(body))
    involved = body.get("involvedObject") or {}
    workspace = workspace_of(str(involved.get("kind")), str(involved.get("name")))
    if type is None and workspace and involved.get("namespace"):
        memo.queue.schedule((involved["namespace"], workspace), children=False)


def _warning_entry(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The event as the status reads it, by the uid of the pod or claim it is about."""
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
    **_: Any,
) -> None:
    """Index the workspace, then queue it: a change of its spec at once, the agent's
    restore and idle reports as a status refresh, a workspace first seen (start, resumed
    peering) within a resync period; our own status writes need nothing. A workspace
    created or deleted refreshes the others of its namespace when their NamespaceShared
    condition changes."""
    queue: ResyncQueue = memo.queue
    indexes: Indexes = memo.indexes
    if namespace is None:  # kopf's typing: workspaces are always namespaced
        return
    key = (namespace, name)
    # The index first: the reconcile queued below registers the workspace at the
    # gateway, whose sweep keeps the lines of the workspaces in the index only.
    if event["type"] == "DELETED":
        indexes.forget_workspaces([_uid(body)])
    else:
        indexes.set_workspace(body, memo.settings.default_spark_profile)
    if event["type"] in ("ADDED", "DELETED"):
        others = indexes.by_namespace.get(namespace)
        for other in sharing_changed(others, name, _user(body)):
            queue.schedule((namespace, other), children=False)
    if memo.settings.snapshot_mode == "gateway":
        # No job runs before the operator's own listing has filled the workspace index
        # (`ListedWhenActing`): the sweep sees every workspace.
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
async def pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A workspace pod changed or went away: index it by its node (`Indexes.by_node`),
    then refresh the status (replace the pod if needed)."""
    indexes: Indexes = memo.indexes
    if type == "DELETED":
        indexes.by_node.remove(_uid(body))
    else:
        indexes.by_node.set(_uid(body), _node_entry(body))
    metadata = body.get("metadata", {})
    workspace = (metadata.get("labels") or {}).get(WORKSPACE_LABEL)
    if workspace and metadata.get("namespace"):
        memo.queue.schedule((metadata["namespace"], workspace), children=False)


def _node_entry(body: Mapping[str, Any]) -> dict[str, tuple[str | None, str]]:
    """A workspace pod by its node, so that a cordoned node moves exactly those."""
    metadata = body.get("metadata", {})
    node = (body.get("spec") or {}).get("nodeName")
    workspace = (metadata.get("labels") or {}).get(WORKSPACE_LABEL)
    return {node: (metadata.get("namespace"), workspace)} if node and workspace else {}


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


@kopf.on.event("v1", "nodes")
async def node_cordoned(
    event: kopf.RawEvent, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any
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
    indexes: Indexes = memo.indexes
    for namespace, workspace in indexes.by_node.get(name):
        if namespace:
            memo.queue.schedule((namespace, workspace), children=False)


@kopf.on.event(GROUP, VERSION, PROFILE_PLURAL)
async def profile_changed(name: str, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A SparkProfile was created, changed or deleted: re-render its workspaces' Spark
    configuration (their pods stay). The initial listing (type None) changes nothing."""
    if type is None:
        return
    indexes: Indexes = memo.indexes
    for namespace, workspace in indexes.by_profile.get(name):
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
    indexes: Indexes = memo.indexes
    namespace, name = job.key
    # Read before the workspace: one created after this read is not among them.
    known = indexes.uids.get(job.key)
    try:
        current = kube.get(f"{GROUP}/{VERSION}", KIND, namespace, name)
        _index_current(indexes, job.key, known, current, memo.settings.default_spark_profile)
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
            indexes.warnings.get,
            memo.rollout,
            cordoned=memo.cordoned.__contains__,
            neighbours=indexes.by_namespace.get,
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


def _index_current(
    indexes: Indexes,
    key: Key,
    known: Collection[str],
    current: Mapping[str, Any] | None,
    default_profile: str | None,
) -> None:
    """The workspace indexes as the API server has this name now. The uids they know
    under it that are not the current workspace's are gone: a workspace deleted while
    kopf did not watch, which no watch event will take out (listed by `catch_up` before
    kopf's own listing, or deleted during a pause). The current workspace, if they lack
    it (created again under the same name, its watch event not handled yet), goes in
    before its reconcile registers it at the gateway."""
    uid = None if current is None else _uid(current)
    gone = [other for other in known if other != uid]
    if gone:
        log.info("%s/%s: gone, out of the indexes (uid %s)", *key, ", ".join(gone))
        indexes.forget_workspaces(gone)
    if (
        current is not None
        and uid not in known
        and not current["metadata"].get("deletionTimestamp")
    ):
        indexes.add_workspace(current, default_profile)


def _sweep_gateway_users(memo: kopf.Memo) -> Result:
    """Drop the gateway's lines of workspaces gone (see GATEWAY_USERS_JOB)."""
    indexes: Indexes = memo.indexes
    try:
        removed = sweep_gateway_users(
            memo.kube, memo.settings, lambda: _workspace_users(indexes.by_namespace)
        )
    except KubeError as error:
        log.warning("gateway users: API call failed (%s): %s", error.failure.value, error)
        memo.metrics.reconcile_errors.labels(error.failure.value).inc()
        return Result.FAILED
    if removed:
        log.info("gateway users: removed %d of workspaces gone: %s", len(removed), removed)
    return Result.DONE


def _workspace_users(index: NamespaceIndex) -> set[str]:
    """The gateway users of every workspace in the index (a copy: the watch handlers
    change it meanwhile, on kopf's loop)."""
    return {gateway_user(namespace, name) for namespace, (name, _user) in index.items()}


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
            indexes=Indexes(),
        ),
    )
