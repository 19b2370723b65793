"""The Spark role's share of the cores per application: refused before any change where it cannot
span every worker, written into the master's configuration only, and absent by default."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from localplay import ROOT, role_play, run_local_playbook

ROLE = ROOT / "roles" / "spark"

PLAY = role_play(
    ROLE,
    f"""  tasks:
    - ansible.builtin.import_tasks: {ROLE}/tasks/validate.yml
    - ansible.builtin.template:
        src: {ROLE}/templates/spark-defaults.conf.j2
        dest: "{{{{ out }}}}"
        mode: "0600"
""",
)
INVENTORY = """
[spark_master]
localhost ansible_connection=local
[spark_workers]
w1
w2
"""


def converge(tmp_path: Path, component: str = "master", **extra: Any) -> tuple[int, str, str]:
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    out = tmp_path / "spark-defaults.conf"
    out.unlink(missing_ok=True)
    values = {
        "spark_component": component,
        "spark_cluster_address": "127.0.0.1",
        "spark_authenticate": False,
        "spark_network_crypto_enabled": False,
        "__spark_master_url": "spark://127.0.0.1:7077",
        "out": str(out),
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    rc, log = run_local_playbook(tmp_path / "play.yml", values, inventory=str(tmp_path / "hosts.ini"))
    return rc, log, out.read_text() if out.exists() else ""


def test_a_share_below_one_core_per_worker_is_refused_before_any_change(tmp_path):
    rc, log, written = converge(tmp_path, spark_app_default_cores=1)
    assert rc != 0
    assert "spark_app_default_cores=1: an application needs at least one core on each of the 2 hosts" in log
    assert written == ""  # nothing was written


def test_the_master_grants_the_share_and_spark_s_default_stays_without_one(tmp_path):
    rc, log, written = converge(tmp_path, spark_app_default_cores=2)
    assert rc == 0, log
    assert "spark.deploy.defaultCores             2\n" in written
    rc, log, written = converge(tmp_path, component="client", spark_app_default_cores=2)
    assert rc == 0, log
    assert "defaultCores" not in written  # the master reads it; drivers do not
    rc, log, written = converge(tmp_path)
    assert rc == 0, log
    assert "defaultCores" not in written
