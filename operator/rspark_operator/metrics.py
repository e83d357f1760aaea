"""The operator's Prometheus metrics (served on RSPARK_METRICS_ADDRESS when set).

rspark_operator_reconcile_duration_seconds{kind}   full reconciles and status refreshes
rspark_operator_reconcile_errors_total{failure}    failed reconciles, by cluster.Failure
rspark_operator_queue_workspaces                   workspaces in the resync queue
rspark_operator_queue_due_workspaces               of those, due now (the backlog)
rspark_operator_rollout_pods                       pods being replaced by the rollout
rspark_operator_workspaces{phase}                  workspaces by the phase last computed
rspark_operator_api_requests_total{verb,code}      API calls by HTTP verb and status (0: none)
rspark_operator_idle_events_total{event}           idle stops, volumes released, wakes
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

Key = tuple[str, str]
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Phases(Collector):
    """Workspaces by phase, from the last status of each."""

    # Named as prometheus_client names its metrics' (read by devtools/reference.py).
    _name = "rspark_operator_workspaces"
    _labelnames = ("phase",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phase: dict[Key, str] = {}

    def set(self, key: Key, phase: str) -> None:
        with self._lock:
            self._phase[key] = phase

    def forget(self, key: Key) -> None:
        with self._lock:
            self._phase.pop(key, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            tally = Tally(self._phase.values())
        family = GaugeMetricFamily(
            self._name, "Workspaces by phase, as last computed.", labels=list(self._labelnames)
        )
        for phase, count in sorted(tally.items()):
            family.add_metric([phase], count)
        yield family


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_duration = Histogram(
            "rspark_operator_reconcile_duration_seconds",
            "Duration of reconciles: full (children applied) or refresh (status only).",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "rspark_operator_reconcile_errors",
            "Reconciles that failed, by the failure of the API call (or 'exception').",
            ["failure"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "rspark_operator_api_requests",
            "Calls to the API server by HTTP verb and status code (0: no answer).",
            ["verb", "code"],
            registry=self.registry,
        )
        self.idle_events = Counter(
            "rspark_operator_idle_events",
            "Idle workspaces stopped (IdleStopping), their volumes released (VolumeReleased) "
            "and woken (Woken).",
            ["event"],
            registry=self.registry,
        )
        self.phases = _Phases()
        self.registry.register(self.phases)
        # Read when scraped: main() points each at its source with set_function.
        self.queue_workspaces = Gauge(
            "rspark_operator_queue_workspaces",
            "Workspaces in the resync queue.",
            registry=self.registry,
        )
        self.queue_due_workspaces = Gauge(
            "rspark_operator_queue_due_workspaces",
            "Workspaces due for a reconcile now (the backlog).",
            registry=self.registry,
        )
        self.rollout_pods = Gauge(
            "rspark_operator_rollout_pods", "Pods the rollout is replacing.", registry=self.registry
        )

    def api_call(self, verb: str, code: int) -> None:
        self.api_requests.labels(verb, str(code)).inc()

    def serve(self, address: str) -> None:
        """Serve /metrics on `address` ("host:port") in a thread of its own."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
