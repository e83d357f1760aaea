"""The workspace pod's PodDisruptionBudget: evictions are refused, the operator moves it.

A workspace pod is a bare pod: an eviction (`kubectl drain`, a node upgrade, the
cluster autoscaler, a descheduler) would end the user's session whenever it comes,
with the grace period the evicting tool chose. The budget refuses every eviction of
a Ready workspace pod, and the operator moves the pod off a cordoned node itself
(`lifecycle.decide_pod`): a graceful deletion with the pod's own grace period, so the
agent takes the last snapshot, then a new pod on another node. The drain then finds
the node empty and completes.

`minAvailable: 1`, not `maxUnavailable: 0`: Kubernetes computes a `maxUnavailable`
from the scale of the pod's controller, and a workspace has no scale subresource,
so such a budget would never be satisfied (nor ever allow). A pod that is not Ready
(starting, restoring, failing) may always be evicted (`AlwaysAllow`): a broken
session must never hold a node, and an eviction still stops it gracefully.
"""

from __future__ import annotations

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.metadata import Manifest, child, workspace_pod_selector


def build_disruption_budget(ws: Workspace) -> Manifest:
    budget = child(ws, "policy/v1", "PodDisruptionBudget", names.disruption_budget_name(ws.name))
    budget["spec"] = {
        "minAvailable": 1,
        "selector": {"matchLabels": workspace_pod_selector(ws)},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    return budget
