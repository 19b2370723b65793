"""An engine tier's packages play (its first: every host of the tier installs at once): the Dask
role's package steps (tasks/packages.yml) on localhost with a stand-in pip in a fake virtual
environment, where dask_component=packages installs only on a host without Dask and a host with
another Dask is left to its component, which installs; and the Dask, Spark and Airflow playbooks
starting with such a play over the hosts their component plays install on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from localplay import ROOT, role_play, run_local_playbook

ROLE = ROOT / "roles" / "dask"

PLAY = role_play(
    ROLE,
    f"""  tasks:
    - ansible.builtin.import_tasks: {ROLE}/tasks/packages.yml
  handlers:
    - name: Note the restart
      ansible.builtin.copy:
        content: "{{{{ dask_component }}}}\\n"
        dest: "{{{{ dask_venv_dir }}}}/restarted"
        mode: "0644"
      listen: restart dask services
""",
)

# Answers freeze (and list) from freeze.txt beside bin/, records every other call in calls.log; an install
# adds a line to what freeze prints (the module's change).
PIP = """#!/bin/sh
here="$(dirname "$0")/.."
case "$1" in
  freeze|list) cat "$here/freeze.txt" ;;
  --version|-V) echo "pip 25.1 from $here (python 3.13)" ;;
  install) echo "$*" >>"$here/calls.log"; echo "installed==1" >>"$here/freeze.txt" ;;
  *) echo "$*" >>"$here/calls.log" ;;
esac
"""


def closure_pins() -> list[str]:
    lines = (ROLE / "files" / "closure-py3.13.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def converge(tmp_path: Path, component: str, freeze: list[str]) -> tuple[list[str], bool]:
    """(pip install calls, whether the restart handler ran) of packages.yml as COMPONENT on a venv
    whose pip freeze prints FREEZE."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    if any(line.lower().startswith("dask==") for line in freeze):
        (venv / "bin" / "dask").write_text("")
    pip = venv / "bin" / "pip"
    pip.write_text(PIP)
    pip.chmod(0o755)
    (venv / "freeze.txt").write_text("".join(f"{line}\n" for line in freeze))
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    rc, out = run_local_playbook(
        play,
        {
            "dask_component": component,
            "dask_venv_dir": str(venv),
            "__dask_python_version": "3.13",
            "dask_closure_file": str(ROLE / "files" / "closure-py3.13.txt"),
            "role_path": str(ROLE),
            "ansible_python_interpreter": sys.executable,
        },
    )
    assert rc == 0, out
    calls = (venv / "calls.log").read_text().splitlines() if (venv / "calls.log").exists() else []
    return [call for call in calls if call.startswith("install")], (venv / "restarted").exists()


def test_the_closure_is_pinned_in_the_file_the_tasks_read() -> None:
    assert any(pin.lower().startswith("dask==") for pin in closure_pins())


@pytest.mark.parametrize("component", ["packages", "worker", "scheduler", "client"])
def test_a_host_without_dask_installs_the_closure_whatever_its_component(
    tmp_path: Path, component: str
) -> None:
    installs, _ = converge(tmp_path, component, ["numpy==2.2.6"])
    assert len(installs) == 1
    assert "--no-deps" in installs[0]
    assert "dask-closure.txt" in installs[0]


def test_the_packages_play_leaves_a_host_with_another_dask_to_its_component(tmp_path: Path) -> None:
    installs, restarted = converge(tmp_path / "packages", "packages", ["dask==2024.1.0", "numpy==2.2.6"])
    assert installs == []
    assert not restarted
    # The component's own play installs the upgrade and restarts its services.
    installs, restarted = converge(tmp_path / "worker", "worker", ["dask==2024.1.0", "numpy==2.2.6"])
    assert len(installs) == 1
    assert restarted


def test_nothing_is_installed_where_the_closure_is_complete(tmp_path: Path) -> None:
    pins = closure_pins()
    for component in ("packages", "worker"):
        installs, _ = converge(tmp_path / component, component, pins)
        assert installs == [], component


# Tier playbook, component variable, and the host pattern of its packages play.
TIERS = {
    "dask": ("dask_component", "dask_scheduler:dask_workers:head"),
    "spark": ("spark_component", "spark_master:spark_workers:head"),
    "airflow": ("airflow_component", "airflow:celery_workers"),
}


def tier_plays(tier: str) -> list[dict]:
    return [
        play for play in yaml.safe_load((ROOT / "playbooks" / f"{tier}.yml").read_text()) if "hosts" in play
    ]


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_the_packages_play_comes_first_and_covers_the_hosts_that_install(tier: str) -> None:
    variable, pattern = TIERS[tier]
    plays = tier_plays(tier)
    first = plays[0]
    assert [role.get(variable) for role in first["roles"] if role["role"] == tier] == ["packages"]
    assert f"'{pattern}'" in first["hosts"]
    # Every later play of the tier's own role runs on hosts of that pattern (the groups it names).
    groups = set(pattern.split(":"))
    for play in plays[1:]:
        if any(
            role["role"] == tier and role.get(variable) in ("scheduler", "worker", "master", "server")
            for role in play["roles"]
        ):
            named = play["hosts"].split("'")[1]
            assert set(named.split(":")) <= groups, play["name"]
