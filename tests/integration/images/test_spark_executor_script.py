"""The Debian executor image's entrypoint, run as a plain process with a fake `java`.

Spark on Kubernetes starts an executor pod with the argument `executor` and its
SPARK_* environment (BasicExecutorFeatureStep); the entrypoint turns them into
the KubernetesExecutorBackend command line.
"""

from __future__ import annotations

from tests.integration.images.conftest import IMAGES, FakeBin, run

EXECUTOR = str(IMAGES / "spark-debian" / "rspark-executor")
BACKEND = "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"


def executor_env(fake_bin: FakeBin, **extra: str) -> dict[str, str]:
    """What Spark sets for executor 3 (with EXTRA), and no SPARK_* or JAVA_HOME of this machine."""
    spark = {
        "SPARK_HOME": "/opt/spark",
        "SPARK_CONF_DIR": "/opt/spark/conf",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc.team-a.svc:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_EXECUTOR_MEMORY": "1024m",
        "SPARK_APPLICATION_ID": "spark-application-1",
        "SPARK_EXECUTOR_POD_IP": "10.244.1.7",
        "SPARK_EXECUTOR_POD_NAME": "alice-exec-3",
        "SPARK_RESOURCE_PROFILE_ID": "0",
    }
    machine = {k: v for k, v in fake_bin.env().items() if not k.startswith(("SPARK_", "JAVA_HOME"))}
    return machine | spark | extra


def java_arguments(fake_bin: FakeBin) -> list[str]:
    (call,) = fake_bin.calls()
    return call.split(" ")[1:]


def test_executor_starts_the_kubernetes_executor_backend(fake_bin: FakeBin) -> None:
    fake_bin.add("java")
    env = executor_env(
        fake_bin,
        SPARK_JAVA_OPT_0="-Dspark.driver.port=7078",
        SPARK_JAVA_OPT_1="-Dspark.driver.blockManager.port=7079",
        SPARK_JAVA_OPT_10="-Dspark.tenth=10",
        SPARK_CLASSPATH="/opt/extra/*",
    )
    result = run([EXECUTOR, "executor"], env)
    assert result.returncode == 0, result.stderr
    assert java_arguments(fake_bin) == [
        # Options in their index order (10 after 1), then the heap from the executor memory.
        "-Dspark.driver.port=7078",
        "-Dspark.driver.blockManager.port=7079",
        "-Dspark.tenth=10",
        "-Xms1024m",
        "-Xmx1024m",
        "-cp",
        "/opt/spark/conf:/opt/spark/jars/*:/opt/extra/*",
        BACKEND,
        "--driver-url", "spark://CoarseGrainedScheduler@driver-svc.team-a.svc:7078",
        "--executor-id", "3",
        "--cores", "2",
        "--app-id", "spark-application-1",
        "--hostname", "10.244.1.7",
        "--resourceProfileId", "0",
        "--podName", "alice-exec-3",
    ]  # fmt: skip


def test_a_java_option_with_spaces_stays_one_argument(fake_bin: FakeBin) -> None:
    record = fake_bin.dir.parent / "argv"
    fake_bin.add("java", f'printf "%s\\n" "$@" > "{record}"')
    env = executor_env(fake_bin, SPARK_JAVA_OPT_0="-Dspark.app.name=my app")
    assert run([EXECUTOR, "executor"], env).returncode == 0
    assert record.read_text().splitlines()[0] == "-Dspark.app.name=my app"


def test_an_ipv6_pod_address_is_bracketed(fake_bin: FakeBin) -> None:
    fake_bin.add("java")
    env = executor_env(fake_bin, SPARK_EXECUTOR_POD_IP="fd00::7")
    assert run([EXECUTOR, "executor"], env).returncode == 0
    arguments = java_arguments(fake_bin)
    assert arguments[arguments.index("--hostname") + 1] == "[fd00::7]"


def test_java_comes_from_java_home_when_set(fake_bin: FakeBin) -> None:
    java_home = fake_bin.dir.parent / "jdk"
    (java_home / "bin").mkdir(parents=True)
    java = java_home / "bin" / "java"
    java.write_text(f'#!/bin/sh\necho "jdk-java $*" >> "{fake_bin.log}"\n')
    java.chmod(0o755)
    fake_bin.add("java")
    env = executor_env(fake_bin, JAVA_HOME=str(java_home))
    assert run([EXECUTOR, "executor"], env).returncode == 0
    (call,) = fake_bin.calls()
    assert call.startswith("jdk-java ") and call.endswith(
        f" {BACKEND} " + call.split(f" {BACKEND} ")[1]
    )


def test_executor_without_spark_s_environment_fails_clearly(fake_bin: FakeBin) -> None:
    fake_bin.add("java")
    env = executor_env(fake_bin)
    del env["SPARK_DRIVER_URL"], env["SPARK_EXECUTOR_ID"]
    result = run([EXECUTOR, "executor"], env)
    assert result.returncode == 2
    assert "missing: SPARK_DRIVER_URL SPARK_EXECUTOR_ID" in result.stderr
    assert fake_bin.calls() == []


def test_any_other_command_runs_as_given(fake_bin: FakeBin) -> None:
    fake_bin.add("java")
    assert run([EXECUTOR, "java", "-version"], fake_bin.env()).returncode == 0
    assert fake_bin.calls() == ["java -version"]
