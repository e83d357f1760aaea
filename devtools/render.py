"""What the operator would create for each sample workspace, as YAML, for the scanners.

`python -m devtools.render DIR` writes DIR/<sample>.yaml: every child, the pod and
the passwords Secret (placeholder passwords) of each workspace of
manifests/samples, in namespace `team-a`, with the operator's default settings
(plus a snapshot repository base, and example.com allowed for hosts); and
DIR/<sample>-signin.yaml, the same with sign-in through an identity provider
(the sign-in proxy in each pod).
hack/lint-manifests.sh scans them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from devtools.localcluster import ROOT
from rspark_operator.api import KIND
from rspark_operator.builders import build_children, build_passwords_secret, build_pod
from rspark_operator.settings import OperatorSettings
from rspark_operator.validation import parse_workspace

SAMPLES = ROOT / "manifests" / "samples"
NAMESPACE = "team-a"
SETTINGS = OperatorSettings(
    snapshot_repository_base="s3:https://s3.example.com/rspark",
    allowed_ingress_domains=["example.com"],  # path-prefix.yaml chooses its host
)

SIGNIN_SETTINGS = OperatorSettings(
    **SETTINGS.model_dump(exclude_unset=True),
    signin="oidc",
    oidc_issuer_url="https://login.example.com/realms/rspark",
    oidc_client_id="rspark-workspaces",
)


def render(sample: Path, settings: OperatorSettings = SETTINGS) -> list[dict[str, Any]]:
    """Every workspace of the sample file, rendered (other kinds, such as the
    SparkProfiles of sparkprofiles.yaml, are not the operator's output)."""
    rendered: list[dict[str, Any]] = []
    for body in yaml.safe_load_all(sample.read_text()):
        if not body or body.get("kind") != KIND:
            continue
        body["metadata"] |= {"namespace": NAMESPACE, "uid": "00000000-0000-0000-0000-000000000000"}
        ws = parse_workspace(body, settings)
        rendered += [
            *build_children(ws, settings),
            build_passwords_secret(ws, "placeholder", "placeholder"),
            build_pod(ws, settings),
        ]
    return rendered


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for sample in sorted(SAMPLES.glob("*.yaml")):
        for suffix, settings in (("", SETTINGS), ("-signin", SIGNIN_SETTINGS)):
            rendered = render(sample, settings)
            if rendered:
                name = f"{sample.stem}{suffix}.yaml"
                (out / name).write_text(yaml.safe_dump_all(rendered, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
