"""`kubectl rspark`: a user's view of their workspaces (a kubectl plugin, installed with
the package as `kubectl-rspark`).

    kubectl rspark list                 [-n NAMESPACE | -A] [-o table|json]
    kubectl rspark status NAME          phase, URL, conditions with what to do, last snapshot
    kubectl rspark open NAME            the URL (and a browser, where one exists)
    kubectl rspark restart NAME         a new pod, from the same home

It talks to the cluster of the current kubectl context (KUBECONFIG, --context).
Exit codes scripts can trust: 0 done; 1 the workspace cannot do it now (no URL
yet, suspended); 2 bad usage; 3 no such workspace; 4 the API server refused or
failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import urllib3
from kubernetes import client, config

from rspark_operator import names, status
from rspark_operator.agent import reasons
from rspark_operator.api import GROUP, PLURAL, VERSION
from rspark_operator.conditions import HOME_RESTORED, READY, SNAPSHOT_HEALTHY, Advice, find

EXIT_OK, EXIT_NOT_NOW, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_API = 0, 1, 2, 3, 4
ADVICE: dict[str, Mapping[str, Advice]] = {
    READY: status.ADVICE,
    HOME_RESTORED: reasons.ADVICE,
    SNAPSHOT_HEALTHY: reasons.ADVICE,
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

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Whether there was a pod to delete."""
        try:
            self.core.delete_namespaced_pod(name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True


# --- commands ---


def run(args: argparse.Namespace, cluster: Cluster) -> tuple[Any, str]:
    """(what -o json prints, what the table output prints)."""
    namespace = args.namespace or cluster.default_namespace
    if args.command == "list":
        found = cluster.workspaces(None if args.all_namespaces else namespace)
        return [summary(ws) for ws in found], list_text(found, args.all_namespaces)
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
    pod = names.pod_name(args.name)
    deleted = cluster.delete_pod(namespace, pod)
    text = (
        f"pod {pod} is stopping; the operator starts a new one from the same home"
        if deleted
        else f"{args.name} has no pod; the operator is creating one"
    )
    return {"name": args.name, "pod": pod, "deleted": deleted}, text


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
    main = argparse.ArgumentParser(
        prog="kubectl rspark", description="RStudio + Spark workspaces (rspark-operator)."
    )
    commands = main.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[common], help="workspaces and their phase")
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    for command, what in (
        ("status", "phase, URL, conditions with what to do, last snapshot"),
        ("open", "print the URL and open it in a browser where one exists"),
        ("restart", "replace the pod; the home stays"),
    ):
        commands.add_parser(command, parents=[common], help=what).add_argument("name")
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
