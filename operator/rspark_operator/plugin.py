"""`kubectl rspark`: a user's view of their workspaces (a kubectl plugin, installed with
the package as `kubectl-rspark`).

    kubectl rspark list                 [-n NAMESPACE | -A] [-o table|json]
    kubectl rspark status NAME          phase, URL, conditions with what to do, last snapshot
    kubectl rspark open NAME            the URL (and a browser, where one exists)
    kubectl rspark restart NAME         a new pod, from the same home
    kubectl rspark snapshots NAME       the home's snapshots, whatever the workspace's state
    kubectl rspark restore NAME --snapshot ID | --before TIME
                                        check, stop, restore into a new volume, start

It talks to the cluster of the current kubectl context (KUBECONFIG, --context).
`snapshots` and `restore` read the repository with restic on this machine (the
repository and its credentials come from the workspace's Secrets, which outlive
it), so they work while the workspace runs, is suspended or has failed.
Exit codes scripts can trust: 0 done; 1 the workspace cannot do it now (no URL
yet, suspended, no such snapshot, a step did not finish in time); 2 bad usage
(or no restic); 3 no such workspace; 4 the API server or the storage refused or
failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import urllib3
from kubernetes import client, config

from rspark_operator import gateway, names, status, tenancy
from rspark_operator.agent import reasons
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.builders.pod import RESTIC_PASSWORD_KEY
from rspark_operator.conditions import (
    HOME_RESTORED,
    NAMESPACE_SHARED,
    READY,
    SNAPSHOT_HEALTHY,
    Advice,
    find,
)
from rspark_operator.contract import S3_CREDENTIAL_KEYS

_FRACTION = re.compile(r"\.\d+")
EXIT_OK, EXIT_NOT_NOW, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_API = 0, 1, 2, 3, 4
ADVICE: dict[str, Mapping[str, Advice]] = {
    READY: status.ADVICE,
    HOME_RESTORED: reasons.ADVICE,
    SNAPSHOT_HEALTHY: reasons.ADVICE,
    NAMESPACE_SHARED: tenancy.ADVICE,
}


class PluginError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- views: pure, from the workspace objects ---


def summary(ws: Mapping[str, Any]) -> dict[str, Any]:
    state = ws.get("status") or {}
    ready = find(state.get("conditions") or [], READY) or {}
    return {
        "namespace": ws["metadata"]["namespace"],
        "name": ws["metadata"]["name"],
        "phase": state.get("phase", ""),
        "reason": ready.get("reason", ""),
        "url": state.get("url", ""),
        "lastSnapshot": (state.get("lastSnapshot") or {}).get("time", ""),
        "pendingRestart": bool(state.get("pendingRestart")),
    }


def details(ws: Mapping[str, Any]) -> dict[str, Any]:
    """The summary, the last snapshot and every condition with what to do about it."""
    state = ws.get("status") or {}
    conditions = []
    for found in state.get("conditions") or []:
        advice = ADVICE.get(found.get("type", ""), {}).get(found.get("reason", ""))
        conditions.append(
            {
                "type": found.get("type", ""),
                "status": found.get("status", ""),
                "reason": found.get("reason", ""),
                "message": found.get("message", ""),
                "user": advice.user if advice else "",
                "admin": advice.admin if advice else "",
            }
        )
    return {
        **summary(ws),
        "suspended": bool((ws.get("spec") or {}).get("suspended")),
        "lastSnapshot": state.get("lastSnapshot") or {},
        "conditions": conditions,
    }


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as kubectl prints them: upper-case headers, left-aligned, three spaces."""
    cells = [[h.upper() for h in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def list_text(workspaces: Sequence[Mapping[str, Any]], all_namespaces: bool) -> str:
    header = ["namespace"] if all_namespaces else []
    header += ["name", "phase", "reason", "url", "last snapshot"]
    rows = []
    for ws in workspaces:
        view = summary(ws)
        row = [view["namespace"]] if all_namespaces else []
        phase = view["phase"] + (" (restart pending)" if view["pendingRestart"] else "")
        rows.append([*row, view["name"], phase, view["reason"], view["url"], view["lastSnapshot"]])
    return table(header, rows)


def status_text(view: Mapping[str, Any]) -> str:
    snapshot = view["lastSnapshot"]
    lines = [
        f"Name:            {view['namespace']}/{view['name']}",
        f"Phase:           {view['phase']}" + (" (suspended)" if view["suspended"] else ""),
        f"URL:             {view['url'] or '-'}",
        f"Pending restart: {'yes' if view['pendingRestart'] else 'no'}",
        "Last snapshot:   "
        + (f"{snapshot.get('id', '')[:8]} at {snapshot.get('time')}" if snapshot else "none yet"),
        "Conditions:",
        table(
            ["type", "status", "reason", "message"],
            [[c["type"], c["status"], c["reason"], c["message"]] for c in view["conditions"]],
        ),
    ]
    todo = [c for c in view["conditions"] if c["user"] or c["admin"]]
    if todo:
        lines.append("What to do:")
        for c in todo:
            lines += [f"  {c['reason']}: {c['user']}".rstrip()] if c["user"] else []
            lines += [f"  {c['reason']} (administrator): {c['admin']}"] if c["admin"] else []
    return "\n".join(lines)


def snapshot_time(snapshot: Mapping[str, Any]) -> datetime:
    """restic's time (nanoseconds, an offset) as an aware datetime."""
    text = str(snapshot["time"]).replace("Z", "+00:00")
    # fromisoformat takes at most six digits of a second's fraction.
    return datetime.fromisoformat(_FRACTION.sub(lambda match: match[0][:7], text))


def snapshot_rows(snapshots: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first, as -o json prints them."""
    ordered = sorted(snapshots, key=snapshot_time)
    return [
        {"id": s["id"], "shortId": s["id"][:8], "time": s["time"], "tags": s.get("tags") or []}
        for s in ordered
    ]


def choose_snapshot(
    snapshots: Sequence[Mapping[str, Any]], snapshot_id: str | None, before: datetime | None
) -> dict[str, Any]:
    """The snapshot an id (or its prefix) names, or the newest before a time."""
    rows = snapshot_rows(snapshots)
    if snapshot_id is not None:
        found = [row for row in rows if row["id"].startswith(snapshot_id.lower())]
        if len(found) != 1:
            what = "no snapshot" if not found else f"{len(found)} snapshots"
            raise PluginError(EXIT_NOT_NOW, f"{what} with id {snapshot_id}")
        return found[0]
    if before is None:
        raise PluginError(EXIT_USAGE, "name a snapshot by --snapshot ID or --before TIME")
    earlier = [row for row in rows if snapshot_time(row) <= before]
    if not earlier:
        raise PluginError(EXIT_NOT_NOW, f"no snapshot before {before.isoformat()}")
    return earlier[-1]


# --- the cluster ---


class Cluster:
    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
            _, current = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError) as error:
            raise PluginError(EXIT_USAGE, f"no usable kubeconfig: {error}") from None
        chosen = context or current["name"]
        contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
        found = next((c for c in contexts if c["name"] == chosen), current)
        self.default_namespace: str = found["context"].get("namespace") or "default"
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def workspaces(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            listed = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return sorted(
            listed["items"], key=lambda w: (w["metadata"]["namespace"], w["metadata"]["name"])
        )

    def workspace(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except client.ApiException as error:
            if error.status == 404:
                raise PluginError(EXIT_NOT_FOUND, f"no workspace {name} in {namespace}") from None
            raise
        return found

    def secret(self, namespace: str, name: str) -> Any:
        return unless_missing(lambda: self.core.read_namespaced_secret(name, namespace))

    def patch_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}
        )

    def delete_claim(self, namespace: str, name: str) -> None:
        unless_missing(lambda: self.core.delete_namespaced_persistent_volume_claim(name, namespace))

    def claim_exists(self, namespace: str, name: str) -> bool:
        read = self.core.read_namespaced_persistent_volume_claim
        return unless_missing(lambda: read(name, namespace)) is not None

    def request_restart(self, namespace: str, name: str, at: str) -> None:
        """Ask the operator for a new pod (names.RESTART_ANNOTATION): it replaces the pod
        once, after a clean shutdown and a last snapshot."""
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name,
            names.restart_patch(at),
        )  # fmt: skip


def unless_missing(call: Callable[[], Any]) -> Any:
    """The call's answer, or None when the API server says 404."""
    try:
        return call()
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


# --- snapshots, with restic on this machine ---


def secret_value(secret: Any, key: str) -> str:
    data = (secret.data or {}).get(key)
    if data is None:
        raise PluginError(EXIT_NOT_NOW, f"Secret {secret.metadata.name} has no key {key}")
    return base64.b64decode(data).decode()


def list_snapshots(cluster: Cluster, namespace: str, name: str, restic: str) -> list[Any]:
    """The repository's snapshots; where it is and its keys come from the workspace's
    Secrets (the operator notes the repository on the home-secrets Secret)."""
    home_secrets = cluster.secret(namespace, names.home_secrets_name(name))
    notes = (home_secrets.metadata.annotations or {}) if home_secrets else {}
    repository = notes.get(names.SNAPSHOT_REPOSITORY_ANNOTATION)
    if repository is None:
        raise PluginError(
            EXIT_NOT_NOW,
            f"no snapshot repository noted for {name} in {namespace} (snapshots disabled, or "
            f"the Secret {names.home_secrets_name(name)} is gone)",
        )
    passwords = cluster.secret(namespace, names.passwords_secret_name(name))
    credentials = cluster.secret(namespace, notes[names.SNAPSHOT_CREDENTIALS_ANNOTATION])
    if passwords is None or credentials is None:
        raise PluginError(EXIT_NOT_NOW, f"the Secrets of {name}'s snapshots are missing")
    if repository.startswith("rest:"):  # through the snapshot gateway: its own credential
        access = {
            gateway.REST_USERNAME: gateway.gateway_user(namespace, name),
            gateway.REST_PASSWORD: secret_value(credentials, gateway.CREDENTIAL_KEY),
        }
    else:
        access = {key: secret_value(credentials, key) for key in S3_CREDENTIAL_KEYS}
    env = {
        **os.environ,
        "RESTIC_REPOSITORY": repository,
        "RESTIC_PASSWORD": secret_value(passwords, RESTIC_PASSWORD_KEY),
        **access,
    }
    binary = shutil.which(restic)
    if binary is None:
        raise PluginError(EXIT_USAGE, f"no {restic} on PATH: install restic, or pass --restic")
    result = subprocess.run(
        [binary, "snapshots", "--json", "--no-lock", "--no-cache"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise PluginError(EXIT_API, f"restic snapshots failed: {result.stderr.strip()[-500:]}")
    snapshots: list[Any] = json.loads(result.stdout or "[]") or []
    return snapshots


def wait_for(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise PluginError(EXIT_NOT_NOW, f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(2)


def restore(args: argparse.Namespace, cluster: Cluster, namespace: str) -> dict[str, Any]:
    """Check, stop, restore, start: the snapshot must exist before anything changes; the
    home volume is deleted only once the pod is gone; the new one is restored empty."""
    name, claim = args.name, names.home_claim_name(args.name)
    cluster.workspace(namespace, name)
    before = datetime.fromisoformat(args.before.replace("Z", "+00:00")) if args.before else None
    if before is not None and before.tzinfo is None:
        raise PluginError(EXIT_USAGE, "--before needs a time zone, e.g. 2026-01-02T15:04:05Z")
    chosen = choose_snapshot(list_snapshots(cluster, namespace, name, args.restic),
                             args.snapshot, before)  # fmt: skip

    def phase() -> str:
        return str((cluster.workspace(namespace, name).get("status") or {}).get("phase"))

    cluster.patch_spec(namespace, name, {"suspended": True})
    wait_for(f"{name} to be Suspended", lambda: phase() == "Suspended", args.timeout)
    cluster.delete_claim(namespace, claim)
    wait_for(f"the claim {claim} to be deleted", lambda: not cluster.claim_exists(namespace, claim),
             args.timeout)  # fmt: skip
    cluster.patch_spec(
        namespace, name, {"suspended": False, "snapshot": {"restoreFrom": chosen["id"]}}
    )
    wait_for(f"{name} to be Running", lambda: phase() == "Running", args.timeout)
    return {"name": name, "restoredFrom": chosen}


# --- commands ---


def run(args: argparse.Namespace, cluster: Cluster) -> tuple[Any, str]:
    """(what -o json prints, what the table output prints)."""
    namespace = args.namespace or cluster.default_namespace
    if args.command == "list":
        found = cluster.workspaces(None if args.all_namespaces else namespace)
        return [summary(ws) for ws in found], list_text(found, args.all_namespaces)
    if args.command == "snapshots":
        rows = snapshot_rows(list_snapshots(cluster, namespace, args.name, args.restic))
        text = table(["id", "time", "tags"],
                     [[r["shortId"], r["time"], ",".join(r["tags"])] for r in rows])  # fmt: skip
        return rows, text
    if args.command == "restore":
        done = restore(args, cluster, namespace)
        chosen = done["restoredFrom"]
        return done, f"{args.name} restored from {chosen['shortId']} ({chosen['time']}) and running"
    ws = cluster.workspace(namespace, args.name)
    if args.command == "status":
        view = details(ws)
        return view, status_text(view)
    if args.command == "open":
        view = summary(ws)
        if not view["url"]:
            raise PluginError(EXIT_NOT_NOW, f"{args.name} has no URL yet (phase {view['phase']})")
        if args.output == "table" and sys.stdout.isatty() and has_browser():
            webbrowser.open(view["url"])
        return {"url": view["url"]}, view["url"]
    # restart
    if (ws.get("spec") or {}).get("suspended"):
        raise PluginError(EXIT_NOT_NOW, f"{args.name} is suspended: resume it instead")
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.request_restart(namespace, args.name, at)
    text = f"restart of {args.name} requested: the operator starts a new pod from the same home"
    return {"name": args.name, "restartRequestedAt": at}, text


def has_browser() -> bool:
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    common.add_argument("-o", "--output", choices=["table", "json"], default="table")
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube)")
    restic = argparse.ArgumentParser(add_help=False)
    restic.add_argument("--restic", default="restic", help="the restic binary (default: on PATH)")
    main = argparse.ArgumentParser(
        prog="kubectl rspark", description="RStudio + Spark workspaces (rspark-operator)."
    )
    commands = main.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[common], help="workspaces and their phase")
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    for command, what in (
        ("status", "phase, URL, conditions with what to do, last snapshot"),
        ("open", "print the URL and open it in a browser where one exists"),
        ("restart", "replace the pod, or wake an idle workspace; the home stays"),
    ):
        commands.add_parser(command, parents=[common], help=what).add_argument("name")
    snapshots = commands.add_parser(
        "snapshots", parents=[common, restic], help="the home's snapshots (any state)"
    )
    snapshots.add_argument("name")
    restoring = commands.add_parser(
        "restore", parents=[common, restic], help="check, stop, restore, start"
    )
    restoring.add_argument("name")
    which = restoring.add_mutually_exclusive_group(required=True)
    which.add_argument("--snapshot", help="snapshot id or a unique prefix of it")
    which.add_argument("--before", help="the newest snapshot before this time (ISO 8601)")
    restoring.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for each step"
    )
    return main


def fail(code: int, message: str) -> NoReturn:
    print(f"kubectl rspark: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)  # exits 2 on bad usage
    try:
        data, text = run(args, Cluster(args.kubeconfig, args.context))
    except PluginError as error:
        fail(error.code, str(error))
    except client.ApiException as error:
        fail(EXIT_API, f"the API server answered {error.status} {error.reason}: {error.body}")
    except (OSError, urllib3.exceptions.HTTPError) as error:  # no API server answers
        fail(EXIT_API, f"cannot reach the API server: {error}")
    print(json.dumps(data, indent=2) if args.output == "json" else text)


if __name__ == "__main__":
    main()
