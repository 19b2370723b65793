"""After playbooks/upgrade.yml (the converge, run while known-answer work ran): every node holds the
roles' current pins, not the previous release the prepare step installed, every unit runs, and the
verification tier itself finds the Dask and Celery checks green and no version drift."""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys

import pytest
import testinfra
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
CONFIG = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
NAMES = [p["name"] for p in CONFIG["platforms"]]
HEAD = NAMES[0]
PYTHON = "/opt/clusterforge/venv/bin/python"
sys.path.insert(0, str(SCENARIO.parent / "_shared"))
from playbook import run_playbook  # noqa: E402


def pin(text: str, name: str) -> str:
    (version,) = re.findall(rf"^\s*-?\s*{re.escape(name)}==(\S+)\s*$", text, re.MULTILINE)
    return version


# The versions the roles pin now, and the ones the prepare step converged first.
CURRENT = {
    "dask": pin((ROOT / "roles/dask/files/closure-py3.13.txt").read_text(), "dask"),
    "distributed": pin((ROOT / "roles/dask/files/closure-py3.13.txt").read_text(), "distributed"),
    "celery": pin((ROOT / "roles/celery/defaults/main.yml").read_text(), "celery"),
    "kombu": pin((ROOT / "roles/celery/defaults/main.yml").read_text(), "kombu"),
}
PREVIOUS = {name: pin((SCENARIO / "prepare.yml").read_text(), name) for name in CURRENT}


def installed(host) -> dict[str, str]:
    names = sorted(CURRENT)
    code = f"import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
    return json.loads(host.check_output("%s -c %s", PYTHON, code))


def test_the_scenario_starts_from_another_release():
    assert all(PREVIOUS[name] != CURRENT[name] for name in CURRENT), (PREVIOUS, CURRENT)


@pytest.mark.parametrize("name", NAMES)
def test_every_node_holds_the_current_pins(name):
    assert installed(testinfra.get_host(f"podman://{name}")) == CURRENT


@pytest.mark.parametrize("name", NAMES)
def test_every_unit_runs_after_the_upgrade(name):
    host = testinfra.get_host(f"podman://{name}")
    # Every node is a worker; the head node also runs the scheduler and Flower.
    units = ["dask-worker@0", "celery-worker"] + (["dask-scheduler", "celery-flower"] if name == HEAD else [])
    for unit in units:
        assert host.service(unit).is_running, unit


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One verification run of the Dask and Celery checks through the real tier; its report. The
    correctness and placement checks: the performance and resilience ones are the dask and celery
    scenarios' and the lab's, and would only repeat them here."""
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if ephemeral is None:
        pytest.skip("runs under molecule verify, against the upgraded nodes")
    reports = tmp_path_factory.mktemp("reports")
    extra = {
        "verify_only": ["dask", "celery"],
        "verify_skip": ["performance", "resilience"],
        "verify_reports_dir": str(reports),
    }
    rc, output = run_playbook("playbooks/verify.yml", pathlib.Path(ephemeral) / "inventory", reports, extra)
    latest = reports / "latest"
    results = [json.loads(line) for line in (latest / "results.jsonl").read_text().splitlines()]
    return {"rc": rc, "results": [r for r in results if r.get("type") == "result"], "output": output}


# The scenario has no shared storage tier: the Dask check of a shared dataset says so and SKIPs.
EXPECTED_SKIPS = {"storage.dask_dataset": "declares no engines.storage"}


def test_dask_and_celery_checks_pass_after_the_upgrade(run):
    def expected(r: dict) -> bool:
        return r["status"] == "SKIP" and EXPECTED_SKIPS.get(r["name"], "\0") in r["reason"]

    bad = [
        (r["name"], r["target"], r["status"], r["reason"])
        for r in run["results"]
        if r["status"] != "PASS" and not expected(r)
    ]
    engines = {r["name"].split(".")[0] for r in run["results"]}
    assert run["rc"] == 0 and not bad, (bad, run["output"][-3000:])
    assert {"dask", "celery"} <= engines, engines


def test_no_version_drift_after_the_upgrade(run):
    (drift,) = (r for r in run["results"] if r["name"] == "cluster.version_drift")
    assert drift["status"] == "PASS", drift
