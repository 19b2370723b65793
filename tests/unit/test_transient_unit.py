"""The module that runs long work of the plays as a transient systemd unit (clusterforge_transient_unit),
against stand-in systemd-run and systemctl programs that log how they were called."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "plugins/modules/clusterforge_transient_unit.py"


FAKE = """
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.path.join("TMP", "calls.jsonl"), "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
if name == "systemd-run" and os.path.exists(os.path.join("TMP", "fail-start")):
    sys.stderr.write("Failed to start transient service unit: Unit x.service already exists.\\n")
    sys.exit(1)
if name == "systemctl" and sys.argv[1] == "reset-failed":
    sys.exit(1)  # as for a unit that did not fail
"""


@pytest.fixture
def systemd(tmp_path: Path) -> Path:
    """A bin folder with systemd-run and systemctl that append their argv to calls.jsonl; systemd-run
    fails with a message when the file fail-start exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemd-run", "systemctl"):
        program = bin_dir / name
        program.write_text(f"#!{sys.executable}\n" + FAKE.replace("TMP", str(tmp_path)))
        program.chmod(0o755)
    return tmp_path


def module(tmp: Path, check_mode: bool = False, **args: Any) -> dict[str, Any]:
    args_file = tmp / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    env = {**os.environ, "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, env=env, check=False
    )
    return json.loads(done.stdout)


def calls(tmp: Path) -> list[list[str]]:
    path = tmp / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


START = {
    "name": "clusterforge-verify-20261206T074047Z-b38c-cluster",
    "argv": ["/opt/clusterforge/venv/bin/python", "-m", "compute_jobs", "run", "--quiet"],
    "user": "clusterforge-verify",
    "runtime_max_sec": 1800,
    "setenv": {"DASK_CONFIG": "/etc/clusterforge/dask/client", "A_FIRST": "1"},
}


def test_started_runs_the_program_as_a_unit_with_its_deadline_and_keeps_its_outcome(systemd):
    answer = module(systemd, **START)
    assert not answer.get("failed"), answer
    assert answer["changed"] is False  # a program, not a state of the node
    assert calls(systemd) == [
        [
            "systemd-run",
            "--quiet",
            "--unit=clusterforge-verify-20261206T074047Z-b38c-cluster",
            "--uid=clusterforge-verify",
            "--property=RuntimeMaxSec=1800",
            "--property=RemainAfterExit=yes",
            "--property=WorkingDirectory=~",
            "--setenv=A_FIRST=1",
            "--setenv=DASK_CONFIG=/etc/clusterforge/dask/client",
            "--",
            "/opt/clusterforge/venv/bin/python",
            "-m",
            "compute_jobs",
            "run",
            "--quiet",
        ]
    ]


def test_a_unit_that_does_not_start_fails_with_systemds_reason(systemd):
    (systemd / "fail-start").write_text("")
    answer = module(systemd, **START)
    assert answer["failed"] is True
    assert answer["msg"] == (
        "systemd-run could not start clusterforge-verify-20261206T074047Z-b38c-cluster.service: "
        "Failed to start transient service unit: Unit x.service already exists."
    )


def test_absent_stops_and_forgets_the_unit_and_nothing_there_is_no_error(systemd):
    answer = module(systemd, name="clusterforge-scale-probe", state="absent")
    assert not answer.get("failed") and answer["changed"] is False, answer
    assert calls(systemd) == [
        ["systemctl", "stop", "clusterforge-scale-probe.service"],
        ["systemctl", "reset-failed", "clusterforge-scale-probe.service"],
    ]


def test_check_mode_starts_and_stops_nothing(systemd):
    assert not module(systemd, check_mode=True, **START).get("failed")
    assert not module(systemd, check_mode=True, name="clusterforge-scale-probe", state="absent").get("failed")
    assert calls(systemd) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": "a unit; rm -rf /"}, "unit name 'a unit; rm -rf /': use letters, digits and :_.@-"),
        ({"setenv": {"BAD-NAME": "1"}}, "setenv: not variable names: BAD-NAME"),
        ({"runtime_max_sec": 0}, "state=started needs a program (argv) and runtime_max_sec of 1 or more"),
        ({"argv": []}, "state=started needs a program (argv) and runtime_max_sec of 1 or more"),
    ],
)
def test_bad_input_fails_before_anything_runs(systemd, args, message):
    answer = module(systemd, **{**START, **args})
    assert answer["failed"] is True and answer["msg"] == message
    assert calls(systemd) == []


def test_started_without_a_user_or_deadline_is_refused(systemd):
    answer = module(systemd, name="x", argv=["true"])
    assert answer["failed"] is True and "user" in answer["msg"] and "runtime_max_sec" in answer["msg"]
    assert calls(systemd) == []


def test_no_play_or_role_calls_systemd_run_itself():
    # One way to start a transient unit: the module. A task that builds its own systemd-run line
    # (as verify, scale and upgrade each did) is a second copy of its deadline and outcome rules.
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for pattern in ("site.yml", "playbooks/**/*.yml", "roles/*/tasks/*.yml", "roles/*/vars/*.yml")
        for path in sorted(ROOT.glob(pattern))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "systemd-run" in line and not line.lstrip().startswith("#")
    ]
    assert found == []
