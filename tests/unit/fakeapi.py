"""An in-memory API server for unit tests of the reconcile (implements `cluster.Api`).

Good enough for the reconcile's rules, not a Kubernetes: server-side apply tracks
which leaf fields each field manager set (lists are atomic, except
status.conditions, a map keyed by type) and removes the fields a manager stops
applying; dry runs store nothing; deletes honour the uid precondition; a pod
deleted gracefully stays Terminating until `finish_termination`. `refuse` makes
the next calls on one object fail as an admission plugin (or missing RBAC) would.
A Secret's stringData is stored base64 under data; every write moves the object's
resourceVersion, and an apply naming another one is refused (409), as the API
server does.
`requests` counts every call as the API server would see it (reads and dry runs
included, and a create of what exists, which a real server answers 409).
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rspark_operator.cluster import Failure, KubeError, Manifest
from rspark_operator.names import FIELD_MANAGER

Key = tuple[str, str, str]  # kind, namespace, name
Path = tuple[str, ...]
NOW = "2026-01-02T03:04:05Z"


@dataclass
class Write:
    verb: str  # apply, create, delete
    key: Key
    subresource: str = ""


@dataclass
class FakeApi:
    objects: dict[Key, Manifest] = field(default_factory=dict)
    # Leaf fields each manager owns, per object and subresource ("" or "status").
    owners: dict[tuple[Key, str], dict[str, set[Path]]] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    refusals: dict[Key, KubeError] = field(default_factory=dict)
    # Calls by verb and kind ("GET Pod", "PATCH Service", "POST Secret"...).
    requests: Counter[str] = field(default_factory=Counter)
    _uids: itertools.count[int] = field(default_factory=itertools.count)
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- what the tests arrange and look at -------------------------------------------

    def refuse(self, kind: str, namespace: str, name: str, *, forbidden: bool = False) -> None:
        """Every create or apply (dry run included) of this object fails from now on."""
        if forbidden:
            denied = f"create {kind.lower()}s in namespace {namespace}"
            error = KubeError(
                Failure.FORBIDDEN, 403, f"the operator lacks permission to {denied}", denied=denied
            )
        else:
            error = KubeError(Failure.REJECTED, 422, f"{kind} {name} is invalid: refused by test")
        self.refusals[(kind, namespace, name)] = error

    def allow(self, kind: str, namespace: str, name: str) -> None:
        self.refusals.pop((kind, namespace, name), None)

    def put(self, manifest: Manifest) -> Manifest:
        """Store an object as another client made it (no field manager of ours)."""
        stored = self._stamp(copy.deepcopy(manifest))
        self.objects[_key(manifest)] = stored
        return stored

    def kinds(self, namespace: str) -> list[str]:
        return sorted(f"{k}/{n}" for (k, ns, n) in self.objects if ns == namespace)

    def finish_termination(self, kind: str, namespace: str, name: str) -> None:
        """The kubelet confirmed the pod stopped: it is gone."""
        self.objects.pop((kind, namespace, name))

    # --- cluster.Api -------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        self.requests[f"GET {kind}"] += 1
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self, api_version: str, kind: str, namespace: str, selector: str = ""
    ) -> Iterator[Manifest]:
        """Equality selectors only (`k=v,k2=v2`), all the operator sends."""
        self.requests[f"LIST {kind}"] += 1
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        for (k, ns, _), found in list(self.objects.items()):
            labels = found["metadata"].get("labels") or {}
            if k == kind and namespace in ("", ns) and wanted.items() <= labels.items():
                yield copy.deepcopy(found)

    def apply(
        self, manifest: Manifest, subresource: str = "", *, dry_run: bool = False
    ) -> Manifest:
        key = _key(manifest)
        self.requests[f"PATCH {key[0]}"] += 1
        existing = self.objects.get(key)
        if subresource:
            if existing is None:
                raise KubeError(Failure.NOT_FOUND, 404, f"{key} not found")
        else:
            self._check(key)
        expected = manifest["metadata"].get("resourceVersion")
        if expected is not None and expected != (existing or {}).get("metadata", {}).get(
            "resourceVersion"
        ):
            raise KubeError(Failure.CONFLICT, 409, f"{key}: the object has been modified")
        manifest = _as_stored(manifest)
        owned = self.owners.get((key, subresource), {})
        part = subresource or ""
        applied = _leaves(manifest[part] if part else _without_status(manifest))
        base = copy.deepcopy(existing) if existing is not None else {}
        target = base.setdefault(part, {}) if part else base
        others = set().union(
            *(paths for manager, paths in owned.items() if manager != FIELD_MANAGER)
        )
        for path in owned.get(FIELD_MANAGER, set()) - set(applied) - others:
            _remove(target, path)
        for path, value in applied.items():
            _set(target, path, value)
        if dry_run:
            return base
        stored = base if existing is not None else self._stamp(base)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = stored
        self.owners[(key, subresource)] = {**owned, FIELD_MANAGER: set(applied)}
        self.writes.append(Write("apply", key, subresource))
        return copy.deepcopy(stored)

    def create(self, manifest: Manifest) -> bool:
        key = _key(manifest)
        self.requests[f"POST {key[0]}"] += 1
        self._check(key)
        if key in self.objects:
            return False
        self.objects[key] = self._stamp(_as_stored(manifest))
        self.writes.append(Write("create", key))
        return True

    def dry_run_create(self, manifest: Manifest) -> None:
        self.requests[f"POST {manifest['kind']}"] += 1
        self._check(_key(manifest))

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        uid: str | None = None,
        *,
        force: bool = False,
    ) -> None:
        key = (kind, namespace, name)
        self.requests[f"DELETE {kind}"] += 1
        found = self.objects.get(key)
        if found is None or (uid is not None and found["metadata"]["uid"] != uid):
            return
        self.writes.append(Write("delete", key))
        if kind == "Pod" and not force:
            found["metadata"].setdefault("deletionTimestamp", NOW)
        else:
            del self.objects[key]

    def label(self, obj: Manifest, key: str, value: str | None) -> Manifest | None:
        self.requests[f"PATCH {obj['kind']}"] += 1
        found = self.objects.get(_key(obj))
        if found is None or found["metadata"]["uid"] != obj["metadata"]["uid"]:
            return None
        self.writes.append(Write("label", _key(obj)))
        labels = found["metadata"].setdefault("labels", {})
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
        return copy.deepcopy(found)

    def event(self, obj: Manifest, reason: str, message: str, *, warning: bool) -> None:
        self.requests["POST Event"] += 1
        self.events.append((reason, message, warning))

    # --- inside --------------------------------------------------------------------------

    def _check(self, key: Key) -> None:
        refusal = self.refusals.get(key)
        if refusal is not None:
            raise refusal

    def _stamp(self, manifest: Manifest) -> Manifest:
        metadata = manifest.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        metadata["resourceVersion"] = str(next(self._versions))
        metadata.setdefault("creationTimestamp", NOW)
        return manifest


def _as_stored(manifest: Manifest) -> Manifest:
    """A copy as the API server keeps it: no resourceVersion of the client's, a Secret's
    stringData encoded under data."""
    stored = copy.deepcopy(manifest)
    stored["metadata"].pop("resourceVersion", None)
    plain = stored.pop("stringData", None)
    if plain:
        data = stored.setdefault("data", {})
        data.update({k: base64.b64encode(v.encode()).decode() for k, v in plain.items()})
    return stored


def _key(manifest: Manifest) -> Key:
    metadata = manifest["metadata"]
    return manifest["kind"], metadata.get("namespace", ""), metadata["name"]


def _without_status(manifest: Manifest) -> Manifest:
    return {k: v for k, v in manifest.items() if k != "status"}


def _leaves(value: Any, path: Path = ()) -> dict[Path, Any]:
    """Leaf fields by path; lists are atomic but for conditions, keyed by their type."""
    if isinstance(value, dict) and value:
        leaves: dict[Path, Any] = {}
        for name, inner in value.items():
            leaves |= _leaves(inner, (*path, name))
        return leaves
    if path and path[-1] == "conditions" and isinstance(value, list):
        return {(*path, f"type={c['type']}"): c for c in value}
    return {path: copy.deepcopy(value)}


def _set(target: dict[str, Any], path: Path, value: Any) -> None:
    *parents, last = path
    keyed = last.startswith("type=")
    for name in parents[:-1] if keyed else parents:
        target = target.setdefault(name, {})
    if keyed:
        target["conditions"] = _keyed(target.get("conditions"), last, value)
    else:
        target[last] = value


def _remove(target: dict[str, Any], path: Path) -> None:
    *parents, last = path
    keyed = last.startswith("type=")
    for name in parents[:-1] if keyed else parents:
        target = target.get(name) or {}
    if keyed:
        target["conditions"] = _keyed(target.get("conditions"), last, None)
    else:
        target.pop(last, None)


def _keyed(conditions: Any, key: str, value: Any) -> list[dict[str, Any]]:
    kept = [c for c in conditions or [] if f"type={c['type']}" != key]
    return kept if value is None else [*kept, value]
