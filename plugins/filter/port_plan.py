# Copyright: clusterforge maintainers
# Apache-2.0
"""Which ports each host's services will listen on, and where two of them want the same one.

The preflight play (playbooks/preflight.yml) asks this before any tier changes a host: two services
of one host on the same port (an override in the inventory, two engines' defaults moved onto one
node) would otherwise show as one service that does not start, late in a converge and with
systemd's words. The table below says, per service, the site groups whose hosts run it (those of
site.yml's plays), when it runs, its port variables with the roles' defaults (a unit test holds them
equal to roles/*/defaults/main.yml) and the addresses it binds: the host's cluster address, 127.0.0.1,
or both (a web UI on 127.0.0.1 behind its HTTPS gateway on the cluster address, on the same port).
A port no variable moves (RabbitMQ's Erlang ports, NFS) is named by a label and its number.
Two entries collide when their port ranges meet on an address they share. A service not in the
table is not checked, so the check can miss a collision but does not refuse a valid inventory.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean

CLUSTER, LOOPBACK = frozenset({"cluster"}), frozenset({"loopback"})
BOTH = CLUSTER | LOOPBACK


def _on(*names: str):
    """True where every switch NAMES is on, read as the roles read them (`| bool`: an INI
    inventory's "false" is false)."""
    return lambda v: all(boolean(v(name), strict=False) for name in names)


def _dask_workers(v) -> int:
    return max(int(v("dask_worker_nworkers")), 1)


# Conditions and widths read the host's variables through v(name) (the inventory's value, else the
# default in DEFAULTS).
SERVICES: list[dict[str, Any]] = [
    {"service": "apt package cache", "groups": ["head"], "when": _on("package_cache_enabled"),
     "ports": [("package_cache_port", CLUSTER)]},
    {"service": "pip package cache", "groups": ["head"],
     "when": _on("package_cache_enabled", "package_cache_pip_enabled"),
     "ports": [("package_cache_pip_port", CLUSTER), ("package_cache_pip_backend_port", LOOPBACK)]},
    {"service": "Dask scheduler", "groups": ["dask_scheduler"],
     "ports": [("dask_scheduler_port", CLUSTER)]},
    {"service": "Dask dashboard", "groups": ["dask_scheduler"], "when": _on("dask_dashboard_enabled"),
     "ports": [("dask_dashboard_port", BOTH)]},
    {"service": "Dask workers", "groups": ["dask_workers"], "width": _dask_workers,
     "ports": [("dask_worker_port", CLUSTER), ("dask_nanny_port", CLUSTER)]},
    {"service": "Spark master", "groups": ["spark_master"],
     "ports": [("spark_master_port", CLUSTER), ("spark_master_webui_port", BOTH)]},
    {"service": "Spark worker", "groups": ["spark_workers"],
     "ports": [("spark_worker_port", CLUSTER), ("spark_worker_webui_port", BOTH)]},
    # Redis runs on the broker host whatever the broker: with RabbitMQ it keeps Celery's results.
    {"service": "Redis broker and result backend", "groups": ["celery_broker"],
     "ports": [("celery_redis_port", lambda v: BOTH if _on("celery_redis_bind_loopback")(v) else CLUSTER)]},
    # epmd and the Erlang distribution listener (rabbitmqctl's way in) on loopback, on the ports
    # RabbitMQ derives when its environment names none (the role's rabbitmq-env.conf names none).
    {"service": "RabbitMQ broker", "groups": ["celery_broker"],
     "when": lambda v: v("celery_broker_type") == "rabbitmq",
     "ports": [("celery_rabbitmq_port", CLUSTER), ("Erlang port mapper", LOOPBACK, 4369),
               ("Erlang distribution", LOOPBACK, 25672)]},
    {"service": "Flower", "groups": ["celery_broker"], "when": _on("celery_flower_enabled"),
     "ports": [("celery_flower_port", BOTH)]},
    {"service": "Airflow API server", "groups": ["airflow"], "ports": [("airflow_api_port", CLUSTER)]},
    {"service": "Airflow's PostgreSQL", "groups": ["airflow"],
     "when": lambda v: v("airflow_db_host") == "127.0.0.1",
     "ports": [("airflow_db_port", LOOPBACK)]},
    {"service": "Airflow log server", "groups": ["celery_workers"], "needs": ["airflow", "celery_broker"],
     "when": lambda v: v("airflow_executor") in ("auto", "celery"),
     "ports": [("airflow_log_server_port", CLUSTER)]},
    {"service": "Luigi scheduler", "groups": ["luigi"], "else_groups": ["airflow"],
     "ports": [("luigi_port", CLUSTER), ("luigi_backend_port", LOOPBACK)]},
    {"service": "JupyterHub", "groups": ["jupyter"],
     "ports": [("jupyter_port", CLUSTER), ("jupyter_hub_api_port", LOOPBACK),
               ("jupyter_proxy_api_port", LOOPBACK)]},
    {"service": "Prometheus", "groups": ["monitoring"], "ports": [("monitoring_prometheus_port", BOTH)]},
    {"service": "node_exporter", "groups": ["all"], "needs": ["monitoring"],
     "ports": [("monitoring_node_exporter_port", CLUSTER)]},
    {"service": "Redis exporter", "groups": ["celery_broker"], "needs": ["monitoring"],
     "when": lambda v: "redis" in (v("monitoring_services") or []) and v("celery_broker_type") == "redis",
     "ports": [("monitoring_redis_exporter_port", CLUSTER)]},
    {"service": "PostgreSQL exporter", "groups": ["airflow"], "needs": ["monitoring"],
     "when": lambda v: "postgresql" in (v("monitoring_services") or []),
     "ports": [("monitoring_postgres_exporter_port", CLUSTER)]},
    {"service": "Managers server", "groups": ["mpmanager"], "ports": [("mpmanager_port", CLUSTER)]},
    # The kernel's NFSv4 server, bound to the cluster address (nfs.conf.j2); rpcbind is turned off.
    {"service": "NFS server", "groups": ["storage_server"],
     "when": lambda v: v("shared_storage_backend") == "nfs",
     "ports": [("NFSv4", CLUSTER, 2049)]},
]  # fmt: skip

# The roles' defaults of every variable the table reads (tests/unit/test_port_plan.py compares them
# with roles/*/defaults/main.yml).
DEFAULTS: dict[str, Any] = {
    "package_cache_enabled": False,
    "package_cache_pip_enabled": True,
    "package_cache_port": 3142,
    "package_cache_pip_port": 3143,
    "package_cache_pip_backend_port": 3144,
    "dask_scheduler_port": 8786,
    "dask_dashboard_enabled": True,
    "dask_dashboard_port": 8787,
    "dask_worker_nworkers": 1,
    "dask_worker_port": 8800,
    "dask_nanny_port": 8900,
    "spark_master_port": 7077,
    "spark_master_webui_port": 8080,
    "spark_worker_port": 7078,
    "spark_worker_webui_port": 8081,
    "celery_broker_type": "redis",
    "celery_redis_port": 6379,
    "celery_redis_bind_loopback": True,
    "celery_rabbitmq_port": 5671,
    "celery_flower_enabled": True,
    "celery_flower_port": 5555,
    "airflow_executor": "auto",
    "airflow_api_port": 8090,
    "airflow_db_host": "127.0.0.1",
    "airflow_db_port": 5432,
    "airflow_log_server_port": 8793,
    "luigi_port": 8082,
    "luigi_backend_port": 8083,
    "jupyter_port": 8000,
    "jupyter_hub_api_port": 8091,
    "jupyter_proxy_api_port": 8001,
    "monitoring_prometheus_port": 9090,
    "monitoring_node_exporter_port": 9100,
    "monitoring_services": ["redis", "postgresql"],
    "monitoring_redis_exporter_port": 9121,
    "monitoring_postgres_exporter_port": 9187,
    "mpmanager_port": 50000,
    "shared_storage_backend": "nfs",
}


# Port variables of the roles that are no listener of their own: a client's view of another
# service's port, a check's transient probe, the gateway's per-use parameters.
NOT_LISTENERS = (
    "airflow_celery_broker_port",
    "verify_net_port",
    "web_gateway_port",
    "web_gateway_backend_port",
)


def _members(groups: dict[str, Any], names: list[str]) -> set[str]:
    return {host for name in names for host in (groups.get(name) or [])}


def _runs_on(entry: dict[str, Any], groups: dict[str, Any]) -> set[str]:
    # A service that runs only when other groups have hosts ("needs": node_exporter on every host
    # with a Prometheus host, the Airflow log server with an Airflow host and a broker).
    if any(not groups.get(name) for name in entry.get("needs", [])):
        return set()
    hosts = _members(groups, entry["groups"])
    if not hosts and entry.get("else_groups"):
        hosts = _members(groups, entry["else_groups"])
    return hosts


def _span(first: int, last: int) -> str:
    return f"{first}" if last == first else f"{first}-{last}"


def clusterforge_port_collisions(groups: dict[str, Any], hostvars: Any) -> list[str]:
    """One sentence per pair of services of one host whose ports meet on an address both bind,
    naming the host, the port, both services and the variables that set them; [] when none do."""
    listeners: dict[str, list[tuple[int, int, frozenset[str], str, str]]] = {}
    for entry in SERVICES:
        for host in sorted(_runs_on(entry, groups)):
            known = hostvars[host]

            def value(name: str, known: Any = known) -> Any:
                return known[name] if name in known else DEFAULTS[name]

            if "when" in entry and not entry["when"](value):
                continue
            width = entry["width"](value) if "width" in entry else 1
            for name, where, *fixed in entry["ports"]:
                addresses = where(value) if callable(where) else where
                port = int(fixed[0] if fixed else value(name))
                listeners.setdefault(host, []).append(
                    (port, port + width - 1, addresses, entry["service"], name)
                )
    found = []
    for host, taken in sorted(listeners.items()):
        for i, (first, last, addresses, service, name) in enumerate(taken):
            for other_first, other_last, other_addresses, other_service, other_name in taken[i + 1 :]:
                if first <= other_last and other_first <= last and addresses & other_addresses:
                    found.append(
                        f"{host}: port {_span(max(first, other_first), min(last, other_last))} is wanted by "
                        f"the {service} ({name}: {_span(first, last)}) and the {other_service} "
                        f"({other_name}: {_span(other_first, other_last)})"
                    )
    return found


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"clusterforge_port_collisions": clusterforge_port_collisions}
