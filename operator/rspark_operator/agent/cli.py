"""rspark-agent: restore, snapshot, list, forget, run; and retention (the platform's).

Exit 0 on success, 1 on failure, 2 on bad usage, 3 when a snapshot was taken
without some files it could not read (as restic).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rspark_operator import names
from rspark_operator.agent import retention
from rspark_operator.agent.core import Agent, AgentError
from rspark_operator.agent.kube import (
    KubeSecretStore,
    KubeStatusSink,
    api_client,
    list_workspaces,
    namespace_terminating,
)
from rspark_operator.agent.reasons import EXIT_NO_REPOSITORY, EXIT_PARTIAL
from rspark_operator.agent.report import Status
from rspark_operator.agent.restic import Restic, ResticError
from rspark_operator.agent.run import Runner
from rspark_operator.agent.secrets import SECRET_KEY
from rspark_operator.agent.settings import AgentSettings, AgentSettingsError, load, seconds
from rspark_operator.builders.pod import RESTIC_PASSWORD_KEY

log = logging.getLogger("rspark.agent")

# Each entry: restic's alternative ways to give the same setting; one must be set.
REQUIRED_ENV = (
    ("RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE"),
    ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"),
)


# Commands that work on the repository alone, without a home.
HOMELESS = ("list", "forget")


def missing_environment(env: Mapping[str, str]) -> list[str]:
    return [" or ".join(names) for names in REQUIRED_ENV if not any(env.get(n) for n in names)]


def no_snapshot_message(host: str, hosts: Sequence[str]) -> str:
    """Standalone, the host defaults to the home's name: say which hosts have snapshots."""
    if not hosts:
        return "no snapshot to restore: the repository has none"
    return (
        f"no snapshot of host {host!r}; snapshots exist for host(s) {', '.join(hosts)}: "
        "choose one with --host"
    )


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", help="restic --host (default: RSPARK_SNAPSHOT_HOST)")
    common.add_argument("--restic", help="restic binary (default: RSPARK_RESTIC or PATH)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    top = argparse.ArgumentParser(
        prog="rspark-agent", description="Snapshots of a home directory with restic."
    )
    commands = top.add_subparsers(dest="command", required=True)

    restore = commands.add_parser("restore", parents=[common], help="restore into an empty home")
    restore.add_argument("--home", type=Path, required=True)
    restore.add_argument("--snapshot", help="snapshot id (default: this host's newest)")
    restore.add_argument("--force", action="store_true", help="restore into a non-empty home")

    snapshot = commands.add_parser("snapshot", parents=[common], help="take one snapshot now")
    snapshot.add_argument("--home", type=Path, required=True)

    listing = commands.add_parser("list", parents=[common], help="snapshots, newest first")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--home", type=Path, default=Path.cwd(), help=argparse.SUPPRESS)

    forget = commands.add_parser(
        "forget",
        parents=[common],
        help="apply RSPARK_RETENTION (forget + prune): where the repository's key may "
        "delete, never through the snapshot gateway",
    )
    forget.add_argument("--home", type=Path, default=Path.cwd(), help=argparse.SUPPRESS)

    commands.add_parser(
        "retention",
        parents=[common],
        help="forget + prune every workspace repository behind the snapshot gateway, with "
        f"the bucket's key and {retention.STORAGE_BASE} (the platform's daily job)",
    )

    run = commands.add_parser("run", parents=[common], help="the sidecar loop")
    run.add_argument("--home", type=Path, required=True)
    run.add_argument("--interval", help="snapshot interval (default: RSPARK_SNAPSHOT_INTERVAL)")
    run.add_argument("--metrics-port", type=int, help="default: RSPARK_METRICS_PORT")
    return top


def build_agent(settings: AgentSettings, home: Path, *, cache_in_home: bool = True) -> Agent:
    status = Status()
    store = None
    target = settings.namespace_name
    if target is not None:
        namespace, name = target
        api = api_client()
        status.sinks.append(KubeStatusSink(api, namespace, name))
        # Never None with a workspace: its own home-secrets Secret by default.
        if settings.secrets_name:
            store = KubeSecretStore(api, namespace, settings.secrets_name, SECRET_KEY)
    return Agent(settings, home, status=status, secret_store=store, cache_in_home=cache_in_home)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "retention":
        return platform_retention(args)
    missing = missing_environment(os.environ)
    if missing:
        log.error("missing environment: %s", ", ".join(missing))
        return 2
    try:
        settings = load(
            snapshot_host=args.host,
            restic=args.restic,
            snapshot_interval=getattr(args, "interval", None),
            metrics_port=getattr(args, "metrics_port", None),
        )
    except AgentSettingsError as exc:
        log.error("%s", exc)
        return 2
    # `list` and `forget` have no home of their own: restic's cache stays where restic
    # keeps it.
    agent = build_agent(settings, args.home, cache_in_home=args.command not in HOMELESS)
    try:
        return _dispatch(args, agent)
    except (AgentError, ResticError) as exc:
        log.error("%s: %s", exc.reason, exc)
        return 1
    finally:
        agent.close()


def platform_retention(args: argparse.Namespace) -> int:
    """`rspark-agent retention`: exit 1 when any workspace's retention failed."""
    storage_base = os.environ.get(retention.STORAGE_BASE)
    if not storage_base:
        log.error("missing environment: %s", retention.STORAGE_BASE)
        return 2
    settings = load(restic=args.restic)
    api = api_client()

    def password_of(namespace: str, name: str) -> str | None:
        store = KubeSecretStore(
            api, namespace, names.passwords_secret_name(name), RESTIC_PASSWORD_KEY
        )
        try:
            value = store.load()
        except Exception as exc:
            if namespace_terminating(api, namespace):
                raise retention.GoingAway(namespace) from exc
            log.error("%s/%s: cannot read its passwords Secret: %s", namespace, name, exc)
            return None
        return value.decode() if value else None

    def forget(job: retention.Job, password: str) -> None:
        env = {**os.environ, "RESTIC_REPOSITORY": job.repository, "RESTIC_PASSWORD": password}
        restic = Restic(settings.restic, env=env, timeout=seconds(settings.restic_timeout))
        try:
            restic.forget_prune(job.host, job.retention, settings.retry_lock)
        except ResticError as exc:
            if exc.exit_code == EXIT_NO_REPOSITORY:
                raise retention.NoRepository(str(exc)) from exc
            raise

    jobs = retention.jobs(list_workspaces(api), storage_base)
    failed = retention.run(jobs, password_of, forget)
    log.info("retention: %d workspace(s), %d failed", len(jobs), failed)
    return 1 if failed else 0


def _dispatch(args: argparse.Namespace, agent: Agent) -> int:
    if args.command == "restore":
        outcome = agent.restore(args.snapshot, force=args.force)
        if outcome.snapshot_id is None:
            hosts = sorted({s.hostname for s in agent.snapshots(host_only=False)})
            log.error("%s", no_snapshot_message(agent.host, hosts))
            return 1
        return 0
    if args.command == "snapshot":
        summary = agent.snapshot()
        if summary is None:
            return 1
        return EXIT_PARTIAL if summary.unreadable else 0
    if args.command == "forget":
        agent.apply_retention()
        return 0
    if args.command == "list":
        items = agent.snapshots(host_only=False)
        if args.json:
            print(json.dumps([item.__dict__ for item in items], indent=2))
        else:
            for item in items:
                files = item.summary.get("total_files_processed", "?")
                size = item.summary.get("total_bytes_processed", "?")
                print(f"{item.short_id} {item.time[:19]} {item.hostname} {files} files {size} B")
        return 0
    return Runner(agent).run_with_signals()
