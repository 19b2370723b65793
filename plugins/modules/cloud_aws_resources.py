#!/usr/bin/python
# Copyright: clusterforge maintainers
# Apache-2.0
"""List the EC2 resources of one clusterforge cluster, or the clusters whose expiry has passed."""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing SDK
    import botocore

DOCUMENTATION = r"""
module: cloud_aws_resources
short_description: List the EC2 resources of a clusterforge cluster, or the expired clusters
description:
  - Read-only. With O(mode=cluster), lists the VPCs, subnets, internet gateways, route tables,
    security groups, key pairs, launch templates and live instances tagged
    O(cluster_tag)=O(cluster_name), and the cluster's IAM role and instance profile (named
    C(clusterforge-<cluster>-node) under the path C(/clusterforge/)), in one module run (the
    amazon.aws C(*_info) modules would take ten).
  - With O(mode=expired), lists the names of the clusters owning a VPC or a live instance whose
    O(expiry_tag) (UTC, C(YYYY-MM-DDTHH:MM:SSZ)) is earlier than O(now).
  - Credentials come from the standard AWS chain, as for every amazon.aws module.
version_added: "0.1.0"
author: clusterforge maintainers
options:
  mode:
    description: What to list.
    type: str
    choices: [cluster, expired]
    default: cluster
  cluster_name:
    description: Name of the cluster; required with O(mode=cluster).
    type: str
  cluster_tag:
    description: Tag key naming the cluster of a resource.
    type: str
    default: clusterforge_cluster
  expiry_tag:
    description: Tag key holding the expiry of a cluster.
    type: str
    default: clusterforge_expires
  now:
    description: Reference time for O(mode=expired), UTC C(YYYY-MM-DDTHH:MM:SSZ); default the current time.
    type: str
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Find what cluster demo owns
  cloud_aws_resources:
    cluster_name: demo
    region: us-east-1
  register: found

- name: Find the clusters whose expiry has passed
  cloud_aws_resources:
    mode: expired
    region: us-east-1
  register: expired
"""

RETURN = r"""
resources:
  description: Resources of the cluster by kind (O(mode=cluster)); every list is empty when nothing is left.
  returned: always
  type: dict
  contains:
    vpcs:
      description: VPCs, each with C(id), C(cidr_block) and C(tags).
      type: list
      elements: dict
    subnets:
      description: Subnets, each with C(id), C(vpc_id), C(cidr_block) and C(tags).
      type: list
      elements: dict
    internet_gateways:
      description: Internet gateways, each with C(internet_gateway_id), C(vpc_ids) and C(tags).
      type: list
      elements: dict
    route_tables:
      description: Route tables, each with C(id), C(vpc_id), C(main) and C(tags).
      type: list
      elements: dict
    security_groups:
      description: Security groups, each with C(group_id), C(group_name), C(vpc_id) and C(tags).
      type: list
      elements: dict
    key_pairs:
      description: Key pairs, each with C(key_name) and C(tags).
      type: list
      elements: dict
    launch_templates:
      description: Launch templates, each with C(id), C(name) and C(tags).
      type: list
      elements: dict
    iam_roles:
      description: >-
        The cluster's IAM role (zero or one), with C(name), C(inline_policies) and C(instance_profiles).
      type: list
      elements: dict
    instance_profiles:
      description: The cluster's instance profile (zero or one), with C(name) and C(roles).
      type: list
      elements: dict
    instances:
      description: >-
        Instances not terminated, each with C(instance_id), C(name), C(state), C(instance_type),
        C(public_ip_address), C(private_ip_address) and C(tags).
      type: list
      elements: dict
count:
  description: Total number of resources found (O(mode=cluster)).
  returned: always
  type: int
expired_clusters:
  description: Names of the expired clusters, sorted (O(mode=expired)).
  returned: always
  type: list
  elements: str
"""

IAM_PATH = "/clusterforge/"
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _tags(item: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in item.get("Tags") or []}


def _paginate(client: Any, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
    if client.can_paginate(operation):
        pages = client.get_paginator(operation).paginate(**params)
        return [item for page in pages for item in page.get(key, [])]
    return getattr(client, operation)(**params).get(key, [])


def _instances(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    filters = [*filters, {"Name": "instance-state-name", "Values": LIVE_STATES}]
    reservations = _paginate(client, "describe_instances", "Reservations", Filters=filters)
    result = []
    for reservation in reservations:
        for instance in reservation.get("Instances", []):
            tags = _tags(instance)
            result.append(
                {
                    "instance_id": instance["InstanceId"],
                    "name": tags.get("Name", ""),
                    "state": instance["State"]["Name"],
                    "instance_type": instance.get("InstanceType", ""),
                    "public_ip_address": instance.get("PublicIpAddress", ""),
                    "private_ip_address": instance.get("PrivateIpAddress", ""),
                    "tags": tags,
                }
            )
    return sorted(result, key=lambda item: (item["name"], item["instance_id"]))


def iam_name(cluster_name: str) -> str:
    """Name of the cluster's IAM role and instance profile (IAM has no tag filter: found by name)."""
    return f"clusterforge-{cluster_name}-node"


def iam_resources(iam: Any, cluster_name: str) -> dict[str, list[dict[str, Any]]]:
    """The cluster's IAM role and instance profile, each a list of zero or one."""
    name = iam_name(cluster_name)
    roles = [r for r in _paginate(iam, "list_roles", "Roles", PathPrefix=IAM_PATH) if r["RoleName"] == name]
    profiles = [
        p
        for p in _paginate(iam, "list_instance_profiles", "InstanceProfiles", PathPrefix=IAM_PATH)
        if p["InstanceProfileName"] == name
    ]
    return {
        "iam_roles": [
            {
                "name": role["RoleName"],
                "inline_policies": _paginate(iam, "list_role_policies", "PolicyNames", RoleName=name),
                "instance_profiles": [
                    p["InstanceProfileName"]
                    for p in _paginate(
                        iam, "list_instance_profiles_for_role", "InstanceProfiles", RoleName=name
                    )
                ],
            }
            for role in roles
        ],
        "instance_profiles": [
            {"name": p["InstanceProfileName"], "roles": [r["RoleName"] for r in p.get("Roles", [])]}
            for p in profiles
        ],
    }


def cluster_resources(client: Any, cluster_name: str, cluster_tag: str) -> dict[str, list[dict[str, Any]]]:
    """Every EC2 resource tagged CLUSTER_TAG=CLUSTER_NAME, by kind."""
    filters = [{"Name": f"tag:{cluster_tag}", "Values": [cluster_name]}]
    vpcs = _paginate(client, "describe_vpcs", "Vpcs", Filters=filters)
    subnets = _paginate(client, "describe_subnets", "Subnets", Filters=filters)
    gateways = _paginate(client, "describe_internet_gateways", "InternetGateways", Filters=filters)
    tables = _paginate(client, "describe_route_tables", "RouteTables", Filters=filters)
    groups = _paginate(client, "describe_security_groups", "SecurityGroups", Filters=filters)
    keys = client.describe_key_pairs(Filters=filters).get("KeyPairs", [])
    templates = _paginate(client, "describe_launch_templates", "LaunchTemplates", Filters=filters)
    return {
        "vpcs": [{"id": v["VpcId"], "cidr_block": v["CidrBlock"], "tags": _tags(v)} for v in vpcs],
        "subnets": [
            {"id": s["SubnetId"], "vpc_id": s["VpcId"], "cidr_block": s["CidrBlock"], "tags": _tags(s)}
            for s in subnets
        ],
        "internet_gateways": [
            {
                "internet_gateway_id": g["InternetGatewayId"],
                "vpc_ids": [a["VpcId"] for a in g.get("Attachments", [])],
                "tags": _tags(g),
            }
            for g in gateways
        ],
        "route_tables": [
            {
                "id": t["RouteTableId"],
                "vpc_id": t["VpcId"],
                "main": any(a.get("Main") for a in t.get("Associations", [])),
                "tags": _tags(t),
            }
            for t in tables
        ],
        "security_groups": [
            {
                "group_id": g["GroupId"],
                "group_name": g["GroupName"],
                "vpc_id": g.get("VpcId"),
                "tags": _tags(g),
            }
            for g in groups
        ],
        "key_pairs": [{"key_name": k["KeyName"], "tags": _tags(k)} for k in keys],
        "launch_templates": [
            {"id": t["LaunchTemplateId"], "name": t["LaunchTemplateName"], "tags": _tags(t)}
            for t in templates
        ],
        "instances": _instances(client, filters),
    }


def expired_clusters(client: Any, cluster_tag: str, expiry_tag: str, now: str) -> list[str]:
    """Names of the clusters owning a VPC or a live instance whose expiry tag is before NOW."""
    filters = [{"Name": "tag-key", "Values": [expiry_tag]}]
    tagged = [_tags(v) for v in _paginate(client, "describe_vpcs", "Vpcs", Filters=filters)]
    tagged += [i["tags"] for i in _instances(client, filters)]
    # UTC timestamps in one fixed format: string order is time order.
    return sorted({t[cluster_tag] for t in tagged if t.get(cluster_tag) and t[expiry_tag] < now})


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "mode": {"type": "str", "choices": ["cluster", "expired"], "default": "cluster"},
            "cluster_name": {"type": "str"},
            "cluster_tag": {"type": "str", "default": "clusterforge_cluster"},
            "expiry_tag": {"type": "str", "default": "clusterforge_expires"},
            "now": {"type": "str"},
        },
        required_if=[("mode", "cluster", ["cluster_name"])],
        supports_check_mode=True,
    )
    params = module.params
    try:
        client = module.client("ec2")
        if params["mode"] == "cluster":
            if not params["cluster_name"]:
                module.fail_json(msg="cluster_name is empty: name the cluster whose resources to list")
            resources = cluster_resources(client, params["cluster_name"], params["cluster_tag"])
            resources.update(iam_resources(module.client("iam"), params["cluster_name"]))
            module.exit_json(
                changed=False,
                resources=resources,
                count=sum(len(items) for items in resources.values()),
                expired_clusters=[],
            )
        now = params["now"] or datetime.datetime.now(datetime.UTC).strftime(TIME_FORMAT)
        clusters = expired_clusters(client, params["cluster_tag"], params["expiry_tag"], now)
        module.exit_json(changed=False, resources={}, count=0, expired_clusters=clusters)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        module.fail_json_aws(error, msg="Failed to list the cluster's EC2 and IAM resources")


if __name__ == "__main__":
    main()
