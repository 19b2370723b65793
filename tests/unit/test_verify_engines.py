"""engines.* of cluster.json: each engine role publishes its hosts' parts, the verify tier merges them.

The filter (plugins/filter/verify_engines.py) is tested directly; one test runs the whole chain in
Ansible: the publishing module writes the parts (two components of one engine on one host), the
setup module reads them back as local facts, the filter assembles the sections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pathload import load

ROOT = Path(__file__).resolve().parents[2]
CELERY = "/etc/clusterforge/celery/celery.json"


ve = load("cf_verify_engines", ROOT / "plugins/filter/verify_engines.py")
sys.path.insert(0, str(ROOT))
from compute_jobs.engines import validate_section  # noqa: E402

LAB = {
    "n1": ["head", "dask_scheduler", "spark_master", "celery_broker", "airflow", "mpi_hosts"],
    "n2": ["workers", "dask_workers", "spark_workers", "celery_workers", "mpi_hosts"],
    "n3": ["workers", "dask_workers", "spark_workers", "celery_workers", "mpi_hosts"],
}
MPI = {"hostfile": "/etc/clusterforge/mpi/hostfile", "mpirun": "/usr/bin/mpirun", "python": "/v/bin/python"}
DASK = "tls://10.0.0.1:8786"


def lab_parts() -> dict[str, dict[str, Any]]:
    """What the roles publish on the lab's hosts: clusterforge_engine_<name> -> this host's part."""
    parts: dict[str, dict[str, Any]] = {
        "n1": {
            "clusterforge_engine_dask": {
                "endpoint": DASK,
                "dashboard": "https://x/status",
                "config_dir": "/etc/clusterforge/dask/client",
                "expected_workers": ["n2", "n3"],
            },
            "clusterforge_engine_spark": {
                "endpoint": "spark://10.0.0.1:7077",
                "master_webui": "http://10.0.0.1:8080",
                "conf_dir": "/etc/clusterforge/spark/client",
                "python": "/opt/clusterforge/venv/bin/python",
                "expected_workers": ["n2", "n3"],
            },
            "clusterforge_engine_mpi": {
                **MPI,
                "pingpong": "/opt/clusterforge/bin/cf-mpi-pingpong",
                "slots": {"n1": 1},
            },
            "clusterforge_engine_celery": {"config": CELERY, "flower_url": "http://f"},
            "clusterforge_engine_airflow": {"endpoint": "http://10.0.0.1:8090", "executor": "celery"},
            "clusterforge_engine_luigi": {"endpoint": "http://10.0.0.1:8082"},
            "clusterforge_engine_s3": S3,
        }
    }
    for index, host in enumerate(("n2", "n3"), start=2):
        address = f"10.0.0.{index}"
        parts[host] = {
            "clusterforge_engine_dask": {
                "endpoint": DASK,
                "workers": {host: {"address": address, "nworkers": 1, "nthreads": 2, "memory_limit": 1024}},
            },
            "clusterforge_engine_spark": {
                "endpoint": "spark://10.0.0.1:7077",
                "master_webui": "http://10.0.0.1:8080",
                "workers": {host: {"address": address, "cores": 2, "memory_mb": 512}},
            },
            "clusterforge_engine_mpi": {
                **MPI,
                "pingpong": "/opt/clusterforge/bin/cf-mpi-pingpong",
                "slots": {host: 2},
            },
            "clusterforge_engine_celery": {"config": CELERY, "workers": {host: index}},
        }
    return parts


S3 = {"bucket": "cf-data", "prefix": "runs/", "region": "us-east-1", "endpoint_url": ""}


def assemble(
    hosts: dict[str, list[str]], parts: dict[str, dict[str, Any]], overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    groups: dict[str, list[str]] = {"all": list(hosts)}
    for host, names in hosts.items():
        for group in names:
            groups.setdefault(group, []).append(host)
    hostvars = {h: {"ansible_facts": {"ansible_local": parts.get(h, {})}} for h in hosts}
    return ve.verify_engines(hostvars, groups, groups["all"], groups["head"][0], overrides)


def test_every_provisioned_engine_is_the_merge_of_what_its_hosts_published():
    engines = assemble(LAB, lab_parts())
    assert sorted(engines) == ["airflow", "celery", "dask", "luigi", "mpi", "s3", "spark"]
    assert engines["s3"] == S3
    assert engines["dask"] == {
        "endpoint": DASK,
        "config_dir": "/etc/clusterforge/dask/client",
        "dashboard": "https://x/status",
        "expected_workers": ["n2", "n3"],
        "workers": {
            "n2": {"address": "10.0.0.2", "nworkers": 1, "nthreads": 2, "memory_limit": 1024},
            "n3": {"address": "10.0.0.3", "nworkers": 1, "nthreads": 2, "memory_limit": 1024},
        },
    }
    assert engines["spark"]["workers"]["n3"] == {"address": "10.0.0.3", "cores": 2, "memory_mb": 512}
    assert engines["mpi"]["slots"] == {"n1": 1, "n2": 2, "n3": 2}
    assert engines["mpi"]["pingpong"] == "/opt/clusterforge/bin/cf-mpi-pingpong"
    assert engines["celery"] == {"config": CELERY, "workers": {"n2": 2, "n3": 3}, "flower_url": "http://f"}
    assert engines["airflow"] == {"endpoint": "http://10.0.0.1:8090", "executor": "celery"}
    assert engines["luigi"] == {"endpoint": "http://10.0.0.1:8082"}
    for name, section in engines.items():  # the merged parts have the types the checks read
        assert validate_section(name, section) == [], name


def test_a_provisioned_engine_without_its_parts_is_unavailable_naming_the_hosts():
    parts = lab_parts()
    del parts["n3"]["clusterforge_engine_dask"]
    del parts["n1"]["clusterforge_engine_airflow"]
    engines = assemble(LAB, parts)
    assert set(engines["dask"]) == {"unavailable"}
    assert "clusterforge_engine_dask: n3;" in engines["dask"]["unavailable"]
    assert "playbooks/dask.yml" in engines["dask"]["unavailable"]
    assert "clusterforge_engine_airflow: n1;" in engines["airflow"]["unavailable"]
    assert "workers" in engines["spark"] and "unavailable" not in engines["spark"]


def test_engines_absent_from_the_inventory_are_absent_and_half_an_engine_is_named():
    hosts = {"n1": ["head", "mpi_hosts"], "n2": ["workers", "dask_workers"]}
    engines = assemble(hosts, {"n1": {"clusterforge_engine_mpi": {**MPI, "slots": {"n1": 1}}}})
    assert sorted(engines) == ["dask", "mpi", "s3"]
    assert engines["dask"] == {
        "unavailable": "the inventory provisions dask, but group dask_scheduler has no member"
    }
    assert "published no clusterforge_engine_s3: n1;" in engines["s3"]["unavailable"]
    assert engines["mpi"]["slots"] == {"n1": 1}


def test_hosts_that_disagree_make_the_engine_unavailable_naming_both():
    parts = lab_parts()
    parts["n3"]["clusterforge_engine_dask"]["endpoint"] = "tcp://10.0.0.9:8786"
    engines = assemble(LAB, parts)
    why = engines["dask"]["unavailable"]
    assert "engines.dask.endpoint" in why and "n1 published" in why and "n3 published" in why


def test_gpu_and_opencl_sections_carry_each_nodes_part():
    hosts = {"n1": ["head"], "g1": ["gpu_nodes"], "c1": ["opencl_nodes"]}
    parts = {
        "g1": {
            "clusterforge_engine_gpu": {
                "hosts": {"g1": {"driver_version": "550.54", "cuda_version": "12.4"}}
            },
            "clusterforge_engine_opencl": {
                "hosts": {"g1": {"platforms": ["NVIDIA CUDA", "Portable Computing Language"]}}
            },
        },
        "c1": {
            "clusterforge_engine_opencl": {"hosts": {"c1": {"platforms": ["Portable Computing Language"]}}}
        },
    }
    engines = assemble(hosts, parts)
    assert engines["gpu"] == {"hosts": {"g1": {"driver_version": "550.54", "cuda_version": "12.4"}}}
    assert sorted(engines["opencl"]["hosts"]) == ["c1", "g1"]
    del parts["g1"]["clusterforge_engine_gpu"]
    assert "g1" in assemble(hosts, parts)["gpu"]["unavailable"]


def test_an_engine_is_one_table_entry_and_the_inventory_can_add_or_remove_one():
    assert ve.engine_table()["storage"]["groups"] == ["storage_server"]
    hosts = {**LAB, "s1": ["scratch_server"]}
    parts = {**lab_parts(), "s1": {"clusterforge_engine_scratch": {"exports": {"s1": ["/srv/scratch"]}}}}
    overrides = {"scratch": {"groups": ["scratch_server"], "head": False}, "luigi": None}
    engines = assemble(hosts, parts, overrides)
    assert engines["scratch"] == {"exports": {"s1": ["/srv/scratch"]}}
    assert "luigi" not in engines
    with pytest.raises(ve.EngineSpecError, match="unknown keys grups"):
        ve.engine_table({"scratch": {"grups": ["scratch_server"]}})
    with pytest.raises(ve.EngineSpecError, match="non-empty list"):
        ve.engine_table({"scratch": {"playbook": "x.yml"}})


def test_only_local_facts_of_the_engine_leave_hostvars():
    hostvars = {
        "n1": {
            "secret_token": "s3cr3t",
            "ansible_facts": {"ansible_local": {"clusterforge_engine_mpi": {**MPI, "slots": {"n1": 1}}}},
        }
    }
    engines = ve.verify_engines(hostvars, {"mpi_hosts": ["n1"], "head": ["n1"]}, ["n1"], "n1")
    assert "s3cr3t" not in json.dumps(engines)


PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Publish the parts of each component, several per host
      clusterforge_engine_fact:
        engine: "{{ item.engine }}"
        part: "{{ item.part }}"
        fact_dir: "{{ fact_dir }}"
      loop: "{{ parts }}"
    - ansible.builtin.setup:
        gather_subset: ["!all", "!min", local]
        fact_path: "{{ fact_dir }}"
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: >-
          {{ hostvars | verify_engines(groups, groups['all'], groups['head'] | first, {}) | to_json }}
        dest: "{{ out }}"
        mode: "0600"
"""


def ansible_playbook(*args: str) -> subprocess.CompletedProcess:
    """ansible-playbook of the venv with the project's configuration (no fact cache); must succeed."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"}
    result = subprocess.run(
        [str(ROOT / ".venv/bin/ansible-playbook"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result


def test_published_parts_reach_the_filter_through_ansible_local_facts(tmp_path: Path):
    """The module merges the components of one host; setup reads them; the filter assembles."""
    components: dict[str, list[dict[str, Any]]] = {"n1": [], "n2": []}
    for host, facts in lab_parts().items():
        if host not in components:
            continue
        for fact, part in facts.items():
            engine = fact.removeprefix("clusterforge_engine_")
            if engine == "dask" and host == "n1":  # the scheduler and the client publish apart
                client = {k: part[k] for k in ("endpoint", "config_dir", "expected_workers")}
                components[host].append(
                    {"engine": engine, "part": {"endpoint": DASK, "dashboard": part["dashboard"]}}
                )
                components[host].append({"engine": engine, "part": client})
            else:
                components[host].append({"engine": engine, "part": part})
    lines = ["all:", "  hosts:"]
    for host, parts in components.items():
        (tmp_path / host).mkdir()
        lines += [f"    {host}:", f"      fact_dir: {tmp_path / host}", f"      parts: {json.dumps(parts)}"]
    lines += ["  children:"]
    groups = {"head": ["n1"], "dask_scheduler": ["n1"], "dask_workers": ["n2"], "mpi_hosts": ["n1", "n2"]}
    for group, members in groups.items():
        lines += [f"    {group}:", "      hosts:"] + [f"        {m}:" for m in members]
    lines += [
        "  vars:",
        "    ansible_connection: local",
        f"    ansible_python_interpreter: {os.environ.get('CF_TEST_PYTHON', sys.executable)}",
        f"    out: {tmp_path / 'engines.json'}",
    ]
    (tmp_path / "hosts.yml").write_text("\n".join(lines) + "\n")
    (tmp_path / "play.yml").write_text(PLAY)
    ansible_playbook("-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"))
    engines = json.loads((tmp_path / "engines.json").read_text())
    assert sorted(engines) == ["dask", "mpi", "s3"]
    assert engines["s3"] == S3
    assert engines["dask"] == {
        "endpoint": DASK,
        "dashboard": "https://x/status",
        "config_dir": "/etc/clusterforge/dask/client",
        "expected_workers": ["n2", "n3"],
        "workers": {"n2": {"address": "10.0.0.2", "nworkers": 1, "nthreads": 2, "memory_limit": 1024}},
    }
    assert engines["mpi"]["slots"] == {"n1": 1, "n2": 2}
    published = json.loads((tmp_path / "n1" / "clusterforge_engine_dask.fact").read_text())
    assert published == {k: v for k, v in engines["dask"].items() if k != "workers"}


REPLACE_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - clusterforge_engine_fact:
        engine: probe
        part: {jobs: {node: {targets: {a: "1", b: "2"}}}}
        fact_dir: "{{ fact_dir }}"
    - clusterforge_engine_fact:
        engine: probe
        part: {jobs: {node: {targets: {a: "1"}}}}
        fact_dir: "{{ fact_dir }}"
        replace: "{{ replace }}"
"""


@pytest.mark.parametrize(("replace", "targets"), [(False, {"a": "1", "b": "2"}), (True, {"a": "1"})])
def test_a_replacing_part_drops_the_hosts_that_left(tmp_path: Path, replace: bool, targets: dict[str, str]):
    """Parts merge key by key (several components on one host); a part published with replace
    is the whole fact, so a map of other hosts (the monitoring targets) shrinks with the inventory."""
    (tmp_path / "play.yml").write_text(REPLACE_PLAY)
    ansible_playbook(
        *("-i", "localhost,", "-c", "local"),
        *("-e", f"ansible_python_interpreter={os.environ.get('CF_TEST_PYTHON', sys.executable)}"),
        *("-e", json.dumps({"fact_dir": str(tmp_path), "replace": replace})),
        str(tmp_path / "play.yml"),
    )
    fact = json.loads((tmp_path / "clusterforge_engine_probe.fact").read_text())
    assert fact["jobs"]["node"]["targets"] == targets


def test_an_optional_engine_is_declared_by_its_parts_alone():
    """The Python package cache is turned on by a variable, not a group: its host's part makes the
    section, and no part makes no section (not an unavailable one)."""
    assert "package_cache" not in assemble(LAB, lab_parts())
    part = {
        "index_url": "https://10.0.0.1:3143/simple/",
        "ca_file": "/etc/clusterforge/tls/ca.crt",
        "credentials_file": "/etc/clusterforge/package_cache/pip.credentials",
    }
    parts = lab_parts()
    parts["n1"]["clusterforge_engine_package_cache"] = part
    engines = assemble(LAB, parts)
    assert engines["package_cache"] == part
    assert validate_section("package_cache", engines["package_cache"]) == []
    # A part on a worker (the cache on another host) is taken the same way.
    parts = lab_parts()
    parts["n3"]["clusterforge_engine_package_cache"] = part
    assert assemble(LAB, parts)["package_cache"] == part
