"""Cloud plugins without a cloud: the network filters, the inventory plugin when it must stay quiet,
and the role inputs (defaults, argument specs, README) agreeing with each other."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pathload import load

cloudtest = load("cloudtest", Path(__file__).resolve().parents[1] / "cloud" / "cloudtest.py")
cloud_net = load("cloud_net", cloudtest.REPO / "plugins" / "filter" / "cloud_net.py")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.77.0.0/16", "10.77.0.0/16"),
        (" 203.0.113.7/32 ", "203.0.113.7/32"),
        ("203.0.113.7/24", ""),
        ("203.0.113.7", ""),
        ("10.0.0.0/33", ""),
        ("::1/128", ""),
        ("", ""),
        (None, ""),
        (22, ""),
    ],
)
def test_ipv4_network(value: Any, expected: str) -> None:
    assert cloud_net.cloud_ipv4_network(value) == expected


def test_subnet_of_and_prefixlen() -> None:
    assert cloud_net.cloud_ipv4_subnet_of("10.77.1.0/24", "10.77.0.0/16")
    assert not cloud_net.cloud_ipv4_subnet_of("10.78.1.0/24", "10.77.0.0/16")
    assert not cloud_net.cloud_ipv4_subnet_of("bad", "10.77.0.0/16")
    assert cloud_net.cloud_ipv4_prefixlen("10.77.0.0/16") == 16
    assert cloud_net.cloud_ipv4_prefixlen("nope") == -1


def _inventory(tmp_path: Path, extra_vars: dict[str, Any]) -> dict[str, Any]:
    env = {
        "ANSIBLE_CONFIG": str(cloudtest.REPO / "ansible.cfg"),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        # Any AWS call would fail: nothing listens on port 9 and there are no credentials.
    }
    done = subprocess.run(
        [
            str(cloudtest.ANSIBLE_INVENTORY),
            "-i",
            str(cloudtest.CLOUD_INVENTORY),
            "-e",
            json.dumps(extra_vars),
            "--list",
        ],
        cwd=cloudtest.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Failed to parse" not in done.stderr and "Unable to parse" not in done.stderr, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "extra_vars",
    [
        {"cloud_cluster_name": "", "cloud_endpoint_url": "http://127.0.0.1:9"},
        {"cloud_cluster_name": "x", "cloud_provider": "gce", "cloud_endpoint_url": "http://127.0.0.1:9"},
    ],
    ids=["no-cluster-name", "other-provider"],
)
def test_inventory_plugin_stays_quiet(tmp_path: Path, extra_vars: dict[str, Any]) -> None:
    inventory = _inventory(tmp_path, extra_vars)
    assert inventory["_meta"]["hostvars"] == {}
    for group in ("head", "workers", "gpu_nodes", "dask_scheduler", "airflow"):
        assert group in inventory["all"]["children"], "tier groups exist even when empty"


def test_role_inputs_agree() -> None:
    role_docs = load("role_docs", cloudtest.REPO / "scripts" / "role_docs.py")
    for role in ("cloud_aws", "cloud_libcloud"):
        assert role_docs.problems_of(cloudtest.REPO / "roles" / role, write=False) == []


def test_inventory_inputs_reach_the_roles() -> None:
    """Every cloud_* input of the inventory is read by a role default (or by the inventory itself)."""
    inputs = yaml.safe_load((cloudtest.CLOUD_INVENTORY / "group_vars" / "all" / "cloud.yml").read_text())
    used = (
        "".join(
            (cloudtest.REPO / "roles" / role / "defaults" / "main.yml").read_text()
            for role in ("cloud_aws", "cloud_libcloud", "dask", "spark")
        )
        + (cloudtest.CLOUD_INVENTORY / "clusterforge_ec2.yml").read_text()
    )
    used += (cloudtest.REPO / "playbooks" / "cloud_up.yml").read_text()
    used += (cloudtest.REPO / "tools" / "ephemeral_dask.py").read_text()
    unused = [name for name in inputs if name not in used]
    assert unused == []


def _lab_groups() -> dict[str, str]:
    """scripts/lab's LAB_GROUPS: group name -> where the lab puts it (head, workers, all, none)."""
    text = (cloudtest.REPO / "scripts" / "lab").read_text()
    body = text.split("LAB_GROUPS=(", 1)[1].split(")", 1)[0]
    return dict(item.split("=", 1) for item in body.split())


def test_the_default_cloud_cluster_puts_every_tier_where_the_lab_does():
    """A cloud cluster from the shipped node sets runs every tier the lab runs: the head set holds
    the lab's head (and all-node) groups, the worker set its worker (and all-node) groups, and the
    inventory plugin declares every group a play targets, even when no node is in it."""
    lab = _lab_groups()
    sets = {
        s["name"]: set(s["groups"])
        for s in yaml.safe_load((cloudtest.REPO / "inventories/cloud/group_vars/all/cloud.yml").read_text())[
            "cloud_node_sets"
        ]
    }
    assert sets["head"] == {g for g, where in lab.items() if where in ("head", "all")}
    assert sets["worker"] == {g for g, where in lab.items() if where in ("workers", "all")}
    plugin = yaml.safe_load((cloudtest.REPO / "inventories/cloud/clusterforge_ec2.yml").read_text())
    declared = set(plugin["declare_groups"])
    targeted = set()
    for playbook in [cloudtest.REPO / "site.yml", *sorted((cloudtest.REPO / "playbooks").glob("*.yml"))]:
        for play in yaml.safe_load(playbook.read_text()) or []:
            hosts = str(play.get("hosts", ""))
            # "{{ 'head:!mpi_hosts' | clusterforge_converge_hosts(...) }}" or a plain pattern.
            pattern = hosts.split("'")[1] if "'" in hosts else hosts
            targeted |= {p.lstrip("!&") for p in pattern.split(":") if p and "{" not in p}
    targeted -= {"all", "localhost", "scale_leaving", "upgrade_roll"}
    assert set(lab) <= declared, set(lab) - declared
    assert targeted <= declared, targeted - declared
