"""The preflight's port plan (plugins/filter/port_plan.py): two services of one host that want the
same port stop site.yml before any change, naming both; valid inventories pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from localplay import run_local_playbook
from pathload import load

ROOT = Path(__file__).resolve().parents[2]


plan = load("cf_port_plan", ROOT / "plugins/filter/port_plan.py")


def role_defaults() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(ROOT.glob("roles/*/defaults/main.yml")):
        found.update(yaml.safe_load(path.read_text()) or {})
    return found


def test_the_table_s_defaults_are_the_roles():
    defaults = role_defaults()
    assert {name: defaults.get(name, "<not a role default>") for name in plan.DEFAULTS} == plan.DEFAULTS


def test_every_port_of_the_roles_is_in_the_table_or_named_as_no_listener():
    ports = {name for name in role_defaults() if name.endswith("_port")}
    # A port with a number of its own (a third element) is one no variable moves.
    in_table = {port[0] for entry in plan.SERVICES for port in entry["ports"] if len(port) == 2}
    assert ports - in_table - set(plan.NOT_LISTENERS) == set()
    assert in_table & set(plan.NOT_LISTENERS) == set()
    assert in_table <= set(plan.DEFAULTS)


ONE_NODE = {
    "all": ["n1"],
    "head": ["n1"],
    "dask_scheduler": ["n1"],
    "dask_workers": ["n1"],
    "spark_master": ["n1"],
    "spark_workers": ["n1"],
    "celery_broker": ["n1"],
    "celery_workers": ["n1"],
    "airflow": ["n1"],
    "jupyter": ["n1"],
    "monitoring": ["n1"],
    "mpmanager": ["n1"],
}


def collisions(groups: dict[str, list[str]], **host: Any) -> list[str]:
    return plan.clusterforge_port_collisions(groups, {name: dict(host) for name in groups["all"]})


def test_every_service_on_one_node_with_the_defaults_and_the_package_cache_has_no_collision():
    assert collisions(ONE_NODE, package_cache_enabled=True) == []


def test_two_services_on_one_port_are_named_with_their_variables():
    (found,) = collisions(ONE_NODE, spark_master_webui_port=8090)
    assert found == (
        "n1: port 8090 is wanted by the Spark master (spark_master_webui_port: 8090) "
        "and the Airflow API server (airflow_api_port: 8090)"
    )


def test_the_default_dask_ranges_hold_100_worker_processes_beside_every_other_service():
    assert collisions(ONE_NODE, dask_worker_nworkers=100) == []
    (found,) = collisions(ONE_NODE, dask_worker_nworkers=101)
    assert found == (
        "n1: port 8900 is wanted by the Dask workers (dask_worker_port: 8800-8900) "
        "and the Dask workers (dask_nanny_port: 8900-9000)"
    )


def test_a_worker_range_that_reaches_another_port_collides():
    assert collisions(ONE_NODE, dask_worker_port=8790, dask_worker_nworkers=3) == []
    (found,) = collisions(ONE_NODE, dask_worker_port=8790, dask_worker_nworkers=4)
    assert "port 8793 is wanted by the Dask workers (dask_worker_port: 8790-8793)" in found
    assert "Airflow log server (airflow_log_server_port: 8793)" in found
    worker = {"all": ["w"], "dask_workers": ["w"]}
    overlap = collisions(worker, dask_worker_port=8790, dask_worker_nworkers=3, dask_nanny_port=8791)
    assert overlap == [
        "w: port 8791-8792 is wanted by the Dask workers (dask_worker_port: 8790-8792) "
        "and the Dask workers (dask_nanny_port: 8791-8793)"
    ]


def test_rabbitmq_s_fixed_loopback_ports_and_the_result_backend_s_redis_count():
    rabbitmq = {"celery_broker_type": "rabbitmq"}
    assert collisions(ONE_NODE, **rabbitmq) == []
    # The Luigi scheduler's backend is on loopback (on the Airflow host here), as is Erlang's listener.
    (found,) = collisions(ONE_NODE, luigi_backend_port=25672, **rabbitmq)
    assert "port 25672 is wanted by the RabbitMQ broker (Erlang distribution: 25672)" in found
    assert "Luigi scheduler (luigi_backend_port: 25672)" in found
    assert collisions(ONE_NODE, luigi_backend_port=25672) == []  # Redis as the broker: no Erlang
    # With RabbitMQ as the broker, Redis still keeps the results on the broker host.
    (found,) = collisions(ONE_NODE, celery_redis_port=5432, **rabbitmq)
    assert "Redis broker and result backend (celery_redis_port: 5432)" in found
    assert "Airflow's PostgreSQL (airflow_db_port: 5432)" in found


def test_the_nfs_server_takes_2049_on_the_storage_host_only_with_the_nfs_backend():
    storage = dict(ONE_NODE, storage_server=["n1"])
    assert collisions(storage) == []
    (found,) = collisions(storage, luigi_port=2049)
    assert found == (
        "n1: port 2049 is wanted by the Luigi scheduler (luigi_port: 2049) and the NFS server (NFSv4: 2049)"
    )
    assert collisions(storage, luigi_port=2049, shared_storage_backend="sshfs") == []
    assert collisions(ONE_NODE, luigi_port=2049) == []  # no storage server in the inventory


def test_a_loopback_port_and_a_cluster_address_port_do_not_collide():
    # The hub's API on 127.0.0.1 and the proxy on the cluster address may share a number ...
    assert collisions(ONE_NODE, jupyter_hub_api_port=8000) == []
    # ... a UI behind its gateway binds both, so it meets either.
    assert len(collisions(ONE_NODE, jupyter_hub_api_port=8080)) == 1
    assert len(collisions(ONE_NODE, jupyter_port=8080)) == 1


def test_a_service_that_does_not_run_takes_no_port():
    assert collisions(ONE_NODE, celery_flower_port=8090, celery_flower_enabled="false") == []
    assert len(collisions(ONE_NODE, celery_flower_port=8090, celery_flower_enabled="true")) == 1
    assert collisions(ONE_NODE, package_cache_port=8090) == []  # the cache is off by default
    no_monitoring = {name: hosts for name, hosts in ONE_NODE.items() if name != "monitoring"}
    assert collisions(no_monitoring, monitoring_node_exporter_port=8090) == []
    assert len(collisions(ONE_NODE, monitoring_node_exporter_port=8090)) == 1
    # Services of different hosts never collide.
    apart = {"all": ["a", "b"], "spark_master": ["a"], "airflow": ["b"]}
    assert collisions(apart, spark_master_webui_port=8090) == []


def test_the_example_inventory_passes_the_preflight():
    # The lab's inventory passes it in every scripts/lab up and in the CI's lab step.
    status, output = run_local_playbook(ROOT / "playbooks/preflight.yml", {}, inventory="inventories/local")
    assert status == 0, output[-3000:]


def test_site_stops_at_the_preflight_before_touching_a_host():
    """The local inventory's hosts are documentation addresses nobody answers: a run that got past
    the preflight would fail on them, unreachable; this one must fail on localhost, naming both."""
    # The inventory's own connection: a local one would make node1 this machine.
    status, out = run_local_playbook(
        ROOT / "site.yml", {"spark_master_webui_port": 8090}, inventory="inventories/local", connection=None
    )
    assert status != 0
    assert "node1: port 8090 is wanted by the Spark master (spark_master_webui_port: 8090)" in out, out[-999:]
    assert "Airflow API server (airflow_api_port: 8090)" in out
    assert "UNREACHABLE" not in out and "node1 " not in out.split("PLAY RECAP")[-1], out[-3000:]
