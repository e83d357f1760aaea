"""s3a:// from Spark as the images carry it (3.5.3 with images/hadoop-aws's jars), on
the project's real S3 server, with the settings the operator renders for spec.spark.s3.

Spark runs as plain processes: a driver whose environment is the IDE container's (the
credentials Secret resolved the way the kubelet does) and one executor JVM without
credentials in its environment (Spark's local-cluster master: the cluster's parts of
spark-defaults.conf are overridden, nothing of s3a is), so the executor's writes and
reads prove the credentials travel with the job.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.s3 import S3Server
from devtools.spark import SPARK_S3A, hadoop_aws_jars, spark_venv
from rspark_operator.contract import S3_CREDENTIAL_KEYS
from tests.support.spark import session_env
from tests.unit.workspaces import workspace

SECRET = "alice-s3"
PREFIX = "alice/numbers"
# Client mode on Kubernetes replaced by a local cluster; the rest is spark-defaults.conf.
JOB = """
import sys
from pyspark.sql import SparkSession
jars, path = sys.argv[1], sys.argv[2]
spark = (
    SparkSession.builder.master("local-cluster[1,1,1024]")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.jars", jars)
    # spark.authenticate (rendered) on a standalone cluster: a secret of this test's.
    .config("spark.authenticate.secret", "a-secret-of-this-test")
    # The executor (its own JVM) inherits this process's variables: blanked, as on an
    # executor pod, which has no credentials of its own.
    .config("spark.executorEnv.AWS_ACCESS_KEY_ID", "")
    .config("spark.executorEnv.AWS_SECRET_ACCESS_KEY", "")
    .getOrCreate()
)
executor_env = spark.sparkContext.parallelize([0], 1).map(
    lambda _: __import__("os").environ.get("AWS_ACCESS_KEY_ID")
).first()
assert executor_env == "", executor_env
spark.range(1000).write.mode("overwrite").parquet(path)
numbers = spark.read.parquet(path)
print(numbers.count(), numbers.selectExpr("sum(id)").first()[0])
"""
JOB_TIMEOUT_SECONDS = 600


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"), bucket="spark")
    server.start()
    try:
        # The bucket (a filer directory under /buckets).
        server.put_object(server.credentials.bucket, "README", b"s3a test bucket\n")
        yield server
    finally:
        server.stop()


def run_job(s3: S3Server, workdir: Path, secret_key: str) -> subprocess.CompletedProcess[str]:
    credentials = s3.credentials
    ws = workspace(spark={"s3": {"credentialsSecret": SECRET, "endpoint": credentials.endpoint}})
    values = dict(zip(S3_CREDENTIAL_KEYS, (credentials.access_key, secret_key), strict=True))
    env = session_env(ws, {(SECRET, key): value for key, value in values.items()}, workdir)
    venv = spark_venv(SPARK_S3A)
    jars = ",".join(str(jar) for jar in hadoop_aws_jars())
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", JOB, jars, f"s3a://{credentials.bucket}/{PREFIX}"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_SECONDS,
        check=False,
    )


def test_spark_writes_and_reads_s3a_with_the_rendered_settings(
    s3: S3Server, tmp_path: Path
) -> None:
    result = run_job(s3, tmp_path, s3.credentials.secret_key)
    assert result.returncode == 0, result.stderr[-5000:]
    assert result.stdout.split() == ["1000", "499500"]
    written = s3.objects(s3.credentials.bucket, PREFIX)
    assert f"{PREFIX}/_SUCCESS" in written
    assert any(key.endswith(".parquet") for key in written)


def test_a_wrong_secret_key_is_refused_by_the_server(s3: S3Server, tmp_path: Path) -> None:
    result = run_job(s3, tmp_path, "not-the-secret-key")
    assert result.returncode != 0
    assert "403" in result.stderr or "SignatureDoesNotMatch" in result.stderr, result.stderr[-5000:]
