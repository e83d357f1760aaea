"""What the operator would create for each sample workspace, as YAML, for the scanners.

`python -m devtools.render DIR` writes DIR/<sample>.yaml: every child, the pod and
the passwords Secret (placeholder passwords) of each workspace of
manifests/samples, in namespace `team-a`, with the operator's default settings
(plus a snapshot repository base, and example.com allowed for hosts).
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


def render(sample: Path) -> list[dict[str, Any]]:
    """Every workspace of the sample file, rendered (other kinds, such as the
    SparkProfiles of sparkprofiles.yaml, are not the operator's output)."""
    rendered: list[dict[str, Any]] = []
    for body in yaml.safe_load_all(sample.read_text()):
        if not body or body.get("kind") != KIND:
            continue
        body["metadata"] |= {"namespace": NAMESPACE, "uid": "00000000-0000-0000-0000-000000000000"}
        ws = parse_workspace(body, SETTINGS)
        rendered += [
            *build_children(ws, SETTINGS),
            build_passwords_secret(ws, "placeholder", "placeholder"),
            build_pod(ws, SETTINGS),
        ]
    return rendered


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for sample in sorted(SAMPLES.glob("*.yaml")):
        rendered = render(sample)
        if rendered:
            (out / sample.name).write_text(yaml.safe_dump_all(rendered, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
