#!/usr/bin/python
# Copyright: clusterforge maintainers
# Apache-2.0
"""Create, list and destroy the tagged nodes of a clusterforge cluster through apache-libcloud."""

from __future__ import annotations

import datetime
import os
import time
import traceback
import urllib.parse
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

try:
    from libcloud.compute.base import NodeImage, NodeLocation, NodeSize
    from libcloud.compute.providers import get_driver

    HAS_LIBCLOUD = True
    LIBCLOUD_IMPORT_ERROR = None
except ImportError:
    HAS_LIBCLOUD = False
    LIBCLOUD_IMPORT_ERROR = traceback.format_exc()

DOCUMENTATION = r"""
module: libcloud_nodes
short_description: Create, list and destroy the nodes of a clusterforge cluster through libcloud EC2
description:
  - Manages the nodes of one cluster on an EC2-compatible cloud reached through apache-libcloud's
    EC2 driver (private clouds with an EC2 API, or AWS itself), or on libcloud's in-process dummy
    driver, with the same model as the AWS path of clusterforge. Nodes are named
    C(<cluster>-<set>-<n>) and carry tags naming their cluster, node set and inventory groups
    (C(clusterforge_groups), comma separated).
  - Tags travel in C(ex_metadata), which the EC2 driver turns into instance tags. The dummy
    driver has none and keeps them on the node objects of the running process only.
  - Only these two providers are offered because only they are tested (the EC2 driver against a
    moto server). GCE, Azure and OpenStack need provider-specific objects (Azure an auth object,
    GCE per-instance C(ssh-keys) metadata, OpenStack network and security group objects and
    floating IPs) that this module does not build.
  - Networks, firewalls and key pairs are provider specific and not created here; pass what
    C(create_node) needs in O(create_kwargs).
  - Credentials come from O(key)/O(secret) or their environment variables, never from playbook
    variables; for C(ec2) the standard C(AWS_ACCESS_KEY_ID)/C(AWS_SECRET_ACCESS_KEY) also work.
version_added: "0.1.0"
author: clusterforge maintainers
requirements:
  - apache-libcloud >= 3.8
options:
  provider:
    description:
      - libcloud compute provider name, as in C(libcloud.compute.types.Provider).
    type: str
    choices: [ec2, dummy]
    required: true
  key:
    description:
      - First credential of the driver (user id, access key, service account...).
      - Default from E(CLUSTERFORGE_LIBCLOUD_KEY).
    type: str
  secret:
    description: Second credential of the driver; default from E(CLUSTERFORGE_LIBCLOUD_SECRET).
    type: str
  driver_kwargs:
    description:
      - Keyword arguments of the driver constructor other than credentials
        (C(region), C(project), C(datacenter), C(ex_force_auth_url)...).
    type: dict
    default: {}
  endpoint_url:
    description:
      - API endpoint to use instead of the provider's (private cloud, or a moto server for C(ec2)).
      - For C(ec2) the module signs with signature version 4 and follows the XML namespace
        the endpoint answers in.
    type: str
  cluster_name:
    description:
      - Name of the cluster; required unless O(state=list), where empty lists every clusterforge node.
    type: str
    default: ""
  cluster_tag:
    description: Tag key naming the cluster of a node.
    type: str
    default: clusterforge_cluster
  node_sets:
    description: Node sets of the cluster (O(state=present)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the set, lowercase letters and digits.
        type: str
        required: true
      count:
        description: Number of nodes, at least 0.
        type: int
        required: true
      size:
        description: Size (instance type, flavor, machine type) id or name.
        type: str
        required: true
      image:
        description: Image id.
        type: str
        required: true
      groups:
        description: Inventory groups of the nodes.
        type: list
        elements: str
        required: true
      location:
        description: Location (zone, region, datacenter) id or name; default the driver's.
        type: str
  tags:
    description: Extra tags of every node created (owner, expiry...).
    type: dict
    default: {}
  create_kwargs:
    description: Extra keyword arguments of C(create_node) (plain values), e.g. C(ex_keyname).
    type: dict
    default: {}
  state:
    description:
      - C(present) creates missing nodes and destroys the nodes no set asks for.
      - C(absent) destroys every node of the cluster; C(list) only reports.
    type: str
    choices: [present, absent, list]
    default: present
  now:
    description:
      - Reference time for RV(expired_clusters), UTC C(YYYY-MM-DDTHH:MM:SSZ); default the current time.
    type: str
  expiry_tag:
    description: Tag key holding the expiry of a cluster.
    type: str
    default: clusterforge_expires
  wait_timeout:
    description: Seconds to wait for created nodes to run and destroyed nodes to disappear; 0 does not wait.
    type: int
    default: 600
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Check mode computes the plan (nodes to create, to destroy) and changes nothing.
"""

EXAMPLES = r"""
- name: Three nodes on an EC2-compatible private cloud
  libcloud_nodes:
    provider: ec2
    endpoint_url: https://ec2.cloud.example.org:8773
    driver_kwargs:
      region: research
    cluster_name: demo
    node_sets:
      - name: head
        count: 1
        size: m1.large
        image: ami-0123456789abcdef0
        groups: [head, dask_scheduler]
      - name: worker
        count: 2
        size: m1.large
        image: ami-0123456789abcdef0
        groups: [workers, dask_workers]
    tags:
      clusterforge_owner: alice
    create_kwargs:
      ex_keyname: clusterforge-demo
  register: demo

- name: Remove them
  libcloud_nodes:
    provider: ec2
    endpoint_url: https://ec2.cloud.example.org:8773
    driver_kwargs:
      region: research
    cluster_name: demo
    state: absent
"""

RETURN = r"""
nodes:
  description: Live nodes of the cluster after the run (the planned ones in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Node name, C(<cluster>-<set>-<n>).
      type: str
    id:
      description: Provider id of the node (empty for planned nodes).
      type: str
    state:
      description: libcloud node state (C(running), C(pending)..., C(planned) in check mode).
      type: str
    public_ips:
      description: Public addresses.
      type: list
      elements: str
    private_ips:
      description: Private addresses.
      type: list
      elements: str
    groups:
      description: Inventory groups of the node.
      type: list
      elements: str
    node_set:
      description: Node set of the node.
      type: str
    tags:
      description: clusterforge tags of the node.
      type: dict
created:
  description: Names of the nodes created (or to create, in check mode).
  returned: always
  type: list
  elements: str
destroyed:
  description: Names of the nodes destroyed (or to destroy, in check mode).
  returned: always
  type: list
  elements: str
expired_clusters:
  description: Clusters with a node whose expiry tag is before O(now) (O(state=list)).
  returned: always
  type: list
  elements: str
"""

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# The providers this module is proven against (tests/unit/test_cloud_libcloud.py), and the
# create_node() keyword that carries their key/value tags.
TAG_KWARGS = {"ec2": "ex_metadata", "dummy": ""}
# Where the dummy driver's nodes keep their tags: on the objects of this process.
DUMMY_TAGS = "clusterforge_tags"
GONE_STATES = ("terminated",)


class LibcloudNodesError(Exception):
    """An error with a message saying what to do."""


def connect(
    provider: str,
    key: str | None,
    secret: str | None,
    driver_kwargs: dict[str, Any],
    endpoint_url: str | None = None,
) -> Any:
    """Instantiate the libcloud driver of PROVIDER."""
    if provider not in TAG_KWARGS:
        raise LibcloudNodesError(
            f"unsupported libcloud provider '{provider}': this module is tested with "
            f"{', '.join(sorted(TAG_KWARGS))} only; use cloud_provider aws for AWS (docs/cloud.md)"
        )
    cls = get_driver(provider)
    kwargs = dict(driver_kwargs)
    if provider == "dummy":
        return cls(key or "0")
    if provider == "ec2":
        key = key or os.environ.get("AWS_ACCESS_KEY_ID")
        secret = secret or os.environ.get("AWS_SECRET_ACCESS_KEY")
        kwargs.setdefault("signature_version", "4")
        kwargs.setdefault("region", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    if endpoint_url:
        url = urllib.parse.urlsplit(endpoint_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise LibcloudNodesError(f"endpoint_url '{endpoint_url}' is not an http(s) URL")
        kwargs.update(
            secure=url.scheme == "https",
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 80),
        )
    if key is None:
        raise LibcloudNodesError(
            f"no credentials for provider '{provider}': export CLUSTERFORGE_LIBCLOUD_KEY and "
            "CLUSTERFORGE_LIBCLOUD_SECRET (or the AWS variables for ec2)"
        )
    args = [key] if secret is None else [key, secret]
    driver = cls(*args, **kwargs)
    if provider == "ec2" and endpoint_url:
        follow_ec2_namespace(driver)
    return driver


def follow_ec2_namespace(driver: Any) -> str:
    """Parse the XML of an AWS-compatible endpoint in the namespace it answers in.

    libcloud's EC2 driver looks elements up in "http://ec2.amazonaws.com/doc/<version>/";
    some compatible endpoints (moto) answer without the trailing slash, and nothing parses.
    """
    import libcloud.compute.drivers.ec2 as ec2_driver

    root = driver.connection.request(driver.path, params={"Action": "DescribeRegions"}).object
    tag = getattr(root, "tag", "")
    if tag.startswith("{"):
        namespace = tag[1:].split("}", 1)[0]
        if namespace != ec2_driver.NAMESPACE:
            ec2_driver.NAMESPACE = namespace
    return ec2_driver.NAMESPACE


def node_tags(node: Any) -> dict[str, str]:
    """The key/value tags of NODE, wherever its driver keeps them."""
    extra = node.extra or {}
    if isinstance(extra.get(DUMMY_TAGS), dict):
        return dict(extra[DUMMY_TAGS])
    value = extra.get("tags")  # the EC2 driver
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return {}


def _state(node: Any) -> str:
    state = node.state
    return str(state.value if hasattr(state, "value") else state).lower()


def cluster_nodes(driver: Any, cluster_tag: str, cluster_name: str) -> list[Any]:
    """Live nodes tagged CLUSTER_TAG=CLUSTER_NAME (any clusterforge node when the name is empty)."""
    nodes = []
    for node in driver.list_nodes():
        tags = node_tags(node)
        if cluster_tag not in tags or _state(node) in GONE_STATES:
            continue
        if cluster_name and tags[cluster_tag] != cluster_name:
            continue
        nodes.append(node)
    return sorted(nodes, key=lambda node: node.name)


def desired_nodes(cluster_name: str, node_sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per node the sets ask for, named <cluster>-<set>-<n>."""
    result = []
    for node_set in node_sets:
        if node_set["count"] < 0:
            raise LibcloudNodesError(f"node set '{node_set['name']}': count must be at least 0")
        for index in range(1, node_set["count"] + 1):
            result.append({"name": f"{cluster_name}-{node_set['name']}-{index}", "node_set": node_set})
    return result


def plan(existing_names: list[str], desired_names: list[str]) -> dict[str, list[str]]:
    """Which names to create, to destroy and to keep."""
    existing, desired = set(existing_names), set(desired_names)
    return {
        "create": [name for name in desired_names if name not in existing],
        "destroy": sorted(existing - desired),
        "keep": [name for name in desired_names if name in existing],
    }


def expired_clusters(nodes: list[Any], cluster_tag: str, expiry_tag: str, now: str) -> list[str]:
    """Clusters owning a node whose expiry tag is before NOW (UTC strings compare as times)."""
    names = set()
    for node in nodes:
        tags = node_tags(node)
        if tags.get(expiry_tag) and tags[expiry_tag] < now and tags.get(cluster_tag):
            names.add(tags[cluster_tag])
    return sorted(names)


def node_facts(node: Any) -> dict[str, Any]:
    # Only clusterforge's own tags: provider metadata may hold startup scripts or keys.
    tags = {key: value for key, value in node_tags(node).items() if key.startswith("clusterforge_")}
    return {
        "name": node.name,
        "id": str(node.id),
        "state": _state(node),
        "public_ips": list(node.public_ips or []),
        "private_ips": list(node.private_ips or []),
        "groups": [group for group in tags.get("clusterforge_groups", "").split(",") if group],
        "node_set": tags.get("clusterforge_node_set", ""),
        "tags": tags,
    }


def _find(items: list[Any], wanted: str) -> Any | None:
    for item in items:
        if str(item.id) == wanted or getattr(item, "name", None) == wanted:
            return item
    return None


def _size(driver: Any, wanted: str, location: Any) -> Any:
    try:
        sizes = driver.list_sizes(location=location) if location else driver.list_sizes()
    except Exception:  # some drivers need a location: fall back to a bare size
        sizes = []
    return _find(sizes, wanted) or NodeSize(
        id=wanted, name=wanted, ram=0, disk=0, bandwidth=0, price=0, driver=driver
    )


def _image(driver: Any, wanted: str) -> Any:
    try:
        return driver.get_image(wanted)
    except Exception:  # not every driver has get_image for every id form
        return NodeImage(id=wanted, name=wanted, driver=driver)


def _location(driver: Any, wanted: str | None) -> Any | None:
    if not wanted:
        return None
    found = _find(driver.list_locations(), wanted)
    if found is None:
        return NodeLocation(id=wanted, name=wanted, country="", driver=driver)
    return found


def create_node(
    driver: Any,
    provider: str,
    name: str,
    node_set: dict[str, Any],
    tags: dict[str, str],
    create_kwargs: dict[str, Any],
) -> Any:
    """Create one node named NAME with TAGS."""
    location = _location(driver, node_set.get("location"))
    kwargs = dict(create_kwargs)
    if location is not None:
        kwargs["location"] = location
    carrier = TAG_KWARGS[provider]
    if carrier:
        kwargs[carrier] = dict(tags)
    size = _size(driver, node_set["size"], location)
    image = _image(driver, node_set["image"])
    if provider == "dummy":
        node = driver.create_node(name=name, size=size, image=image)
        # The dummy driver ignores names and tags: keep them on this process's node object.
        node.name = name
        node.extra = dict(node.extra or {}, **{DUMMY_TAGS: dict(tags)})
        return node
    return driver.create_node(name=name, size=size, image=image, **kwargs)


def _wait(
    driver: Any, names: list[str], cluster_tag: str, cluster_name: str, gone: bool, timeout: int
) -> None:
    if timeout <= 0 or not names:
        return
    deadline = time.monotonic() + timeout
    while True:
        live = {node.name: _state(node) for node in cluster_nodes(driver, cluster_tag, cluster_name)}
        if gone:
            pending = [name for name in names if name in live]
        else:
            pending = [name for name in names if live.get(name) != "running"]
        if not pending:
            return
        if time.monotonic() > deadline:
            verb = "disappear" if gone else "run"
            raise LibcloudNodesError(f"nodes {', '.join(pending)} did not {verb} within {timeout} s")
        time.sleep(2)


def run(params: dict[str, Any], check_mode: bool, driver: Any = None) -> dict[str, Any]:
    """The module's work, on DRIVER when given (tests keep the dummy driver's state this way)."""
    provider, state = params["provider"], params["state"]
    cluster_name, cluster_tag = params["cluster_name"] or "", params["cluster_tag"]
    if state != "list" and not cluster_name:
        raise LibcloudNodesError("cluster_name is empty: name the cluster to act on, nothing was done")
    if driver is None:
        driver = connect(
            provider, params["key"], params["secret"], params["driver_kwargs"], params["endpoint_url"]
        )

    existing = cluster_nodes(driver, cluster_tag, cluster_name)
    result: dict[str, Any] = {"changed": False, "created": [], "destroyed": [], "expired_clusters": []}

    if state == "list":
        now = params.get("now") or datetime.datetime.now(datetime.UTC).strftime(TIME_FORMAT)
        result["expired_clusters"] = expired_clusters(existing, cluster_tag, params["expiry_tag"], now)
        result["nodes"] = [node_facts(node) for node in existing]
        return result

    desired = desired_nodes(cluster_name, params["node_sets"]) if state == "present" else []
    steps = plan([node.name for node in existing], [node["name"] for node in desired])
    result.update(changed=bool(steps["create"] or steps["destroy"]), created=steps["create"])
    result["destroyed"] = steps["destroy"]

    if check_mode:
        planned = [node_facts(node) for node in existing if node.name not in steps["destroy"]]
        for node in desired:
            if node["name"] in steps["create"]:
                node_set = node["node_set"]
                planned.append(
                    {
                        "name": node["name"],
                        "id": "",
                        "state": "planned",
                        "public_ips": [],
                        "private_ips": [],
                        "groups": list(node_set["groups"]),
                        "node_set": node_set["name"],
                        "tags": {},
                    }
                )
        result["nodes"] = sorted(planned, key=lambda item: item["name"])
        return result

    for node in existing:
        if node.name in steps["destroy"]:
            driver.destroy_node(node)
    _wait(driver, steps["destroy"], cluster_tag, cluster_name, gone=True, timeout=params["wait_timeout"])

    for node in desired:
        if node["name"] not in steps["create"]:
            continue
        node_set = node["node_set"]
        tags = dict(params["tags"])
        tags.update(
            {
                cluster_tag: cluster_name,
                "clusterforge_node_set": node_set["name"],
                "clusterforge_groups": ",".join(node_set["groups"]),
            }
        )
        create_node(driver, provider, node["name"], node_set, tags, params["create_kwargs"])
    if provider != "dummy":
        _wait(driver, steps["create"], cluster_tag, cluster_name, gone=False, timeout=params["wait_timeout"])

    result["nodes"] = [node_facts(node) for node in cluster_nodes(driver, cluster_tag, cluster_name)]
    return result


ARGUMENT_SPEC: dict[str, Any] = {
    "provider": {"type": "str", "required": True, "choices": sorted(TAG_KWARGS)},
    "key": {"type": "str", "no_log": True, "fallback": (env_fallback, ["CLUSTERFORGE_LIBCLOUD_KEY"])},
    "secret": {"type": "str", "no_log": True, "fallback": (env_fallback, ["CLUSTERFORGE_LIBCLOUD_SECRET"])},
    "driver_kwargs": {"type": "dict", "default": {}},
    "endpoint_url": {"type": "str"},
    "cluster_name": {"type": "str", "default": ""},
    "cluster_tag": {"type": "str", "default": "clusterforge_cluster"},
    "node_sets": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "name": {"type": "str", "required": True},
            "count": {"type": "int", "required": True},
            "size": {"type": "str", "required": True},
            "image": {"type": "str", "required": True},
            "groups": {"type": "list", "elements": "str", "required": True},
            "location": {"type": "str"},
        },
    },
    "tags": {"type": "dict", "default": {}},
    "create_kwargs": {"type": "dict", "default": {}},
    "state": {"type": "str", "choices": ["present", "absent", "list"], "default": "present"},
    "now": {"type": "str"},
    "expiry_tag": {"type": "str", "default": "clusterforge_expires"},
    "wait_timeout": {"type": "int", "default": 600},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if not HAS_LIBCLOUD:
        module.fail_json(msg=missing_required_lib("apache-libcloud"), exception=LIBCLOUD_IMPORT_ERROR)
    try:
        result = run(module.params, module.check_mode)
    except LibcloudNodesError as error:
        module.fail_json(msg=str(error))
    except Exception as error:  # provider errors vary: report them with the trace
        module.fail_json(
            msg=f"libcloud {module.params['provider']}: {error}", exception=traceback.format_exc()
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
