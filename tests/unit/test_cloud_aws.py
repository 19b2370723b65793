"""AWS provisioning against a local moto server: plan, create, idempotence, inventory, teardown, sweep."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _load(name: str, path: Path) -> Any:
    """Import PATH (not on sys.path) once, as NAME."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cloudtest = _load("cloudtest", Path(__file__).resolve().parents[1] / "cloud" / "cloudtest.py")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from cloudtest.start_moto(tmp_path_factory.mktemp("cloud-aws"))


@pytest.fixture(scope="module")
def images(moto: Any) -> dict[str, str]:
    """One registered image per distro, found by the same owner + name lookup as real AWS."""
    client = moto.client()
    found = {}
    for distro, name in (
        ("debian13", "debian-13-amd64-20250801-2189"),
        ("debian12", "debian-12-amd64-20250801-2189"),
    ):
        found[distro] = client.register_image(
            Name=name,
            Architecture="x86_64",
            RootDeviceName="/dev/xvda",
            VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
        )["ImageId"]
    return found


def image_lookup(images: dict[str, str]) -> dict[str, Any]:
    # moto's account owns what the test registers; moto records no architecture for it.
    return {
        "cloud_images": {
            "debian13": {"owner": "123456789012", "name": "debian-13-amd64-*"},
            "debian12": {"owner": "123456789012", "name": "debian-12-amd64-*"},
        }
    }


NODE_SETS = [
    {
        "name": "head",
        "count": 1,
        "instance_type": "t3.large",
        "groups": ["head", "dask_scheduler", "mpi_hosts"],
    },
    {
        "name": "worker",
        "count": 2,
        "instance_type": "t3.medium",
        "distro": "debian12",
        "groups": ["workers", "dask_workers", "mpi_hosts"],
    },
]


def test_non_cloud_inventory_is_a_noop(moto: Any, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("---\nall:\n  hosts:\n    node1:\n      ansible_host: 192.0.2.1\n")
    run = cloudtest.playbook(moto, "cloud_up.yml", {}, inventory=inventory)
    assert run.returncode == 0, run.output
    assert run.recap == {}, "no task may run, not even on localhost: " + run.output
    assert "Skip, this inventory is not a cloud inventory" in run.output


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"cloud_cluster_name": ""}, "set it to the name of the cluster"),
        ({"cloud_ssh_allowed_cidr": "203.0.113.7/24"}, "is not an IPv4 network"),
        ({"cloud_ssh_allowed_cidr": "0.0.0.0"}, "is not an IPv4 network"),
        ({"cloud_subnet_cidr": "10.99.0.0/24"}, "inside it"),
        ({"cloud_node_sets": [{**NODE_SETS[0], "count": -1}]}, "count an integer from 0 to 100"),
        ({"cloud_node_sets": [{**NODE_SETS[0], "count": 2}]}, "exactly one node may be in the 'head' group"),
    ],
    ids=["no-name", "host-bits", "no-prefix", "subnet-outside", "negative-count", "two-heads"],
)
def test_invalid_inputs_fail_before_any_change(moto: Any, override: dict[str, Any], message: str) -> None:
    before = cloudtest.snapshot(moto.client())
    run = cloudtest.playbook(moto, "cloud_up.yml", cloudtest.base_vars(moto, "bad", **override))
    assert run.returncode != 0
    assert message in run.output, run.output
    assert "Find the resources" not in run.output, "validation must come before any API call"
    assert cloudtest.snapshot(moto.client()) == before


def test_dry_run_and_check_mode_create_nothing(moto: Any, images: dict[str, str]) -> None:
    before = cloudtest.snapshot(moto.client())
    extra = cloudtest.base_vars(moto, "plan", cloud_node_sets=NODE_SETS, **image_lookup(images))
    dry = cloudtest.playbook(moto, "cloud_up.yml", {**extra, "cloud_dry_run": True})
    assert dry.returncode == 0, dry.output
    assert dry.recap["changed"] == 0
    head_line = f"plan-head-1 t3.large debian13 {images['debian13']} [head,dask_scheduler,mpi_hosts]: create"
    assert f'"{head_line}"' in dry.output, dry.output
    assert '"hourly_cost_usd": "0.1664 on demand"' in dry.output  # 0.0832 + 2 x 0.0416
    check = cloudtest.playbook(moto, "cloud_up.yml", extra, "--check")
    assert check.returncode == 0, check.output
    assert check.recap["changed"] == 0
    assert cloudtest.snapshot(moto.client()) == before


def test_up_is_exact_idempotent_and_down_leaves_nothing(moto: Any, images: dict[str, str]) -> None:
    client = moto.client()
    baseline = cloudtest.snapshot(client)
    extra = cloudtest.base_vars(moto, "t1", cloud_node_sets=NODE_SETS, **image_lookup(images))

    up = cloudtest.playbook(moto, "cloud_up.yml", extra)
    assert up.returncode == 0, up.output
    found = cloudtest.cluster_resources(client, "t1")
    assert {kind: len(items) for kind, items in found.items()} == {
        "vpcs": 1,
        "subnets": 1,
        "internet_gateways": 1,
        "route_tables": 1,
        "security_groups": 1,
        "key_pairs": 1,
        "instances": 3,
    }
    vpc = found["vpcs"][0]
    assert vpc["CidrBlock"] == "10.77.0.0/16"
    subnet = found["subnets"][0]
    assert subnet["CidrBlock"] == "10.77.1.0/24" and subnet["VpcId"] == vpc["VpcId"]
    assert subnet["MapPublicIpOnLaunch"] is True
    igw = found["internet_gateways"][0]
    assert [a["VpcId"] for a in igw["Attachments"]] == [vpc["VpcId"]]
    table = found["route_tables"][0]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw["InternetGatewayId"]}.items() <= next(
        route for route in table["Routes"] if route.get("DestinationCidrBlock") == "0.0.0.0/0"
    ).items()
    assert [a["SubnetId"] for a in table["Associations"] if not a.get("Main")] == [subnet["SubnetId"]]

    group = found["security_groups"][0]
    ingress = group["IpPermissions"]
    ssh = [rule for rule in ingress if rule.get("FromPort") == 22]
    assert len(ssh) == 1 and ssh[0]["IpProtocol"] == "tcp" and ssh[0]["ToPort"] == 22
    assert [r["CidrIp"] for r in ssh[0]["IpRanges"]] == ["203.0.113.7/32"]
    internal = [rule for rule in ingress if rule["IpProtocol"] == "-1"]
    assert len(internal) == 1 and internal[0]["IpRanges"] == []
    assert [pair["GroupId"] for pair in internal[0]["UserIdGroupPairs"]] == [group["GroupId"]]
    assert len(ingress) == 2, "nothing but SSH from the allowed source and traffic inside the group"
    assert all(r["CidrIp"] != "0.0.0.0/0" for rule in ingress for r in rule["IpRanges"])

    assert found["key_pairs"][0]["KeyName"] == "clusterforge-t1"

    instances = {cloudtest.tags(i)["Name"]: i for i in found["instances"]}
    assert sorted(instances) == ["t1-head-1", "t1-worker-1", "t1-worker-2"]
    head, worker = instances["t1-head-1"], instances["t1-worker-2"]
    assert head["InstanceType"] == "t3.large" and worker["InstanceType"] == "t3.medium"
    assert head["ImageId"] == images["debian13"] and worker["ImageId"] == images["debian12"]
    assert {i["SubnetId"] for i in instances.values()} == {subnet["SubnetId"]}
    assert {i["KeyName"] for i in instances.values()} == {"clusterforge-t1"}
    assert {g["GroupId"] for i in instances.values() for g in i["SecurityGroups"]} == {group["GroupId"]}
    head_tags = cloudtest.tags(head)
    assert head_tags["clusterforge_groups"] == "head,dask_scheduler,mpi_hosts"
    assert head_tags["clusterforge_node_set"] == "head"
    assert head_tags["clusterforge_owner"] == "clusterforge-test"
    assert head_tags["clusterforge_expires"] > "2026-01-01T00:00:00Z"
    # One expiry for the whole cluster, on every resource.
    expiries = {cloudtest.tags(item)["clusterforge_expires"] for items in found.values() for item in items}
    assert len(expiries) == 1

    inventory = cloudtest.inventory_list(moto, extra)
    assert inventory["head"]["hosts"] == ["t1-head-1"]
    assert sorted(inventory["workers"]["hosts"]) == ["t1-worker-1", "t1-worker-2"]
    assert sorted(inventory["mpi_hosts"]["hosts"]) == ["t1-head-1", "t1-worker-1", "t1-worker-2"]
    assert "hosts" not in inventory.get("gpu_nodes", {}), "declared, empty"
    hostvars = inventory["_meta"]["hostvars"]["t1-head-1"]
    assert hostvars["cluster_address"] == head["PrivateIpAddress"]
    assert hostvars["ansible_host"] == head["PublicIpAddress"]

    after_up = cloudtest.snapshot(client)
    again = cloudtest.playbook(moto, "cloud_up.yml", extra)
    assert again.returncode == 0, again.output
    assert again.recap["changed"] == 0, again.output
    assert cloudtest.snapshot(client) == after_up, "the second run created or removed something"

    down = cloudtest.playbook(
        moto, "cloud_down.yml", {"cloud_endpoint_url": moto.url, "cloud_cluster_name": "t1"}
    )
    assert down.returncode == 0, down.output
    assert "no instance, key pair, security group, route table, gateway, subnet or VPC left" in down.output
    assert all(not items for items in cloudtest.cluster_resources(client, "t1").values())
    assert cloudtest.snapshot(client) == baseline


def test_down_refuses_without_a_cluster_name(moto: Any) -> None:
    for extra in ({"cloud_endpoint_url": moto.url}, {"cloud_cluster_name": "x", "cloud_sweep": True}):
        run = cloudtest.playbook(moto, "cloud_down.yml", extra)
        assert run.returncode != 0
        assert "Nothing was removed" in run.output, run.output


def _partial_cluster(client: Any, name: str, expires: str) -> None:
    """What an interrupted cloud_up leaves: a tagged VPC, subnet and one instance."""
    tags = [
        {"Key": "clusterforge_cluster", "Value": name},
        {"Key": "clusterforge_expires", "Value": expires},
        {"Key": "Name", "Value": f"{name}-head-1"},
    ]

    def spec(kind: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": tags}]

    vpc = client.create_vpc(CidrBlock="10.88.0.0/16", TagSpecifications=spec("vpc"))["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.88.1.0/24", TagSpecifications=spec("subnet"))
    image = client.describe_images()["Images"][0]["ImageId"]
    client.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        SubnetId=subnet["Subnet"]["SubnetId"],
        TagSpecifications=spec("instance"),
    )


def test_sweep_removes_expired_clusters_only(moto: Any) -> None:
    client = moto.client()
    _partial_cluster(client, "old", "2001-01-01T00:00:00Z")
    _partial_cluster(client, "fresh", "2999-01-01T00:00:00Z")
    run = cloudtest.playbook(moto, "cloud_down.yml", {"cloud_endpoint_url": moto.url, "cloud_sweep": True})
    assert run.returncode == 0, run.output
    assert "expired clusters: old" in run.output
    assert all(not items for items in cloudtest.cluster_resources(client, "old").values())
    fresh = cloudtest.cluster_resources(client, "fresh")
    assert len(fresh["vpcs"]) == 1 and len(fresh["instances"]) == 1
