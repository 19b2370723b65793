"""``python -m compute_jobs`` as verify.yml calls it: exit codes, files written, messages."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from compute_jobs.checks import load_all
from compute_jobs.model import registry
from compute_jobs.versions import distribution_version

REPO = Path(__file__).resolve().parents[2]
load_all()
TINY = {cls.name: cls.smoke_params() for cls in registry if cls.name.startswith("node.")}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compute_jobs", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cluster_file(tmp_path, cj_cluster_dict) -> Path:
    """This machine (by its hostname) as the head of a one-host cluster, with tiny parameters."""
    host = {
        "name": socket.gethostname(),
        "address": "127.0.0.1",
        "groups": ["head"],
        "cores": 1,
        "memory_mb": 16,
    }
    doc = cj_cluster_dict([host], params=TINY, pinned_libraries={"numpy": distribution_version("numpy")})
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(doc))
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_node_checks_writes_jsonl_and_junit(cluster_file, tmp_path, cj_validator):
    out, junit = tmp_path / "node.jsonl", tmp_path / "node.xml"
    proc = cli(
        "run", "--cluster", str(cluster_file), "--only", "node", "--json", str(out), "--junit", str(junit)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = records(out)
    validator = cj_validator("result.schema.json")
    for record in lines:
        validator.validate(record)
    host, *results, summary = lines
    assert host["type"] == "host" and host["target"] == socket.gethostname()
    assert host["versions"]["numpy"] == distribution_version("numpy")
    assert summary["type"] == "summary" and summary["counts"]["PASS"] == len(results) == 8
    assert {r["check"] for r in results} == {"node.inventory", "node.blas", "node.stream", "node.disk"}
    assert ET.parse(junit).getroot().get("failures") == "0"
    assert "node.stream.triad" in proc.stdout and "PASS 8  FAIL 0  ERROR 0  SKIP 0" in proc.stdout


def test_run_with_wrong_answer_control_exits_one(cluster_file, tmp_path):
    out = tmp_path / "node.jsonl"
    proc = cli(
        "run", "--cluster", str(cluster_file), "--only", "node.stream,node.disk", "--json", str(out),
        "--inject", "wrong-answer", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    results = [r for r in records(out) if r["type"] == "result"]
    judged = {r["name"]: r["status"] for r in results if r["category"] == "correctness"}
    assert judged == {"node.stream": "FAIL", "node.disk": "FAIL"}
    assert records(out)[-1]["inject"] == "wrong-answer"


def test_skip_leaves_out_tags_names_and_categories(cluster_file, tmp_path):
    out = tmp_path / "node.jsonl"
    proc = cli(
        "run", "--cluster", str(cluster_file), "--only", "node", "--skip", "node.disk,performance",
        "--json", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # node.blas and node.stream are performance checks, node.disk is named: node.inventory is left.
    assert {r["check"] for r in records(out) if r["type"] == "result"} == {"node.inventory"}


def test_malformed_cluster_json_exits_two_naming_the_field(tmp_path, cj_cluster_dict):
    doc = cj_cluster_dict()
    doc["hosts"].append({"name": "b", "address": "10.0.0.2", "groups": [], "cores": "two", "memory_mb": 1})
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(doc))
    proc = cli("run", "--cluster", str(path), "--target", "a")
    assert proc.returncode == 2
    assert f'{path}: hosts[1].cores: expected integer >= 1, got "two"' in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "nosuchtag"], "--only: unknown tag or check nosuchtag"),
        (["--skip", "resilient"], "--skip: unknown tag, check or category resilient"),
        (["--target", "elsewhere"], "'elsewhere' is not a host"),
        (
            ["--param", "node.stream.n=lots"],
            '--param node.stream.n: expected integer 1000..2147483648, got "lots"',
        ),
        (["--param", "node.stream.typo=1"], "node.stream.typo: unknown parameter"),
        (["--baseline", "/nonexistent/baseline.json"], "cannot read"),
        (
            ["--json", "/nonexistent/dir/out.jsonl", "--only", "node.inventory"],
            "cannot write /nonexistent/dir",
        ),
    ],
)
def test_usage_errors_exit_two(cluster_file, args, message):
    proc = cli("run", "--cluster", str(cluster_file), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_list_shows_every_check():
    proc = cli("list")
    assert proc.returncode == 0
    for cls in registry:
        assert cls.name in proc.stdout
    listed = json.loads(cli("list", "--json").stdout)
    stream = next(c for c in listed if c["name"] == "node.stream")
    assert stream["category"] == "performance" and stream["scope"] == "node" and stream["tags"] == ["node"]
    assert {p["name"] for p in stream["params"]} >= {"n", "repeats", "timeout"}


def test_calibrate_then_regression_against_the_baseline(cluster_file, tmp_path, cj_validator):
    baseline = tmp_path / "baseline.json"
    proc = cli("calibrate", "--cluster", str(cluster_file), "--only", "node.stream", "--out", str(baseline))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(baseline.read_text())
    cj_validator("baseline.schema.json").validate(data)
    entry = data["baselines"]["node.stream.triad"][socket.gethostname()]["triad"]
    assert entry["unit"] == "GB/s" and entry["value"] > 0
    assert "node.inventory" not in json.dumps(data)  # only performance checks are calibrated
    entry["value"] *= 1000  # pretend the node used to be a thousand times faster
    baseline.write_text(json.dumps(data))
    out = tmp_path / "run.jsonl"
    proc = cli(
        "run",
        "--cluster",
        str(cluster_file),
        "--only",
        "node.stream",
        "--baseline",
        str(baseline),
        "--json",
        str(out),
    )
    assert proc.returncode == 1
    triad = next(r for r in records(out) if r.get("name") == "node.stream.triad")
    assert triad["status"] == "FAIL" and triad["reason"].startswith("regression: ")
    assert "< 0.75 x baseline" in triad["reason"] and triad["baseline"]["floor"] == 0.75


def test_report_command_merges_and_exits_one_on_failures(cluster_file, tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    assert (
        cli(
            "run", "--cluster", str(cluster_file), "--only", "node.disk", "--json", str(good), "--quiet"
        ).returncode
        == 0
    )
    args = ["run", "--cluster", str(cluster_file), "--only", "node.disk", "--json", str(bad), "--quiet"]
    assert cli(*args, "--inject", "wrong-answer").returncode == 1
    out_dir = tmp_path / "report"
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"run_id": "run-from-controller", "git_sha": "feedface"}))
    proc = cli("report", "--out-dir", str(out_dir), "--summary-json", str(summary), str(good))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    final = records(out_dir / "results.jsonl")[-1]
    assert final["run_id"] == "run-from-controller" and final["git_sha"] == "feedface"
    proc = cli("report", "--out-dir", str(out_dir), "--git-sha", "abc", str(bad))
    assert proc.returncode == 3, proc.stdout + proc.stderr  # the control held: its own status
    assert records(out_dir / "results.jsonl")[-1]["inject"] == "wrong-answer"
    assert "node.disk" in proc.stdout and "FAIL" in proc.stdout
    assert "control held: 1 of 1 controlled results FAILed (wrong-answer)" in proc.stdout
    assert {p.name for p in out_dir.iterdir()} == {"results.jsonl", "junit.xml", "report.html"}


BLOCKER = """
import sys
BLOCKED = {"dask", "distributed", "pyspark", "celery", "mpi4py", "cupy", "numba", "pyopencl", "airflow",
           "ansible", "jsonschema", "scipy"}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} imported at module level")
        return None

sys.meta_path.insert(0, Block())
from compute_jobs import cli
from compute_jobs.checks import load_all
registry = load_all()
assert not registry.import_errors, registry.import_errors
sys.exit(cli.main(["list"]))
"""


def test_nothing_beyond_stdlib_and_numpy_is_imported_at_module_level():
    """The nodes have no jsonschema or ansible, and engines only where provisioned."""
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "node.stream" in proc.stdout


REPORT_BLOCKER = """
import sys
ALLOWED = set(sys.stdlib_module_names) | {"compute_jobs", "jinja2", "markupsafe"}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in ALLOWED:
            raise ImportError(f"{name} is not the standard library or Jinja2")
        return None

sys.meta_path.insert(0, Block())
from compute_jobs import report
sys.exit(report.main(sys.argv[1:]))
"""


def test_the_controller_report_needs_the_standard_library_and_jinja2_only(cluster_file, tmp_path):
    """The controller renders reports without numpy or any node library."""
    results = tmp_path / "node.jsonl"
    assert (
        cli("run", "--cluster", str(cluster_file), "--only", "node.disk", "--json", str(results)).returncode
        == 0
    )
    proc = subprocess.run(
        [sys.executable, "-c", REPORT_BLOCKER, "--out-dir", str(tmp_path / "out"), str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "node.disk" in proc.stdout


def test_progress_file_gets_a_line_per_check_as_it_starts_and_finishes(cluster_file, tmp_path):
    progress = tmp_path / "progress.jsonl"
    args = ["run", "--cluster", str(cluster_file), "--only", "node.disk,node.inventory", "--quiet"]
    assert cli(*args, "--progress", str(progress)).returncode == 0
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [e["event"] for e in events][-1] == "end" and events[-1]["rc"] == 0
    starts = [e for e in events if e["event"] == "start"]
    assert sorted(e["check"] for e in starts) == ["node.disk", "node.inventory"]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\dZ", e["deadline"]) for e in starts)
    done = [e for e in events if e["event"] == "result"]
    assert {e["status"] for e in done} == {"PASS"}
    assert {e["target"] for e in done} == {e["target"] for e in starts}
    assert any("cores" in e["figure"] for e in done)  # node.inventory's key figure
    # each check's results follow its own start line, before the next check starts
    first = [i for i, e in enumerate(events) if e["event"] == "start"]
    assert all(events[i + 1]["event"] == "result" for i in first)


CRASH = """
import sys
from compute_jobs import cli, runner

def broken(self, config):
    raise RuntimeError("a bug in the runner")

runner.Runner.run = broken
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_bug_of_the_suite_exits_70_not_1_which_reads_as_a_failed_check(cluster_file, tmp_path):
    # verify.yml takes exit 0 and 1 as "the suite ran to its end and wrote its results"; an
    # uncaught exception would exit 1 as well, with no results file.
    out = tmp_path / "node.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASH,
            "run",
            "--cluster",
            str(cluster_file),
            "--only",
            "node.disk",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 70, proc.stdout + proc.stderr
    assert "RuntimeError: a bug in the runner" in proc.stderr
    assert "the suite itself failed" in proc.stderr
    assert not out.exists()


def test_a_bug_of_the_report_exits_70_too(tmp_path):
    crash = "import sys\nfrom compute_jobs import report\n"
    crash += "report.build_report = lambda *a, **k: 1 / 0\nsys.exit(report.main(sys.argv[1:]))\n"
    (tmp_path / "node.jsonl").write_text("")
    proc = subprocess.run(
        [sys.executable, "-c", crash, "--out-dir", str(tmp_path / "r"), str(tmp_path / "node.jsonl")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 70, proc.stdout + proc.stderr
    assert "ZeroDivisionError" in proc.stderr and "the suite itself failed" in proc.stderr
