"""The engine contract on a GPU-group node without a GPU: playbooks/verify.yml itself (not a
hand-written cluster.json) carries what the cuda and opencl roles published into cluster.json, and
the checks judge with it: gpu.inventory FAILs with "no NVIDIA GPU", the OpenCL checks PASS on PoCL."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "_shared"))
from playbook import run_playbook

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
CONFIG = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
(NODE,) = (p["name"] for p in CONFIG["platforms"])
FACTS = "/etc/ansible/facts.d"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One verification run of the gpu and opencl checks through the real tier; its report."""
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if ephemeral is None:
        pytest.skip("runs under molecule verify, against the converged node")
    reports = tmp_path_factory.mktemp("reports")
    extra = {"verify_only": ["gpu", "opencl"], "verify_fail_on_error": False}
    extra["verify_reports_dir"] = str(reports)
    rc, output = run_playbook("playbooks/verify.yml", pathlib.Path(ephemeral) / "inventory", reports, extra)
    assert rc == 0, output[-4000:]
    latest = reports / "latest"
    results = [json.loads(line) for line in (latest / "results.jsonl").read_text().splitlines()]
    return {
        "cluster": json.loads((latest / "cluster.json").read_text()),
        "results": [r for r in results if r.get("type") == "result"],
        "output": output,
    }


def published(engine: str) -> dict:
    """What the role wrote on the node as its part of engines.<engine>."""
    text = subprocess.run(
        ["podman", "exec", NODE, "cat", f"{FACTS}/clusterforge_engine_{engine}.fact"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CONTAINERS_CONF": str(ROOT / "lab/containers.conf")},
    ).stdout
    return json.loads(text)


@pytest.mark.parametrize("engine", ["gpu", "opencl"])
def test_cluster_json_carries_what_the_role_published(run, engine):
    section = run["cluster"]["engines"][engine]
    assert section["hosts"][NODE] == published(engine)["hosts"][NODE]


def test_opencl_section_names_pocl(run):
    assert run["cluster"]["engines"]["opencl"]["hosts"][NODE]["platforms"] == ["Portable Computing Language"]


def test_gpu_inventory_fails_with_no_nvidia_gpu(run):
    (inventory,) = (r for r in run["results"] if r["name"] == "gpu.inventory" and r["target"] == NODE)
    assert inventory["status"] == "FAIL", inventory
    assert "is in group gpu_nodes but no NVIDIA GPU was found" in inventory["reason"]


def test_opencl_checks_pass_on_pocl(run):
    opencl = [r for r in run["results"] if r["category"] == "opencl" or "opencl" in r.get("tags", [])]
    opencl = [r for r in opencl if not r["name"].startswith("gpu.")]
    assert opencl, [r["name"] for r in run["results"]]
    assert {r["status"] for r in opencl} == {"PASS"}, [(r["name"], r["status"], r["reason"]) for r in opencl]
