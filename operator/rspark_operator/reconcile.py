"""The one level-based, idempotent reconcile of a workspace: observe, plan, apply.

- observe: read the pod (and the claim, the node of a pod stuck on a lost node, the
  volume and node of a node-local home that no pod runs on)
  and, when the spec changed or was refused before, dry-run every child and the
  pod on the server: what the API server would refuse is part of what exists;
- plan: the pure rules of `lifecycle.py` decide which children to apply and what
  happens to the pod (`PodAction`);
- apply: server-side apply of the children, the pod action, then the status
  computed from what exists (`status.py`), written only when it changed.

Every entry point (a change of the workspace, the resync queue, pod and volume
events) comes here, one at a time per workspace.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rspark_operator import names
from rspark_operator.api import GROUP, KIND, VERSION, Workspace, stop_after_duration
from rspark_operator.builders import (
    build_children,
    build_gateway_credential_secret,
    build_gateway_users_secret,
    build_ingress,
    build_passwords_secret,
    build_pod,
    settle_home_claim,
    through_gateway,
    workspace_url,
)
from rspark_operator.cluster import Api, Failure, KubeError, Manifest, secret_text
from rspark_operator.gateway import (
    CREDENTIAL_KEY,
    GATEWAY_POD_SELECTOR,
    HTPASSWD_KEY,
    USERS_VERSION_LABEL,
    gateway_user,
    htpasswd_users,
    only_users,
    user_namespace,
    with_entry,
)
from rspark_operator.lifecycle import (
    KEPT,
    NOTHING,
    PENDING_RESTART,
    VOLUME_LOST,
    VOLUME_RELEASED,
    WOKEN,
    Idleness,
    PodAction,
    PodPlan,
    VolumeVerdict,
    changes,
    children_to_apply,
    claim_terminating,
    decide_pod,
    dry_run_pod,
    force_delete_due,
    idleness,
    key,
    needs_dry_run,
    node_name,
    plan_pod,
    restart_requested,
    roll_out,
    spec_current,
    unplaced,
    volume_lost,
    volume_node,
    volume_releasable,
    waiting_on_lost_node,
)
from rspark_operator.profiles import attach_profile, spark_status
from rspark_operator.rollout import Rollout
from rspark_operator.settings import OperatorSettings
from rspark_operator.status import (
    REFUSED,
    Observed,
    Reason,
    Refusal,
    Stopped,
    compute_status,
    ready_transition,
    status_changed,
)
from rspark_operator.tenancy import Tenancy, is_team_namespace
from rspark_operator.validation import InvalidSpecError, parse_workspace
from rspark_operator.waker import routed_to_waker, status_routed_to_waker

# A workspace pod's ServiceAccount does not exist before the first apply, and the
# ServiceAccount admission plugin refuses a pod whose account is missing: the dry
# run of a first pod uses the namespace's default account instead.
DEFAULT_SERVICE_ACCOUNT = "default"

# The Warning events (of `status.STATUS_WARNINGS`) about an object, by its uid.
WarningsOf = Callable[[str], Iterable[Mapping[str, Any]]]
# Whether a node is cordoned (spec.unschedulable: being drained), by its name.
Cordoned = Callable[[str], bool]
# Writes of the gateway's users Secret tried when another reconcile wrote in between.
GATEWAY_WRITE_ATTEMPTS = 3
# The (workspace, user) pairs of the workspaces in a namespace, by its name.
Neighbours = Callable[[str], Iterable[tuple[str, str]]]
# Refusals by child key (`lifecycle.key`).
Refusals = dict[str, Refusal]
# How often a workspace whose old home claim is still terminating is looked at again
# (claims are not watched): its new claim and pod follow once it is gone.
CLAIM_GONE_POLL = timedelta(seconds=2)


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass
class Outcome:
    status: dict[str, Any]
    # What this reconcile did and how the Ready verdict changed, for Kubernetes events.
    events: list[Event] = field(default_factory=list)
    # When the workspace must be looked at again, sooner than its resync: an idle
    # workspace's stop.
    due: datetime | None = None


@dataclass(frozen=True)
class Observation:
    """What exists for a valid workspace, and what should."""

    ws: Workspace
    previous: Mapping[str, Any]
    pod: Manifest | None
    claim: Manifest | None
    # The pod's node, read only when the pod is stuck terminating past its deadline.
    node: Manifest | None
    # Children to apply this time (pod events skip them, see `reconcile`).
    apply_children: bool
    children: list[Manifest]
    desired_pod: Manifest
    # What a dry run of the change refused (empty when there was no dry run).
    refusals: Refusals
    # The spec changed since the last reconcile (or was refused then): the user's doing.
    user_edit: bool
    # The workspace's restart annotation is newer than its pod.
    restart_requested: bool
    # The agent's idle verdict, with spec.idle.stopAfter.
    idle: Idleness
    # The pod's node is cordoned: the pod moves off it.
    node_cordoned: bool
    # Whether the node-local home volume is given up (`lifecycle.volume_lost`).
    volume: VolumeVerdict = KEPT

    @property
    def new(self) -> bool:
        """Nothing of the workspace exists yet: it is made whole or not at all."""
        return self.claim is None and self.pod is None


@dataclass(frozen=True)
class Plan:
    children: list[Manifest]
    pod: PodPlan


def reconcile(
    api: Api,
    settings: OperatorSettings,
    body: dict[str, Any],
    warnings_of: WarningsOf,
    rollout: Rollout,
    *,
    cordoned: Cordoned | None = None,
    neighbours: Neighbours | None = None,
    children: bool = True,
    now: datetime | None = None,
) -> Outcome:
    """Converge one workspace. `children=False` skips re-applying the children that
    pod events cannot have changed (used for pod events, which are many); `rollout`
    admits the replacement of pods held for the operator's own reasons; `cordoned`
    tells the nodes being drained (from the operator's watch of cordoned nodes; none
    when not given); `neighbours` the workspaces of a namespace (from the operator's
    index of workspaces; none when not given)."""
    now = now or datetime.now(UTC)
    try:
        ws = parse_workspace(body, settings)
        ws = attach_profile(api, settings, ws)
    except InvalidSpecError as error:
        return _invalid(api, body, error, now)
    seen = observe(api, settings, ws, body, cordoned or _none_cordoned, children=children, now=now)
    plan = make_plan(seen, now, settings)
    tenancy = _tenancy(api, ws, neighbours or _no_neighbours)
    return _apply(api, settings, seen, plan, body, warnings_of, rollout, tenancy, now)


def _tenancy(api: Api, ws: Workspace, neighbours: Neighbours) -> Tenancy:
    """Other users' workspaces in the namespace; the namespace is read only when there
    are some (one namespace per user, the recommendation, costs no request)."""
    others = sorted(
        {user for name, user in neighbours(ws.namespace) if name != ws.name} - {ws.spec.user}
    )
    if not others:
        return Tenancy(ws.namespace)
    namespace = api.get("v1", "Namespace", "", ws.namespace)
    return Tenancy(ws.namespace, others, is_team_namespace(namespace))


def observe(
    api: Api,
    settings: OperatorSettings,
    ws: Workspace,
    body: Mapping[str, Any],
    cordoned: Cordoned,
    *,
    children: bool,
    now: datetime,
) -> Observation:
    previous = body.get("status") or {}
    refused_before = Reason.of(previous) in REFUSED
    pod = _get_pod(api, ws.namespace, ws.name)
    apply_children = children or refused_before
    # A ready pod's claim is bound: a pod event then needs nothing from it.
    claim = (
        api.get("v1", "PersistentVolumeClaim", ws.namespace, names.home_claim_name(ws.name))
        if apply_children or pod is None or not _healthy(pod)
        else None
    )
    # Neither pod nor claim (a workspace woken after its volume was released): the
    # children come first, whatever event brought it here.
    apply_children = apply_children or (pod is None and claim is None)
    built = build_children(ws, settings, to_waker=status_routed_to_waker(previous))
    manifests = [settle_home_claim(m, claim) if m["kind"] == "PersistentVolumeClaim" else m
                 for m in built]  # fmt: skip
    desired_pod = build_pod(ws, settings)
    spec_changed = previous.get("observedGeneration") != ws.generation
    refusals: Refusals = {}
    if apply_children and needs_dry_run(spec_changed=spec_changed, refused_before=refused_before):
        refusals = _dry_run(api, ws, manifests, desired_pod, pod)
    node = None
    if pod is not None and waiting_on_lost_node(pod, now, settings.node_lost_force_delete_seconds):
        node = api.get("v1", "Node", "", node_name(pod))
    volume = KEPT
    if claim is not None and not claim_terminating(claim) and unplaced(pod):
        volume = _volume_verdict(api, settings, claim, previous, now)
    annotations = body["metadata"].get("annotations") or {}
    stop_after = stop_after_duration(ws.spec.idle.stop_after or settings.idle_stop_after)
    return Observation(
        ws=ws,
        previous=previous,
        pod=pod,
        claim=claim,
        node=node,
        apply_children=apply_children,
        children=manifests,
        desired_pod=desired_pod,
        refusals=refusals,
        user_edit=spec_changed or refused_before,
        restart_requested=restart_requested(annotations, pod),
        idle=idleness(previous, pod, annotations, stop_after),
        node_cordoned=bool(pod is not None and cordoned(node_name(pod))),
        volume=volume,
    )


def _volume_verdict(
    api: Api,
    settings: OperatorSettings,
    claim: Manifest,
    status: Mapping[str, Any],
    now: datetime,
) -> VolumeVerdict:
    """Whether the claim's volume is node-local on a lost node (`lifecycle.volume_lost`)."""
    volume_name = (claim.get("spec") or {}).get("volumeName")
    if not volume_name:
        return KEPT
    holder = volume_node(api.get("v1", "PersistentVolume", "", volume_name))
    if not holder:
        return KEPT
    node = api.get("v1", "Node", "", holder)
    return volume_lost(holder, node, status, now, settings.volume_lost_after_seconds)


def make_plan(seen: Observation, now: datetime, settings: OperatorSettings) -> Plan:
    """The pure part: which children to apply and what to do with the pod."""
    children = (
        children_to_apply(seen.children, seen.refusals.keys(), new=seen.new)
        if seen.apply_children
        else []
    )
    if _releasing(seen, now):
        # Stopped with releaseVolume: the claim is not made again until the wake.
        children = [child for child in children if child["kind"] != "PersistentVolumeClaim"]
    if claim_terminating(seen.claim):
        # The home volume is being replaced: no claim and no pod until the old one is gone.
        children = [child for child in children if child["kind"] != "PersistentVolumeClaim"]
    decision = decide_pod(
        suspended=seen.ws.spec.suspended,
        pod=seen.pod,
        desired=seen.desired_pod,
        node=seen.node,
        now=now,
        force_delete_after=settings.node_lost_force_delete_seconds,
        user_edit=seen.user_edit,
        restart_requested=seen.restart_requested,
        node_cordoned=seen.node_cordoned,
        idle=seen.idle,
    )
    if seen.volume.lost:
        decision = (
            PodPlan(PodAction.DELETE, VOLUME_LOST, "deleting the pod: its home volume is lost")
            if seen.pod is not None
            else NOTHING
        )
    elif claim_terminating(seen.claim) and decision.action is PodAction.CREATE:
        decision = NOTHING
    return Plan(children, plan_pod(decision, seen.desired_pod, seen.refusals.keys(), new=seen.new))


def _apply(
    api: Api,
    settings: OperatorSettings,
    seen: Observation,
    plan: Plan,
    body: dict[str, Any],
    warnings_of: WarningsOf,
    rollout: Rollout,
    tenancy: Tenancy,
    now: datetime,
) -> Outcome:
    ws = seen.ws
    refusals = dict(seen.refusals)
    if plan.pod.action is PodAction.CREATE:
        refusals |= _create_passwords(api, ws)
    if plan.children:
        refusals |= _apply_children(api, settings, ws, plan.children)
    # A real apply can refuse what the dry run passed (a quota used up meanwhile).
    pod_plan = plan_pod(plan.pod, seen.desired_pod, refusals.keys(), new=seen.new)
    events = []
    if pod_plan.action is PodAction.HOLD and seen.pod is not None:
        pod_plan, held = _held(api, settings, rollout, seen, refusals)
        if held and not seen.previous.get("pendingRestart"):
            why = f"a restart applies {changes(seen.pod, seen.desired_pod)}"
            events.append(Event(PENDING_RESTART, why))
    pod, done = _carry_out(api, pod_plan, seen.pod, seen.desired_pod, refusals)
    if done:
        events.append(Event(pod_plan.reason, pod_plan.message, pod_plan.warning))
        if pod_plan.action is PodAction.CREATE and seen.previous.get("phase") == "Idle":
            events.append(Event(WOKEN, "woken from idle"))
    claim = seen.claim
    if seen.volume.lost and claim is not None:
        claim = _drop_claim(api, claim, seen.volume.lost, events, refusals)
    stopped = None
    if seen.idle.stopped(now) and not ws.spec.suspended:
        assert seen.idle.since is not None
        if (
            pod is None
            and claim is not None
            and _releasing(seen, now)
            and volume_releasable(seen.previous, seen.idle)
        ):
            claim = _release_claim(api, claim, seen.previous, events, refusals)
        released = claim is None and ws.spec.idle.release_volume
        stopped = Stopped(seen.idle.since, released=released)

    unhealthy = [obj for obj in (pod, claim) if obj is not None and not _healthy(obj)]
    observed = Observed(
        pod=pod,
        claim=claim,
        events=[event for obj in unhealthy for event in warnings_of(obj["metadata"]["uid"])],
        pod_spec_current=spec_current(pod, seen.desired_pod),
        refusals=tuple(refusals.values()),
        idle=stopped,
        tenancy=tenancy,
    )
    status = compute_status(
        generation=ws.generation,
        suspended=ws.spec.suspended,
        url=workspace_url(ws, settings),
        previous=seen.previous,
        observed=observed,
        now=now,
    ) | spark_status(ws)
    if (
        ws.spec.suspended
        or stopped
        or (pod is not None and _healthy(pod) and spec_current(pod, seen.desired_pod))
    ):
        rollout.finish((ws.namespace, ws.name))
    # The agent's conditions (Idle) are the previous ones: the operator writes its own.
    to_waker = routed_to_waker(status.get("phase"), seen.previous.get("conditions") or [])
    # Running again: the new agent may have reported Active while its pod started, which
    # moved the routing read from the previous status, not the Ingress (still the waker's).
    back = status.get("phase") == "Running" and seen.previous.get("phase") != "Running"
    if settings.waker_enabled and (to_waker != status_routed_to_waker(seen.previous) or back):
        # The URL follows the wake: to the waker once stopped, to the IDE once Ready (a
        # status refresh applies no other child). A refusal shows at the next full
        # reconcile, which applies the Ingress with the others.
        try:
            api.apply(build_ingress(ws, settings, to_waker=to_waker))
        except KubeError as error:
            if not error.refused:
                raise
    outcome = _finish(api, body, status, events)
    dues = [seen.volume.due, force_delete_due(pod, settings.node_lost_force_delete_seconds)]
    if not stopped:
        dues.append(seen.idle.due)
    if claim_terminating(claim):
        dues.append(now + CLAIM_GONE_POLL)
    outcome.due = min((due for due in dues if due is not None), default=None)
    return outcome


def _drop_claim(
    api: Api, claim: Manifest, why: str, events: list[Event], refusals: Refusals
) -> Manifest | None:
    """Delete the home claim whose volume is lost: the claim as it is afterwards (it
    stays terminating until no pod uses it)."""
    metadata = claim["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    try:
        api.delete("v1", "PersistentVolumeClaim", namespace, name, metadata["uid"])
    except KubeError as error:
        _refused(refusals, claim, error)
        return claim
    events.append(Event(VOLUME_LOST, why, warning=True))
    return api.get("v1", "PersistentVolumeClaim", namespace, name)


def _release_claim(
    api: Api,
    claim: Manifest,
    status: Mapping[str, Any],
    events: list[Event],
    refusals: Refusals,
) -> Manifest | None:
    """Delete the home claim of a stopped workspace: the claim as it is afterwards."""
    metadata = claim["metadata"]
    try:
        api.delete("v1", "PersistentVolumeClaim", metadata["namespace"], metadata["name"],
                   metadata["uid"])  # fmt: skip
    except KubeError as error:
        _refused(refusals, claim, error)
        return claim
    snapshot = str((status.get("lastSnapshot") or {}).get("id", ""))[:8]
    why = f"home volume deleted: the home is in snapshot {snapshot} in object storage"
    events.append(Event(VOLUME_RELEASED, why))
    return None


def _releasing(seen: Observation, now: datetime) -> bool:
    """Stopped for idleness with spec.idle.releaseVolume: the claim goes or has gone."""
    return (
        seen.ws.spec.idle.release_volume
        and not seen.ws.spec.suspended
        and seen.pod is None
        and seen.idle.stopped(now)
    )


def _held(
    api: Api,
    settings: OperatorSettings,
    rollout: Rollout,
    seen: Observation,
    refusals: Refusals,
) -> tuple[PodPlan, bool]:
    """A pod held for the operator's reasons is replaced when the rollout admits it (with
    RSPARK_ROLLOUT_ONLY_IDLE, only while its agent reports it idle) and the API server
    would create the new one; (the plan, whether it stays held)."""
    assert seen.pod is not None
    workspace = (seen.ws.namespace, seen.ws.name)
    if settings.rollout_only_idle and seen.idle.since is None:
        return PodPlan(PodAction.NONE), True
    if not rollout.admit(workspace):
        return PodPlan(PodAction.NONE), True
    try:
        api.dry_run_create(seen.desired_pod)
    except KubeError as error:
        _refused(refusals, seen.desired_pod, error)
        rollout.finish(workspace)
        return PodPlan(PodAction.NONE), True
    return roll_out(seen.pod, seen.desired_pod), False


def _invalid(api: Api, body: dict[str, Any], error: InvalidSpecError, now: datetime) -> Outcome:
    """Nothing is created for a spec that cannot be built; what exists stays."""
    metadata = body["metadata"]
    status = compute_status(
        generation=metadata.get("generation", 1),
        suspended=bool((body.get("spec") or {}).get("suspended")),
        url=None,
        previous=body.get("status") or {},
        observed=Observed(
            pod=_get_pod(api, metadata["namespace"], metadata["name"]),
            invalid_spec=str(error),
            invalid_reason=error.reason,
        ),
        now=now,
    )
    return _finish(api, body, status, [])


def _dry_run(
    api: Api,
    ws: Workspace,
    manifests: list[Manifest],
    desired_pod: Manifest,
    pod: Manifest | None,
) -> Refusals:
    """What the API server would refuse of the desired state, and why."""
    refusals: Refusals = {}
    for manifest in manifests:
        try:
            api.apply(manifest, dry_run=True)
        except KubeError as error:
            # A dry run creates nothing: a new child that refers to another new one (a
            # RoleBinding to its Role) cannot be checked before the first real apply.
            if error.failure is not Failure.NOT_FOUND:
                _refused(refusals, manifest, error)
    if dry_run_pod(suspended=ws.spec.suspended, pod=pod, desired=desired_pod):
        trial = desired_pod
        if not api.get("v1", "ServiceAccount", ws.namespace, names.service_account_name(ws.name)):
            spec = {**desired_pod["spec"], "serviceAccountName": DEFAULT_SERVICE_ACCOUNT}
            trial = {**desired_pod, "spec": spec}
        try:
            api.dry_run_create(trial)
        except KubeError as error:
            _refused(refusals, desired_pod, error)
    return refusals


def _create_passwords(api: Api, ws: Workspace) -> Refusals:
    """Create the passwords Secret if it is missing: only with a new pod, the one reader
    of it (its environment, read when its containers start). A pod that exists started
    with the Secret, so a reconcile at rest sends nothing for it (no POST answered 409)."""
    passwords = build_passwords_secret(
        ws, restic_password=secrets.token_urlsafe(32), rstudio_password=secrets.token_urlsafe(18)
    )
    refusals: Refusals = {}
    try:
        api.create(passwords)
    except KubeError as error:
        _refused(refusals, passwords, error)
    return refusals


def _apply_children(
    api: Api, settings: OperatorSettings, ws: Workspace, manifests: list[Manifest]
) -> Refusals:
    """Let the gateway know the workspace (in every full reconcile: a pod that exists
    may have been made by an operator in direct mode, or the gateway's list rewritten),
    and apply the children."""
    refusals: Refusals = {}
    if ws.spec.snapshot.enabled and through_gateway(ws, settings):
        try:
            _register_with_gateway(api, settings, ws)
        except KubeError as error:
            _refused(refusals, build_gateway_users_secret(settings, "", None), error)
    for manifest in manifests:
        try:
            api.apply(manifest)
        except KubeError as error:
            _refused(refusals, manifest, error)
    return refusals


def _register_with_gateway(api: Api, settings: OperatorSettings, ws: Workspace) -> None:
    """The workspace's gateway credential (created once) and its line in the gateway's
    htpasswd, written only when missing or different. Two reconciles writing at once:
    the second is refused (409) and reads again."""
    credential = build_gateway_credential_secret(ws, secrets.token_urlsafe(32))
    name = credential["metadata"]["name"]
    stored = api.get("v1", "Secret", ws.namespace, name)
    if stored is None:  # created once: at rest, a read and no POST
        api.create(credential)
        stored = api.get("v1", "Secret", ws.namespace, name) or {}
    password = secret_text(stored, CREDENTIAL_KEY)
    if password is None:
        raise KubeError(
            Failure.REJECTED, 0, f"Secret {ws.namespace}/{name} has no key {CREDENTIAL_KEY}"
        )
    user = gateway_user(ws.namespace, ws.name)
    _write_gateway_users(api, settings, lambda current: with_entry(current, user, password))


def sweep_gateway_users(
    api: Api, settings: OperatorSettings, existing: Callable[[], Collection[str]]
) -> list[str]:
    """Drop the gateway's lines of workspaces that no longer exist; the users removed.
    `existing` (the users of the workspaces there are) is read after the file, so a
    workspace registered meanwhile is among them: the operator registers a workspace
    only once its index holds it (`main.Indexes`). Lines of namespaces the operator
    does not watch (`RSPARK_WATCH_NAMESPACES`) are another operator's, and stay."""
    removed: list[str] = []
    watched = set(settings.watch_namespaces)

    def without_gone(current: str) -> str:
        keep, users = existing(), htpasswd_users(current)
        removed[:] = [
            user
            for user in users
            if user not in keep and (not watched or user_namespace(user) in watched)
        ]
        return only_users(current, set(users) - set(removed))

    _write_gateway_users(api, settings, without_gone)
    return removed


def _write_gateway_users(
    api: Api, settings: OperatorSettings, change: Callable[[str], str]
) -> None:
    """Write the gateway's htpasswd as `change` makes it from the current one, only when
    it differs; a write that races another is refused (409) and done again on a fresh
    read. The gateway's pods are told at once (`_touch_gateway_pods`)."""
    where = (settings.snapshot_gateway_namespace, settings.snapshot_gateway_users_secret)
    for _attempt in range(GATEWAY_WRITE_ATTEMPTS):
        users = api.get("v1", "Secret", *where)
        current = secret_text(users or {}, HTPASSWD_KEY) or ""
        wanted = change(current)
        if wanted == current:
            return
        try:
            if users is None:
                # Created, not applied: an apply without a version to match is never
                # refused, so the first two workspaces at once would each write a file
                # of their own line only, and one of them be shut out until a resync.
                written = (
                    api.get("v1", "Secret", *where)
                    if api.create(build_gateway_users_secret(settings, wanted, None))
                    else None
                )
            else:
                version = users["metadata"].get("resourceVersion")
                written = api.apply(build_gateway_users_secret(settings, wanted, version))
        except KubeError as error:
            if error.failure is not Failure.CONFLICT:
                raise
            written = None
        if written is not None:
            _touch_gateway_pods(api, settings, written["metadata"]["resourceVersion"])
            return
    raise KubeError(
        Failure.CONFLICT,
        409,
        f"Secret {'/'.join(where)} changed at each of {GATEWAY_WRITE_ATTEMPTS} writes",
    )


def _touch_gateway_pods(api: Api, settings: OperatorSettings, users_version: str) -> None:
    """Label the gateway's pods with the users Secret's new version: their kubelet then
    mounts the new htpasswd now, not at its next periodic sync (see gateway.py)."""
    for pod in api.list("v1", "Pod", settings.snapshot_gateway_namespace, GATEWAY_POD_SELECTOR):
        if (pod["metadata"].get("labels") or {}).get(USERS_VERSION_LABEL) != users_version:
            api.label(pod, USERS_VERSION_LABEL, users_version)


def _refused(refusals: Refusals, manifest: Manifest, error: KubeError) -> None:
    """Record a refusal of `manifest`; any other failure propagates."""
    if not error.refused:
        raise error
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    forbidden = error.failure is Failure.FORBIDDEN
    message = str(error) if forbidden else f"the API server refused {kind} {name}: {error}"
    refusals[key(manifest)] = Refusal(key(manifest), message, forbidden=forbidden)


def _carry_out(
    api: Api,
    plan: PodPlan,
    pod: Manifest | None,
    desired: Manifest,
    refusals: Refusals,
) -> tuple[Manifest | None, bool]:
    """Do what was planned: the pod as it is afterwards, and whether anything was done."""
    if plan.action is PodAction.CREATE:
        try:
            return api.apply(desired), True
        except KubeError as error:
            _refused(refusals, desired, error)
            return None, False
    if pod is None or plan.action in (PodAction.NONE, PodAction.WAIT):
        return pod, False
    if plan.action in (PodAction.RELEASE, PodAction.PROTECT):
        value = "true" if plan.action is PodAction.RELEASE else None
        labelled = api.label(pod, names.DRAIN_LABEL, value)
        return labelled, labelled is not None
    metadata = pod["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    force = plan.action is PodAction.FORCE_DELETE
    try:
        api.delete("v1", "Pod", namespace, name, metadata["uid"], force=force)
    except KubeError as error:
        _refused(refusals, pod, error)
        return pod, False
    return api.get("v1", "Pod", namespace, name), True


def _finish(api: Api, body: dict[str, Any], status: dict[str, Any], events: list[Event]) -> Outcome:
    previous = body.get("status")
    transition = ready_transition(previous, status)
    # The verdict is news only if no action of this reconcile already told it (the
    # pod's replacement is both an action and the new Ready reason: one event).
    if transition is not None and transition.reason not in {event.reason for event in events}:
        events.append(Event(*transition))
    if status_changed(previous, status):
        metadata = body["metadata"]
        api.apply(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
                "status": status,
            },
            subresource="status",
        )
    return Outcome(status=status, events=events)


def _no_neighbours(namespace: str) -> Iterable[tuple[str, str]]:
    return ()


def _none_cordoned(node: str) -> bool:
    return False


def _get_pod(api: Api, namespace: str, workspace: str) -> Manifest | None:
    return api.get("v1", "Pod", namespace, names.pod_name(workspace))


def _healthy(obj: Mapping[str, Any]) -> bool:
    """A ready pod or a bound claim: its past warnings explain nothing now."""
    status = obj.get("status") or {}
    if obj["kind"] == "PersistentVolumeClaim":
        return bool(status.get("phase") == "Bound")
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
