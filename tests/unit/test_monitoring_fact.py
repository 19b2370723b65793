"""What the monitoring role publishes for the security checks about the exporters' doors: for every
job Prometheus logs in to with its certificate, per target, the cluster addresses that target's host
firewall lets open the port (the firewall role's rule), or nothing where the target's firewall is off."""

from __future__ import annotations

import json
from pathlib import Path

from localplay import ROOT, render_on_hosts

ROLE = ROOT / "roles/monitoring"
ADDRESSES = {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"}


def fact(tmp_path: Path, groups: dict[str, list[str]], hostvars: dict[str, dict[str, object]]) -> dict:
    """The fact the Prometheus host h1 publishes, with a Redis exporter job and a gateway job."""
    hosts = {name: {"cluster_address": a, **hostvars.get(name, {})} for name, a in ADDRESSES.items()}
    redis = {
        "name": "redis",
        "node": "h1",
        "target": "10.0.0.1:9121",
        "auth": "certificate",
        "workers": 0,
        "workers_query": "",
        "alert": "",
    }
    gateway = {**redis, "name": "dask", "target": "10.0.0.1:8787", "auth": "password"}
    values = {"__monitoring_jobs": [redis, gateway], "monitoring_cluster_address": "10.0.0.1"}
    rendered = render_on_hosts(tmp_path, ROLE, "monitoring.fact.j2", hosts, groups, "h1", values)
    return json.loads(rendered["h1"])


def test_each_certificate_job_names_the_addresses_its_targets_firewalls_let_in(tmp_path: Path):
    groups = {"head": ["h1"], "monitoring": ["h2"], "workers": ["h2", "h3"]}
    jobs = fact(tmp_path, groups, {"h3": {"firewall_enabled": False}})["jobs"]
    both = ["10.0.0.2", "10.0.0.1"]
    # node_exporter on every node (the fact's own job), the Redis exporter on h1; h3's firewall is off.
    assert jobs["node"]["clients"] == {"h1": both, "h2": both}, jobs["node"]
    assert jobs["redis"]["clients"] == {"h1": both}, jobs["redis"]
    assert "clients" not in jobs["dask"], "a job behind an engine's password gateway has no exporter door"
