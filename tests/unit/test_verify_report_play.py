"""The verify tier's Report play (roles/verify/tasks/report.yml) on the controller: it renders what
the members sent, and when no member reached its checks (each failed in an earlier tier of the same
site.yml run) it says that, instead of failing on a file it cannot write."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from localplay import run_local_playbook
from test_compute_jobs_report import node_file

PLAY = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Render and judge the report
      ansible.builtin.include_role:
        name: verify
        tasks_from: report.yml
"""


def _values(reports: Path, cluster: dict[str, Any]) -> dict[str, Any]:
    return {
        "verify_reports_dir": str(reports),
        "verify_run_id": "20261205T000000Z-unit",
        "verify_cluster": cluster,
        "verify_git_sha": "0123456789ab",
        "verify_inventory_hash": cluster["inventory_hash"],
        "verify_cluster_name": "unit",
        "cluster_name": "unit",
        "cluster_secrets_dir": str(reports / "secrets"),
        "ansible_python_interpreter": sys.executable,
    }


def _play(tmp_path: Path) -> Path:
    play = tmp_path / "report.yml"
    play.write_text(PLAY)  # outside the project: the role comes from ansible.cfg's roles_path
    return play


def test_the_report_says_that_no_member_ran_its_checks(tmp_path, cj_cluster_dict):
    reports = tmp_path / "reports"
    reports.mkdir()
    rc, out = run_local_playbook(_play(tmp_path), _values(reports, cj_cluster_dict()))
    assert rc != 0, out
    assert "no member ran the verification checks in this run" in out, out
    assert "does not exist" not in out, out
    assert not (reports / "latest").exists()


def test_the_report_renders_what_a_member_sent(tmp_path, cj_cluster_dict, cj_cluster):
    reports = tmp_path / "reports"
    raw = reports / "20261205T000000Z-unit" / "raw"
    raw.mkdir(parents=True)
    node_file(raw, cj_cluster(), "a", {"python": "3.13.5"})
    rc, out = run_local_playbook(_play(tmp_path), _values(reports, cj_cluster_dict()))
    assert rc == 0, out
    results = [json.loads(line) for line in (reports / "latest" / "results.jsonl").read_text().splitlines()]
    assert {r.get("check"): r.get("status") for r in results}.get("fake.answer") == "PASS", results
