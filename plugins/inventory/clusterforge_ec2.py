# Copyright: clusterforge maintainers
# Apache-2.0
"""EC2 inventory of one clusterforge cluster.

The amazon.aws.aws_ec2 inventory plugin templates some of its options (filters, regions,
endpoint_url...) but only with lookups: inventory sources are parsed before any variable exists,
so ``filters: {tag:clusterforge_cluster: "{{ cloud_cluster_name }}"}`` cannot see
``-e cloud_cluster_name=demo``. This plugin is aws_ec2 with one addition: those templates see the
extra vars and the variables of ``group_vars/all/`` beside the configuration file, so a single
``cloud_cluster_name`` selects the cluster for the provisioning play, for the inventory and for
``meta: refresh_inventory``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.utils.vars import combine_vars, load_extra_vars
from ansible_collections.amazon.aws.plugins.inventory.aws_ec2 import InventoryModule as AwsEc2InventoryModule

DOCUMENTATION = r"""
name: clusterforge_ec2
short_description: EC2 hosts of one clusterforge cluster
description:
  - The C(amazon.aws.aws_ec2) inventory plugin, whose templated options (O(filters), O(regions),
    O(endpoint_url), O(enabled)...) can use the extra vars (C(-e)) and the variables defined in
    C(group_vars/all/) next to the configuration file, so one C(cloud_cluster_name) selects the cluster.
  - The configuration file name must end with C(clusterforge_ec2.yml) or C(clusterforge_ec2.yaml).
  - When O(enabled) renders false the plugin adds no host and calls no API.
extends_documentation_fragment:
  - inventory_cache
  - constructed
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
  - amazon.aws.assume_role.plugins
options:
  plugin:
    description: Marks this file as a clusterforge_ec2 inventory source.
    type: str
    required: true
    choices: [clusterforge_ec2]
  enabled:
    description:
      - Template or boolean; when it renders false the source is empty and no API is called
        (another cloud provider is selected, or no cluster name is set).
    type: raw
    default: true
  declare_groups:
    description:
      - Groups created even when no host belongs to them, so that plays targeting them find
        an empty group instead of an unknown pattern (e.g. C(gpu_nodes) on a CPU-only cluster).
    type: list
    elements: str
    default: []
  regions:
    description: Regions to describe.
    type: list
    elements: str
    default: []
  hostnames:
    description: Hostname sources in order of precedence, as in amazon.aws.aws_ec2.
    type: list
    elements: raw
    default: []
  allow_duplicated_hosts:
    description: Return every matching hostname instead of the first one.
    type: bool
    default: false
  filters:
    description: EC2 DescribeInstances filters; values may be templates.
    type: dict
    default: {}
  include_filters:
    description: Additional filter sets; an instance matching any of them is included.
    type: list
    elements: dict
    default: []
  exclude_filters:
    description: Filter sets whose matching instances are excluded.
    type: list
    elements: dict
    default: []
  strict_permissions:
    description: Fail on 403 errors instead of skipping them.
    type: bool
    default: true
  use_contrib_script_compatible_sanitization:
    description: Legacy group name sanitization (kept false).
    type: bool
    default: false
  use_contrib_script_compatible_ec2_tag_keys:
    description: Legacy ec2_tag_NAME host variables (kept false).
    type: bool
    default: false
  hostvars_prefix:
    description: Prefix of the host variables coming from AWS.
    type: str
  hostvars_suffix:
    description: Suffix of the host variables coming from AWS.
    type: str
  use_ssm_inventory:
    description: Add the SSM inventory of each instance to its host variables.
    type: bool
    default: false
  route53_enabled:
    description: Use Route53 names as hostnames.
    type: bool
    default: false
  route53_hostnames:
    description: Route53 name suffixes to consider.
    type: list
    elements: str
    default: []
  route53_excluded_zones:
    description: Route53 zones to exclude.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
# inventories/cloud/clusterforge_ec2.yml
plugin: clusterforge_ec2
enabled: "{{ cloud_provider == 'aws' and cloud_cluster_name | length > 0 }}"
regions:
  - "{{ cloud_region }}"
endpoint_url: "{{ cloud_endpoint_url }}"
filters:
  tag:clusterforge_cluster: "{{ cloud_cluster_name }}"
  instance-state-name: [pending, running]
hostnames:
  - tag:Name
keyed_groups:
  - key: ec2_tags.clusterforge_groups.split(',')
    prefix: ""
    separator: ""
"""

_VARS_SUFFIXES = (".yml", ".yaml", ".json")


class InventoryModule(AwsEc2InventoryModule):
    NAME = "clusterforge_ec2"
    INVENTORY_FILE_SUFFIXES = ("clusterforge_ec2.yml", "clusterforge_ec2.yaml")

    def _inventory_vars(self, path: str) -> dict[str, Any]:
        """Variables of group_vars/all beside the source, overridden by the extra vars."""
        group_vars = os.path.join(os.path.dirname(os.path.abspath(path)), "group_vars")
        candidates = [os.path.join(group_vars, "all" + suffix) for suffix in _VARS_SUFFIXES]
        all_dir = os.path.join(group_vars, "all")
        if os.path.isdir(all_dir):
            candidates += [os.path.join(all_dir, name) for name in sorted(os.listdir(all_dir))]
        result: dict[str, Any] = {}
        for candidate in candidates:
            if not (candidate.endswith(_VARS_SUFFIXES) and os.path.isfile(candidate)):
                continue
            data = self.loader.load_from_file(candidate, cache="none", trusted_as_template=True)
            if data is None:
                continue
            if not isinstance(data, Mapping):
                raise AnsibleParserError(f"{candidate}: expected a mapping of variables")
            result = combine_vars(result, data)
        return combine_vars(result, load_extra_vars(self.loader))

    def _read_config_data(self, path):
        config = super()._read_config_data(path)
        # The templated options of the aws_ec2 base are rendered with this templar.
        self.templar.available_variables = self._inventory_vars(path)
        return config

    def get_option(self, option, hostvars=None):
        value = super().get_option(option, hostvars)
        if option == "endpoint_url" and not value:
            # An empty endpoint means "the provider's own"; botocore wants None, not "".
            return None
        return value

    def get_options(self, *args):
        options = super().get_options(*args)
        if not options.get("endpoint_url"):
            options.original_options = dict(options.original_options, endpoint_url=None)
        return options

    def _enabled(self) -> bool:
        value = super().get_option("enabled")
        if isinstance(value, str):
            value = self.templar.template(value)
        return boolean(value, strict=False)

    def parse(self, inventory, loader, path, cache=True):
        # The base parse() loads the loader and options; check 'enabled' before it queries AWS.
        self.loader = loader
        self.inventory = inventory
        self._read_config_data(path)
        for group in super().get_option("declare_groups"):
            inventory.add_group(group)
        if not self._enabled():
            self.display.vvv(f"clusterforge_ec2: {path} is disabled for this run, no host added")
            return
        super().parse(inventory, loader, path, cache=cache)
