"""Run one of the repository's playbooks from a scenario's tests, as an operator would."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def lab_strategy() -> dict[str, str]:
    """The environment that runs a playbook under the strategy scripts/test converges the scenarios
    with (CF_ANSIBLE_STRATEGY, else mitogen's): for the tests' runs of whole tiers, which it makes
    shorter; a short run (a refusal before any change) is quicker under Ansible's own."""
    name = os.environ.get("CF_ANSIBLE_STRATEGY", "mitogen_linear")
    if not name.startswith("mitogen"):
        return {"ANSIBLE_STRATEGY": name}
    labtool = [sys.executable, str(ROOT / "scripts/labtool.py"), "strategy"]
    plugins = subprocess.run(labtool, capture_output=True, text=True, check=True).stdout.strip()
    return {"ANSIBLE_STRATEGY": name, "ANSIBLE_STRATEGY_PLUGINS": plugins}


def run_playbook(
    playbook: str,
    inventory: pathlib.Path | str,
    workdir: pathlib.Path,
    extra: dict,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> tuple[int, str]:
    """``ansible-playbook -i INVENTORY ROOT/PLAYBOOK -e @extra.json ARGS`` with the repository's
    ansible.cfg, an in-memory fact cache and no colours; its exit status and output."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "extra.json").write_text(json.dumps(extra))
    environment = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
        "CONTAINERS_CONF": str(ROOT / "lab/containers.conf"),
        **(env or {}),
    }
    command = [
        str(pathlib.Path(sys.executable).parent / "ansible-playbook"),
        *("-i", str(inventory), str(ROOT / playbook)),
        *("-e", f"@{workdir / 'extra.json'}", *args),
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, ANSI.sub("", done.stdout + done.stderr)
