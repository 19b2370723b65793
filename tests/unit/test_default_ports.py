"""The roles' default ports: any set of roles may share one host (a one-node cluster runs them all),
so no two services may default to the same port."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Ports that name one service from two roles (the Celery tier's Redis is Airflow's broker too).
SAME_SERVICE = {frozenset({"celery_redis_port", "airflow_celery_broker_port"})}


def default_ports() -> dict[int, list[str]]:
    ports: dict[int, list[str]] = defaultdict(list)
    for defaults in sorted(ROOT.glob("roles/*/defaults/main.yml")):
        for name, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            if name.endswith("_port") and isinstance(value, int) and value > 0:
                ports[value].append(name)
    return ports


def test_no_two_services_default_to_one_port():
    ports = default_ports()
    assert len(ports) > 20, "the roles' defaults were not read"
    shared = {port: names for port, names in ports.items() if len(names) > 1}
    assert {port: names for port, names in shared.items() if frozenset(names) not in SAME_SERVICE} == {}
