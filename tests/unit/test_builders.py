"""The builders: what a workspace becomes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from rspark_operator.builders import (
    build_children,
    build_passwords_secret,
    build_pod,
    pod_spec_hash,
    settle_home_claim,
    workspace_url,
)
from rspark_operator.names import POD_SPEC_HASH_ANNOTATION, label_safe
from tests.unit.workspaces import REPOSITORY_BASE, settings, workspace

pytestmark = pytest.mark.unit

Manifest = dict[str, Any]


def by_kind(manifests: list[Manifest]) -> dict[str, list[Manifest]]:
    kinds: dict[str, list[Manifest]] = {}
    for manifest in manifests:
        kinds.setdefault(manifest["kind"], []).append(manifest)
    return kinds


# What outlives the workspace (with its snapshots): the key to them and the secret paths.
KEPT = {"demo-passwords", "demo-home-secrets"}


def every_child() -> list[Manifest]:
    ws = workspace()
    return [
        *build_children(ws, settings()),
        build_pod(ws, settings()),
        build_passwords_secret(ws, "pw", "rpw"),
    ]


def container(pod: Manifest, name: str) -> Manifest:
    spec = pod["spec"]
    return next(
        c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name
    )


def env_of(container_: Manifest) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container_["env"]}


def spark_defaults(**spec: Any) -> dict[str, str]:
    (config_map,) = by_kind(build_children(workspace(**spec), settings()))["ConfigMap"]
    lines = config_map["data"]["spark-defaults.conf"].splitlines()
    return dict(line.split(" ", 1) for line in lines)


def test_children_come_in_apply_order() -> None:
    kinds = [child["kind"] for child in build_children(workspace(), settings())]
    assert kinds == [
        "ServiceAccount",
        "ServiceAccount",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Secret",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "Ingress",
        "NetworkPolicy",
        "NetworkPolicy",
    ]


@pytest.mark.parametrize(
    "child", every_child(), ids=lambda c: f"{c['kind']}/{c['metadata']['name']}"
)
def test_every_child_is_owned_labelled_and_namespaced(child: Manifest) -> None:
    metadata = child["metadata"]
    assert metadata["namespace"] == "team"
    if metadata["name"] in KEPT:
        assert "ownerReferences" not in metadata
    else:
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "rspark.dev/v1alpha1",
                "kind": "RStudioWorkspace",
                "name": "demo",
                "uid": "0a1b2c3d-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert (
        metadata["labels"].items()
        >= {
            "app.kubernetes.io/managed-by": "rspark-operator",
            "rspark.dev/workspace": "demo",
            "rspark.dev/user": label_safe("alice@example.com"),
        }.items()
    )


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", "alice"),
        ("alice.smith_2", "alice.smith_2"),
        ("Alice@Example.com", "alice-example.com-"),
        ("@@@", ""),
        ("x" * 80, "x" * 54 + "-"),
    ],
)
def test_label_safe_user(user: str, expected: str) -> None:
    value = label_safe(user)
    assert value.startswith(expected)
    assert len(value) <= 63
    assert value[0].isalnum() and value[-1].isalnum()


def test_label_safe_keeps_distinct_users_distinct() -> None:
    assert label_safe("Alice@example.com") != label_safe("alice@example.com")


def test_children_names_derive_from_the_workspace_name() -> None:
    names = {(c["kind"], c["metadata"]["name"]) for c in every_child()}
    assert names == {
        ("ServiceAccount", "demo-rspark-ide"),
        ("ServiceAccount", "demo-rspark-agent"),
        ("ServiceAccount", "demo-rspark-executor"),
        ("Role", "demo-rspark-ide"),
        ("RoleBinding", "demo-rspark-ide"),
        ("Role", "demo-rspark-agent"),
        ("RoleBinding", "demo-rspark-agent"),
        ("Secret", "demo-rspark-agent-token"),
        ("ConfigMap", "demo-spark"),
        ("PersistentVolumeClaim", "demo-home"),
        ("Secret", "demo-home-secrets"),
        ("Secret", "demo-passwords"),
        ("Service", "demo-rstudio"),
        ("Service", "demo-spark-driver"),
        ("Ingress", "demo"),
        ("NetworkPolicy", "demo"),
        ("NetworkPolicy", "demo-egress"),
        ("PodDisruptionBudget", "demo"),
        ("Pod", "demo"),
    }


def test_roles_split_spark_from_the_agent_limited_to_its_own_objects() -> None:
    roles = {
        r["metadata"]["name"]: r for r in by_kind(build_children(workspace(), settings()))["Role"]
    }

    def named(role: Manifest) -> dict[tuple[str, str], list[str] | None]:
        return {
            (rule["apiGroups"][0], resource): rule.get("resourceNames")
            for rule in role["rules"]
            for resource in rule["resources"]
        }

    assert named(roles["demo-rspark-ide"]) == {("", "pods"): None, ("", "configmaps"): None}
    assert named(roles["demo-rspark-agent"]) == {
        ("rspark.dev", "rstudioworkspaces"): ["demo"],
        ("rspark.dev", "rstudioworkspaces/status"): ["demo"],
        ("", "secrets"): ["demo-home-secrets"],
    }


def test_spark_defaults_wire_client_mode_to_this_pod() -> None:
    conf = spark_defaults()
    assert (
        conf.items()
        >= {
            "spark.master": "k8s://https://kubernetes.default.svc",
            "spark.submit.deployMode": "client",
            "spark.driver.host": "demo-spark-driver.team.svc",
            "spark.driver.port": "7078",
            "spark.blockManager.port": "7082",
            "spark.ui.port": "4040",
            "spark.port.maxRetries": "3",
            "spark.driver.bindAddress": "0.0.0.0",
            "spark.kubernetes.namespace": "team",
            "spark.kubernetes.authenticate.driver.serviceAccountName": "demo-rspark-ide",
            "spark.kubernetes.authenticate.executor.serviceAccountName": "demo-rspark-executor",
            "spark.kubernetes.driver.pod.name": "demo",
            "spark.kubernetes.executor.podNamePrefix": "demo",
            "spark.kubernetes.container.image": settings().spark_executor_image,
            "spark.dynamicAllocation.enabled": "true",
            "spark.dynamicAllocation.shuffleTracking.enabled": "true",
            "spark.dynamicAllocation.maxExecutors": "4",
            "spark.authenticate": "true",
            # Nothing for Spark to delete at its stop that the IDE's Role refuses.
            "spark.kubernetes.driver.service.deleteOnTermination": "false",
            "spark.kubernetes.driver.ownPersistentVolumeClaim": "false",
        }.items()
    )
    assert "spark.executor.cores" not in conf


@pytest.mark.parametrize(
    ("spark", "expected"),
    [
        (
            {"executorCores": 2, "executorMemory": "2Gi"},
            {"spark.executor.cores": "2", "spark.executor.memory": "2048m"},
        ),
        ({"executorMemory": "1500M"}, {"spark.executor.memory": "1500m"}),
        ({"executorMemory": "4g"}, {"spark.executor.memory": "4096m"}),
        ({"driverMemory": "1.5g"}, {"spark.driver.memory": "1536m"}),
        ({"maxExecutors": 1}, {"spark.dynamicAllocation.maxExecutors": "1"}),
        ({"executorImage": "spark:exec"}, {"spark.kubernetes.container.image": "spark:exec"}),
        ({"conf": {"spark.sql.shuffle.partitions": "8"}}, {"spark.sql.shuffle.partitions": "8"}),
        (
            {"maxExecutors": 2, "conf": {"spark.dynamicAllocation.maxExecutors": "9"}},
            {"spark.dynamicAllocation.maxExecutors": "9"},
        ),
    ],
)
def test_spark_defaults_follow_the_spec_and_user_conf_wins(
    spark: dict[str, Any], expected: dict[str, str]
) -> None:
    assert spark_defaults(spark=spark).items() >= expected.items()


def test_spark_defaults_are_sorted() -> None:
    (config_map,) = by_kind(build_children(workspace(), settings()))["ConfigMap"]
    lines = config_map["data"]["spark-defaults.conf"].splitlines()
    assert lines == sorted(lines)


def test_services_select_only_the_workspace_pod() -> None:
    rstudio, driver = by_kind(build_children(workspace(), settings()))["Service"]
    pod_labels = build_pod(workspace(), settings())["metadata"]["labels"]
    for service in (rstudio, driver):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "rstudio"
    assert [p["port"] for p in rstudio["spec"]["ports"]] == [8787]
    assert driver["spec"]["clusterIP"] == "None"
    assert driver["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in driver["spec"]["ports"]] == [
        *range(7078, 7082),
        *range(7082, 7086),
        *range(4040, 4044),
    ]


@pytest.mark.parametrize(
    ("settings_overrides", "ingress_spec", "host", "path", "url", "root_path"),
    [
        ({}, {}, "demo-team.rspark.localhost", "/", "http://demo-team.rspark.localhost/", None),
        (
            {"ingress_tls_secret": "wildcard", "ingress_class": "nginx"},
            {},
            "demo-team.rspark.localhost",
            "/",
            "https://demo-team.rspark.localhost/",
            None,
        ),
        (
            {"ingress_mode": "path"},
            {},
            "rspark.localhost",
            "/team/demo(/|$)(.*)",
            "http://rspark.localhost/team/demo/",
            "/team/demo/",
        ),
        (
            {},
            {"host": "alice.example.org", "path": "/rstudio"},
            "alice.example.org",
            "/rstudio(/|$)(.*)",
            "http://alice.example.org/rstudio/",
            "/rstudio/",
        ),
    ],
)
def test_ingress_in_host_and_path_modes(
    settings_overrides: dict[str, Any],
    ingress_spec: dict[str, Any],
    host: str,
    path: str,
    url: str,
    root_path: str | None,
) -> None:
    ws, config = workspace(ingress=ingress_spec), settings(**settings_overrides)
    (ingress,) = by_kind(build_children(ws, config))["Ingress"]
    (rule,) = ingress["spec"]["rules"]
    (http_path,) = rule["http"]["paths"]
    assert rule["host"] == host
    assert http_path["path"] == path
    assert http_path["backend"]["service"] == {"name": "demo-rstudio", "port": {"number": 8787}}
    assert workspace_url(ws, config) == url
    annotations = ingress["metadata"]["annotations"]
    # No configuration snippet (ingress-nginx refuses them by default): RStudio is told
    # its root path through the pod, and the Ingress strips it.
    assert not any(key.endswith("configuration-snippet") for key in annotations)
    rewrite = annotations.get("nginx.ingress.kubernetes.io/rewrite-target")
    assert rewrite == ("/$2" if root_path else None)
    ide_env = env_of(container(build_pod(ws, config), "ide"))
    assert ide_env.get("RSPARK_WWW_ROOT_PATH") == root_path
    assert ("tls" in ingress["spec"]) == url.startswith("https")
    assert ingress["spec"].get("ingressClassName") == config.ingress_class


def test_pod_runs_the_agent_as_a_native_sidecar_gating_rstudio() -> None:
    pod = build_pod(workspace(), settings())
    (agent,) = pod["spec"]["initContainers"]
    assert agent["restartPolicy"] == "Always"
    assert agent["image"] == settings().agent_image
    assert agent["command"] == ["rspark-agent", "run", "--home", "/home/rstudio"]
    assert agent["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9090}]
    assert agent["volumeMounts"] == [
        {"name": "home", "mountPath": "/home/rstudio"},
        {
            "name": "agent-token",
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        },
        {"name": "agent-tmp", "mountPath": "/tmp"},
        {"name": "ide-runtime", "mountPath": "/run/rspark/jupyter", "readOnly": True},
    ]


def test_pod_ide_container() -> None:
    pod = build_pod(workspace(env=[{"name": "TZ", "value": "UTC"}]), settings())
    rstudio = container(pod, "ide")
    assert pod["spec"]["restartPolicy"] == "Always"
    assert pod["spec"]["serviceAccountName"] == "demo-rspark-ide"
    assert pod["spec"]["hostname"] == "demo"
    assert pod["spec"]["subdomain"] == "demo-spark-driver"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 120
    assert rstudio["image"] == settings().workspace_image
    assert rstudio["readinessProbe"]["httpGet"] == {"path": "/", "port": "http"}
    assert rstudio["lifecycle"]["preStop"]["exec"]["command"] == ["/usr/local/bin/rspark-prestop"]
    assert env_of(rstudio) == {
        "TZ": "UTC",
        "USER": "rstudio",
        "PASSWORD": {"secretKeyRef": {"name": "demo-passwords", "key": "rstudio-password"}},
        "SPARK_CONF_DIR": "/opt/spark/conf",
    }
    assert {m["mountPath"] for m in rstudio["volumeMounts"]} == {
        "/home/rstudio",
        "/opt/spark/conf",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/run/rspark/jupyter",
    }
    assert rstudio["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"memory": "4Gi"},
    }
    assert {v["name"]: v for v in pod["spec"]["volumes"]}["home"]["persistentVolumeClaim"] == {
        "claimName": "demo-home"
    }


def test_no_agent_when_snapshots_are_disabled() -> None:
    pod = build_pod(workspace(snapshot={"enabled": False}), settings())
    assert "initContainers" not in pod["spec"]


def test_agent_environment_contract() -> None:
    ws = workspace(
        snapshot={"exclude": ["*.tmp"], "restoreFrom": "0123abcd", "retention": {"keepLast": 3}},
        secretPaths=[".ssh", ".aws"],
    )
    env = env_of(container(build_pod(ws, settings()), "snapshot-agent"))
    assert env == {
        "RESTIC_REPOSITORY": f"{REPOSITORY_BASE}/team/demo",
        "RESTIC_PASSWORD": {"secretKeyRef": {"name": "demo-passwords", "key": "restic-password"}},
        "AWS_ACCESS_KEY_ID": {
            "secretKeyRef": {"name": "rspark-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}
        },
        "AWS_SECRET_ACCESS_KEY": {
            "secretKeyRef": {"name": "rspark-s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
        },
        "RSPARK_WORKSPACE": "team/demo",
        "RSPARK_SNAPSHOT_HOST": "team-demo",
        "RSPARK_SNAPSHOT_INTERVAL": "5m",
        "RSPARK_SNAPSHOT_EXCLUDE": '["*.tmp"]',
        "RSPARK_SECRET_PATHS": '[".ssh", ".aws"]',
        "RSPARK_RETENTION": json.dumps(
            {"keepLast": 3, "keepHourly": 24, "keepDaily": 7, "keepWeekly": 4}
        ),
        "RSPARK_RESTORE_FROM": "0123abcd",
        "RSPARK_METRICS_PORT": "9090",
        "RSPARK_IDLE_QUIET": "5m",
    }


def test_agent_uses_the_spec_repository_and_credentials_when_set() -> None:
    ws = workspace(
        snapshot={"repository": "s3:https://s3.example/b/alice", "credentialsSecret": "mine"}
    )
    env = env_of(container(build_pod(ws, settings()), "snapshot-agent"))
    assert env["RESTIC_REPOSITORY"] == "s3:https://s3.example/b/alice"
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "mine"
    assert "RSPARK_RESTORE_FROM" not in env


def test_pod_carries_the_hash_of_its_spec() -> None:
    pod = build_pod(workspace(), settings())
    assert pod["metadata"]["annotations"][POD_SPEC_HASH_ANNOTATION] == pod_spec_hash(pod)


def test_pod_spec_hash_ignores_key_order() -> None:
    pod = build_pod(workspace(), settings())
    reordered = {"spec": dict(reversed(list(pod["spec"].items())))}
    assert pod_spec_hash(reordered) == pod_spec_hash(pod)


def pod_hash(**spec: Any) -> str:
    return str(
        build_pod(workspace(**spec), settings())["metadata"]["annotations"][
            POD_SPEC_HASH_ANNOTATION
        ]
    )


@pytest.mark.parametrize(
    ("change", "restarts"),
    [
        ({"image": "rocker/rstudio:4.4.2"}, True),
        ({"ide": "jupyterlab"}, True),
        ({"ide": "rstudio"}, False),
        ({"resources": {"requests": {"cpu": "2"}}}, True),
        ({"env": [{"name": "TZ", "value": "UTC"}]}, True),
        ({"snapshot": {"enabled": False}}, True),
        ({"home": {"size": "20Gi"}}, False),
        ({"spark": {"maxExecutors": 10, "conf": {"spark.sql.adaptive.enabled": "true"}}}, False),
        ({"ingress": {"host": "alice.example.org"}}, False),
        ({"suspended": True}, False),
    ],
)
def test_pod_spec_hash_changes_only_with_the_pod(change: dict[str, Any], restarts: bool) -> None:
    assert (pod_hash(**change) != pod_hash()) is restarts


def test_passwords_secret_outlives_the_workspace() -> None:
    secret = build_passwords_secret(workspace(), "s3cret", "rst")
    assert secret["metadata"]["name"] == "demo-passwords"
    assert secret["stringData"] == {"restic-password": "s3cret", "rstudio-password": "rst"}
    # No owner: deleting the workspace keeps the key to its snapshots.
    assert "ownerReferences" not in secret["metadata"]
    assert secret["metadata"]["labels"]["rspark.dev/workspace"] == "demo"


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (None, {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}),
        (
            {"limits": {"cpu": "2"}},
            {"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi", "cpu": "2"}},
        ),
        (
            {"requests": {"memory": "8Gi"}},
            {"requests": {"cpu": "500m", "memory": "8Gi"}, "limits": {}},
        ),
        (
            {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
            {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        ),
    ],
)
def test_resource_defaults_fill_each_resource_left_unset(
    resources: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    ws = workspace() if resources is None else workspace(resources=resources)
    assert container(build_pod(ws, settings()), "ide")["resources"] == expected


def claim(size: str, storage_class: str | None = None) -> Manifest:
    spec: dict[str, Any] = {"resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"kind": "PersistentVolumeClaim", "spec": spec}


@pytest.mark.parametrize(
    ("desired", "existing", "expected"),
    [
        (claim("10Gi", "fast"), None, claim("10Gi", "fast")),
        (claim("20Gi", "fast"), claim("10Gi", "fast"), claim("20Gi", "fast")),
        # The operator's default class changed: the claim keeps its own.
        (claim("10Gi", "new"), claim("10Gi", "old"), claim("10Gi", "old")),
        # Grown by hand beyond the spec: never shrunk back.
        (claim("10Gi"), claim("50Gi", "standard"), claim("50Gi")),
    ],
)
def test_settle_home_claim_keeps_what_cannot_change(
    desired: Manifest, existing: Manifest | None, expected: Manifest
) -> None:
    assert settle_home_claim(desired, existing) == expected
    assert desired == claim(
        desired["spec"]["resources"]["requests"]["storage"], desired["spec"].get("storageClassName")
    ), "the desired claim is not modified in place"


def test_home_claim_and_secrets() -> None:
    kinds = by_kind(
        build_children(workspace(home={"size": "20Gi"}), settings(storage_class="fast"))
    )
    (claim,) = kinds["PersistentVolumeClaim"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    (home_secrets,) = [s for s in kinds["Secret"] if s["metadata"]["name"] == "demo-home-secrets"]
    assert "data" not in home_secrets  # the agent owns the data
    # Where the snapshots are, on the Secret that outlives the workspace.
    assert home_secrets["metadata"]["annotations"] == {
        "rspark.dev/snapshot-repository": "s3:http://s3.test:8333/rspark/team/demo",
        "rspark.dev/snapshot-credentials-secret": "rspark-s3-credentials",
    }
    unsnapshotted_kinds = by_kind(
        build_children(workspace(snapshot={"enabled": False}), settings())
    )
    (unsnapshotted,) = [
        s for s in unsnapshotted_kinds["Secret"] if s["metadata"]["name"] == "demo-home-secrets"
    ]
    assert "annotations" not in unsnapshotted["metadata"]


def test_builders_are_deterministic() -> None:
    assert every_child() == every_child()


def test_pod_leaves_a_failed_node_after_the_configured_time() -> None:
    pod = build_pod(workspace(), settings(node_failure_toleration_seconds=7))
    tolerations = {t["key"]: t for t in pod["spec"]["tolerations"]}
    assert set(tolerations) == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    assert all(
        t["effect"] == "NoExecute" and t["tolerationSeconds"] == 7 for t in tolerations.values()
    )


REAL_NODES = {"rspark.dev/node-kind": "real"}
REAL_NODE_TOLERATION = {
    "key": "rspark.dev/node-kind",
    "operator": "Equal",
    "value": "real",
    "effect": "NoSchedule",
}


def placed(**overrides: Any) -> Any:
    return settings(
        workspace_node_selector=REAL_NODES,
        workspace_tolerations=[REAL_NODE_TOLERATION],
        **overrides,
    )


def test_placement_settings_place_the_workspace_pod() -> None:
    spec = build_pod(workspace(), placed())["spec"]
    assert spec["nodeSelector"] == REAL_NODES
    keys = [toleration.get("key") for toleration in spec["tolerations"]]
    assert keys == [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "rspark.dev/node-kind",
    ]
    assert spec["tolerations"][-1] == REAL_NODE_TOLERATION


def test_without_placement_settings_the_pod_goes_anywhere() -> None:
    spec = build_pod(workspace(), settings())["spec"]
    assert "nodeSelector" not in spec
    assert [t["key"] for t in spec["tolerations"]] == [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]


def spark_config_map(config: Any, **spec: Any) -> dict[str, str]:
    (config_map,) = by_kind(build_children(workspace(**spec), config))["ConfigMap"]
    return dict(config_map["data"])


def test_executors_follow_the_workspace_placement() -> None:
    data = spark_config_map(placed())
    assert set(data) == {"spark-defaults.conf", "executor-pod-template.yaml"}
    lines = data["spark-defaults.conf"].splitlines()
    assert "spark.kubernetes.node.selector.rspark.dev/node-kind real" in lines
    assert (
        "spark.kubernetes.executor.podTemplateFile /opt/spark/conf/executor-pod-template.yaml"
        in lines
    )
    assert lines == sorted(lines)
    assert yaml.safe_load(data["executor-pod-template.yaml"]) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {"tolerations": [REAL_NODE_TOLERATION]},
    }


def test_node_selector_alone_needs_no_pod_template() -> None:
    data = spark_config_map(settings(workspace_node_selector=REAL_NODES))
    assert set(data) == {"spark-defaults.conf"}
    assert (
        "spark.kubernetes.node.selector.rspark.dev/node-kind real"
        in data["spark-defaults.conf"].splitlines()
    )
    assert "podTemplateFile" not in data["spark-defaults.conf"]


def test_no_placement_settings_leave_spark_defaults_as_they_were() -> None:
    data = spark_config_map(settings())
    assert set(data) == {"spark-defaults.conf"}
    assert "spark.kubernetes.node.selector" not in data["spark-defaults.conf"]


def test_placement_changes_replace_the_pod() -> None:
    assert pod_spec_hash(build_pod(workspace(), placed())) != pod_spec_hash(
        build_pod(workspace(), settings())
    )
