"""tools/ephemeral_dask.py: EC2Cluster kwargs from the cloud settings, files for the verification suite,
and dask-cloudprovider's EC2Cluster itself against moto.

dask-cloudprovider is not in the controller venv (its aiobotocore pins an older botocore): the
tool imports it only when it starts a cluster, and the EC2Cluster test runs it in a venv of its
own built from tests/cloud/aiobotocore.lock (tests/cloud/testenv.py).
"""

from __future__ import annotations

import datetime
import json
import random
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pathload import load

cloudtest = load("cloudtest", Path(__file__).resolve().parents[1] / "cloud" / "cloudtest.py")
testenv = load("testenv", cloudtest.REPO / "tests" / "cloud" / "testenv.py")
ephemeral = load("ephemeral_dask", cloudtest.REPO / "tools" / "ephemeral_dask.py")
NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
CA, CERT, KEY = (
    f"-----BEGIN {kind}-----\nAAAA\n-----END {kind}-----\n" for kind in ("CA", "CERTIFICATE", "KEY")
)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from cloudtest.start_moto(tmp_path_factory.mktemp("cloud-dask"))


def settings(**overrides: Any) -> dict[str, Any]:
    base = {
        "cloud_cluster_name": "demo",
        "cloud_dask_image_id": "ami-0123456789abcdef0",
        "cloud_owner": "alice",
    }
    base["cloud_dask_docker_image"] = "ghcr.io/dask/dask:2025.9.1-py3.13"
    return ephemeral.load_settings(cloudtest.CLOUD_INVENTORY, {**base, **overrides})


def test_kwargs_from_the_inventory_defaults_and_lazy_import() -> None:
    kwargs = ephemeral.ec2_cluster_kwargs(settings(), now=NOW)
    assert "dask_cloudprovider" not in sys.modules
    assert kwargs == {
        "region": "us-east-1",
        "ami": "ami-0123456789abcdef0",
        "docker_image": "ghcr.io/dask/dask:2025.9.1-py3.13",
        "instance_type": "t3.large",
        "n_workers": 2,
        "filesystem_size": 30,
        "security": True,
        "auto_shutdown": True,
        "bootstrap": True,
        "use_private_ip": False,
        "instance_tags": {
            "clusterforge_cluster": "demo-dask",
            "clusterforge_owner": "alice",
            "clusterforge_expires": "2030-01-01T20:00:00Z",
        },
        "volume_tags": {
            "clusterforge_cluster": "demo-dask",
            "clusterforge_owner": "alice",
            "clusterforge_expires": "2030-01-01T20:00:00Z",
        },
        "env_vars": {},
    }


def test_kwargs_split_instance_types_and_overrides() -> None:
    sets = [
        {"name": "head", "count": 1, "instance_type": "t3.large", "groups": ["head", "dask_scheduler"]},
        {"name": "gpu", "count": 3, "instance_type": "g4dn.xlarge", "groups": ["workers", "dask_workers"]},
    ]
    discovered = {"vpc_id": "vpc-1", "subnet_id": "subnet-1", "security_group_id": "sg-1", "key_name": "k"}
    kwargs = ephemeral.ec2_cluster_kwargs(
        settings(cloud_node_sets=sets, cloud_region="eu-west-1", cloud_volume_size_gb=100),
        discovered,
        now=NOW,
    )
    assert "instance_type" not in kwargs
    assert kwargs["scheduler_instance_type"] == "t3.large" and kwargs["worker_instance_type"] == "g4dn.xlarge"
    assert kwargs["n_workers"] == 3 and kwargs["filesystem_size"] == 100 and kwargs["region"] == "eu-west-1"
    assert kwargs["vpc"] == "vpc-1" and kwargs["subnet_id"] == "subnet-1"
    assert kwargs["security_groups"] == ["sg-1"] and kwargs["key_name"] == "k"
    assert ephemeral.ec2_cluster_kwargs(settings(cloud_dask_n_workers=5), now=NOW)["n_workers"] == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cloud_cluster_name": ""}, "cloud_cluster_name is empty"),
        ({"cloud_dask_image_id": ""}, "no image"),
        (
            {"cloud_node_sets": [{"name": "x", "count": 1, "instance_type": "t3.large", "groups": ["head"]}]},
            "dask_workers",
        ),
    ],
)
def test_kwargs_errors_say_what_to_do(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ephemeral.SettingsError, match=message):
        ephemeral.ec2_cluster_kwargs(settings(**overrides), now=NOW)


def test_templates_are_ignored_and_overrides_parsed() -> None:
    loaded = ephemeral.load_settings(cloudtest.CLOUD_INVENTORY, {})
    assert "cloud_ssh_public_key_file" not in loaded  # a Jinja template in cloud.yml
    assert loaded["cloud_node_sets"][0]["name"] == "head"
    assert ephemeral.parse_overrides(["a=1", "b=x", "c=[1, 2]"]) == {"a": 1, "b": "x", "c": [1, 2]}
    with pytest.raises(ephemeral.SettingsError, match="NAME=VALUE"):
        ephemeral.parse_overrides(["novalue"])


def test_discover_finds_the_cluster_network_and_newest_image(moto: Any) -> None:
    client = moto.client()
    tags = [
        {"ResourceType": kind, "Tags": [{"Key": "clusterforge_cluster", "Value": "disc"}]}
        for kind in ("vpc",)
    ]
    vpc = client.create_vpc(CidrBlock="10.90.0.0/16", TagSpecifications=tags)["Vpc"]["VpcId"]
    subnet_tags = [{"ResourceType": "subnet", "Tags": [{"Key": "clusterforge_cluster", "Value": "disc"}]}]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.90.1.0/24", TagSpecifications=subnet_tags)
    ubuntu = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-"
    client.register_image(Name="debian-13-amd64-20300101-1", RootDeviceName="/dev/xvda")
    image = client.register_image(Name=ubuntu + "20300201", RootDeviceName="/dev/sda1")["ImageId"]
    lookup = {**ephemeral.UBUNTU_LTS, "owner": "123456789012"}  # moto's account owns what the test registers
    lookup.pop("architecture")  # moto records none for registered images
    found = ephemeral.discover(
        client,
        # The cluster's Debian lookup is not used: dask-cloudprovider's cloud-init needs Ubuntu.
        {
            "cloud_cluster_name": "disc",
            "cloud_dask_image": lookup,
            "cloud_images": {"debian13": {"owner": "123456789012", "name": "debian-13-amd64-*"}},
        },
    )
    assert found == {"image_id": image, "vpc_id": vpc, "subnet_id": subnet["Subnet"]["SubnetId"]}


class FakeSecurity:
    tls_ca_file = CA
    tls_client_cert = CERT
    tls_client_key = KEY


class FakeCluster:
    instances: ClassVar[list[FakeCluster]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.scheduler_address = "tls://198.51.100.10:8786"
        self.dashboard_link = "http://198.51.100.10:8787/status"
        self.security = FakeSecurity()
        self.closed = False
        FakeCluster.instances.append(self)

    def close(self) -> None:
        self.closed = True


def test_run_writes_tls_files_runs_the_command_and_always_closes(tmp_path: Path) -> None:
    out = tmp_path / "eph"
    probe = (
        "import json, os, sys; e = json.load(open(os.environ['CLUSTERFORGE_DASK_ENGINE']));"
        "ok = e['endpoint'].startswith('tls://');"
        "ok = ok and os.path.isdir(os.environ['CLUSTERFORGE_DASK_CONFIG_DIR']);"
        "sys.exit(0 if ok else 3)"
    )
    code = ephemeral.run({"n_workers": 2}, out, [sys.executable, "-c", probe], cluster_class=FakeCluster)
    assert code == 0 and FakeCluster.instances[-1].closed

    config = yaml.safe_load((out / "dask" / "dask.yaml").read_text())
    assert config["scheduler-address"] == "tls://198.51.100.10:8786"
    assert config["distributed"]["comm"]["require-encryption"] is True
    tls = config["distributed"]["comm"]["tls"]
    assert Path(tls["ca-file"]).read_text() == CA and Path(tls["client"]["key"]).read_text() == KEY
    for path in (tls["ca-file"], tls["client"]["cert"], tls["client"]["key"]):
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "dask").stat().st_mode) == 0o700
    engine = json.loads((out / "engines-dask.json").read_text())
    assert engine["endpoint"] == "tls://198.51.100.10:8786" and engine["config_dir"] == str(out / "dask")
    assert engine["n_workers"] == 2

    failing = ephemeral.run(
        {}, tmp_path / "f", [sys.executable, "-c", "raise SystemExit(7)"], cluster_class=FakeCluster
    )
    assert failing == 7 and FakeCluster.instances[-1].closed


def test_cli_kwargs_without_discovery(capsys: pytest.CaptureFixture[str]) -> None:
    code = ephemeral.main(
        [
            "kwargs",
            "--no-discover",
            "-e",
            "cloud_cluster_name=cli",
            "-e",
            "cloud_dask_image_id=ami-0abc1234",
            "-e",
            "cloud_dask_docker_image=ghcr.io/dask/dask:2025.9.1-py3.13",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ami"] == "ami-0abc1234" and printed["instance_tags"]["clusterforge_cluster"] == "cli-dask"
    assert ephemeral.main(["run", "--no-discover", "-e", "cloud_cluster_name=", "--out", "/nonexistent"]) == 2
    assert "dask_cloudprovider" not in sys.modules


def test_ec2cluster_against_moto_tls_calls_and_teardown(moto: Any, tmp_path: Path) -> None:
    """dask-cloudprovider itself (its own venv): EC2Cluster starts in the cluster's network and
    security group with TLS, its client reaches the scheduler over mutual TLS, and close()
    terminates every instance it started."""
    client = moto.client()
    tags = [{"Key": "clusterforge_cluster", "Value": "eph"}]

    def spec(kind: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": tags}]

    # 127.0.0.0/8: moto hands out loopback addresses, where the test's scheduler can listen (a
    # random /16 of it, so that two test runs on one host do not meet on port 8786).
    net = f"127.{random.randint(2, 254)}"
    vpc = client.create_vpc(CidrBlock=f"{net}.0.0/16", TagSpecifications=spec("vpc"))["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock=f"{net}.1.0/24", TagSpecifications=spec("subnet"))
    subnet_id = subnet["Subnet"]["SubnetId"]
    group = client.create_security_group(
        GroupName="clusterforge-eph", Description="eph", VpcId=vpc, TagSpecifications=spec("security-group")
    )["GroupId"]
    client.import_key_pair(
        KeyName="clusterforge-eph",
        PublicKeyMaterial=moto.public_key.read_bytes(),
        TagSpecifications=spec("key-pair"),
    )
    image = client.register_image(Name="ubuntu-noble-eph", RootDeviceName="/dev/sda1")["ImageId"]
    groups_before = sorted(g["GroupId"] for g in client.describe_security_groups()["SecurityGroups"])

    overrides = {"cloud_cluster_name": "eph", "cloud_dask_image_id": image, "cloud_dask_use_private_ip": True}
    settings_ = settings(**overrides)
    kwargs = ephemeral.ec2_cluster_kwargs(settings_, ephemeral.discover(client, settings_), now=NOW)
    assert kwargs["subnet_id"] == subnet_id and kwargs["security_groups"] == [group]
    spec_file, result_file = tmp_path / "spec.json", tmp_path / "result.json"
    spec_file.write_text(json.dumps({"kwargs": kwargs}))
    done = testenv.run(
        cloudtest.REPO / "tests" / "cloud" / "ec2cluster_run.py",
        str(spec_file),
        str(result_file),
        env={**cloudtest.FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": moto.url, "HOME": str(tmp_path)},
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    result = json.loads(result_file.read_text())

    assert result["scheduler_address"].startswith(f"tls://{net}.1.")
    assert result["scheduler_info_address"] == result["scheduler_address"]
    assert result["security_require_encryption"] is True
    assert result["plain_tls_refused"], "a TLS client without the cluster's certificate must be refused"
    assert "--protocol" not in result["scheduler_arguments"] or "tls" in result["scheduler_arguments"]

    calls = result["calls"]
    operations = [call["operation"] for call in calls]
    assert "CreateSecurityGroup" not in operations, "the cluster's group is used, no dask-default group"
    launches = [call["params"] for call in calls if call["operation"] == "RunInstances"]
    assert len(launches) == 1 + 2, "one scheduler and the two workers of the inventory's node sets"
    instance_tags = {"clusterforge_cluster": "eph-dask", "clusterforge_owner": "alice"}
    for launch in launches:
        assert launch["ImageId"] == image and launch["InstanceType"] == "t3.large"
        assert launch["KeyName"] == "clusterforge-eph"
        interface = launch["NetworkInterfaces"][0]
        assert interface["SubnetId"] == subnet_id and interface["Groups"] == [group]
        assert interface["AssociatePublicIpAddress"] is False
        assert launch["InstanceInitiatedShutdownBehavior"] == "terminate"
        specs = {
            s["ResourceType"]: {t["Key"]: t["Value"] for t in s["Tags"]} for s in launch["TagSpecifications"]
        }
        assert (
            instance_tags.items() <= specs["instance"].items()
            and instance_tags.items() <= specs["volume"].items()
        )
        assert launch["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 30
        assert launch["UserData.summary"]["inherits_config"] is True
        assert "ghcr.io/dask/dask:2025.9.1-py3.13" in launch["UserData.summary"]["docker_run"][0]
    terminated = {
        i
        for call in calls
        if call["operation"] == "TerminateInstances"
        for i in call["params"]["InstanceIds"]
    }
    assert len(terminated) == 3

    assert cloudtest.live_instances(client, "eph-dask") == [], "close() leaves no instance running"
    assert sorted(g["GroupId"] for g in client.describe_security_groups()["SecurityGroups"]) == groups_before
