#!/usr/bin/python
# Copyright: clusterforge maintainers
# Apache-2.0
"""Start a program as a transient systemd unit with a deadline, or unload such a unit."""

from __future__ import annotations

import re
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: clusterforge_transient_unit
short_description: Run a program as a transient systemd unit with a deadline, or unload one
description:
  - C(state=started) starts ARGV with C(systemd-run) as the unit NAME, as USER, with
    C(RuntimeMaxSec=runtime_max_sec) and C(RemainAfterExit=yes), in USER's home. The unit keeps
    its outcome (C(systemctl show -p Result,ExecMainStatus)) until it is unloaded, an operator
    follows it with C(systemctl status) and C(journalctl -u), and stopping it stops everything the
    program started.
  - C(state=absent) stops the unit if it runs and forgets its outcome (its log stays in the
    journal). Nothing there is no error.
  - Long-running work of the plays (the verification suite, the proof that no work is lost across a
    drain or a roll) runs this way instead of through C(async). Neither state is a change of the
    node's configuration, so the module never reports one; in check mode it does nothing.
options:
  name:
    description: The unit's name, without C(.service).
    type: str
    required: true
  state:
    description: C(started) or C(absent).
    type: str
    choices: [started, absent]
    default: started
  argv:
    description: The program and its arguments (C(state=started)).
    type: list
    elements: str
  user:
    description: The account the program runs as (C(state=started)).
    type: str
  runtime_max_sec:
    description: The deadline in seconds; systemd stops the unit past it (Result=timeout).
    type: int
  setenv:
    description: Environment variables of the program.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Start the checks
  clusterforge_transient_unit:
    name: clusterforge-verify-20261206T074047Z-b38c-cluster
    argv: [/opt/clusterforge/venv/bin/python, -m, compute_jobs, run, --cluster, /var/tmp/cluster.json]
    user: clusterforge-verify
    runtime_max_sec: 1800
    setenv: {DASK_CONFIG: /etc/clusterforge/dask/client}

- name: Unload it
  clusterforge_transient_unit:
    name: clusterforge-verify-20261206T074047Z-b38c-cluster
    state: absent
"""

RETURN = r"""
unit:
  description: The unit's full name.
  returned: always
  type: str
cmd:
  description: The systemd-run command line (C(state=started)).
  returned: when started
  type: list
"""

UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def start_command(name: str, argv: list[str], user: str, limit: int, setenv: dict[str, Any]) -> list[str]:
    """The systemd-run command line that starts ARGV as the transient unit NAME."""
    return [
        "systemd-run",
        "--quiet",
        f"--unit={name}",
        f"--uid={user}",
        f"--property=RuntimeMaxSec={limit}",
        "--property=RemainAfterExit=yes",
        "--property=WorkingDirectory=~",
        *(f"--setenv={key}={value}" for key, value in sorted(setenv.items())),
        "--",
        *argv,
    ]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["started", "absent"], "default": "started"},
            "argv": {"type": "list", "elements": "str"},
            "user": {"type": "str"},
            "runtime_max_sec": {"type": "int"},
            "setenv": {"type": "dict", "default": {}},
        },
        required_if=[("state", "started", ("argv", "user", "runtime_max_sec"))],
        supports_check_mode=True,
    )
    p = module.params
    if not UNIT_NAME.fullmatch(p["name"]):
        module.fail_json(msg=f"unit name {p['name']!r}: use letters, digits and :_.@-")
    unit = f"{p['name']}.service"
    bad = sorted(key for key in p["setenv"] if not ENV_NAME.fullmatch(str(key)))
    if bad:
        module.fail_json(msg=f"setenv: not variable names: {', '.join(bad)}")
    if p["state"] == "started" and (p["runtime_max_sec"] < 1 or not p["argv"]):
        module.fail_json(msg="state=started needs a program (argv) and runtime_max_sec of 1 or more")
    if module.check_mode:
        module.exit_json(changed=False, unit=unit)
    if p["state"] == "absent":
        # Stopping an absent unit, or forgetting one that did not fail, is no error.
        module.run_command(["systemctl", "stop", unit])
        module.run_command(["systemctl", "reset-failed", unit])
        module.exit_json(changed=False, unit=unit)
    cmd = start_command(p["name"], p["argv"], p["user"], p["runtime_max_sec"], p["setenv"])
    rc, out, err = module.run_command(cmd)
    if rc != 0:
        module.fail_json(msg=f"systemd-run could not start {unit}: {(err or out).strip()}", rc=rc, cmd=cmd)
    module.exit_json(changed=False, unit=unit, cmd=cmd)


if __name__ == "__main__":
    main()
