"""Snapshots through the snapshot gateway (`rclone serve restic --private-repos
--append-only`, devtools/gateway.py) in front of the real S3 server, with real restic.

A workspace's credential reaches only its own repository and cannot erase its history;
retention runs where the bucket's key is (`rspark-agent forget`, direct to S3).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gateway import Gateway
from devtools.s3 import S3Server
from rspark_operator.gateway import REST_PASSWORD, REST_USERNAME, gateway_user, repository
from tests.integration.agent.helpers import (
    STANDALONE_SKIP,
    Repo,
    contents,
    make_home,
    repository_env,
    write_tree,
)

pytestmark = pytest.mark.integration

ALICE = gateway_user("team-a", "alice")
BOB = gateway_user("team-a", "bob")
HOST = "team-a-alice"
BUCKET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT", "S3_BUCKET")


@pytest.fixture
def gateway(s3: S3Server, tmp_path: Path) -> Iterator[Gateway]:
    server = Gateway(tmp_path / "gateway", s3.credentials, prefix=f"gw-{uuid.uuid4().hex[:8]}")
    server.add_user(ALICE)
    server.add_user(BOB)
    server.start()
    yield server
    server.stop()


def through(
    s3: S3Server, gateway: Gateway, tmp_path: Path, user: str, *, login: str | None = None
) -> Repo:
    """The repository of `user` through the gateway, with the credential of `login`
    (default: its own) and no bucket key anywhere in the environment."""
    login = login or user
    cache = tmp_path / f"cache-{login}"
    cache.mkdir(exist_ok=True)
    env = repository_env(s3, "unused", cache)
    for key in BUCKET_KEYS:
        env.pop(key)
    env.update(
        {
            "RESTIC_REPOSITORY": repository(gateway.url, user),
            REST_USERNAME: login,
            REST_PASSWORD: gateway.users[login],
            "RSPARK_SNAPSHOT_HOST": HOST,
        }
    )
    return Repo(s3, f"{gateway.prefix}/{user}", env, tmp_path)


def direct(s3: S3Server, gateway: Gateway, tmp_path: Path, user: str) -> Repo:
    """The same repository straight on the bucket, with the bucket's key: the platform's."""
    cache = tmp_path / "cache-platform"
    cache.mkdir(exist_ok=True)
    env = repository_env(s3, "unused", cache)
    env.update({"RESTIC_REPOSITORY": gateway.direct_repository(user), "RSPARK_SNAPSHOT_HOST": HOST})
    return Repo(s3, f"{gateway.prefix}/{user}", env, tmp_path)


def raw(gateway: Gateway, method: str, path: str, login: str, data: bytes | None = None) -> int:
    """One request of restic's REST protocol as `login`, its HTTP status."""
    token = base64.b64encode(f"{login}:{gateway.users[login]}".encode()).decode()
    request = urllib.request.Request(
        gateway.url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_workspace_snapshots_and_restores_through_the_gateway(
    s3: S3Server, gateway: Gateway, tmp_path: Path
) -> None:
    alice = through(s3, gateway, tmp_path, ALICE)
    home, target = tmp_path / "home", tmp_path / "restored"
    home.mkdir()
    target.mkdir()
    write_tree(home)

    alice.agent("snapshot", "--home", str(home), check=True)
    alice.agent("restore", "--home", str(target), check=True)

    assert contents(target) == contents(home, STANDALONE_SKIP)
    # Stored where the gateway keeps alice's repositories, and nowhere else.
    assert any(key.endswith("/config") for key in alice.objects())
    assert all(
        key.startswith(f"{gateway.prefix}/{ALICE}/") for key in s3.objects("rspark", gateway.prefix)
    )


def test_a_credential_reaches_only_its_own_repository(
    s3: S3Server, gateway: Gateway, tmp_path: Path
) -> None:
    bob = through(s3, gateway, tmp_path, BOB)
    bob_home = make_home(tmp_path, {"thesis.R": "bob's work"}, name="bob-home")
    bob.agent("snapshot", "--home", str(bob_home), check=True)
    stored = bob.objects()
    alice_as_bob = through(s3, gateway, tmp_path, BOB, login=ALICE)
    alice_home = make_home(tmp_path, {"steal.R": "x"}, name="alice-home")

    listing = alice_as_bob.restic("snapshots", "--json", "--no-lock", check=False)
    backup = alice_as_bob.restic("backup", str(alice_home), "--json", check=False)
    init = through(s3, gateway, tmp_path, f"{BOB}-new", login=ALICE).restic("init", check=False)

    for refused in (listing, backup, init):
        assert refused.returncode != 0
        assert "403" in refused.stderr or "Forbidden" in refused.stderr, refused.stderr
    config_key = next(key for key in stored if key.endswith("/config"))
    config_path = "/" + config_key.removeprefix(f"{gateway.prefix}/")
    assert raw(gateway, "GET", config_path, ALICE) == 403
    assert raw(gateway, "GET", config_path, BOB) == 200
    assert raw(gateway, "POST", f"/{BOB}/keys/{'0' * 64}", ALICE, b"key") == 403
    assert bob.objects() == stored


def test_a_workspace_cannot_erase_its_history(
    s3: S3Server, gateway: Gateway, tmp_path: Path
) -> None:
    alice = through(s3, gateway, tmp_path, ALICE)
    home = make_home(tmp_path, {"a.R": "one"})
    alice.agent("snapshot", "--home", str(home), check=True)
    (home / "a.R").write_text("two")
    alice.agent("snapshot", "--home", str(home), check=True)
    first, second = alice.snapshots()[::-1]
    stored = alice.objects()

    forget = alice.restic("forget", "--keep-last", "1", "--prune", check=False)
    forget_one = alice.restic("forget", first["id"], check=False)
    retention = alice.agent("forget", check=False, RSPARK_RETENTION='{"keepLast": 1}')

    # restic reports a snapshot it could not remove and exits 0 (`forget ID`); what
    # counts is that the gateway refused and every snapshot is still there.
    assert forget.returncode != 0 and retention.returncode != 0
    for refused in (forget, forget_one, retention):
        assert "403" in refused.stderr or "Forbidden" in refused.stderr, refused.stderr
    snapshot_key = next(key for key in stored if f"/snapshots/{first['id']}" in key)
    snapshot_path = "/" + snapshot_key.removeprefix(f"{gateway.prefix}/")
    assert raw(gateway, "DELETE", snapshot_path, ALICE) == 403
    assert raw(gateway, "POST", snapshot_path, ALICE, b"overwritten") == 403
    assert [s["id"] for s in alice.snapshots()] == [second["id"], first["id"]]
    assert set(stored) <= set(alice.objects())


def test_retention_prunes_with_the_bucket_key_and_the_workspace_goes_on(
    s3: S3Server, gateway: Gateway, tmp_path: Path
) -> None:
    alice = through(s3, gateway, tmp_path, ALICE)
    home = make_home(tmp_path, {"a.R": "one"})
    for text in ("one", "two", "three"):
        (home / "a.R").write_text(text * 10_000)
        alice.agent("snapshot", "--home", str(home), check=True)
    assert len(alice.snapshots()) == 3
    platform = direct(s3, gateway, tmp_path, ALICE)

    platform.agent("forget", check=True, RSPARK_RETENTION=json.dumps({"keepLast": 1}))

    assert len(alice.snapshots()) == 1
    (home / "a.R").write_text("four")
    alice.agent("snapshot", "--home", str(home), check=True)
    target = tmp_path / "restored"
    target.mkdir()
    alice.agent("restore", "--home", str(target), check=True)
    assert (target / "a.R").read_text() == "four"
    platform.restic("check")


def test_a_new_credential_works_without_restarting_the_gateway(
    s3: S3Server, gateway: Gateway, tmp_path: Path
) -> None:
    carol = gateway_user("team-b", "carol")
    gateway.add_user(carol)
    home = make_home(tmp_path, {"a.R": "carol"})

    through(s3, gateway, tmp_path, carol).agent("snapshot", "--home", str(home), check=True)

    assert gateway.process is not None and gateway.process.poll() is None
