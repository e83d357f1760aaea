"""`rspark-operator`: the kopf handlers and the entry point.

Every handler delegates to `reconcile.reconcile`; this module only wires kopf
(identifiers, peering, the resync timer, pod events) to it.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
from collections import defaultdict
from typing import Any

import kopf

from rspark_operator.api import GROUP, KIND, PLURAL, VERSION
from rspark_operator.kube import Kube, KubeError, load_api_client
from rspark_operator.names import FIELD_MANAGER, MANAGED_BY_LABEL, WORKSPACE_LABEL
from rspark_operator.reconcile import Outcome, reconcile
from rspark_operator.settings import OperatorSettings, SettingsError, load_settings
from rspark_operator.status import restore_report_unseen

PEERING_NAME = "rspark-operator"
MANAGED_BY = {MANAGED_BY_LABEL: FIELD_MANAGER}

log = logging.getLogger("rspark-operator")
# One reconcile at a time per workspace: handlers of the workspace and of its pod
# run in kopf's thread pool and may overlap.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


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
    settings.execution.max_workers = 16


def _run(memo: kopf.Memo, body: dict[str, Any], *, children: bool) -> Outcome | None:
    metadata = body["metadata"]
    try:
        with _locks[(metadata["namespace"], metadata["name"])]:
            outcome = reconcile(memo.kube, memo.settings, body, children=children)
    except KubeError as error:
        if error.status == 403 and "being terminated" in str(error):
            log.info("%s/%s: namespace is being deleted", metadata["namespace"], metadata["name"])
            return None
        # Level-based: the next event or the resync converges; kopf retries handlers.
        raise kopf.TemporaryError(f"API call failed ({error.status}): {error}", delay=5) from None
    for reason, message in outcome.actions:
        memo.kube.event(body, reason, message)
    if outcome.actions:
        log.info(
            "%s/%s: %s; phase %s",
            metadata["namespace"],
            metadata["name"],
            ", ".join(reason for reason, _ in outcome.actions),
            outcome.status["phase"],
        )
    return outcome


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def workspace_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, dict(body), children=True)


def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Catch drift and lost children that no event told us about.

    kopf puts a finalizer on objects with timers so that a timer is stopped
    before its object goes; children themselves go by garbage collection.
    """
    _run(memo, dict(body), children=True)


def _restore_report_unseen(body: kopf.Body, **_: Any) -> bool:
    return restore_report_unseen(body.get("status") or {})


@kopf.on.event(GROUP, VERSION, PLURAL, when=_restore_report_unseen)
def agent_reported(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The snapshot agent started or finished a restore: show it in the phase."""
    _run(memo, dict(body), children=False)


@kopf.on.event("v1", "pods", labels=MANAGED_BY)
def pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A workspace pod changed or went away: update status, replace it if needed."""
    workspace = (body.get("metadata", {}).get("labels") or {}).get(WORKSPACE_LABEL)
    namespace = body.get("metadata", {}).get("namespace")
    if not workspace or not namespace:
        return
    current = memo.kube.get(f"{GROUP}/{VERSION}", KIND, namespace, workspace)
    if current is None or current["metadata"].get("deletionTimestamp"):
        return
    try:
        _run(memo, current, children=False)
    except kopf.TemporaryError as error:
        # Event handlers are not retried; the resync timer catches up.
        log.warning("%s/%s: %s", namespace, workspace, error)


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
    memo = kopf.Memo(kube=Kube(load_api_client()), settings=settings)
    namespaces = settings.watch_namespaces
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        peering_name=PEERING_NAME,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
