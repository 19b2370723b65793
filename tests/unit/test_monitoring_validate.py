"""The monitoring role's check that each scraped engine's credential exists: it fails before any
change and names the engines, the missing files and each tier to converge first, once."""

from __future__ import annotations

from pathlib import Path

import yaml
from localplay import ROOT, run_local_playbook

TASK = "Check that every declared engine's credential exists (its tier has run)"


def test_missing_credentials_name_each_tier_once(tmp_path: Path):
    tasks = yaml.safe_load((ROOT / "roles/monitoring/tasks/validate.yml").read_text())
    (task,) = [t for t in tasks if t.get("name") == TASK]
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    present = tmp_path / "present"
    present.write_text("x")
    jobs = [
        {"name": "dask-scheduler", "tier": "dask", "secret": str(tmp_path / "gone-1")},
        {"name": "dask-workers", "tier": "dask", "secret": str(tmp_path / "gone-2")},
        {"name": "spark", "tier": "spark", "secret": str(tmp_path / "gone-3")},
        {"name": "airflow", "tier": "airflow", "secret": str(present)},
        {"name": "node", "tier": "common"},
    ]
    status, out = run_local_playbook(
        tmp_path / "play.yml", {"__monitoring_jobs": jobs, "monitoring_component": "server"}
    )
    assert status != 0, out[-2000:]
    assert "the inventory declares dask-scheduler, dask-workers, spark but the credential" in out, out[-2000:]
    assert "converge dask, spark first, or leave the engine out of monitoring_engines" in out, out[-2000:]
    jobs = [job for job in jobs if job["name"] in ("airflow", "node")]
    status, out = run_local_playbook(
        tmp_path / "play.yml", {"__monitoring_jobs": jobs, "monitoring_component": "server"}
    )
    assert status == 0, out[-2000:]
