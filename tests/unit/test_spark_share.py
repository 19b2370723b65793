"""The Spark role's share of the cores per application: refused before any change where it cannot
span every worker, written into the master's configuration only, and absent by default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
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


def converge(
    tmp_path: Path, component: str = "master", inventory: str = "", **extra: Any
) -> tuple[int, str, str]:
    (tmp_path / "play.yml").write_text(PLAY)
    if not inventory:
        inventory = str(tmp_path / "hosts.ini")
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
    rc, log = run_local_playbook(tmp_path / "play.yml", values, inventory=inventory)
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


def lab_inventory(tmp_path: Path, nodes: int) -> Path:
    """The inventory scripts/lab writes for a lab of NODES nodes (its groups, labtool inventory)."""
    groups = subprocess.run(
        ["bash", "-c", 'source scripts/lab && printf "%s\\n" "${LAB_GROUPS[@]}"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    (tmp_path / "inventory").mkdir()
    out = tmp_path / "inventory/lab.yml"
    args = [
        "inventory",
        "--out",
        str(out),
        "--prefix",
        "cf-t",
        "--nodes",
        str(nodes),
        "--address-base",
        "10.9.8",
    ]
    args += ["--distro", "debian13", "--key", "/k", "--known-hosts", "/kh", "--memory-mb", "2048"]
    args += ["--head-memory-mb", "3072", "--cores", "2"]
    for group in groups:
        args += ["--group", group]
    subprocess.run([sys.executable, str(ROOT / "scripts/labtool.py"), *args], check=True, capture_output=True)
    return out


@pytest.mark.parametrize("nodes", [1, 3, 6, 16])
def test_the_lab_s_share_spans_every_worker_at_every_size(tmp_path, nodes):
    """scripts/lab up --nodes N: the lab's share (one core per worker, two on one worker) passes the
    role's check at every size the lab takes (a fixed 2 was refused from 3 workers on)."""
    share = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/spark.yml").read_text())[
        "spark_app_default_cores"
    ]
    inventory = lab_inventory(tmp_path, nodes)
    workers = len(yaml.safe_load(inventory.read_text())["all"]["children"]["spark_workers"]["hosts"])
    # This host renders the master's configuration, from a group of its own beside the lab's.
    (inventory.parent / "here.ini").write_text("[share_test_master]\nlocalhost ansible_connection=local\n")
    rc, log, written = converge(
        tmp_path,
        inventory=str(inventory.parent),
        spark_app_default_cores=share,
        spark_master_group="share_test_master",
    )
    assert rc == 0, log
    assert f"spark.deploy.defaultCores             {max(2, workers)}\n" in written
