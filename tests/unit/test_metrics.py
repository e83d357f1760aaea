"""The operator's metrics as Prometheus scrapes them."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from rspark_operator.metrics import OperatorMetrics

pytestmark = pytest.mark.unit


def test_metrics_render() -> None:
    metrics = OperatorMetrics()
    metrics.api_call("PATCH", 200)
    metrics.api_call("PATCH", 200)
    metrics.api_call("GET", 0)
    metrics.reconcile_duration.labels("full").observe(0.2)
    metrics.reconcile_errors.labels("unavailable").inc()
    metrics.phases.set(("team", "a"), "Running")
    metrics.phases.set(("team", "b"), "Running")
    metrics.phases.set(("team", "c"), "Pending")
    metrics.phases.forget(("team", "c"))
    metrics.queue_workspaces.set_function(lambda: 7)
    text = generate_latest(metrics.registry).decode()
    assert 'rspark_operator_api_requests_total{code="200",verb="PATCH"} 2.0' in text
    assert 'rspark_operator_api_requests_total{code="0",verb="GET"} 1.0' in text
    assert 'rspark_operator_reconcile_duration_seconds_count{kind="full"} 1.0' in text
    assert 'rspark_operator_reconcile_errors_total{failure="unavailable"} 1.0' in text
    assert 'rspark_operator_workspaces{phase="Running"} 2.0' in text
    assert 'phase="Pending"' not in text
    assert "rspark_operator_queue_workspaces 7.0" in text
