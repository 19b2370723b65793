"""The Spark role's S3A wiring without a network: the jars come only when a bucket is declared, each
checked against its checksum (a wrong one fails the run), a second run changes nothing, and the client's
spark-defaults.conf carries the s3a settings only then. file:// URLs stand in for Maven Central."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from localplay import ROOT, role_play, run_local_playbook

ROLE = ROOT / "roles" / "spark"

PLAY = role_play(
    ROLE,
    f"""  tasks:
    - ansible.builtin.import_tasks: {ROLE}/tasks/s3a.yml
    - ansible.builtin.template:
        src: {ROLE}/templates/spark-defaults.conf.j2
        dest: "{{{{ out }}}}"
        mode: "0600"
  handlers:
    - name: restart spark services
      ansible.builtin.debug:
        msg: restart
""",
)


def converge(tmp_path: Path, **extra: Any) -> tuple[int, str]:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    values = {
        "spark_component": "client",
        "spark_cluster_address": "127.0.0.1",
        "spark_authenticate": False,
        "__spark_master_url": "spark://127.0.0.1:7077",
        "spark_s3a_jars_dir": str(tmp_path / "jars"),
        "out": str(tmp_path / "spark-defaults.conf"),
        # The controller's own interpreter: discovery would pick whatever python3 is first on PATH.
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    return run_local_playbook(play, values)


def fake_jars(tmp_path: Path) -> list[dict[str, str]]:
    jars = []
    for name in ("hadoop-aws-3.4.2.jar", "bundle-2.29.52.jar"):
        path = tmp_path / "maven" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode() * 100)
        jars.append(
            {"url": path.as_uri(), "checksum": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()}
        )
    return jars


def changed(output: str) -> int:
    found = re.findall(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", output)
    return int(found[-1]) if found else -1


def test_a_declared_bucket_brings_the_checked_jars_and_the_s3a_settings(tmp_path: Path) -> None:
    jars = fake_jars(tmp_path)
    bucket = {"spark_s3_bucket": "cf-data", "spark_s3_region": "eu-west-1", "spark_s3a_jars": jars}
    rc, output = converge(tmp_path, **bucket)
    assert rc == 0, output[-3000:]
    assert sorted(p.name for p in (tmp_path / "jars").iterdir()) == [
        "bundle-2.29.52.jar",
        "hadoop-aws-3.4.2.jar",
    ]
    conf = (tmp_path / "spark-defaults.conf").read_text()
    assert f"spark.executor.extraClassPath         {tmp_path / 'jars'}/*" in conf
    assert f"spark.driver.extraClassPath           {tmp_path / 'jars'}/*" in conf
    assert "DefaultCredentialsProvider" in conf and "spark.hadoop.fs.s3a.endpoint.region   eu-west-1" in conf
    assert "fs.s3a.endpoint " not in conf and "path.style" not in conf

    rc, output = converge(tmp_path, **bucket)
    assert rc == 0 and changed(output) == 0, output[-3000:]

    rc, _ = converge(tmp_path, **bucket, spark_s3_endpoint_url="http://127.0.0.1:9000")
    conf = (tmp_path / "spark-defaults.conf").read_text()
    assert rc == 0 and "spark.hadoop.fs.s3a.endpoint          http://127.0.0.1:9000" in conf
    assert "spark.hadoop.fs.s3a.path.style.access true" in conf


def test_a_jar_that_does_not_match_its_checksum_fails_the_run(tmp_path: Path) -> None:
    jars = fake_jars(tmp_path)
    jars[1]["checksum"] = "sha256:" + "0" * 64
    rc, output = converge(tmp_path, spark_s3_bucket="cf-data", spark_s3a_jars=jars)
    assert rc != 0 and "checksum" in output.lower(), output[-3000:]
    assert not (tmp_path / "jars" / "bundle-2.29.52.jar").exists()


def test_without_a_bucket_nothing_is_downloaded_and_no_s3a_setting_is_written(tmp_path: Path) -> None:
    jars = [{"url": "https://repo1.maven.org/unreachable-here.jar", "checksum": "sha256:" + "0" * 64}]
    rc, output = converge(tmp_path, spark_s3_bucket="", spark_s3a_jars=jars)
    assert rc == 0, output[-3000:]
    assert not (tmp_path / "jars").exists()
    assert "s3a" not in (tmp_path / "spark-defaults.conf").read_text()


def test_the_default_jars_match_the_hadoop_that_pyspark_bundles() -> None:
    """pyspark 4.1.4 carries hadoop-client-api-3.4.2.jar; hadoop-aws 3.4.2 was built against SDK 2.29.52."""
    import yaml

    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert "pyspark==4.1.4" in defaults["spark_packages"]
    names = [jar["url"].rsplit("/", 1)[1] for jar in defaults["spark_s3a_jars"]]
    assert names == ["hadoop-aws-3.4.2.jar", "bundle-2.29.52.jar"]
    assert all(jar["url"].startswith("https://repo1.maven.org/maven2/") for jar in defaults["spark_s3a_jars"])
