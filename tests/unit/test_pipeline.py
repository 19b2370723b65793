"""The shared file pipeline: closed forms, data, steps, the subprocess boundary, the node package name."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clusterforge_pipeline import data, engines, orchestrate, steps
from clusterforge_pipeline.spec import (
    NodeConfig,
    Spec,
    SpecError,
    check_run_id,
    decode_big,
    encode_big,
    expected_totals,
    fanout_total,
    range_sum,
    safe_name,
    split_ranges,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = Spec(files=3, mib=1, seed=7)


@pytest.fixture
def config(tmp_path: Path) -> NodeConfig:
    return NodeConfig(
        python=sys.executable, pythonpath=str(tmp_path / "lib"), work_dir=str(tmp_path / "work")
    )


@pytest.mark.parametrize(("n", "k"), [(0, 1), (10, 3), (1_000_003, 8), (5, 8)])
def test_split_ranges_cover_zero_to_n_exactly(n, k):
    ranges = split_ranges(n, k)
    assert len(ranges) == k
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [high - low for low, high in ranges]
    assert max(sizes) - min(sizes) <= 1
    assert sum(range_sum(low, high) for low, high in ranges) == fanout_total(n) == sum(range(n))


def test_split_ranges_rejects_nonsense():
    with pytest.raises(SpecError):
        split_ranges(10, 0)


def test_spec_validates_and_round_trips():
    assert Spec.from_dict(SMALL.to_dict()) == SMALL
    assert SMALL.values_per_file == 131072
    for bad in ({"files": 0}, {"mib": 5000}, {"seed": -1}, {"files": True}, {"extra": 1}):
        with pytest.raises(SpecError):
            Spec.from_dict(bad)


def test_run_ids_become_safe_names():
    assert safe_name("manual__2026-11-21T05:09:02.227580+00:00") == "manual__2026-11-21T05_09_02.227580_00_00"
    for bad in ("", "../etc", "a/b", "x" * 200):
        with pytest.raises(SpecError):
            check_run_id(bad)


def test_big_integers_travel_as_strings():
    record = {"sum": 2**70, "sumsq": 3, "count": 5}
    encoded = encode_big(record)
    assert encoded == {"sum": str(2**70), "sumsq": "3", "count": 5}
    assert json.loads(json.dumps(encoded)) == encoded
    assert decode_big(encoded) == record


def test_files_hold_a_seeded_permutation_of_their_block(tmp_path):
    written = data.write_file(SMALL.to_dict(), 1, str(tmp_path))
    values = np.fromfile(written["path"], dtype="<u8")
    n = SMALL.values_per_file
    assert written["bytes"] == SMALL.mib << 20
    assert np.array_equal(np.sort(values), np.arange(n, 2 * n, dtype=np.uint64))
    assert not np.array_equal(values, np.sort(values)), "the file must be shuffled, or order is untested"
    again = data.file_values(SMALL, 1)
    assert np.array_equal(values, again)
    assert not np.array_equal(again, data.file_values(Spec(files=3, mib=1, seed=8), 1))


def test_summaries_are_exact_beyond_64_bits():
    values = np.array([2**32 - 1, 2**32 - 2, 5], dtype="<u8")
    summary = data.summarize_array(values)
    assert summary["sumsq"] == sum(int(v) ** 2 for v in values) > 2**64
    assert summary["sum"] == sum(int(v) for v in values)
    assert (summary["min"], summary["max"], summary["count"]) == (5, 2**32 - 1, 3)


def test_local_pipeline_reaches_the_closed_form(config):
    run = "unit-run-1"
    manifest = steps.run("generate", config, {"run_id": run, "spec": SMALL.to_dict()})["manifest"]
    assert [m["index"] for m in manifest] == [0, 1, 2]
    processed = steps.run("process", config, {"run_id": run, "spec": SMALL.to_dict(), "manifest": manifest})
    aggregated = steps.run("aggregate", config, {"run_id": run, "spec": SMALL.to_dict(), **processed})
    assert aggregated["backend"] == "local"
    assert decode_big(aggregated["totals"]) == expected_totals(SMALL)
    verdict = steps.run(
        "verify",
        config,
        {
            "run_id": run,
            "spec": SMALL.to_dict(),
            "totals": aggregated["totals"],
            "digests": aggregated["digests"],
        },
    )
    assert verdict["ok"], verdict["problems"]
    removed = steps.run("cleanup", config, {"run_id": run, "spec": SMALL.to_dict()})["removed"]
    assert removed[0]["removed"] == 3
    assert not os.path.exists(engines.run_dir(config, run))


def test_judge_catches_a_wrong_sum_and_a_corrupted_file(config, tmp_path):
    manifest = engines.local_generate(config, SMALL, "unit-run-2")
    with open(manifest[2]["path"], "r+b") as handle:  # swap two values: same sum, different digest
        first, second = handle.read(8), handle.read(8)
        handle.seek(0)
        handle.write(second + first)
    partials = engines.local_process(config, SMALL, manifest)
    totals = data.totals_of(partials)
    digests = {str(p["index"]): p["sha256"] for p in partials}
    verdict = data.judge(SMALL, totals, digests)
    assert not verdict["ok"] and verdict["problems"] == ["file digests differ for file(s) 2"]
    wrong = dict(totals, sum=str(int(totals["sum"]) + 1))
    good_digests = data.expected_digests(SMALL)
    verdict = data.judge(SMALL, wrong, good_digests)
    assert not verdict["ok"] and verdict["problems"][0].startswith("sum: expected")


def test_process_regenerates_a_missing_file(config):
    manifest = engines.local_generate(config, SMALL, "unit-run-3")
    os.remove(manifest[0]["path"])
    partials = engines.local_process(config, SMALL, manifest)
    assert [p["regenerated"] for p in partials] == [True, False, False]
    assert decode_big(data.totals_of(partials)) == expected_totals(SMALL)


def test_combine_is_associative_and_commutative():
    parts = [encode_big(data.summarize_array(data.file_values(SMALL, j))) for j in range(3)]
    tagged = [{**p, "files": 1} for p in parts]
    left = data.combine(data.combine(tagged[0], tagged[1]), tagged[2])
    right = data.combine(tagged[2], data.combine(tagged[1], tagged[0]))
    assert left == right
    assert {k: left[k] for k in expected_totals(SMALL)} == expected_totals(SMALL)


def test_node_config_refuses_bad_documents():
    with pytest.raises(SpecError):
        NodeConfig.from_dict({"python": "", "pythonpath": "/x", "work_dir": "/y"})
    with pytest.raises(SpecError):
        NodeConfig.from_dict({"python": "p", "pythonpath": "/x", "work_dir": "/y", "dask": "yes"})
    config = NodeConfig.from_dict(
        {"python": "p", "pythonpath": "/x", "work_dir": "/y", "spark": {"conf_dir": "/c"}}
    )
    assert config.backends() == {"generate": "local", "process": "local", "aggregate": "spark"}


def test_unknown_step_and_bad_payloads_are_errors(config):
    with pytest.raises(SpecError):
        steps.run("explode", config, {})
    with pytest.raises(SpecError):
        steps.run("process", config, {"run_id": "r", "spec": SMALL.to_dict(), "manifest": []})


def test_orchestrate_parses_only_the_marked_result():
    noisy = "spark says hi\n" + orchestrate.MARKER + '\n{"ok": true}\n'
    assert orchestrate.parse_output("x", noisy) == {"ok": True}
    with pytest.raises(orchestrate.StepFailed):
        orchestrate.parse_output("x", '{"ok": true}\n')


def test_orchestrate_reports_the_stderr_of_a_failed_step(config):
    def runner(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(args[0], 1, "", "Traceback\nRuntimeError: no Dask workers\n")

    with pytest.raises(orchestrate.StepFailed, match="no Dask workers"):
        orchestrate.run_step("process", {}, config, runner=runner)


def test_steps_run_in_a_subprocess_from_the_directory_the_pipeline_role_fills(tmp_path):
    """The pipeline role copies clusterforge_pipeline into a directory of its own (pipeline_dir)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "clusterforge_pipeline").symlink_to(REPO / "clusterforge_pipeline")
    config = NodeConfig(python=sys.executable, pythonpath=str(lib), work_dir=str(tmp_path / "work"))
    spec = Spec(files=2, mib=1, seed=3)
    generated = orchestrate.run_step("generate", {"run_id": "sub-1", "spec": spec.to_dict()}, config)
    processed = orchestrate.run_step(
        "process", {"run_id": "sub-1", "spec": spec.to_dict(), "manifest": generated["manifest"]}, config
    )
    assert [p["index"] for p in processed["partials"]] == [0, 1]
    with pytest.raises(orchestrate.StepFailed, match="manifest must list"):
        orchestrate.run_step("process", {"run_id": "sub-1", "spec": spec.to_dict(), "manifest": []}, config)


def test_the_pipeline_package_imports_nothing_from_the_framework():
    for path in (REPO / "clusterforge_pipeline").glob("*.py"):
        assert "compute_jobs" not in path.read_text(), path.name


def test_one_role_deploys_the_pipeline_package_and_nothing_else_carries_a_copy():
    """Deployed once under one name: only roles/pipeline copies it; compute_jobs no longer holds it."""
    assert not (REPO / "compute_jobs" / "pipeline").exists()
    deployers = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / "roles").glob("*/**/*.yml")
        if "Deploy the clusterforge_pipeline" in path.read_text()
    )
    assert deployers == ["roles/pipeline/tasks/main.yml"]
    sources = [
        path.relative_to(REPO).as_posix()
        for path in (REPO / "roles").glob("*/defaults/main.yml")
        if "../../clusterforge_pipeline" in path.read_text() or "compute_jobs/pipeline" in path.read_text()
    ]
    assert sources == ["roles/pipeline/defaults/main.yml"]


def test_the_luigi_check_shares_code_with_the_airflow_check_only_through_a_helper():
    luigi = (REPO / "compute_jobs" / "checks" / "luigi.py").read_text()
    assert "checks.airflow" not in luigi and "checks._pipeline import" in luigi


@pytest.mark.parametrize("dag", sorted((REPO / "dags").glob("*.py")))
def test_dags_compile_and_import_pipeline_code_by_its_node_name(dag):
    text = dag.read_text()
    compile(text, str(dag), "exec")
    assert "compute_jobs" not in text
    assert "is_paused_upon_creation=False" in text


def test_the_http_boundary_is_one_module_that_needs_no_pipeline_package():
    """Airflow, Luigi and JupyterHub checks talk HTTP through compute_jobs.transport, which a host
    without clusterforge_pipeline (the hub) can import."""
    assert "clusterforge_pipeline" not in (REPO / "compute_jobs" / "transport.py").read_text()
    for name in ("airflow", "luigi", "notebooks"):
        text = (REPO / "compute_jobs" / "checks" / f"{name}.py").read_text()
        boundary = re.search(r"^from compute_jobs\.transport import [^\n]*\bTransport\b", text, re.MULTILINE)
        assert boundary, name
        assert "Transport = " not in text and "urlopen" not in text, name


def test_cleanup_on_hosts_with_several_worker_processes_tolerates_files_already_gone(tmp_path, monkeypatch):
    """Every Dask worker process runs remove_dir; two on one host race for the same files."""
    run = tmp_path / "run"
    run.mkdir()
    for i in range(3):
        (run / f"part-{i:05d}.u64").write_bytes(b"x")
    listing = os.listdir

    def listdir_then_a_sibling_removes_one(path):
        names = listing(path)
        os.remove(run / "part-00001.u64")  # the other worker process on this host was faster
        return names

    monkeypatch.setattr(data.os, "listdir", listdir_then_a_sibling_removes_one)
    assert data.remove_dir(str(run))["removed"] == 2
    monkeypatch.setattr(data.os, "listdir", listing)
    assert not run.exists()
    assert data.remove_dir(str(run))["removed"] == 0


def test_cleanup_tolerates_the_run_directory_removed_between_its_check_and_its_listing(tmp_path, monkeypatch):
    """The sibling process may remove the whole directory after this one saw it (seen on the lab:
    FileNotFoundError from listdir failed the DAG's cleanup task)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "part-00000.u64").write_bytes(b"x")
    listing = os.listdir

    def sibling_removed_it_first(path):
        for name in listing(path):
            os.remove(os.path.join(path, name))
        os.rmdir(path)
        return listing(path)  # FileNotFoundError, as the real race gives

    monkeypatch.setattr(data.os, "listdir", sibling_removed_it_first)
    assert data.remove_dir(str(run))["removed"] == 0
    assert not run.exists()


def test_files_reach_every_host_before_a_second_worker_of_any():
    """Files go round-robin over the Dask workers, ordered one per host at a time: with as many
    files as hosts every host gets one (sorted by address, 4 files over 3 hosts of 2 workers each
    left the third host idle and airflow.resilience.placement FAILed on a 4-node lab)."""
    from clusterforge_pipeline import engines as pipeline_engines

    class Client:
        def scheduler_info(self, n_workers: int = 0) -> dict:
            hosts = {"10.0.0.2": 2, "10.0.0.3": 2, "10.0.0.4": 2}
            return {
                "workers": {
                    f"tls://{h}:{4000 + i}": {"host": h, "name": f"{h}-{i}"}
                    for h, n in hosts.items()
                    for i in range(n)
                }
            }

    order = [w["host"] for w in pipeline_engines._dask_workers(Client())]
    assert order == ["10.0.0.2", "10.0.0.3", "10.0.0.4"] * 2
