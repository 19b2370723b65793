"""Helpers of the offline cloud tests: a moto EC2 server, fake credentials, playbook runs.

No cloud is reachable from the test hosts. moto (server mode) answers the EC2 API on
127.0.0.1, the amazon.aws modules, the inventory plugin and libcloud's EC2 driver talk to it
through ``cloud_endpoint_url``, and boto3 checks what exists. See docs/cloud.md for what moto
cannot check.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = VENV_BIN / "ansible-playbook"
ANSIBLE_INVENTORY = VENV_BIN / "ansible-inventory"
ANSIBLE = VENV_BIN / "ansible"
CLOUD_INVENTORY = REPO / "inventories" / "cloud"
REGION = "us-east-1"
# Fake credentials: moto accepts anything, and real ones must never be used by the tests.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class MotoEndpoint:
    url: str
    home: Path
    public_key: Path

    def client(self, service: str = "ec2") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@dataclass
class Run:
    returncode: int
    output: str

    @property
    def recap(self) -> dict[str, int]:
        found = RECAP.findall(self.output)
        if not found:
            return {}
        ok, changed, unreachable, failed = (int(value) for value in found[-1])
        return {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed}


def start_moto(home: Path) -> Iterator[MotoEndpoint]:
    """Run a moto server on a free port of 127.0.0.1 until the generator is closed."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    home.mkdir(parents=True, exist_ok=True)
    public_key = write_public_key(home / "id_ed25519.pub")
    try:
        yield MotoEndpoint(url=f"http://{host}:{port}", home=home, public_key=public_key)
    finally:
        server.stop()


def write_public_key(path: Path) -> Path:
    """An OpenSSH public key for the key pair import (the private half is never needed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.write_bytes(line + b" clusterforge-test\n")
    return path


def _mitogen_strategies() -> Path | None:
    """The mitogen strategy directory, as scripts/lib.sh's use_strategy finds it: only when the
    installed mitogen and ansible-core are the tested pair (labtool strategy says so)."""
    done = subprocess.run(
        [str(VENV_BIN / "python"), str(REPO / "scripts/labtool.py"), "strategy"],
        capture_output=True,
        text=True,
        check=False,
    )
    return Path(done.stdout.strip()) if done.returncode == 0 else None


MITOGEN_STRATEGIES = _mitogen_strategies()


def environment(endpoint: MotoEndpoint) -> dict[str, str]:
    """Environment of a test ansible run: fake credentials, no user AWS config, private HOME."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ANSIBLE_"))}
    env.update(FAKE_CREDENTIALS)
    env.update(
        {
            "HOME": str(endpoint.home),
            "AWS_CONFIG_FILE": str(endpoint.home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(endpoint.home / "no-aws-credentials"),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_LOCAL_TEMP": str(endpoint.home / ".ansible-tmp"),
            # USER names no real account: "~" would not expand and module files would land in cwd.
            "ANSIBLE_REMOTE_TEMP": str(endpoint.home / ".ansible-remote-tmp"),
            "USER": "clusterforge-test",
        }
    )
    # The lab's strategy (mitogen) where the controller has it: every module call on localhost
    # reuses one warm interpreter instead of starting Python and boto3 again (half the time).
    wanted = os.environ.get("CF_ANSIBLE_STRATEGY", "mitogen_linear")
    if MITOGEN_STRATEGIES is not None and wanted.startswith("mitogen"):
        env["ANSIBLE_STRATEGY"] = "mitogen_linear"
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(MITOGEN_STRATEGIES)
    return env


def base_vars(endpoint: MotoEndpoint, cluster: str, **extra: Any) -> dict[str, Any]:
    """Extra vars of a run against moto: endpoint, allowed CIDR, no SSH wait, test key."""
    values: dict[str, Any] = {
        "cloud_endpoint_url": endpoint.url,
        "cloud_cluster_name": cluster,
        "cloud_ssh_allowed_cidr": "203.0.113.7/32",
        "cloud_wait_for_ssh": False,
        "cluster_ssh_private_key_file": str(endpoint.public_key.with_suffix("")),
    }
    values.update(extra)
    return values


def playbook(
    endpoint: MotoEndpoint,
    name: str,
    extra_vars: dict[str, Any],
    *args: str,
    inventory: Path = CLOUD_INVENTORY,
    timeout: int = 300,
) -> Run:
    """Run playbooks/NAME with EXTRA_VARS (as JSON, so types survive)."""
    command = [
        str(ANSIBLE_PLAYBOOK),
        str(REPO / "playbooks" / name),
        "-i",
        str(inventory),
        "-e",
        json.dumps(extra_vars),
        *args,
    ]
    done = subprocess.run(
        command,
        cwd=REPO,
        env=environment(endpoint),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout + done.stderr)


def inventory_list(endpoint: MotoEndpoint, extra_vars: dict[str, Any]) -> dict[str, Any]:
    """ansible-inventory --list of the cloud inventory."""
    done = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(CLOUD_INVENTORY), "-e", json.dumps(extra_vars), "--list"],
        cwd=REPO,
        env=environment(endpoint),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout, object_hook=_unwrap)


def _unwrap(value: dict[str, Any]) -> Any:
    # ansible-inventory marks values from the cloud (untrusted) as {"__ansible_unsafe": value}.
    if set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    return value


def tags(item: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in item.get("Tags") or []}


def live_instances(client: Any, cluster: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    if cluster is not None:
        filters.append({"Name": "tag:clusterforge_cluster", "Values": [cluster]})
    reservations = client.describe_instances(Filters=filters)["Reservations"]
    return [instance for reservation in reservations for instance in reservation["Instances"]]


def iam_snapshot(iam: Any) -> dict[str, list[str]]:
    """Names of the IAM roles and instance profiles, account-wide."""
    return {
        "iam_roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "instance_profiles": sorted(
            p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
        ),
    }


def snapshot(client: Any) -> dict[str, list[str]]:
    """Ids of every EC2 resource kind the cloud playbooks create, account-wide."""
    return {
        "launch_templates": sorted(
            t["LaunchTemplateId"] for t in client.describe_launch_templates()["LaunchTemplates"]
        ),
        "vpcs": sorted(v["VpcId"] for v in client.describe_vpcs()["Vpcs"]),
        "subnets": sorted(s["SubnetId"] for s in client.describe_subnets()["Subnets"]),
        "internet_gateways": sorted(
            g["InternetGatewayId"] for g in client.describe_internet_gateways()["InternetGateways"]
        ),
        "route_tables": sorted(t["RouteTableId"] for t in client.describe_route_tables()["RouteTables"]),
        "security_groups": sorted(g["GroupId"] for g in client.describe_security_groups()["SecurityGroups"]),
        "key_pairs": sorted(k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]),
        "instances": sorted(i["InstanceId"] for i in live_instances(client)),
    }


def cluster_resources(client: Any, cluster: str) -> dict[str, list[dict[str, Any]]]:
    """Everything tagged with CLUSTER, by kind."""
    filters = [{"Name": "tag:clusterforge_cluster", "Values": [cluster]}]
    return {
        "vpcs": client.describe_vpcs(Filters=filters)["Vpcs"],
        "subnets": client.describe_subnets(Filters=filters)["Subnets"],
        "internet_gateways": client.describe_internet_gateways(Filters=filters)["InternetGateways"],
        "route_tables": client.describe_route_tables(Filters=filters)["RouteTables"],
        "security_groups": client.describe_security_groups(Filters=filters)["SecurityGroups"],
        "key_pairs": client.describe_key_pairs(Filters=filters)["KeyPairs"],
        "launch_templates": client.describe_launch_templates(Filters=filters)["LaunchTemplates"],
        "instances": live_instances(client, cluster),
    }
