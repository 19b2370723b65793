"""Run a playbook on localhost with the project's Ansible configuration (roles' tasks and templates
without a node)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def role_play(role: Path, body: str) -> str:
    """A play on localhost, without facts, that loads ROLE's defaults and vars as play vars_files (not
    include_vars: a task's own vars, e.g. a component, still win over them), then BODY: its tasks and
    handlers sections, indented as play keys."""
    return (
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        f"  vars_files: [{role}/defaults/main.yml, {role}/vars/main.yml]\n"
        f"{body}"
    )


def run_local_playbook(
    play: Path,
    values: dict[str, Any],
    inventory: str = "localhost,",
    args: tuple[str, ...] = (),
    environment: dict[str, str] | None = None,
    connection: str | None = "local",
) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ansible-playbook PLAY on localhost with VALUES as extra vars,
    ARGS after them and ENVIRONMENT over the project's configuration. CONNECTION None keeps the
    inventory's own (its hosts stay what they are instead of becoming this machine)."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        **(environment or {}),
    }
    argv = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", inventory]
    argv += ["-c", connection] if connection else []
    done = subprocess.run(
        [*argv, str(play), "-e", json.dumps(values), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def render_on_hosts(
    tmp_path: Path,
    role: Path,
    template: str,
    hosts: dict[str, dict[str, Any]],
    groups: dict[str, list[str]],
    play_hosts: str = "all",
    values: dict[str, Any] | None = None,
) -> dict[str, str]:
    """ROLE's TEMPLATE as each host of PLAY_HOSTS renders it (ROLE's defaults and vars, VALUES as extra
    vars), in an inventory of HOSTS (name -> variables; local connections) and GROUPS."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "hosts": {name: {**local, **variables} for name, variables in hosts.items()},
            "children": {group: {"hosts": dict.fromkeys(members)} for group, members in groups.items()},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    body = (
        "  tasks:\n"
        "    - ansible.builtin.template:\n"
        f"        src: {role}/templates/{template}\n"
        f"        dest: {tmp_path}/{{{{ inventory_hostname }}}}.out\n"
        "        mode: '0644'\n"
    )
    (tmp_path / "play.yml").write_text(
        role_play(role, body).replace("- hosts: localhost", f"- hosts: {play_hosts}")
    )
    status, out = run_local_playbook(
        tmp_path / "play.yml", values or {}, str(tmp_path / "hosts.yml"), connection=None
    )
    assert status == 0, out[-2000:]
    return {path.stem: path.read_text() for path in tmp_path.glob("*.out")}
