"""Ephemeral Dask on EC2 (dask-cloudprovider), from the settings of the cloud inventory.

For users who want Dask without a long-lived cluster: the same region, image, instance types,
subnet, security group, key pair, volume size and tags as ``playbooks/cloud_up.yml`` would use,
TLS on (temporary certificates), instances that shut down on their own when idle.

    python tools/ephemeral_dask.py kwargs -e cloud_cluster_name=demo
        print the EC2Cluster keyword arguments (no instance is started)
    python tools/ephemeral_dask.py run --out DIR -e cloud_cluster_name=demo -- COMMAND...
        start the cluster, write DIR/dask/dask.yaml (TLS files, scheduler address) and
        DIR/engines-dask.json (the ``engines.dask`` entry of the verification suite's
        cluster.json), run COMMAND with CLUSTERFORGE_DASK_CONFIG_DIR and
        CLUSTERFORGE_DASK_ENGINE set, then close the cluster whatever COMMAND did.

Settings come from ``<inventory>/group_vars/all/*.yml``; ``-e name=value`` overrides one (YAML
value). Values that are Jinja templates there are ignored unless overridden. Credentials come
from the standard AWS chain and are never passed to the instances. dask-cloudprovider is
imported only by ``run``: ``pip install "dask-cloudprovider[aws]==2025.9.0"``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INVENTORY = REPO / "inventories" / "cloud"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
PIN = "dask-cloudprovider[aws]==2025.9.0"
SCHEDULER_GROUP = "dask_scheduler"
# Image of the ephemeral cluster unless cloud_dask_image / cloud_dask_image_id say otherwise:
# Canonical's Ubuntu 24.04 LTS, what dask-cloudprovider's cloud-init expects.
UBUNTU_LTS = {
    "owner": "099720109477",
    "name": "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*",
    "architecture": "x86_64",
}
WORKER_GROUP = "dask_workers"


class SettingsError(Exception):
    """A setting is missing or wrong; the message says which and what to do."""


def load_settings(inventory: Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Variables of INVENTORY/group_vars/all (templates dropped), then OVERRIDES."""
    settings: dict[str, Any] = {}
    all_dir = inventory / "group_vars" / "all"
    files = sorted(all_dir.glob("*.yml")) + sorted(all_dir.glob("*.yaml")) if all_dir.is_dir() else []
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        settings.update({key: value for key, value in data.items() if not _is_template(value)})
    settings.update(overrides)
    return settings


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SettingsError(f"-e {pair!r}: write NAME=VALUE, e.g. -e cloud_cluster_name=demo")
        overrides[name] = yaml.safe_load(value) if value else ""
    return overrides


def _node_set(settings: Mapping[str, Any], group: str) -> dict[str, Any] | None:
    for node_set in settings.get("cloud_node_sets") or []:
        if group in node_set.get("groups", []):
            return node_set
    return None


def default_docker_image() -> str | None:
    """The dask image matching this controller's distributed and Python (client and cluster must agree)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        dask_version = version("distributed")
    except PackageNotFoundError:
        return None
    return f"ghcr.io/dask/dask:{dask_version}-py{sys.version_info.major}.{sys.version_info.minor}"


def ec2_cluster_kwargs(
    settings: Mapping[str, Any],
    discovered: Mapping[str, Any] | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """EC2Cluster keyword arguments from the cloud settings (and what already exists in the account).

    DISCOVERED may hold ``image_id``, ``subnet_id``, ``vpc_id``, ``security_group_id`` and
    ``key_name`` found for the cluster (see :func:`discover`).
    """
    discovered = discovered or {}
    name = str(settings.get("cloud_cluster_name") or "")
    if not name:
        raise SettingsError("cloud_cluster_name is empty: pass -e cloud_cluster_name=demo")
    scheduler = _node_set(settings, SCHEDULER_GROUP) or _node_set(settings, "head")
    workers = _node_set(settings, WORKER_GROUP)
    if scheduler is None or workers is None:
        raise SettingsError(
            f"cloud_node_sets needs a set in group {SCHEDULER_GROUP} (or head) and one in {WORKER_GROUP}"
        )
    n_workers = settings.get("cloud_dask_n_workers")
    if n_workers is None:
        n_workers = sum(
            int(node_set.get("count", 0))
            for node_set in settings.get("cloud_node_sets") or []
            if WORKER_GROUP in node_set.get("groups", [])
        )
    image = settings.get("cloud_dask_image_id") or discovered.get("image_id")
    if not image:
        raise SettingsError(
            "no image: set cloud_dask_image_id (an Ubuntu LTS AMI), or drop --no-discover so that "
            "the newest image matching cloud_dask_image is looked up"
        )
    docker_image = settings.get("cloud_dask_docker_image") or default_docker_image()
    if not docker_image:
        raise SettingsError(
            "set cloud_dask_docker_image to a dask image whose distributed version equals this controller's"
        )
    now = now or datetime.datetime.now(datetime.UTC)
    ttl = float(settings.get("cloud_ttl_hours", 8))
    tags = {
        # A cluster of its own, so that the inventory of the long-lived cluster never lists these
        # instances, while cloud_down.yml (by name, or its sweep) can still remove them.
        "clusterforge_cluster": f"{name}-dask",
        "clusterforge_owner": str(settings.get("cloud_owner") or os.environ.get("USER", "unknown")),
        "clusterforge_expires": (now + datetime.timedelta(hours=ttl)).strftime(TIME_FORMAT),
    }
    kwargs: dict[str, Any] = {
        "region": settings.get("cloud_region", "us-east-1"),
        "ami": image,
        "docker_image": docker_image,
        "n_workers": int(n_workers),
        "filesystem_size": int(settings.get("cloud_volume_size_gb", 30)),
        # TLS between client, scheduler and workers, with temporary self-signed credentials.
        "security": True,
        # Instances terminate themselves when the scheduler goes idle or the client disappears.
        "auto_shutdown": True,
        "bootstrap": True,
        # Private addresses only when the controller runs inside the VPC (e.g. on a bastion).
        "use_private_ip": bool(settings.get("cloud_dask_use_private_ip", False)),
        "instance_tags": dict(tags),
        "volume_tags": dict(tags),
        # Never credentials: the instances get none.
        "env_vars": {},
    }
    if scheduler.get("instance_type") == workers.get("instance_type"):
        kwargs["instance_type"] = scheduler["instance_type"]
    else:
        kwargs["scheduler_instance_type"] = scheduler["instance_type"]
        kwargs["worker_instance_type"] = workers["instance_type"]
    if settings.get("cloud_availability_zone"):
        kwargs["availability_zone"] = settings["cloud_availability_zone"]
    for key in ("vpc_id", "subnet_id"):
        if discovered.get(key):
            kwargs["vpc" if key == "vpc_id" else key] = discovered[key]
    if discovered.get("security_group_id"):
        kwargs["security_groups"] = [discovered["security_group_id"]]
    key_name = settings.get("cloud_key_name") or discovered.get("key_name")
    if key_name:
        kwargs["key_name"] = key_name
    return kwargs


def discover(client: Any, settings: Mapping[str, Any]) -> dict[str, str]:
    """What the cloud account already has for this cluster: image, network, group, key pair."""
    name = str(settings.get("cloud_cluster_name") or "")
    found: dict[str, str] = {}
    tag_filter = [{"Name": "tag:clusterforge_cluster", "Values": [name]}]
    if not settings.get("cloud_dask_image_id"):
        # Not the cluster's Debian images: dask-cloudprovider's cloud-init installs Docker from
        # Docker's Ubuntu repository with apt-key and add-apt-repository, which Debian lacks.
        lookup = settings.get("cloud_dask_image") or UBUNTU_LTS
        if lookup:
            filters = [
                {"Name": "name", "Values": [lookup["name"]]},
                {"Name": "state", "Values": ["available"]},
            ]
            if lookup.get("architecture"):
                filters.append({"Name": "architecture", "Values": [lookup["architecture"]]})
            images = client.describe_images(Owners=[str(lookup["owner"])], Filters=filters)["Images"]
            if images:
                found["image_id"] = max(images, key=lambda image: image.get("CreationDate", ""))["ImageId"]
    vpcs = client.describe_vpcs(Filters=tag_filter)["Vpcs"]
    if vpcs:
        found["vpc_id"] = vpcs[0]["VpcId"]
    subnets = client.describe_subnets(Filters=tag_filter)["Subnets"]
    if subnets:
        found["subnet_id"] = subnets[0]["SubnetId"]
    groups = client.describe_security_groups(Filters=tag_filter)["SecurityGroups"]
    if groups:
        found["security_group_id"] = groups[0]["GroupId"]
    keys = client.describe_key_pairs(Filters=tag_filter)["KeyPairs"]
    if keys:
        found["key_name"] = keys[0]["KeyName"]
    return found


def _pem(value: Any) -> str | None:
    """PEM text from a distributed Security field (PEM contents or a file path)."""
    if not value:
        return None
    text = str(value)
    if "-----BEGIN" in text:
        return text
    return Path(text).read_text(encoding="ascii")


def write_connection(out: Path, address: str, security: Any, dashboard: str = "", n_workers: int = 0) -> Path:
    """Write the client side of a running cluster for the verification suite.

    OUT/dask/dask.yaml: scheduler-address and TLS settings (the files next to it, 0600), loaded
    with DASK_CONFIG or as ``engines.dask.config_dir``; OUT/engines-dask.json: the
    ``engines.dask`` entry of cluster.json. Returns the JSON file.
    """
    config_dir = out / "dask"
    config_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    os.chmod(config_dir, 0o700)
    files = {
        "ca-file": ("ca.pem", getattr(security, "tls_ca_file", None)),
        "cert": ("client-cert.pem", getattr(security, "tls_client_cert", None)),
        "key": ("client-key.pem", getattr(security, "tls_client_key", None)),
    }
    written: dict[str, str] = {}
    for field, (filename, value) in files.items():
        text = _pem(value)
        if text is None:
            continue
        path = config_dir / filename
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
        written[field] = str(path)
    tls: dict[str, Any] = {}
    if "ca-file" in written:
        tls["ca-file"] = written["ca-file"]
    if "cert" in written and "key" in written:
        tls["client"] = {"cert": written["cert"], "key": written["key"]}
    config = {
        "scheduler-address": address,
        "distributed": {"comm": {"require-encryption": address.startswith("tls://"), "tls": tls}},
    }
    (config_dir / "dask.yaml").write_text(yaml.safe_dump(config, sort_keys=True), encoding="utf-8")
    engine = {
        "endpoint": address,
        "config_dir": str(config_dir),
        "dashboard": dashboard,
        "expected_workers": [],
        "n_workers": int(n_workers),
        "ephemeral": True,
    }
    target = out / "engines-dask.json"
    target.write_text(json.dumps(engine, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def _ec2_cluster_class() -> Callable[..., Any]:
    try:
        from dask_cloudprovider.aws import EC2Cluster
    except ImportError as error:
        raise SettingsError(f"dask-cloudprovider is not installed: pip install '{PIN}' ({error})") from error
    return EC2Cluster


def run(
    kwargs: Mapping[str, Any],
    out: Path,
    command: list[str],
    cluster_class: Callable[..., Any] | None = None,
) -> int:
    """Start the cluster, write the connection files, run COMMAND, always close the cluster."""
    cluster_class = cluster_class or _ec2_cluster_class()
    cluster = cluster_class(**kwargs)

    def _stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        engine = write_connection(
            out,
            address=cluster.scheduler_address,
            security=getattr(cluster, "security", None),
            dashboard=getattr(cluster, "dashboard_link", "") or "",
            n_workers=int(kwargs.get("n_workers", 0)),
        )
        if not command:
            return 0
        env = dict(
            os.environ, CLUSTERFORGE_DASK_CONFIG_DIR=str(out / "dask"), CLUSTERFORGE_DASK_ENGINE=str(engine)
        )
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        signal.signal(signal.SIGTERM, previous)
        cluster.close()


def _boto3_client(settings: Mapping[str, Any]) -> Any:
    import boto3

    endpoint = settings.get("cloud_endpoint_url") or None
    session = boto3.Session(profile_name=settings.get("cloud_profile") or None)
    return session.client("ec2", region_name=settings.get("cloud_region", "us-east-1"), endpoint_url=endpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["kwargs", "run"])
    parser.add_argument(
        "-i", "--inventory", type=Path, default=DEFAULT_INVENTORY, help="cloud inventory directory"
    )
    parser.add_argument(
        "-e", "--extra", action="append", default=[], metavar="NAME=VALUE", help="override a setting"
    )
    parser.add_argument("--no-discover", action="store_true", help="do not query the account (kwargs only)")
    parser.add_argument("--out", type=Path, help="directory for the connection files (run)")
    parser.epilog = "run: everything after -- is the command run against the cluster"
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    try:
        settings = load_settings(args.inventory, parse_overrides(args.extra))
        discovered = {} if args.no_discover else discover(_boto3_client(settings), settings)
        kwargs = ec2_cluster_kwargs(settings, discovered)
        if args.action == "kwargs":
            print(json.dumps(kwargs, indent=2, sort_keys=True))
            return 0
        if args.out is None:
            raise SettingsError("run needs --out DIR for the connection files")
        return run(kwargs, args.out, command)
    except SettingsError as error:
        print(f"ephemeral_dask: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
