"""The local cluster's Spark Connect server (devtools/connect.py): where it runs and
that a `connect` SparkProfile accepts its endpoint."""

from __future__ import annotations

import re

from devtools.connect import ENDPOINT, NAMESPACE, PORT, connect_manifests
from devtools.network import REAL_NODE_LABEL, REAL_NODE_VALUE
from rspark_operator.profiles import CONNECT_ENDPOINT_PATTERN


def test_the_server_runs_on_a_real_node_behind_its_endpoint() -> None:
    namespace, deployment, service = connect_manifests("registry/rspark/spark-connect:tag")
    assert namespace["metadata"]["name"] == NAMESPACE
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {REAL_NODE_LABEL: REAL_NODE_VALUE}
    assert [t["key"] for t in pod["tolerations"]] == [REAL_NODE_LABEL]
    (container,) = pod["containers"]
    assert f"spark.connect.grpc.binding.port={PORT}" in container["args"]
    assert service["spec"]["ports"] == [{"name": "grpc", "port": PORT}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert f"sc://{service['metadata']['name']}.{NAMESPACE}.svc:{PORT}" == ENDPOINT
    assert re.match(CONNECT_ENDPOINT_PATTERN, ENDPOINT)
