"""Snapshots through the snapshot gateway (RSPARK_SNAPSHOT_MODE=gateway): the agent's
environment carries the workspace's own credential and no bucket key, and the reconcile
registers the workspace with the gateway without losing another's line."""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from pydantic import ValidationError

from rspark_operator import contract, names
from rspark_operator.api import API_VERSION, KIND
from rspark_operator.builders import build_pod
from rspark_operator.builders.children import build_children
from rspark_operator.cluster import Failure, KubeError, secret_text
from rspark_operator.gateway import (
    CREDENTIAL_KEY,
    GATEWAY_POD_SELECTOR,
    HTPASSWD_KEY,
    REST_PASSWORD,
    REST_USERNAME,
    USERS_VERSION_LABEL,
    gateway_user,
    htpasswd,
    htpasswd_line,
    htpasswd_users,
    only_users,
    with_entry,
)
from rspark_operator.main import (
    GATEWAY_SWEEP_DELAY_SECONDS,
    GATEWAY_USERS_JOB,
    Indexes,
    _run_job,
)
from rspark_operator.reconcile import reconcile, sweep_gateway_users
from rspark_operator.resync import Job, Result, ResyncQueue
from rspark_operator.settings import OperatorSettings
from tests.unit.fakeapi import FakeApi
from tests.unit.test_reconcile import NAME, NAMESPACE, NOW, ROLLOUT, no_warnings
from tests.unit.test_tenancy import workspace_added
from tests.unit.workspaces import settings, workspace

pytestmark = pytest.mark.unit

URL = "http://rspark-snapshot-gateway.rspark-system.svc:8000"
GATEWAY = settings(snapshot_mode="gateway", snapshot_gateway_url=URL)
USERS = ("Secret", "rspark-system", "rspark-snapshot-gateway-users")


def agent_env(**spec: Any) -> dict[str, Any]:
    pod = build_pod(workspace(**spec), GATEWAY)
    agent = next(c for c in pod["spec"]["initContainers"] if c["name"] == "snapshot-agent")
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in agent["env"]}


def test_the_agent_reaches_its_own_repository_with_its_own_credential() -> None:
    env = agent_env()
    user = gateway_user("team", "demo")

    assert env[contract.RESTIC_REPOSITORY] == f"rest:{URL}/team.demo/"
    assert env[REST_USERNAME] == user
    assert env[REST_PASSWORD] == {
        "secretKeyRef": {"name": "demo-snapshot-gateway", "key": CREDENTIAL_KEY}
    }
    assert not set(contract.S3_CREDENTIAL_KEYS) & set(env)  # no bucket key in the pod
    assert contract.RETENTION not in env  # retention runs at the platform


def test_a_repository_of_the_workspaces_own_is_reached_directly() -> None:
    env = agent_env(snapshot={"repository": "s3:http://mine/b", "credentialsSecret": "mine"})
    assert env[contract.RESTIC_REPOSITORY] == "s3:http://mine/b"
    assert set(contract.S3_CREDENTIAL_KEYS) <= set(env)


def test_nothing_in_the_workspace_namespace_names_the_bucket_key() -> None:
    ws = workspace()
    rendered = repr([*build_children(ws, GATEWAY), build_pod(ws, GATEWAY)])
    assert GATEWAY.snapshot_credentials_secret not in rendered


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"snapshot_mode": "gateway", "snapshot_gateway_url": None},
            "required with RSPARK_SNAPSHOT_MODE=gateway",
        ),
        ({"snapshot_gateway_url": "ftp://gw"}, r"not an http\(s\) URL"),
        ({"snapshot_gateway_url": "http://u:p@gw:8000"}, "no credentials in the URL"),
    ],
)
def test_gateway_settings_are_checked_at_start(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**overrides)


def test_the_htpasswd_line_is_the_sha1_form_rclone_reads() -> None:
    digest = base64.b64encode(hashlib.sha1(b"token").digest()).decode()
    assert htpasswd_line("team.demo", "token") == f"team.demo:{{SHA}}{digest}"
    text = with_entry(with_entry("", "b.x", "1"), "a.y", "2")
    assert text.splitlines() == [htpasswd_line("a.y", "2"), htpasswd_line("b.x", "1")]
    assert with_entry(text, "b.x", "3").splitlines()[1] == htpasswd_line("b.x", "3")


def put(fake: FakeApi, name: str) -> None:
    fake.put(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"{name}-uid"},
            "spec": {"user": f"{name}@example.com"},
        }
    )


def run(fake: FakeApi, name: str = NAME) -> None:
    body = fake.get(API_VERSION, KIND, NAMESPACE, name)
    assert body is not None
    reconcile(fake, GATEWAY, body, no_warnings, ROLLOUT, now=NOW)


def users(fake: FakeApi) -> dict[str, str]:
    text = secret_text(fake.objects[USERS], HTPASSWD_KEY) or ""
    return dict(line.split(":", 1) for line in text.splitlines())


def credential(fake: FakeApi, name: str) -> str:
    key = ("Secret", NAMESPACE, names.gateway_credential_secret_name(name))
    value = secret_text(fake.objects[key], CREDENTIAL_KEY)
    assert value is not None
    return value


def test_each_workspace_gets_a_credential_kept_once_and_a_line_at_the_gateway() -> None:
    fake = FakeApi()
    put(fake, NAME)
    put(fake, "other")
    run(fake)
    run(fake, "other")
    first = credential(fake, NAME)
    run(fake)  # again: nothing changes

    assert credential(fake, NAME) == first
    expected = [
        htpasswd_line(gateway_user(NAMESPACE, NAME), first),
        htpasswd_line(gateway_user(NAMESPACE, "other"), credential(fake, "other")),
    ]
    assert users(fake) == dict(line.split(":", 1) for line in expected)


def test_a_running_workspace_gets_its_line_back_at_the_next_full_reconcile() -> None:
    """The pod exists (made by an operator in direct mode, or the gateway's list was
    rewritten): the line comes back without a new pod, with the same credential; at
    rest the credential is read, never POSTed again."""
    fake = FakeApi()
    put(fake, NAME)
    run(fake)
    first = credential(fake, NAME)
    pod = fake.objects[("Pod", NAMESPACE, NAME)]["metadata"]["uid"]
    del fake.objects[USERS]
    fake.requests.clear()
    run(fake)
    assert users(fake) == dict([htpasswd_line(gateway_user(NAMESPACE, NAME), first).split(":", 1)])
    assert fake.objects[("Pod", NAMESPACE, NAME)]["metadata"]["uid"] == pod
    fake.requests.clear()
    run(fake)
    assert fake.requests["POST Secret"] == 0
    assert fake.requests["GET Secret"] == 2  # the credential and the gateway's users


def test_a_concurrent_write_of_the_users_is_read_again_not_overwritten() -> None:
    fake = FakeApi()
    put(fake, NAME)
    run(fake, NAME)
    original_apply = fake.apply
    raced: list[bool] = []

    def racing_apply(manifest: dict[str, Any], subresource: str = "", **kw: Any) -> Any:
        if manifest["metadata"]["name"] == USERS[2] and not raced:
            raced.append(True)  # another reconcile adds its line first
            current = secret_text(fake.objects[USERS], HTPASSWD_KEY) or ""
            fake.objects[USERS]["data"][HTPASSWD_KEY] = base64.b64encode(
                with_entry(current, "team.racer", "x").encode()
            ).decode()
            fake.objects[USERS]["metadata"]["resourceVersion"] = "racer"
        return original_apply(manifest, subresource, **kw)

    fake.apply = racing_apply  # type: ignore[method-assign]
    put(fake, "late")
    run(fake, "late")

    assert raced
    assert set(users(fake)) == {"team.demo", "team.racer", "team.late"}


def test_the_first_two_workspaces_at_once_both_keep_their_line() -> None:
    """No users Secret yet, and another reconcile creates it between this one's read and
    write: this one reads it again and adds its line, not a file of its own line only."""
    fake = FakeApi()
    original_apply, original_create = fake.apply, fake.create

    def race(manifest: dict[str, Any]) -> None:
        if manifest["metadata"]["name"] == USERS[2] and USERS not in fake.objects:
            racer = {**manifest, "stringData": {HTPASSWD_KEY: with_entry("", "team.racer", "x")}}
            original_create(racer)  # another workspace's first reconcile writes first

    def racing_apply(manifest: dict[str, Any], subresource: str = "", **kw: Any) -> Any:
        race(manifest)
        return original_apply(manifest, subresource, **kw)

    def racing_create(manifest: dict[str, Any]) -> bool:
        race(manifest)
        return original_create(manifest)

    fake.apply = racing_apply  # type: ignore[method-assign]
    fake.create = racing_create  # type: ignore[method-assign]
    put(fake, NAME)
    run(fake)

    assert set(users(fake)) == {"team.racer", "team.demo"}


def test_a_users_secret_the_operator_may_not_write_refuses_the_new_workspace() -> None:
    fake = FakeApi()
    fake.refusals[USERS] = KubeError(Failure.FORBIDDEN, 403, "forbidden", denied="patch")
    put(fake, NAME)
    run(fake)
    assert ("Pod", NAMESPACE, NAME) not in fake.objects


BASE = Path(__file__).resolve().parents[2] / "manifests" / "base"


def base_objects(file: str) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((BASE / file).read_text()) if doc}


def test_the_defaults_name_the_bases_gateway_and_agent_image() -> None:
    """The default gateway URL is the base's Service; retention runs the default agent
    image (the chart sets it from RSPARK_AGENT_IMAGE)."""
    defaults = OperatorSettings()
    assert defaults.snapshot_mode == "gateway"
    service = base_objects("snapshot-gateway.yaml")["Service"]
    url = urllib.parse.urlsplit(defaults.snapshot_gateway_url)
    metadata = service["metadata"]
    assert url.hostname == f"{metadata['name']}.{metadata['namespace']}.svc"
    assert metadata["namespace"] == defaults.snapshot_gateway_namespace
    assert [url.port] == [port["port"] for port in service["spec"]["ports"]]
    cron_job = base_objects("snapshot-retention.yaml")["CronJob"]
    (container,) = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == defaults.agent_image


def test_the_gateway_pods_are_touched_when_the_users_change_and_only_then() -> None:
    """A change of the users Secret labels the gateway's pods with its new version (their
    kubelet mounts the new file at once); at rest no pod is written. The selector is the
    base's pod template's labels."""
    deployment = base_objects("snapshot-gateway.yaml")["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert dict(term.split("=") for term in GATEWAY_POD_SELECTOR.split(",")).items() <= (
        labels.items()
    )
    fake = FakeApi()
    namespace = GATEWAY.snapshot_gateway_namespace
    for pod in ("gateway-a", "gateway-b"):
        fake.put({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": pod, "namespace": namespace, "labels": labels}})  # fmt: skip
    put(fake, NAME)
    run(fake)
    version = fake.objects[USERS]["metadata"]["resourceVersion"]
    for pod in ("gateway-a", "gateway-b"):
        assert fake.objects[("Pod", namespace, pod)]["metadata"]["labels"] == {
            **labels, USERS_VERSION_LABEL: version}  # fmt: skip
    fake.requests.clear()
    run(fake)
    assert (fake.requests["LIST Pod"], fake.requests["PATCH Pod"]) == (0, 0)


def test_a_workspace_line_has_the_size_the_installation_guide_counts_on() -> None:
    """docs/installation.md ("How many workspaces one gateway serves") counts
    len(namespace) + len(name) + 36 bytes a workspace in the users Secret."""
    for namespace, name in (("team-a", "alice"), ("n" * 63, "w" * 47)):
        text = with_entry("", gateway_user(namespace, name), secrets.token_urlsafe(32))
        assert len(text.encode()) == len(namespace) + len(name) + 36


def test_only_the_lines_of_workspaces_there_are_kept() -> None:
    text = htpasswd({"team.a": "x", "team.b": "y", "other.c": "z"})
    assert only_users(text, {"team.b", "other.c", "team.new"}) == htpasswd(
        {"team.b": "y", "other.c": "z"}
    )
    assert htpasswd_users(text) == ["other.c", "team.a", "team.b"]
    assert only_users("", {"team.a"}) == ""


def sweep(fake: FakeApi, *existing: str) -> list[str]:
    return sweep_gateway_users(
        fake, GATEWAY, lambda: {gateway_user(NAMESPACE, name) for name in existing}
    )


def test_the_sweep_drops_the_lines_of_workspaces_gone_and_writes_nothing_at_rest() -> None:
    fake = FakeApi()
    for name in (NAME, "gone"):
        put(fake, name)
        run(fake, name)
    kept = users(fake)[gateway_user(NAMESPACE, NAME)]

    assert sweep(fake, NAME) == [gateway_user(NAMESPACE, "gone")]
    assert users(fake) == {gateway_user(NAMESPACE, NAME): kept}
    fake.requests.clear()
    assert sweep(fake, NAME) == []
    assert (fake.requests["GET Secret"], fake.requests["PATCH Secret"]) == (1, 0)


def test_the_sweep_keeps_a_workspace_registered_between_its_read_and_write() -> None:
    """The workspaces there are, read after the file: one registered while the sweep
    runs (its write refused, read again) is among them, and keeps its line."""
    fake = FakeApi()
    put(fake, NAME)
    run(fake)
    existing = {gateway_user(NAMESPACE, NAME)}
    original_apply = fake.apply
    raced: list[bool] = []

    def racing_apply(manifest: dict[str, Any], subresource: str = "", **kw: Any) -> Any:
        if manifest["metadata"]["name"] == USERS[2] and not raced:
            raced.append(True)  # a new workspace, seen by the watch, registers first
            existing.add(gateway_user(NAMESPACE, "late"))
            current = secret_text(fake.objects[USERS], HTPASSWD_KEY) or ""
            fake.objects[USERS]["data"][HTPASSWD_KEY] = base64.b64encode(
                with_entry(current, gateway_user(NAMESPACE, "late"), "x").encode()
            ).decode()
            fake.objects[USERS]["metadata"]["resourceVersion"] = "racer"
        return original_apply(manifest, subresource, **kw)

    # A line of a workspace gone, so that the sweep writes.
    current = secret_text(fake.objects[USERS], HTPASSWD_KEY) or ""
    fake.objects[USERS]["data"][HTPASSWD_KEY] = base64.b64encode(
        with_entry(current, gateway_user(NAMESPACE, "gone"), "y").encode()
    ).decode()
    fake.apply = racing_apply  # type: ignore[method-assign]

    removed = sweep_gateway_users(fake, GATEWAY, lambda: set(existing))

    assert raced and removed == [gateway_user(NAMESPACE, "gone")]
    assert set(users(fake)) == {gateway_user(NAMESPACE, NAME), gateway_user(NAMESPACE, "late")}


def test_the_sweep_follows_deletions_and_the_resync_in_gateway_mode_only() -> None:
    now = [0.0]
    queue = ResyncQueue(600, clock=lambda: now[0])
    workspace_added(queue, "a3", "alice@example.com", settings=settings(snapshot_mode="direct"))
    assert queue.due_at(GATEWAY_USERS_JOB) is None
    workspace_added(queue, "a3", "alice@example.com", settings=GATEWAY)
    assert queue.due_at(GATEWAY_USERS_JOB) == 600  # from the first event on
    workspace_added(queue, "a4", "alice@example.com", settings=GATEWAY)
    assert queue.due_at(GATEWAY_USERS_JOB) == 600
    workspace_added(queue, "a3", "alice@example.com", "DELETED", GATEWAY)
    assert queue.due_at(GATEWAY_USERS_JOB) == GATEWAY_SWEEP_DELAY_SECONDS


def test_the_sweep_job_reads_the_workspaces_from_the_operators_index() -> None:
    fake = FakeApi()
    for name in (NAME, "gone"):
        put(fake, name)
        run(fake, name)
    indexes = Indexes()
    for namespace, name in ((NAMESPACE, NAME), ("elsewhere", "x")):
        body = {"metadata": {"namespace": namespace, "name": name, "uid": f"{name}-uid"}}
        indexes.set_workspace(body, None)
    memo = kopf.Memo(kube=fake, settings=GATEWAY, indexes=indexes)
    assert _run_job(memo, Job(GATEWAY_USERS_JOB, children=True)) is Result.DONE
    assert set(users(fake)) == {gateway_user(NAMESPACE, NAME)}


def test_the_sweep_leaves_the_lines_of_namespaces_it_does_not_watch() -> None:
    """With RSPARK_WATCH_NAMESPACES, the lines of other namespaces are another
    operator's: they stay, gone or not."""
    fake = FakeApi()
    for name in (NAME, "gone"):
        put(fake, name)
        run(fake, name)
    current = secret_text(fake.objects[USERS], HTPASSWD_KEY) or ""
    fake.objects[USERS]["data"][HTPASSWD_KEY] = base64.b64encode(
        with_entry(current, gateway_user("elsewhere", "theirs"), "x").encode()
    ).decode()
    watching = settings(
        snapshot_mode="gateway", snapshot_gateway_url=URL, watch_namespaces=NAMESPACE
    )
    removed = sweep_gateway_users(fake, watching, lambda: {gateway_user(NAMESPACE, NAME)})
    assert removed == [gateway_user(NAMESPACE, "gone")]
    assert set(users(fake)) == {gateway_user(NAMESPACE, NAME), "elsewhere.theirs"}
