"""Pure builders: a validated Workspace and the settings in, plain manifests out.

No I/O, no clock, no randomness: the same input always gives the same objects.
"""

from rspark_operator.builders.children import (
    build_children,
    build_gateway_credential_secret,
    build_gateway_users_secret,
    build_passwords_secret,
    settle_home_claim,
)
from rspark_operator.builders.network import build_ingress
from rspark_operator.builders.pod import (
    build_pod,
    pod_spec_hash,
    snapshot_repository,
    through_gateway,
)
from rspark_operator.builders.url import workspace_url

__all__ = [
    "build_children",
    "build_gateway_credential_secret",
    "build_gateway_users_secret",
    "build_ingress",
    "build_passwords_secret",
    "build_pod",
    "pod_spec_hash",
    "settle_home_claim",
    "snapshot_repository",
    "through_gateway",
    "workspace_url",
]
