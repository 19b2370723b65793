"""The verification tier's engines.* sections, rendered by Ansible from nodes' local facts.

Every host is this machine over a local connection, each with its own facts.d directory, so the
template reads real `ansible_local` facts gathered by the setup module, as on a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

CELERY = "/etc/clusterforge/celery/celery.json"
ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(ROOT / ".venv/bin/ansible-playbook")
TEMPLATE = ROOT / "roles/verify/templates/engines.json.j2"

LAB = {
    "n1": {"groups": ["head", "dask_scheduler", "spark_master", "celery_broker", "airflow", "mpi_hosts"]},
    "n2": {"groups": ["workers", "dask_workers", "spark_workers", "celery_workers", "mpi_hosts"]},
    "n3": {"groups": ["workers", "dask_workers", "spark_workers", "celery_workers", "mpi_hosts"]},
}


def lab_facts() -> dict[str, dict[str, Any]]:
    mpi = {
        "hostfile": "/etc/clusterforge/mpi/hostfile",
        "mpirun": "/usr/bin/mpirun",
        "python": "/v/bin/python",
    }
    facts: dict[str, dict[str, Any]] = {
        "n1": {
            "clusterforge_dask_scheduler": {
                "scheduler_address": "tls://10.0.0.1:8786",
                "dashboard": "https://x/status",
            },
            "clusterforge_dask_client": {"config_dir": "/etc/clusterforge/dask/client"},
            "clusterforge_spark_master": {
                "master_url": "spark://10.0.0.1:7077",
                "master_webui": "http://10.0.0.1:8080",
            },
            "clusterforge_spark_client": {"conf_dir": "/etc/clusterforge/spark/client"},
            "clusterforge_mpi": {**mpi, "slots": 1, "pingpong": "/opt/clusterforge/bin/cf-mpi-pingpong"},
            "clusterforge_celery_broker": {
                "config": CELERY,
                "flower_url": "http://f",
            },
            "clusterforge_airflow_client": {
                "_managed": "x",
                "endpoint": "http://10.0.0.1:8090",
                "executor": "celery",
            },
            "clusterforge_luigi_client": {"_managed": "x", "endpoint": "http://10.0.0.1:8082"},
        }
    }
    for index, host in enumerate(("n2", "n3"), start=2):
        facts[host] = {
            "clusterforge_dask_worker": {
                "address": f"10.0.0.{index}",
                "nworkers": 1,
                "nthreads": 2,
                "memory_limit": 1024,
            },
            "clusterforge_spark_worker": {"address": f"10.0.0.{index}", "cores": 2, "memory_mb": 512},
            "clusterforge_mpi": {**mpi, "slots": 2, "pingpong": None},
            "clusterforge_celery_worker": {
                "config": CELERY,
                "concurrency": index,
            },
        }
    return facts


def render(
    tmp_path: Path, hosts: dict[str, dict[str, Any]], facts: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    lines = ["all:", "  hosts:"]
    for host, spec in hosts.items():
        fact_dir = tmp_path / host
        fact_dir.mkdir()
        for name, value in facts.get(host, {}).items():
            (fact_dir / f"{name}.fact").write_text(json.dumps(value))
        lines += [f"    {host}:", f"      fact_dir: {fact_dir}"]
        for group in spec["groups"]:
            groups.setdefault(group, []).append(host)
    lines.append("  children:")
    for group, members in groups.items():
        lines += [f"    {group}:", "      hosts:"] + [f"        {m}:" for m in members]
    lines += [
        "  vars:",
        "    ansible_connection: local",
        f"    ansible_python_interpreter: {os.environ.get('CF_TEST_PYTHON', '/usr/bin/python3')}",
    ]
    (tmp_path / "hosts.yml").write_text("\n".join(lines) + "\n")
    out = tmp_path / "engines.json"
    (tmp_path / "play.yml").write_text(
        f"""
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.setup:
        gather_subset: ["!all", "!min", local]
        fact_path: "{{{{ fact_dir }}}}"
- hosts: localhost
  gather_facts: false
  vars:
    verify_cluster_group: all
    verify_head_group: head
    verify_venv_dir: /opt/clusterforge/venv
  tasks:
    - ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.template', '{TEMPLATE}') }}}}"
        dest: "{out}"
        mode: "0600"
"""
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"}
    result = subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible-playbook"),
            "-i",
            str(tmp_path / "hosts.yml"),
            str(tmp_path / "play.yml"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return json.loads(out.read_text())


def test_every_provisioned_engine_is_described_from_the_nodes_facts(tmp_path):
    engines = render(tmp_path, LAB, lab_facts())
    assert sorted(engines) == ["airflow", "celery", "dask", "luigi", "mpi", "spark"]
    assert engines["dask"] == {
        "endpoint": "tls://10.0.0.1:8786",
        "config_dir": "/etc/clusterforge/dask/client",
        "dashboard": "https://x/status",
        "expected_workers": ["n2", "n3"],
        "workers": {
            "n2": {"address": "10.0.0.2", "nworkers": 1, "nthreads": 2, "memory_limit": 1024},
            "n3": {"address": "10.0.0.3", "nworkers": 1, "nthreads": 2, "memory_limit": 1024},
        },
    }
    assert engines["spark"]["workers"]["n3"] == {"address": "10.0.0.3", "cores": 2, "memory_mb": 512}
    assert engines["spark"]["endpoint"] == "spark://10.0.0.1:7077"
    assert engines["spark"]["python"] == "/opt/clusterforge/venv/bin/python"
    assert engines["mpi"]["slots"] == {"n1": 1, "n2": 2, "n3": 2}
    assert engines["mpi"]["pingpong"] == "/opt/clusterforge/bin/cf-mpi-pingpong"
    assert engines["celery"] == {
        "config": CELERY,
        "workers": {"n2": 2, "n3": 3},
        "flower_url": "http://f",
    }
    assert engines["airflow"] == {"endpoint": "http://10.0.0.1:8090", "executor": "celery"}
    assert engines["luigi"] == {"endpoint": "http://10.0.0.1:8082"}


def test_a_provisioned_engine_without_facts_is_unavailable_naming_the_hosts(tmp_path):
    facts = lab_facts()
    del facts["n3"]["clusterforge_dask_worker"]
    del facts["n1"]["clusterforge_airflow_client"]
    engines = render(tmp_path, LAB, facts)
    assert set(engines["dask"]) == {"unavailable"}
    assert "n3 (clusterforge_dask_worker)" in engines["dask"]["unavailable"]
    assert "playbooks/dask.yml" in engines["dask"]["unavailable"]
    assert "n1 (clusterforge_airflow_client)" in engines["airflow"]["unavailable"]
    assert "workers" in engines["spark"] and "unavailable" not in engines["spark"]


def test_engines_absent_from_the_inventory_are_absent_and_half_an_engine_is_named(tmp_path):
    hosts = {"n1": {"groups": ["head", "mpi_hosts"]}, "n2": {"groups": ["workers", "dask_workers"]}}
    engines = render(tmp_path, hosts, {"n1": {"clusterforge_mpi": lab_facts()["n1"]["clusterforge_mpi"]}})
    assert sorted(engines) == ["dask", "mpi"]
    assert engines["dask"] == {
        "unavailable": "the inventory provisions Dask, but group dask_scheduler has no member"
    }
    assert engines["mpi"]["slots"] == {"n1": 1}
