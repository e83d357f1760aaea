"""Pure builders: a validated Workspace and the settings in, plain manifests out.

No I/O, no clock, no randomness: the same input always gives the same objects.
"""

from rspark_operator.builders.children import build_children, build_password_secret
from rspark_operator.builders.network import workspace_url
from rspark_operator.builders.pod import build_pod, pod_spec_hash, snapshot_repository

__all__ = [
    "build_children",
    "build_password_secret",
    "build_pod",
    "pod_spec_hash",
    "snapshot_repository",
    "workspace_url",
]
