#!/usr/bin/python
# Copyright: clusterforge maintainers
# Apache-2.0
"""Compare a node with the state its tiers left it in, or record that state (the fast re-converge)."""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import subprocess
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: clusterforge_converge_state
short_description: Decide whether a tier must converge on this node, or record that it did
description:
  - Keeps, in I(state_dir), one marker per tier (the digest of the inputs it converged with) and
    the node's state after the last tier that converged here (C(node.json)), made of the metadata
    of every file under I(paths), the distributions in every venv matched by I(venvs), the active
    units whose names start with one of I(units), the processor count, memory and IPv4 addresses.
  - C(mode=check) compares. A node whose state differs from the record has drifted (a file edited,
    a unit stopped, a package removed from a venv) and every tier marker is dropped (not in check
    mode), so every tier converges here in this run. A tier is fresh when its marker holds I(inputs)
    and the node has not drifted.
  - C(mode=record) writes the tier's marker and the node's state. This is bookkeeping of the
    converge that just ran, never reported as a change.
  - C(mode=snapshot) reads the node once for every tier (whether a converge was recorded, how the
    node drifted, dropping every marker then as C(check) does, and the marker of each tier). A
    site-wide run takes it before its first tier; the action plugin then judges each tier's
    C(check) from it on the controller instead of reading the node again.
  - Normally called through the action plugin of the same name, which computes I(inputs) on the
    controller.
options:
  tier:
    description: Tier name (lower-case letters, digits, C(_)); not used by C(snapshot).
    type: str
    default: ""
  mode:
    description: C(check), C(record) or C(snapshot).
    type: str
    required: true
    choices: [check, record, snapshot]
  inputs:
    description: Digest of what the tier converges from (project files, inventory, extra vars).
    type: str
    required: true
  secrets:
    description:
      - Each file of the secrets directory and a digest of its content. The tier is stale when a
        file recorded with it changed or vanished; files that appeared since do not count (a later
        tier's key is not an input of the tiers before it).
    type: dict
    default: {}
  parts:
    description:
      - What the inputs digest was made of, by kind (C(files), C(variables), C(inventory files),
        C(hosts)), each part with a short digest; recorded so that a check can name what changed.
    type: dict
    default: {}
  paths:
    description:
      - Files and directories whose metadata (mode, owner, size, modification time) make up the
        node's state.
    type: list
    elements: path
    required: true
  venvs:
    description:
      - Glob patterns of venv site-packages directories; their distributions (names, versions) count.
    type: list
    elements: str
    default: []
  units:
    description: Name prefixes of the systemd units whose being active counts.
    type: list
    elements: str
    default: []
  ignore:
    description:
      - Shell patterns of paths and unit names that do not count (what the verification tier
        itself installs and starts).
    type: list
    elements: str
    default: []
  max_age:
    description:
      - Seconds after which a tier's marker no longer counts, whatever else holds. The tier then
        converges fully again, which renews what only time changes (certificates near expiry).
    type: int
    default: 86400
  state_dir:
    description: Where the markers and the node's state are kept (root only).
    type: path
    default: /var/lib/clusterforge/converge
"""

EXAMPLES = r"""
- name: Compare the node with the last converge of the dask tier
  clusterforge_converge_state:
    tier: dask
    mode: check
    inputs: 5f0c...
    paths: [/etc/clusterforge, /etc/systemd/system]
    venvs: [/opt/clusterforge/*/lib/python3*/site-packages]
    units: [clusterforge-]
"""

RETURN = r"""
fresh:
  description: The tier converged here with these inputs and the node has not changed since (check).
  returned: when mode is check or record
  type: bool
reason:
  description: Why the tier is not fresh, in words ("" when it is).
  returned: when mode is check or record
  type: str
drifted:
  description:
    - Up to 20 entries of the node's state that differ from the record, each naming the entry
      and whether it changed, is new or is gone.
  returned: always
  type: list
recorded:
  description: Whether a converge was ever recorded on this node (snapshot).
  returned: when mode is snapshot
  type: bool
markers:
  description: Each tier's marker (inputs, secrets, at) that survived the comparison (snapshot).
  returned: when mode is snapshot
  type: dict
"""

TIER = re.compile(r"[a-z][a-z0-9_]*")
MAX_DRIFT = 20
# Changed variables a reason names.
MAX_NAMED = 3


def file_entries(roots: list[str]) -> dict[str, str]:
    """Metadata of every entry below ROOTS, keyed by path (symlinks by target, not followed)."""
    out: dict[str, str] = {}

    def one(path: str) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return
        if os.path.islink(path):
            out[path] = f"link {os.readlink(path)}"
        elif os.path.isdir(path):  # its entries count one by one, its own times not
            out[path] = f"dir {st.st_mode:o} {st.st_uid}:{st.st_gid}"
        else:
            out[path] = f"{st.st_mode:o} {st.st_uid}:{st.st_gid} {st.st_size} {st.st_mtime_ns}"

    for root in roots:
        if not os.path.lexists(root):
            out[root] = "absent"
            continue
        one(root)
        if os.path.isdir(root) and not os.path.islink(root):
            for directory, dirs, files in os.walk(root):
                dirs.sort()
                for name in sorted(dirs) + sorted(files):
                    one(os.path.join(directory, name))
    return out


def venv_entries(patterns: list[str]) -> dict[str, str]:
    """The distributions (dist-info directory names carry name and version) of each venv."""
    out: dict[str, str] = {}
    for pattern in patterns:
        for site in sorted(glob.glob(pattern)):
            try:
                names = sorted(n for n in os.listdir(site) if n.endswith(".dist-info"))
            except OSError:
                continue
            out[f"venv {site}"] = " ".join(names)
    return out


def unit_entries(prefixes: list[str], ignore: list[str]) -> dict[str, str]:
    """Every active unit whose name starts with one of PREFIXES."""
    if not prefixes:
        return {}
    try:
        done = subprocess.run(
            ["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager", "--full"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return {"units active": "no systemctl"}
    active = []
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] != "active" or matches(fields[0], ignore):
            continue
        if fields[0].startswith(tuple(prefixes)):
            active.append(fields[0])
    return {"units active": " ".join(sorted(active))}


def host_entries() -> dict[str, str]:
    """What the roles' templates read from the host's facts: processors, memory, addresses."""
    out = {"processors": str(os.cpu_count())}
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            out["memory"] = next((line.split()[1] for line in handle if line.startswith("MemTotal:")), "")
    except OSError:
        out["memory"] = ""
    try:
        done = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False)
    except OSError:
        return {**out, "addresses": "no ip command"}
    fields = [line.split() for line in done.stdout.splitlines()]
    out["addresses"] = " ".join(sorted(f"{f[1]}={f[3]}" for f in fields if len(f) > 3))
    return out


def node_state(params: dict[str, Any]) -> dict[str, str]:
    ignore = params["ignore"]
    files = {k: v for k, v in file_entries(params["paths"]).items() if not matches(k, ignore)}
    return {
        **host_entries(),
        **files,
        **venv_entries(params["venvs"]),
        **unit_entries(params["units"], ignore),
    }


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The entries of OLD and NEW that differ, in words, at most MAX_DRIFT."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key not in old:
            out.append(f"{key}: new")
        elif key not in new:
            out.append(f"{key}: gone")
        else:
            out.append(f"{key}: changed")
        if len(out) >= MAX_DRIFT:
            break
    return out


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def write_json(module: AnsibleModule, path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    module.atomic_move(tmp, path)
    os.chmod(path, 0o600)


def marker_names(state_dir: str) -> list[str]:
    """The tier markers kept in STATE_DIR (every JSON file but the node's state)."""
    return sorted(name for name in os.listdir(state_dir) if name.endswith(".json") and name != "node.json")


def changed_parts(was: Any, now: dict[str, dict[str, str]]) -> str:
    """The parts of a tier's inputs that differ between the marker's record WAS and NOW, in words
    ("" where the marker recorded none)."""
    if not isinstance(was, dict):
        return ""
    told = []
    for kind in sorted(set(was) | set(now)):
        old, new = was.get(kind) or {}, now.get(kind) or {}
        changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
        if changed:
            more = ", ..." if len(changed) > MAX_NAMED else ""
            told.append(f"{kind}: {', '.join(changed[:MAX_NAMED])}{more}")
    return "; ".join(told)


def judge(
    tier: str,
    recorded: bool,
    drifted: list[str],
    marker: dict[str, Any] | None,
    inputs: str,
    secrets: dict[str, str],
    max_age: int,
    now: float,
    parts: dict[str, dict[str, str]] | None = None,
) -> tuple[bool, str]:
    """Whether TIER may skip its converge on a node, and why not: the one rule of the fast path,
    applied by the module (check) and by the action plugin to a snapshot. PARTS (what the inputs
    digest was made of) name what changed where the marker recorded its parts too."""
    if not recorded:
        return False, "no converge recorded on this node"
    if drifted:
        return False, f"the node changed since the last converge ({drifted[0]}, ...)"
    if marker is None:
        return False, f"no converge of the {tier} tier recorded since the node changed"
    if marker.get("inputs") != inputs:
        told = changed_parts(marker.get("parts"), parts or {})
        if told:
            return False, f"its inputs changed ({told})"
        return False, "its inputs changed (project files, inventory or extra vars)"
    changed = sorted(
        name for name, digest in (marker.get("secrets") or {}).items() if secrets.get(name) != digest
    )
    if changed:
        return False, f"a secret it converged with changed or vanished ({changed[0]})"
    if not 0 <= now - float(marker.get("at") or 0) <= max_age:
        return False, f"its last full converge here is more than {max_age} s old"
    return True, ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "tier": {"type": "str", "default": ""},
            "mode": {"type": "str", "required": True, "choices": ["check", "record", "snapshot"]},
            "inputs": {"type": "str", "required": True},
            "secrets": {"type": "dict", "default": {}},
            "parts": {"type": "dict", "default": {}},
            "paths": {"type": "list", "elements": "path", "required": True},
            "venvs": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            "ignore": {"type": "list", "elements": "str", "default": []},
            "max_age": {"type": "int", "default": 86400},
            "state_dir": {"type": "path", "default": "/var/lib/clusterforge/converge"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["mode"] != "snapshot" and not TIER.fullmatch(p["tier"]):
        module.fail_json(msg=f"tier {p['tier']!r}: use lower-case letters, digits and _")
    state_dir = p["state_dir"]
    node_file = os.path.join(state_dir, "node.json")
    marker_file = os.path.join(state_dir, f"{p['tier']}.json")
    now = node_state(p)

    if p["mode"] == "record":
        if not module.check_mode:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            marker = {
                "inputs": p["inputs"],
                "secrets": p["secrets"],
                "parts": p["parts"],
                "at": time.time(),
            }
            write_json(module, marker_file, marker)
            write_json(module, node_file, {"state": now})
        module.exit_json(changed=False, fresh=True, reason="", drifted=[])

    recorded = read_json(node_file)
    drifted = differences(recorded.get("state") or {}, now) if recorded else []
    if drifted and not module.check_mode:  # every tier converges here in this run
        for name in marker_names(state_dir):
            os.unlink(os.path.join(state_dir, name))
    if p["mode"] == "snapshot":
        markers = {}
        if recorded is not None and not drifted:
            for name in marker_names(state_dir):
                marker = read_json(os.path.join(state_dir, name)) if TIER.fullmatch(name[:-5]) else None
                if marker is not None:
                    markers[name[:-5]] = marker
        module.exit_json(changed=False, drifted=drifted, recorded=recorded is not None, markers=markers)
    marker = read_json(marker_file) if recorded is not None and not drifted else None
    fresh, reason = judge(
        p["tier"],
        recorded is not None,
        drifted,
        marker,
        p["inputs"],
        p["secrets"],
        p["max_age"],
        time.time(),
        p["parts"],
    )
    module.exit_json(changed=False, fresh=fresh, reason=reason, drifted=drifted)


if __name__ == "__main__":
    main()
