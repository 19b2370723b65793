"""AWS provisioning against a local moto server: plan, create, idempotence, inventory, teardown, sweep."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pathload import load

cloudtest = load("cloudtest", Path(__file__).resolve().parents[1] / "cloud" / "cloudtest.py")


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


# A spot CPU set and a GPU set beside NODE_SETS' on-demand head.
SPOT = {
    "name": "spot",
    "count": 1,
    "instance_type": "c6i.large",
    "market": "spot",
    "spot_max_price": "0.05",
    "groups": ["workers", "dask_workers"],
}
GPU = {"name": "gpu", "count": 1, "preset": "g5", "groups": ["workers", "dask_workers"]}
# Every GPU preset: (node set, expected instance type, GPU model, GPU count, root volume GiB).
PRESETS = [
    ({**GPU, "name": "tfour", "preset": "g4dn"}, "g4dn.xlarge", "T4", "1", 100),
    ({**GPU, "name": "aten", "preset": "g5", "market": "spot"}, "g5.xlarge", "A10G", "1", 100),
    ({**GPU, "name": "lfour", "preset": "g6", "instance_type": "g6.12xlarge"}, "g6.12xlarge", "L4", "0", 100),
    ({**GPU, "name": "lforty", "preset": "g6e", "gpu_driver": "nvidia"}, "g6e.xlarge", "L40S", "1", 100),
    (
        {**GPU, "name": "hopper", "preset": "p5", "gpu_driver": "preinstalled", "volume_size_gb": 500},
        "p5.48xlarge",
        "H100",
        "8",
        500,
    ),
]


def test_non_cloud_inventory_is_a_noop(moto: Any, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("---\nall:\n  hosts:\n    node1:\n      ansible_host: 192.0.2.1\n")
    run = cloudtest.playbook(moto, "cloud_up.yml", {}, inventory=inventory)
    assert run.returncode == 0, run.output
    assert run.recap == {}, "no task may run, not even on localhost: " + run.output
    assert "Skip, this inventory is not a cloud inventory" in run.output


# Node sets that each break one rule of the purchase and preset checks: one run reports them all.
BAD_SETS = [
    {**NODE_SETS[0], "market": "spot"},
    {**SPOT, "name": "nan", "spot_max_price": "cheap"},
    {**SPOT, "name": "zero", "spot_max_price": "0"},
    {**NODE_SETS[1], "spot_max_price": "0.1"},
    {**GPU, "instance_type": "p5.48xlarge"},
]


@pytest.mark.parametrize(
    ("override", "messages"),
    [
        ({"cloud_cluster_name": ""}, ["set it to the name of the cluster"]),
        ({"cloud_ssh_allowed_cidr": "203.0.113.7/24"}, ["is not an IPv4 network"]),
        ({"cloud_ssh_allowed_cidr": "0.0.0.0"}, ["is not an IPv4 network"]),
        ({"cloud_subnet_cidr": "10.99.0.0/24"}, ["inside it"]),
        ({"cloud_node_sets": [{**NODE_SETS[0], "count": -1}]}, ["count an integer from 0 to 100"]),
        (
            {"cloud_node_sets": [{**NODE_SETS[0], "count": 2}]},
            ["exactly one node may be in the 'head' group"],
        ),
        (
            {"cloud_node_sets": [NODE_SETS[0], {**GPU, "preset": "g7"}, {**SPOT, "market": "reserved"}]},
            ["value of preset must be one of", "value of market must be one of"],
        ),
        (
            {"cloud_node_sets": BAD_SETS},
            [
                "failed: [localhost] (item=head)",  # a spot head
                "failed: [localhost] (item=nan)",  # a price that is not a number
                "failed: [localhost] (item=zero)",  # a price that is not positive
                "failed: [localhost] (item=worker)",  # a price on an on-demand set
                "failed: [localhost] (item=gpu)",  # a type outside the preset's family
                "the head node must stay on-demand",
                "must be a positive number",
                "must belong to preset",
            ],
        ),
        (
            {"cloud_node_sets": [NODE_SETS[0], {"name": "gpu", "count": 1, "groups": ["workers"]}]},
            ["or preset set"],
        ),
        ({"cloud_s3_bucket": "My_Bucket"}, ["must be an S3 bucket name"]),
        ({"cloud_s3_bucket": "data", "cloud_s3_prefix": "runs"}, ["ending in '/'"]),
    ],
    ids=[
        "no-name",
        "host-bits",
        "no-prefix",
        "subnet-outside",
        "negative-count",
        "two-heads",
        "unknown-preset-and-market",
        "purchase-and-preset-rules",
        "no-type-no-preset",
        "bad-bucket",
        "prefix-without-slash",
    ],
)
def test_invalid_inputs_fail_before_any_change(
    moto: Any, override: dict[str, Any], messages: list[str]
) -> None:
    before = cloudtest.snapshot(moto.client())
    run = cloudtest.playbook(moto, "cloud_up.yml", cloudtest.base_vars(moto, "bad", **override))
    assert run.returncode != 0
    for message in messages:
        assert message in run.output, (message, run.output)
    assert "Find the resources" not in run.output, "validation must come before any API call"
    assert cloudtest.snapshot(moto.client()) == before


def test_dry_run_and_check_mode_create_nothing(moto: Any, images: dict[str, str]) -> None:
    before = cloudtest.snapshot(moto.client())
    extra = cloudtest.base_vars(moto, "plan", cloud_node_sets=NODE_SETS, **image_lookup(images))
    dry = cloudtest.playbook(moto, "cloud_up.yml", {**extra, "cloud_dry_run": True})
    assert dry.returncode == 0, dry.output
    assert dry.recap["changed"] == 0
    head_line = (
        f"plan-head-1 t3.large debian13 {images['debian13']} [head,dask_scheduler,mpi_hosts] 30 GiB: create"
    )
    assert f'"{head_line}"' in dry.output, dry.output
    assert '"hourly_cost_usd": "0.1664 on demand"' in dry.output  # 0.0832 + 2 x 0.0416
    sets = [*NODE_SETS, SPOT, *(node_set for node_set, *_ in PRESETS)]
    gpu = cloudtest.playbook(moto, "cloud_up.yml", {**extra, "cloud_node_sets": sets, "cloud_dry_run": True})
    assert gpu.returncode == 0, gpu.output
    image, gpu_groups = images["debian13"], "[workers,dask_workers,gpu_nodes]"
    for line in (
        f"plan-spot-1 c6i.large debian13 {image} [workers,dask_workers] spot max 0.05 30 GiB: create",
        f"plan-tfour-1 g4dn.xlarge debian13 {image} {gpu_groups} gpu T4 x1 driver distro 100 GiB",
        f"plan-aten-1 g5.xlarge debian13 {image} {gpu_groups} spot gpu A10G x1 driver distro",
        f"plan-lfour-1 g6.12xlarge debian13 {image} {gpu_groups} gpu L4 driver distro",
        f"plan-lforty-1 g6e.xlarge debian13 {image} {gpu_groups} gpu L40S x1 driver nvidia",
        f"plan-hopper-1 p5.48xlarge debian13 {image} {gpu_groups} gpu H100 x8 driver preinstalled 500 GiB",
    ):
        assert line in gpu.output, gpu.output
    # On demand: 0.0832 + 2 x 0.0416 + g4dn 0.526 + g6e 1.861 + p5 55.04 (g6.12xlarge has no price);
    # spot at most: 0.05 (max price) + g5 1.006 (its on-demand price, no max price).
    assert (
        '"hourly_cost_usd": "57.5934 on demand, spot at most 1.0560, plus types without a price in '
        'cloud_hourly_prices: g6.12xlarge"'
    ) in gpu.output, gpu.output
    assert "gp3, encrypted with the account's default EBS key" in gpu.output
    check = cloudtest.playbook(moto, "cloud_up.yml", extra, "--check")
    assert check.returncode == 0, check.output
    assert check.recap["changed"] == 0
    assert cloudtest.snapshot(moto.client()) == before


def test_up_is_exact_idempotent_and_down_leaves_nothing(moto: Any, images: dict[str, str]) -> None:
    client, iam = moto.client(), moto.client("iam")
    moto.client("s3").create_bucket(Bucket="t1-data")
    baseline = {**cloudtest.snapshot(client), **cloudtest.iam_snapshot(iam)}
    sets = [*NODE_SETS, SPOT, *(node_set for node_set, *_ in PRESETS)]
    extra = cloudtest.base_vars(
        moto,
        "t1",
        cloud_node_sets=sets,
        cloud_s3_bucket="t1-data",
        cloud_s3_prefix="runs/",
        **image_lookup(images),
    )

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
        "launch_templates": 2,
        "instances": 9,
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
    gpu_names = sorted(f"t1-{node_set['name']}-1" for node_set, *_ in PRESETS)
    assert sorted(instances) == sorted(["t1-head-1", "t1-worker-1", "t1-worker-2", "t1-spot-1", *gpu_names])
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
    # (moto lists launch templates without their tags: read those through DescribeTags.)
    template_ids = [t["LaunchTemplateId"] for t in found["launch_templates"]]
    template_tags = client.describe_tags(Filters=[{"Name": "resource-id", "Values": template_ids}])["Tags"]
    expiries = {
        cloudtest.tags(item)["clusterforge_expires"]
        for items in found.values()
        for item in items
        if item.get("Tags")
    }
    expiries |= {tag["Value"] for tag in template_tags if tag["Key"] == "clusterforge_expires"}
    assert (
        len([tag for tag in template_tags if tag["Key"] == "clusterforge_cluster" and tag["Value"] == "t1"])
        == 2
    )
    assert len(expiries) == 1

    _assert_market_profile_volumes(client, iam, found, instances)

    inventory = cloudtest.inventory_list(moto, extra)
    assert inventory["head"]["hosts"] == ["t1-head-1"]
    assert sorted(inventory["workers"]["hosts"]) == sorted(
        ["t1-worker-1", "t1-worker-2", "t1-spot-1", *gpu_names]
    )
    assert sorted(inventory["mpi_hosts"]["hosts"]) == ["t1-head-1", "t1-worker-1", "t1-worker-2"]
    assert sorted(inventory["gpu_nodes"]["hosts"]) == gpu_names
    hostvars = inventory["_meta"]["hostvars"]
    assert hostvars["t1-head-1"]["cluster_address"] == head["PrivateIpAddress"]
    assert hostvars["t1-head-1"]["ansible_host"] == head["PublicIpAddress"]
    assert (
        hostvars["t1-head-1"]["cloud_market"] == "on-demand"
        and hostvars["t1-spot-1"]["cloud_market"] == "spot"
    )
    assert hostvars["t1-head-1"]["cloud_gpu_model"] == ""
    for node_set, _type, model, count, _size in PRESETS:
        node = hostvars[f"t1-{node_set['name']}-1"]
        assert (node["cloud_gpu_model"], node["cloud_gpu_count"]) == (model, int(count))
        assert node["cloud_gpu_driver"] == node_set.get("gpu_driver", "distro")

    after_up = {**cloudtest.snapshot(client), **cloudtest.iam_snapshot(iam)}
    again = cloudtest.playbook(moto, "cloud_up.yml", extra)
    assert again.returncode == 0, again.output
    assert again.recap["changed"] == 0, again.output
    after_again = {**cloudtest.snapshot(client), **cloudtest.iam_snapshot(iam)}
    assert after_again == after_up, "the second run created or removed something"

    down = cloudtest.playbook(
        moto, "cloud_down.yml", {"cloud_endpoint_url": moto.url, "cloud_cluster_name": "t1"}
    )
    assert down.returncode == 0, down.output
    assert (
        "no instance, launch template, IAM role, instance profile, key pair, security group, route table, "
        "gateway, subnet or VPC left"
    ) in down.output, down.output
    assert all(not items for items in cloudtest.cluster_resources(client, "t1").values())
    assert {**cloudtest.snapshot(client), **cloudtest.iam_snapshot(iam)} == baseline
    assert moto.client("s3").head_bucket(Bucket="t1-data"), "the data bucket is the user's: it stays"


def _assert_market_profile_volumes(
    client: Any, iam: Any, found: dict[str, list[dict[str, Any]]], instances: dict[str, dict[str, Any]]
) -> None:
    """Spot sets through their launch template, every node with the S3 profile and encrypted volumes."""
    templates = {t["LaunchTemplateName"]: t["LaunchTemplateId"] for t in found["launch_templates"]}
    assert sorted(templates) == ["clusterforge-t1-aten", "clusterforge-t1-spot"]
    for name, max_price in (("clusterforge-t1-spot", {"MaxPrice": "0.05"}), ("clusterforge-t1-aten", {})):
        version = client.describe_launch_template_versions(LaunchTemplateName=name)["LaunchTemplateVersions"]
        assert len(version) == 1, "a rerun must not add template versions"
        assert version[0]["LaunchTemplateData"]["InstanceMarketOptions"] == {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
                **max_price,
            },
        }
    for name, instance in instances.items():
        node_set = cloudtest.tags(instance)["clusterforge_node_set"]
        launched_from = cloudtest.tags(instance).get("aws:ec2launchtemplate:id")
        expected = templates.get(f"clusterforge-t1-{node_set}")
        assert launched_from == expected, f"{name}: spot sets (only) launch from their template"
        assert cloudtest.tags(instance)["clusterforge_market"] == ("spot" if expected else "on-demand")
        assert instance["IamInstanceProfile"]["Arn"].endswith(
            ":instance-profile/clusterforge/clusterforge-t1-node"
        )

    sizes = {"head": 30, "worker": 30, "spot": 30}
    types = {"head": "t3.large", "worker": "t3.medium", "spot": "c6i.large"}
    for node_set, instance_type, model, count, size in PRESETS:
        sizes[node_set["name"]] = size
        types[node_set["name"]] = instance_type
        tags = cloudtest.tags(instances[f"t1-{node_set['name']}-1"])
        assert (tags["clusterforge_gpu_model"], tags["clusterforge_gpu_count"]) == (model, count)
        assert "gpu_nodes" in tags["clusterforge_groups"].split(",")
    for name, instance in instances.items():
        node_set = cloudtest.tags(instance)["clusterforge_node_set"]
        assert instance["InstanceType"] == types[node_set], name
        volumes = client.describe_volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}]
        )
        assert [(v["Size"], v["VolumeType"], v["Encrypted"]) for v in volumes["Volumes"]] == [
            (sizes[node_set], "gp3", True)
        ], name

    role = iam.get_role(RoleName="clusterforge-t1-node")["Role"]
    assert role["Path"] == "/clusterforge/"
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert iam.list_attached_role_policies(RoleName="clusterforge-t1-node")["AttachedPolicies"] == []
    policy = iam.get_role_policy(RoleName="clusterforge-t1-node", PolicyName="clusterforge-s3")[
        "PolicyDocument"
    ]
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    assert sorted(statements) == ["ListClusterPrefix", "LocateBucket", "ObjectsUnderClusterPrefix"]
    assert statements["LocateBucket"]["Resource"] == "arn:aws:s3:::t1-data"
    assert statements["ListClusterPrefix"]["Resource"] == "arn:aws:s3:::t1-data"
    assert statements["ListClusterPrefix"]["Condition"] == {"StringLike": {"s3:prefix": ["runs/*"]}}
    assert statements["ObjectsUnderClusterPrefix"]["Resource"] == "arn:aws:s3:::t1-data/runs/*"
    assert "s3:*" not in str(policy) and all(s["Effect"] == "Allow" for s in statements.values())
    profile = iam.get_instance_profile(InstanceProfileName="clusterforge-t1-node")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["clusterforge-t1-node"]


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
