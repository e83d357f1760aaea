"""The thin layer that talks to the API server: server-side apply, reads, deletes.

Manifests stay plain dicts end to end (no model (de)serialisation): the
builders produce them, this module sends them as JSON, and reads come back as
dicts too. Every call has a timeout; a call the server did not answer, or
answered 429 or 5xx, is tried again after a bounded, jittered exponential
backoff; every failure becomes a `cluster.KubeError` with an explicit
`cluster.Failure`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from rspark_operator import __version__
from rspark_operator.api import GROUP, PLURAL, PROFILE_KIND, PROFILE_PLURAL, VERSION
from rspark_operator.cluster import Failure, KubeError, Manifest, backoff, classify
from rspark_operator.names import FIELD_MANAGER

APPLY = "application/apply-patch+yaml"  # JSON is YAML: the API server takes either.
JSON_PATCH = "application/json-patch+json"

# The kinds the operator manages, by apiVersion/kind: (URL prefix, plural).
RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("v1", "Node"): ("/api/v1", "nodes"),
    ("v1", "PersistentVolume"): ("/api/v1", "persistentvolumes"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "rolebindings",
    ),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1", "endpointslices"),
    (f"{GROUP}/{VERSION}", "RStudioWorkspace"): (f"/apis/{GROUP}/{VERSION}", PLURAL),
    (f"{GROUP}/{VERSION}", PROFILE_KIND): (f"/apis/{GROUP}/{VERSION}", PROFILE_PLURAL),
    ("v1", "Namespace"): ("/api/v1", "namespaces"),
    ("kopf.dev/v1", "KopfPeering"): ("/apis/kopf.dev/v1", "kopfpeerings"),
    ("kopf.dev/v1", "ClusterKopfPeering"): ("/apis/kopf.dev/v1", "clusterkopfpeerings"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): (
        "/apis/authorization.k8s.io/v1",
        "selfsubjectaccessreviews",
    ),
}
# The verbs a method needs, in the order the API server checks them (an apply that
# creates the object needs create once patch is allowed).
VERBS = {"GET": ("get",), "POST": ("create",), "PATCH": ("patch", "create"), "DELETE": ("delete",)}
# Retries of a call the server did not answer (or answered 429/5xx).
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
# Objects per page of a listing: a bounded answer to parse, whatever the cluster holds.
LIST_PAGE = 500

log = logging.getLogger("rspark-operator")


def load_api_client(connections: int) -> client.ApiClient:
    """In-cluster credentials, else the current kubeconfig (honours KUBECONFIG).

    `connections`: as many as threads call at once; the client's default (5 per CPU)
    would discard the extras and pay a new TLS handshake for each. urllib3 does not
    retry by itself: `Kube` does, with backoff."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    configuration.retries = False
    api = client.ApiClient(configuration)
    api.user_agent = f"{FIELD_MANAGER}/{__version__}"
    return api


def url(api_version: str, kind: str, namespace: str, name: str = "", subresource: str = "") -> str:
    """The object's path; an empty `namespace` means a cluster-scoped kind."""
    prefix, plural = RESOURCES[(api_version, kind)]
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


@dataclass(frozen=True)
class Target:
    """What a call acts on, to name it when the operator may not."""

    api_version: str
    kind: str
    namespace: str
    subresource: str = ""

    def attributes(self, verb: str) -> dict[str, str]:
        group = self.api_version.rpartition("/")[0]
        plural = RESOURCES[(self.api_version, self.kind)][1]
        attributes = {"verb": verb, "group": group, "resource": plural}
        if self.namespace:
            attributes["namespace"] = self.namespace
        if self.subresource:
            attributes["subresource"] = self.subresource
        return attributes

    def describe(self, verb: str) -> str:
        plural = RESOURCES[(self.api_version, self.kind)][1]
        resource = f"{plural}/{self.subresource}" if self.subresource else plural
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{verb} {resource} {where}"


class Kube:
    """Raw JSON calls through the kubernetes client's authenticated HTTP pool.

    `timeout`: seconds per request; `attempts`: tries of a call the server did not
    answer (or answered 429/5xx), with a jittered exponential backoff between them."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        timeout: float = 30.0,
        attempts: int = 4,
        rng: random.Random | None = None,
        on_call: Callable[[str, int], None] = lambda verb, code: None,
    ) -> None:
        self.api = api
        self.timeout = timeout
        self.attempts = attempts
        self._rng = rng or random.Random()
        # Told of every HTTP call: its verb and status code (0: no answer), for metrics.
        self._on_call = on_call

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        target: Target | None = None,
    ) -> Any:
        """One call, tried again while the server does not answer; `target` names what
        a 403 refuses (see `_forbidden`)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            data = self._call_with_retries(serialized)
        except KubeError as error:
            if error.failure is Failure.FORBIDDEN and target is not None:
                raise self._forbidden(error, method, target) from None
            raise
        return json.loads(data) if data else None

    def raw_get(self, path: str) -> str:
        """A non-JSON endpoint such as /metrics, as text."""
        headers = {"Accept": "text/plain"}
        serialized = self.api.param_serialize(
            method="GET", resource_path=path, header_params=headers, auth_settings=["BearerToken"]
        )
        return self._call_with_retries(serialized).decode()

    def _call_with_retries(self, serialized: Any) -> bytes:
        pauses = backoff(self.attempts, BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, self._rng)
        while True:
            try:
                return self._call(serialized)
            except KubeError as error:
                pause = next(pauses, None) if error.failure is Failure.UNAVAILABLE else None
                if pause is None:
                    raise
                log.debug("%s %s: %s; again in %.1f s", serialized[0], serialized[1], error, pause)
                time.sleep(pause)

    def _call(self, serialized: Any) -> bytes:
        try:
            response = self.api.call_api(*serialized, _request_timeout=self.timeout)
            response.read()
        except ApiException as error:
            status = error.status or 0
            self._on_call(serialized[0], status)
            raise KubeError(classify(status, _status(error.body)), status, _reason(error)) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # Not reached, reset, or no answer within the timeout.
            self._on_call(serialized[0], 0)
            raise KubeError(
                Failure.UNAVAILABLE, 0, f"no answer from the API server: {error}"
            ) from None
        self._on_call(serialized[0], response.status)
        if response.status >= 400:
            status_body = _status(response.data)
            message = _reason_text(response.data)
            raise KubeError(classify(response.status, status_body), response.status, message)
        return bytes(response.data or b"")

    def _forbidden(self, error: KubeError, method: str, target: Target) -> KubeError:
        """A 403 is RBAC when an access review says the operator may not do it; otherwise
        an admission plugin (quota, Pod Security...) refused the object itself."""
        for verb in VERBS[method]:
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": target.attributes(verb)},
            }
            answer = self.request(
                "POST", url("authorization.k8s.io/v1", "SelfSubjectAccessReview", ""), body=review
            )
            if not (answer.get("status") or {}).get("allowed"):
                denied = target.describe(verb)
                return KubeError(
                    Failure.FORBIDDEN,
                    error.status,
                    f"the operator lacks permission to {denied}",
                    denied=denied,
                )
        return KubeError(Failure.REJECTED, error.status, str(error))

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        """The object, or None when it does not exist."""
        target = Target(api_version, kind, namespace)
        try:
            found: dict[str, Any] = self.request(
                "GET", url(api_version, kind, namespace, name), target=target
            )
        except KubeError as error:
            if error.failure is Failure.NOT_FOUND:
                return None
            raise
        return found

    def list(
        self, api_version: str, kind: str, namespace: str, selector: str = ""
    ) -> Iterator[Manifest]:
        """Every object of a kind in `namespace` ("": in all) whose labels match
        `selector` ("": all), a page at a time, each with its apiVersion and kind."""
        target = Target(api_version, kind, namespace)
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", LIST_PAGE)]
            if selector:
                query.append(("labelSelector", selector))
            if token:
                query.append(("continue", token))
            page = self.request(
                "GET", url(api_version, kind, namespace), query=query, target=target
            )
            for item in page.get("items") or []:
                # A list's items name neither; the calls on one object read both.
                yield {"apiVersion": api_version, "kind": kind, **item}
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def apply(
        self, manifest: dict[str, Any], subresource: str = "", *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply under our one field manager, taking over conflicting fields.

        A dry run goes through validation and admission and persists nothing."""
        metadata = manifest["metadata"]
        path = url(
            manifest["apiVersion"],
            manifest["kind"],
            metadata["namespace"],
            metadata["name"],
            subresource,
        )
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        applied: dict[str, Any] = self.request(
            "PATCH",
            path,
            body=manifest,
            query=[*query, ("dryRun", "All")] if dry_run else query,
            content_type=APPLY,
            target=Target(
                manifest["apiVersion"], manifest["kind"], metadata["namespace"], subresource
            ),
        )
        return applied

    def create(self, manifest: dict[str, Any]) -> bool:
        """Create the object unless it exists; True when this call created it."""
        metadata = manifest["metadata"]
        namespace = metadata.get("namespace", "")
        path = url(manifest["apiVersion"], manifest["kind"], namespace)
        target = Target(manifest["apiVersion"], manifest["kind"], namespace)
        try:
            self.request(
                "POST", path, body=manifest, query=[("fieldManager", FIELD_MANAGER)], target=target
            )
        except KubeError as error:
            if error.failure is Failure.CONFLICT:
                return False
            raise
        return True

    def remove_finalizer(self, obj: dict[str, Any], finalizer: str) -> None:
        """Take `finalizer` off `obj`, if its finalizers are still those read (a JSON patch
        test): someone else's change in between is kept, and this call fails (409 or 422)."""
        metadata = obj["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        patch = [
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {
                "op": "replace",
                "path": "/metadata/finalizers",
                "value": [f for f in finalizers if f != finalizer],
            },
        ]
        path = url(obj["apiVersion"], obj["kind"], metadata["namespace"], metadata["name"])
        target = Target(obj["apiVersion"], obj["kind"], metadata["namespace"])
        self.request("PATCH", path, body=patch, content_type=JSON_PATCH, target=target)

    def label(self, obj: dict[str, Any], key: str, value: str | None) -> dict[str, Any] | None:
        """Set (None: remove) one label, if `obj` is still that incarnation (a JSON patch
        test of its uid); None when it is gone or replaced."""
        metadata = obj["metadata"]
        path = "/metadata/labels/" + key.replace("~", "~0").replace("/", "~1")
        change = {"op": "remove", "path": path} if value is None else {
            "op": "add", "path": path, "value": value}  # fmt: skip
        patch = [{"op": "test", "path": "/metadata/uid", "value": metadata["uid"]}, change]
        target = Target(obj["apiVersion"], obj["kind"], metadata["namespace"])
        try:
            patched: dict[str, Any] = self.request(
                "PATCH",
                url(obj["apiVersion"], obj["kind"], metadata["namespace"], metadata["name"]),
                body=patch,
                content_type=JSON_PATCH,
                target=target,
            )
        except KubeError as error:
            # Gone, or another incarnation (the test failed: 422).
            if error.failure not in (Failure.NOT_FOUND, Failure.REJECTED):
                raise
            return None
        return patched

    def dry_run_create(self, manifest: dict[str, Any]) -> None:
        """Would the API server create this object? Raises KubeError when it would not.

        Under a generated name, so that an existing object of the same name (a pod
        about to be replaced) does not answer for the new one."""
        metadata = {k: v for k, v in manifest["metadata"].items() if k != "name"}
        metadata["generateName"] = f"{manifest['metadata']['name']}-"
        path = url(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
        query = [("fieldManager", FIELD_MANAGER), ("dryRun", "All")]
        target = Target(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
        self.request(
            "POST", path, body={**manifest, "metadata": metadata}, query=query, target=target
        )

    def event(self, obj: dict[str, Any], reason: str, message: str, *, warning: bool) -> None:
        """Record an event on `obj`, one attempt; a namespace being deleted is fine."""
        metadata = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.request("POST", url("v1", "Event", metadata["namespace"]), body=event)
        except KubeError as error:
            # Events are best effort: no right to post them, or the namespace goes (or went).
            if error.failure not in (
                Failure.FORBIDDEN,
                Failure.NAMESPACE_TERMINATING,
                Failure.NOT_FOUND,
            ):
                raise

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
        """Graceful delete (`force`: at once, without waiting for the kubelet); with `uid`,
        only that incarnation of the object. Gone is fine."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if force:
            body["gracePeriodSeconds"] = 0
        target = Target(api_version, kind, namespace)
        try:
            self.request(
                "DELETE", url(api_version, kind, namespace, name), body=body, target=target
            )
        except KubeError as error:
            # Gone, or another incarnation (the uid precondition failed).
            if error.failure not in (Failure.NOT_FOUND, Failure.CONFLICT):
                raise


def _status(data: bytes | str | None) -> dict[str, Any] | None:
    """The API server's Status object in an error answer, if it sent one."""
    try:
        parsed = json.loads(data or b"null")
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _reason(error: ApiException) -> str:
    return _reason_text(error.body) if error.body else str(error.reason)


def _reason_text(data: bytes | str | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message") or data)
    except ValueError:
        return str(data)
