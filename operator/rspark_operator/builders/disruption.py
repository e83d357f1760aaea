"""The workspace pod's PodDisruptionBudget: evictions wait for a cordon.

A workspace pod is a bare pod: without a budget, any eviction (a descheduler
rebalancing, an autoscaler packing nodes) would end the user's session whenever it
comes. The budget refuses the eviction of the Ready pod, except once its node is
cordoned (a drain): the operator then labels the pod `names.DRAIN_LABEL`, which
takes it out of the budget's selector (`lifecycle.decide_pod`, `PodAction.RELEASE`),
so the drain's next try evicts it. An eviction is a graceful deletion (the pod's
own grace period unless the drain sets one): the IDE stops cleanly and the agent
takes the last snapshot; once the pod is gone the operator starts the next one on
another node.

Why the operator does not delete the pod itself: `kubectl drain` retries a refused
eviction by the pod's name, and the next pod has the same name. It would find the
new pod on its new node and be refused forever (or evict it, while it starts).

`minAvailable: 1`, not `maxUnavailable: 0`: Kubernetes computes a `maxUnavailable`
from the scale of the pod's controller, and a workspace has no scale subresource.
A pod that is not Ready (starting, restoring, failing) may always be evicted
(`AlwaysAllow`): a broken session never holds a node.
"""

from __future__ import annotations

from rspark_operator import names
from rspark_operator.api import Workspace
from rspark_operator.builders.metadata import Manifest, child, workspace_pod_selector


def build_disruption_budget(ws: Workspace) -> Manifest:
    budget = child(ws, "policy/v1", "PodDisruptionBudget", names.disruption_budget_name(ws.name))
    budget["spec"] = {
        "minAvailable": 1,
        "selector": {
            "matchLabels": workspace_pod_selector(ws),
            "matchExpressions": [{"key": names.DRAIN_LABEL, "operator": "DoesNotExist"}],
        },
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    return budget
