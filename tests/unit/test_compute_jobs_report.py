"""Merging node results on the controller: results.jsonl, version drift, JUnit, HTML, table, exit code."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Check, Metric, Registry
from compute_jobs.report import (
    CONTROL_BROKEN,
    CONTROL_HELD,
    Report,
    ReportInputError,
    build_report,
    control_verdict,
    key_figure,
    render_html,
    render_table,
    version_drift,
    write_jsonl,
    write_report,
)
from compute_jobs.runner import RunConfig, Runner


class _Answer(Check):
    name = "fake.answer"
    category = "correctness"
    tags = frozenset({"fake"})
    description = "exact known answer; wrong on host c"

    def run(self, ctx):
        yield ctx.compare(338350, 338350 if ctx.target != "c" else 338351, rule="sum of squares 1..100")


class _Rate(Check):
    name = "fake.rate"
    category = "performance"
    tags = frozenset({"fake"})
    description = "a rate"
    metrics = (Metric("rate", "GB/s"),)

    def run(self, ctx):
        yield ctx.performance("rate", [5.0, 6.0, 7.0, 6.5, 5.5])


class _Broken(Check):
    name = "fake.broken"
    category = "correctness"
    tags = frozenset({"fake"})
    description = "cannot run on host b; says <script>alert(1)</script>"

    def run(self, ctx):
        if ctx.target == "b":
            raise RuntimeError("endpoint tcp://10.0.0.9:8786 <refused> & gone")
        yield ctx.compare(1, 1)


def node_file(tmp_path: Path, cluster: Any, target: str, versions: dict[str, str]) -> str:
    registry = Registry()
    for cls in (_Answer, _Rate, _Broken):
        registry.register(cls)
    outcome = Runner(registry).run(RunConfig(cluster=cluster, target=target))
    outcome.host_record["versions"] = versions
    outcome.summary["versions"] = {target: versions}
    path = tmp_path / f"node-{target}.jsonl"
    write_jsonl(str(path), [outcome.host_record, *(r.to_dict() for r in outcome.results), outcome.summary])
    return str(path)


HOSTS = [
    {
        "name": n,
        "address": "127.0.0.1",
        "groups": ["head"] if n == "a" else ["workers"],
        "cores": 1,
        "memory_mb": 1,
    }
    for n in ("a", "b", "c")
]
SAME = {"python": "3.13.5", "numpy": "2.2.6"}


@pytest.fixture
def files(tmp_path, cj_cluster) -> list[str]:
    cluster = cj_cluster(HOSTS)
    return [
        node_file(tmp_path, cluster, "a", SAME),
        node_file(tmp_path, cluster, "b", {**SAME, "pyspark": "4.0.1"}),
        node_file(tmp_path, cluster, "c", {**SAME, "numpy": "2.2.5"}),
    ]


def test_report_writes_valid_results_and_summary(files, tmp_path, cj_validator):
    report = build_report(files, meta={"git_sha": "0123456789ab"}, expected_hosts=["a", "b", "c"])
    paths = write_report(report, str(tmp_path / "out"))
    lines = [json.loads(line) for line in Path(paths["results"]).read_text().splitlines()]
    validator = cj_validator("result.schema.json")
    for record in lines:
        validator.validate(record)
    *results, summary = lines
    assert summary["type"] == "summary" and all(r["type"] == "result" for r in results)
    assert {(r["name"], r["target"]) for r in results} >= {("fake.answer", t) for t in "abc"}
    assert len({(r["name"], r["target"]) for r in results}) == len(results)  # one object per check and target
    assert summary["git_sha"] == "0123456789ab" and summary["run_id"] == "20261121T101500Z-unit"
    assert summary["inventory_hash"] == "sha256:" + "ab" * 32 and summary["cluster_name"] == "unit"
    assert summary["versions"]["b"]["pyspark"] == "4.0.1" and summary["hosts"] == ["a", "b", "c"]
    assert summary["counts"] == {
        PASS: sum(r["status"] == PASS for r in results),
        FAIL: sum(r["status"] == FAIL for r in results),
        ERROR: 1,
        SKIP: 0,
    }
    assert report.exit_code() == 1


def test_version_drift_is_fail_naming_hosts_and_versions(files):
    report = build_report(files)
    drift = next(r for r in report.results if r["name"] == "cluster.version_drift")
    assert drift["status"] == FAIL and drift["target"] == "cluster"
    assert drift["reason"] == "version drift: numpy: 2.2.5 on c; 2.2.6 on a, b"
    assert "pyspark" not in drift["observed"]  # installed on one host only: not drift


def test_no_drift_passes_and_one_host_skips():
    same = {"a": dict(SAME), "b": dict(SAME)}
    assert version_drift(same)["status"] == PASS
    assert version_drift({"a": SAME})["status"] == SKIP
    python_differs = {"a": SAME, "b": {**SAME, "python": "3.11.2"}}
    assert version_drift(python_differs)["status"] == FAIL
    assert version_drift(python_differs, ignore=["python"])["status"] == PASS


def test_coverage_fails_when_a_host_sent_nothing(files):
    report = build_report(files[:2], expected_hosts=["a", "b", "c"])
    coverage = next(r for r in report.results if r["name"] == "cluster.report_coverage")
    assert coverage["status"] == FAIL and coverage["missing"] == ["c"] and coverage["reason"] == "missing: c"


def test_all_pass_gives_exit_code_zero(tmp_path, cj_cluster):
    cluster = cj_cluster(HOSTS)
    paths = [node_file(tmp_path, cluster, "a", SAME)]
    report = build_report(paths)
    assert report.exit_code() == 0, render_table(report.results)


def test_junit_counts_failures_errors_and_skips(files):
    from compute_jobs.report import render_junit

    report = build_report(files)
    root = ET.fromstring(render_junit(report.results, report.summary))
    assert root.tag == "testsuites"
    assert int(root.get("tests")) == len(report.results)
    assert int(root.get("failures")) == 2  # fake.answer on c, version drift
    assert int(root.get("errors")) == 1  # fake.broken on b
    cases = root.findall(".//testcase")
    assert len(cases) == len(report.results)
    failed = [c for c in cases if c.find("failure") is not None]
    assert {c.get("name") for c in failed} == {"fake.answer", "cluster.version_drift"}
    error = next(c for c in cases if c.find("error") is not None)
    assert "tcp://10.0.0.9:8786" in error.find("error").get("message")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"a", "b", "c", "cluster"}
    assert suites["c"].get("failures") == "1"


def test_html_is_self_contained_and_escaped(files):
    report = build_report(files)
    page = render_html(report.results, report.summary)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    for external in ("<script", "<link", "src=", "@import", "url(", "http://", "https://"):
        assert external not in page, external
    assert all(link.startswith("#") for link in re.findall(r'href="([^"]*)"', page))  # in-page only
    assert "&lt;refused&gt; &amp; gone" in page
    assert re.search(r'class="drift">2\.2\.5<', page)
    for status in ("PASS", "FAIL", "ERROR"):
        assert f'class="s {status}"' in page


def test_terminal_table_shows_key_figures_and_reasons(files):
    report = build_report(files)
    table = render_table(report.results)
    header = table.splitlines()[0].split()
    assert header == ["CHECK", "TARGET", "STATUS", "KEY", "FIGURE", "REASON"]
    rate = next(line for line in table.splitlines() if line.startswith("fake.rate.rate") and " a " in line)
    assert "6 GB/s" in rate and "PASS" in rate
    wrong = next(line for line in table.splitlines() if line.startswith("fake.answer") and " c " in line)
    assert "FAIL" in wrong and "exact: mismatch" in wrong and "differs" in wrong
    assert table.splitlines()[-1] == "PASS 7  FAIL 2  ERROR 1  SKIP 0"


@pytest.mark.parametrize(
    ("result", "figure"),
    [
        ({"category": "performance", "status": PASS, "value": 12.345, "unit": "GB/s"}, "12.35 GB/s"),
        (
            {"category": "performance", "status": FAIL, "value": 9.0, "unit": "GFLOP/s", "ratio": 0.25,
             "reference": {"kind": "peak"}},
            "9 GFLOP/s (0.25 x peak)",
        ),
        ({"category": "correctness", "status": PASS, "error": 1e-15, "tolerance": 1e-13},
         "error 1e-15 / tol 1e-13"),
        ({"category": "placement", "status": FAIL, "expected_workers": ["a", "b"], "observed_workers": ["a"]},
         "1/2 present"),
        ({"category": "correctness", "status": SKIP}, ""),
    ],
)  # fmt: skip
def test_key_figures(result, figure):
    assert key_figure(result) == figure


def test_bad_input_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "host", "target": "a", "versions": {}}\nnot json\n')
    with pytest.raises(ReportInputError, match=r"bad\.jsonl:2: not valid JSON"):
        build_report([str(bad)])
    odd = tmp_path / "odd.jsonl"
    odd.write_text(
        '{"type": "result", "name": "x", "target": "a", "category": "correctness", "status": "MAYBE"}\n'
    )
    with pytest.raises(ReportInputError, match=r"odd\.jsonl:1: status 'MAYBE'"):
        build_report([str(odd)])
    with pytest.raises(ReportInputError, match="cannot read"):
        build_report([str(tmp_path / "absent.jsonl")])


def test_duplicate_results_keep_the_later_one_with_a_warning(files):
    report = build_report([files[0], files[0]])
    names = [(r["name"], r["target"]) for r in report.results]
    assert len(names) == len(set(names))
    assert any("the later one is kept" in w for w in report.summary["warnings"])


# --- negative controls: a verdict of their own ---------------------------------------------------


def _result(name: str, status: str, control: str | None = None, target: str = "a") -> dict[str, Any]:
    return {"type": "result", "name": name, "target": target, "status": status, "control": control}


def test_a_control_that_failed_every_result_it_reached_held():
    results = [
        _result("x.answer", FAIL, "wrong-answer"),
        _result("x.answer", FAIL, "wrong-answer", target="b"),
        _result("x.rate", PASS),
        _result("x.gpu", SKIP),
    ]
    verdict = control_verdict(results, "wrong-answer")
    assert (
        verdict["held"] and verdict["line"] == "control held: 2 of 2 controlled results FAILed (wrong-answer)"
    )
    assert verdict["uncontrolled_failures"] == []


def test_a_control_that_left_a_result_passing_did_not_hold_and_names_it():
    results = [_result("x.answer", FAIL, "wrong-answer"), _result("x.sum", PASS, "wrong-answer", target="b")]
    verdict = control_verdict(results, "wrong-answer")
    assert not verdict["held"]
    assert verdict["line"] == "control did NOT hold (wrong-answer): x.sum@b"
    assert control_verdict([_result("x.rate", PASS)], "missing-worker")["line"] == (
        "control did NOT hold: no result was reached by missing-worker"
    )


def test_control_exit_statuses_tell_a_held_control_from_a_broken_one_and_from_a_real_failure():
    def code(results: list[dict[str, Any]]) -> int:
        summary = {"control": control_verdict(results, "wrong-answer")}
        return Report(results=results, summary=summary).exit_code()

    held = [_result("x.answer", FAIL, "wrong-answer"), _result("x.rate", PASS)]
    assert code(held) == CONTROL_HELD == 3
    assert code([_result("x.answer", PASS, "wrong-answer")]) == CONTROL_BROKEN == 4
    assert code([*held, _result("x.disk", ERROR)]) == 1  # a failure the control does not explain
    assert Report(results=held, summary={}).exit_code() == 1  # no control: a FAIL is a FAIL
