"""The Dask role's node configuration without a node: the monitoring intervals reach the scheduler's,
the workers' and the clients' dask.yaml (Dask's own defaults unless the inventory sets them), and a
malformed interval stops the role at validation with the variable's name."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from localplay import ROOT, role_play, run_local_playbook

ROLE = ROOT / "roles" / "dask"

# The template task's own dask_component wins over the role's defaults (play vars_files).
PLAY = role_play(
    ROLE,
    f"""  tasks:
    - ansible.builtin.import_tasks: {ROLE}/tasks/validate.yml
    - ansible.builtin.template:
        src: {ROLE}/templates/dask.yaml.j2
        dest: "{{{{ out }}}}/dask-{{{{ item }}}}.yaml"
        mode: "0600"
      vars:
        dask_component: "{{{{ item }}}}"
      loop: [scheduler, worker, client]
""",
)


def render(tmp_path: Path, **extra: Any) -> tuple[int, str]:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[dask_scheduler]\nlocalhost\n[dask_workers]\nlocalhost\n")
    values = {
        "cluster_address": "127.0.0.1",
        "cluster_secrets_dir": str(tmp_path / "secrets"),
        # Facts are not gathered: the closure and the worker layout are given, not derived.
        "__dask_python_version": "3.13",
        "role_path": str(ROLE),
        "dask_worker_nthreads": 1,
        "dask_worker_memory_limit_mb": 512,
        "out": str(tmp_path),
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    return run_local_playbook(play, values, str(inventory))


def intervals(tmp_path: Path, component: str) -> dict[str, Any]:
    conf = yaml.safe_load((tmp_path / f"dask-{component}.yaml").read_text())["distributed"]
    return {
        "tick": conf["admin"]["tick"]["interval"],
        "system-monitor": conf["admin"]["system-monitor"]["interval"],
        "profile": conf.get("worker", {}).get("profile", {}).get("interval"),
    }


def test_every_component_gets_dasks_own_intervals_by_default(tmp_path: Path) -> None:
    rc, out = render(tmp_path)
    assert rc == 0, out
    assert intervals(tmp_path, "scheduler") == {"tick": "20ms", "system-monitor": "500ms", "profile": None}
    assert intervals(tmp_path, "worker") == {"tick": "20ms", "system-monitor": "500ms", "profile": "10ms"}
    assert intervals(tmp_path, "client") == {"tick": "20ms", "system-monitor": "500ms", "profile": None}


def test_the_inventorys_intervals_reach_every_component(tmp_path: Path) -> None:
    lab = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/dask.yml").read_text())
    rc, out = render(tmp_path, **lab)
    assert rc == 0, out
    tick, system, profile = (
        lab["dask_tick_interval"],
        lab["dask_system_monitor_interval"],
        lab["dask_worker_profile_interval"],
    )
    assert intervals(tmp_path, "scheduler") == {"tick": tick, "system-monitor": system, "profile": None}
    assert intervals(tmp_path, "worker") == {"tick": tick, "system-monitor": system, "profile": profile}
    assert intervals(tmp_path, "client")["tick"] == tick


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("dask_tick_interval", "0ms"),
        ("dask_tick_interval", "1"),
        ("dask_system_monitor_interval", "2 minutes"),
        ("dask_worker_profile_interval", "0.0s"),
        ("dask_worker_profile_interval", "-5ms"),
    ],
)
def test_a_malformed_interval_stops_at_validation_naming_it(tmp_path: Path, name: str, value: str) -> None:
    rc, out = render(tmp_path, **{name: value})
    assert rc != 0
    assert f"{name} must be a positive duration" in out, out
    assert f"{name}='{value}'" in out
    assert not list(tmp_path.glob("dask-*.yaml")), "nothing is written after a failed validation"
