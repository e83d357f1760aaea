"""Keycloak, the local cluster's identity provider, for the tests and targets that sign in.

Keycloak's Quarkus distribution (`org.keycloak:keycloak-quarkus-dist`, from Maven
Central with `mvn`, unpacked once under ~/.cache/rspark-operator/keycloak) runs on
Debian's JDK 17 in development mode: an in-memory database and the realm `rspark`
imported at every start (static users alice and bob, both in the group
`data-science`, and the client the workspaces' sign-in proxies use). It listens on
the bridge address, which the host, the pods and the host's browser all reach under
one issuer URL.

Not one of the cluster's supervised services (devtools/services.py): it takes
about half a GiB of memory and most of a minute of both cores to start, so only
what signs in starts it (`KeycloakProcess`, or `python -m devtools.keycloak` in the
foreground). The render functions are pure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from devtools.network import HOST_ADDRESS
from devtools.services import answers, cache_dir

VERSION = "26.7.3"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{VERSION}:zip"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
PORT = 8180
REALM = "rspark"


def issuer_url(address: str = HOST_ADDRESS) -> str:
    return f"http://{address}:{PORT}/realms/{REALM}"


# Where the local cluster's pods and this machine's browser both reach it.
ISSUER_URL = issuer_url()
CLIENT_ID = "rspark-workspaces"
# A development realm's client secret: the realm lives in memory on a local address.
CLIENT_SECRET = "rspark-local-client-secret"
GROUP = "data-science"
START_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Person:
    username: str
    password: str
    first_name: str

    @property
    def email(self) -> str:
        return f"{self.username}@example.org"


ALICE = Person("alice", "alice-password", "Alice")
BOB = Person("bob", "bob-password", "Bob")
PEOPLE = (ALICE, BOB)


def home() -> Path:
    return cache_dir() / "keycloak" / f"keycloak-{VERSION}"


def _user(person: Person) -> dict[str, Any]:
    return {
        "username": person.username,
        "email": person.email,
        "emailVerified": True,
        "enabled": True,
        "firstName": person.first_name,
        "lastName": "Example",
        "credentials": [{"type": "password", "value": person.password, "temporary": False}],
        "groups": [f"/{GROUP}"],
    }


def realm() -> dict[str, Any]:
    """The realm imported at start: the people, their group, the workspaces' client.

    The client accepts any http redirect (a workspace URL followed by oauth2/callback,
    on whatever port the local ingress listens) and sends the groups in the ID token."""
    groups_mapper = {
        "name": "groups",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-group-membership-mapper",
        "config": {
            "claim.name": "groups",
            "full.path": "false",
            "id.token.claim": "true",
            "access.token.claim": "true",
            "userinfo.token.claim": "true",
        },
    }
    client = {
        "clientId": CLIENT_ID,
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": False,
        "secret": CLIENT_SECRET,
        "standardFlowEnabled": True,
        "directAccessGrantsEnabled": False,
        "redirectUris": ["http://*"],
        "webOrigins": ["+"],
        "attributes": {"pkce.code.challenge.method": "S256", "post.logout.redirect.uris": "+"},
        "protocolMappers": [groups_mapper],
    }
    return {
        "realm": REALM,
        "enabled": True,
        "sslRequired": "none",
        "groups": [{"name": GROUP}],
        "users": [_user(person) for person in PEOPLE],
        "clients": [client],
    }


def arguments(address: str = HOST_ADDRESS) -> list[str]:
    """`kc.sh` in development mode on `address` (the bridge's, for the cluster), the
    realm imported at start."""
    return [
        "start-dev",
        "--import-realm",
        "--db=dev-mem",
        f"--http-host={address}",
        f"--http-port={PORT}",
        f"--hostname=http://{address}:{PORT}",
        "--health-enabled=false",
        "--log-console-output=default",
    ]


def logout_url(redirect: str, issuer: str = ISSUER_URL) -> str:
    """The provider's end of session, then back to `redirect` (RP-initiated logout)."""
    query = urllib.parse.urlencode({"client_id": CLIENT_ID, "post_logout_redirect_uri": redirect})
    return f"{issuer}/protocol/openid-connect/logout?{query}"


def install() -> Path:
    """The distribution, unpacked once under the cache (mvn fetches the zip)."""
    target = home()
    if (target / ".complete").exists():
        return target
    repository = cache_dir() / "keycloak" / "m2"
    downloads = cache_dir() / "keycloak" / "downloads"
    subprocess.run(
        ["mvn", "--batch-mode", "--quiet", f"{DEPENDENCY_PLUGIN}:copy",
         f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={downloads}",
         f"-Dmaven.repo.local={repository}"],
        check=True,
    )  # fmt: skip
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(downloads / f"keycloak-quarkus-dist-{VERSION}.zip") as archive:
        archive.extractall(target.parent)
    for script in (target / "bin").glob("*.sh"):
        script.chmod(0o755)
    (target / ".complete").touch()
    return target


def write_realm(keycloak: Path) -> None:
    """Where `--import-realm` reads it: the distribution's data/import."""
    imports = keycloak / "data" / "import"
    imports.mkdir(parents=True, exist_ok=True)
    (imports / f"{REALM}-realm.json").write_text(json.dumps(realm(), indent=2))


def ready(issuer: str) -> bool:
    return answers(f"{issuer}/.well-known/openid-configuration")


class KeycloakProcess:
    """Keycloak as a child process, ready once its realm's discovery document answers."""

    def __init__(self, log_path: Path, address: str = HOST_ADDRESS) -> None:
        self.log_path = log_path
        self.address = address
        self.issuer = issuer_url(address)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file: IO[bytes] | None = None
        self.start_seconds = 0.0

    def start(self) -> None:
        keycloak = install()
        write_realm(keycloak)
        if ready(self.issuer):
            raise RuntimeError(f"something already answers at {self.issuer}")
        started = time.monotonic()
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(keycloak / "bin" / "kc.sh"), *arguments(self.address)],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = started + START_TIMEOUT_SECONDS
        while not ready(self.issuer):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Keycloak did not start: see {self.log_path}")
            time.sleep(1)
        self.start_seconds = time.monotonic() - started

    def rss_mb(self) -> float:
        """Resident memory of kc.sh and its JVM, in MB."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pages = sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) for p in [pid, *children])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def measured(self) -> str:
        """Its start time and memory, as the tests report them."""
        memory = f"{self.rss_mb():.0f} MB resident"
        return f"Keycloak {VERSION} ready in {self.start_seconds:.0f} s, {memory}"

    def stop(self) -> None:
        """kc.sh and the JVM it starts: their own process group."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
            self.process = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


def main() -> None:
    """Keycloak in the foreground until Ctrl-C (the local cluster must be up: its bridge)."""
    log = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".local/logs/keycloak.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    process = KeycloakProcess(log)
    process.start()
    print(
        f"{process.measured()}: issuer {ISSUER_URL}, client {CLIENT_ID}, users "
        + ", ".join(f"{person.username}/{person.password}" for person in PEOPLE),
        flush=True,
    )
    try:
        assert process.process is not None
        process.process.wait()
    except KeyboardInterrupt:
        process.stop()


if __name__ == "__main__":
    main()
