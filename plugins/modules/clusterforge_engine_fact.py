#!/usr/bin/python
# Copyright: clusterforge maintainers
# Apache-2.0
"""Publish this host's part of an engine section of cluster.json as a local fact."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: clusterforge_engine_fact
short_description: Publish this host's part of engines.<engine> of cluster.json
description:
  - Writes C(<fact_dir>/clusterforge_engine_<engine>.fact), JSON, mode 0644.
  - A host can run several components of one engine (a Dask scheduler and the client
    configuration); each component publishes its own keys, merged into the one fact, key by key.
  - The verification tier merges the facts of the hosts of an engine into engines.<engine>.
options:
  engine:
    description: Engine name (letters, digits, C(_)).
    type: str
    required: true
  part:
    description: This component's part of the engine section, in its final shape.
    type: dict
    required: true
  fact_dir:
    description: Local facts directory.
    type: path
    default: /etc/ansible/facts.d
  replace:
    description:
      - The part is the whole fact, nothing of the old one is kept. For an engine with one
        component per host that publishes maps of other hosts (the monitoring targets), which
        must shrink with the inventory.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Publish this worker's part of engines.dask
  clusterforge_engine_fact:
    engine: dask
    part:
      endpoint: tls://10.0.0.1:8786
      workers:
        n2: {address: 10.0.0.2, nthreads: 2}
"""

RETURN = r"""
fact:
  description: The whole fact after the merge.
  returned: always
  type: dict
"""


def merged(old: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """OLD with PART's keys written over it, mappings merged key by key."""
    out = dict(old)
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "engine": {"type": "str", "required": True},
            "part": {"type": "dict", "required": True},
            "fact_dir": {"type": "path", "default": "/etc/ansible/facts.d"},
            "replace": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    engine = module.params["engine"]
    if not re.fullmatch(r"[a-z][a-z0-9_]*", engine):
        module.fail_json(msg=f"engine {engine!r}: use lower-case letters, digits and _")
    path = os.path.join(module.params["fact_dir"], f"clusterforge_engine_{engine}.fact")
    old: dict[str, Any] = {}
    before = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            before = handle.read()
        try:
            loaded = json.loads(before)
            old = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            old = {}
    fact = dict(module.params["part"]) if module.params["replace"] else merged(old, module.params["part"])
    after = json.dumps(fact, indent=4, sort_keys=True) + "\n"
    changed = after != before
    result: dict[str, Any] = {"changed": changed, "fact": fact, "path": path}
    if module._diff:
        result["diff"] = {"before": before, "after": after, "before_header": path, "after_header": path}
    if changed and not module.check_mode:
        os.makedirs(module.params["fact_dir"], mode=0o755, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(after)
        os.chmod(tmp, 0o644)
        module.atomic_move(tmp, path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
