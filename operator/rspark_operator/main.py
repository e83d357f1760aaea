"""`rspark-operator`: the kopf handlers and the entry point.

Every handler delegates to `reconcile.reconcile`; this module only wires kopf
(identifiers, peering, the resync timer, pod and volume events) to it.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import weakref
from typing import Any

import kopf

from rspark_operator.api import GROUP, KIND, PLURAL, PROFILE_PLURAL, VERSION
from rspark_operator.kube import Kube, KubeError, load_api_client
from rspark_operator.names import FIELD_MANAGER, MANAGED_BY_LABEL, WORKSPACE_LABEL, workspace_of
from rspark_operator.profiles import profile_name
from rspark_operator.reconcile import Outcome, reconcile
from rspark_operator.settings import OperatorSettings, SettingsError, load_settings
from rspark_operator.status import STATUS_WARNINGS, VOLUME_PROBLEMS, restore_report_unseen

PEERING_NAME = "rspark-operator"
# Handler threads; each may hold one API connection.
WORKERS = 16
MANAGED_BY = {MANAGED_BY_LABEL: FIELD_MANAGER}

log = logging.getLogger("rspark-operator")


class WorkspaceLocks:
    """One reconcile at a time per workspace: handlers of the workspace, its pod and its
    events run in kopf's thread pool and may overlap. A lock lives while someone holds
    it, so the table does not grow with every workspace ever seen."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[tuple[str, str], threading.Lock] = (
            weakref.WeakValueDictionary()
        )

    def get(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get((namespace, name))
            if lock is None:
                lock = self._locks[(namespace, name)] = threading.Lock()
            return lock


_locks = WorkspaceLocks()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own identifiers, not kopf's defaults (kopf.zalando.org/...).
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Two replicas must never both act: the one with the highest priority does.
    settings.peering.priority = random.randint(0, 2**31 - 1)
    settings.peering.mandatory = True
    settings.peering.lifetime = memo.settings.peering_lifetime_seconds
    # Our events go through Kube.event (one attempt each); kopf posts none of its own.
    settings.posting.enabled = False
    settings.execution.max_workers = WORKERS


WarningIndex = kopf.Index[str, dict[str, Any]]
# The index of Warning events the status reads: kopf passes it to every handler as a
# keyword argument named after its function (`status_warnings` below).
WARNINGS = "status_warnings"


def _status_warning(body: kopf.Body, **_: Any) -> bool:
    involved = body.get("involvedObject") or {}
    return (
        body.get("type") == "Warning"
        and body.get("reason") in STATUS_WARNINGS
        and workspace_of(str(involved.get("kind")), str(involved.get("name"))) is not None
    )


@kopf.index("v1", "events", when=_status_warning)
def status_warnings(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Warnings about pods and claims, by the object's uid, kept from the watch: listing
    a namespace's events in each reconcile makes the API server scan all of them, which
    at a thousand workspaces cost more than everything else the operator does."""
    involved = body.get("involvedObject") or {}
    kept = ("type", "reason", "message", "lastTimestamp", "eventTime")
    event = {key: body.get(key) for key in kept}
    event["involvedObject"] = {"uid": involved.get("uid")}
    event["metadata"] = {"creationTimestamp": body.get("metadata", {}).get("creationTimestamp")}
    return {str(involved.get("uid")): event}


def _run(
    memo: kopf.Memo,
    namespace: str | None,
    name: str,
    warnings: WarningIndex,
    *,
    children: bool,
) -> Outcome | None:
    """Reconcile the workspace as it is now (read under its lock: kopf's copy may be stale)."""
    kube: Kube = memo.kube
    if namespace is None:  # kopf's typing: workspaces are always namespaced
        return None
    try:
        with _locks.get(namespace, name):
            current = kube.get(f"{GROUP}/{VERSION}", KIND, namespace, name)
            if current is None or current["metadata"].get("deletionTimestamp"):
                return None
            outcome = reconcile(
                kube, memo.settings, current, lambda uid: warnings.get(uid, ()), children=children
            )
        for event in outcome.events:
            kube.event(current, event.reason, event.message, warning=event.warning)
    except KubeError as error:
        if error.namespace_terminating:
            log.info("%s/%s: namespace is being deleted", namespace, name)
            return None
        # Level-based: the next event or the resync converges; kopf retries handlers.
        raise kopf.TemporaryError(f"API call failed ({error.status}): {error}", delay=5) from None
    if outcome.events:
        log.info(
            "%s/%s: %s; phase %s",
            namespace,
            name,
            ", ".join(event.reason for event in outcome.events),
            outcome.status["phase"],
        )
    return outcome


def _run_from_event(
    memo: kopf.Memo,
    namespace: str | None,
    name: str,
    warnings: WarningIndex,
    *,
    children: bool = False,
) -> None:
    """Event handlers are not retried by kopf; the resync timer catches up."""
    try:
        _run(memo, namespace, name, warnings, children=children)
    except kopf.TemporaryError as error:
        log.warning("%s/%s: %s", namespace, name, error)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def workspace_changed(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    _run(memo, namespace, name, kwargs[WARNINGS], children=True)


def resync(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """Catch drift and lost children that no event told us about.

    kopf puts a finalizer on objects with timers so that a timer is stopped
    before its object goes; children themselves go by garbage collection.
    """
    _run(memo, namespace, name, kwargs[WARNINGS], children=True)


def _restore_report_unseen(body: kopf.Body, **_: Any) -> bool:
    return restore_report_unseen(body.get("status") or {})


@kopf.on.event(GROUP, VERSION, PLURAL, when=_restore_report_unseen)
def agent_reported(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """The snapshot agent started or finished a restore: show it in the phase."""
    _run_from_event(memo, namespace, name, kwargs[WARNINGS])


@kopf.on.event("v1", "pods", labels=MANAGED_BY)
def pod_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A workspace pod changed or went away: update status, replace it if needed."""
    metadata = body.get("metadata", {})
    workspace = (metadata.get("labels") or {}).get(WORKSPACE_LABEL)
    if workspace and metadata.get("namespace"):
        _run_from_event(memo, metadata["namespace"], workspace, kwargs[WARNINGS])


def _volume_warning(body: kopf.Body, **_: Any) -> bool:
    return _status_warning(body) and body.get("reason") in VOLUME_PROBLEMS


@kopf.on.event("v1", "events", when=_volume_warning)
def volume_warning(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A mount, attach or provisioning failure changes neither the pod nor the claim:
    only this event tells, so Ready says it at once rather than at the next resync."""
    involved = body.get("involvedObject") or {}
    workspace = workspace_of(str(involved.get("kind")), str(involved.get("name")))
    if workspace and involved.get("namespace"):
        _run_from_event(memo, involved["namespace"], workspace, kwargs[WARNINGS])


# Workspaces by the SparkProfile they use (their own choice or the default setting), so
# that a changed profile re-renders exactly those.
BY_PROFILE = "workspaces_by_profile"


@kopf.index(GROUP, VERSION, PLURAL)
def workspaces_by_profile(
    body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[str, tuple[str | None, str]]:
    chosen = ((body.get("spec") or {}).get("spark") or {}).get("profile")
    profile = profile_name(chosen, memo.settings.default_spark_profile)
    return {} if profile is None else {profile: (body.metadata.namespace, body.metadata.name)}


@kopf.on.event(GROUP, VERSION, PROFILE_PLURAL)
def profile_changed(name: str, type: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A SparkProfile was created, changed or deleted: re-render its workspaces' Spark
    configuration (their pods stay). The initial listing (type None) changes nothing."""
    if type is None:
        return
    index: kopf.Index[str, tuple[str | None, str]] = kwargs[BY_PROFILE]
    for namespace, workspace in index.get(name, ()):
        _run_from_event(memo, namespace, workspace, kwargs[WARNINGS], children=True)


def ensure_namespaced_peerings(kube: Kube, namespaces: list[str]) -> None:
    """kopf serving a list of namespaces peers through a KopfPeering in each of them;
    peering is mandatory, so without one the operator would wait forever."""
    for namespace in namespaces:
        peering = {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": PEERING_NAME, "namespace": namespace},
        }
        kube.create(peering)


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
    args = parser.parse_args(argv)
    try:
        settings: OperatorSettings = load_settings()
    except SettingsError as error:
        print(f"rspark-operator: bad configuration:\n{error}", file=sys.stderr)
        raise SystemExit(2) from None
    kopf.configure(verbose=args.verbose)
    # Registered here, not at import: its interval is a setting.
    kopf.timer(
        GROUP, VERSION, PLURAL, interval=settings.resync_seconds, idle=settings.resync_seconds / 2
    )(resync)
    kube = Kube(load_api_client(connections=WORKERS))
    namespaces = settings.watch_namespaces
    ensure_namespaced_peerings(kube, namespaces)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        peering_name=PEERING_NAME,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(kube=kube, settings=settings),
    )
