"""The HTML report: verdict first, engines, heatmaps and bar charts, SKIPs folded; in headless Chromium.

``data/lab-report.jsonl`` is the raw input of a real lab run (three nodes and the head, every engine;
sample lists cut to five values): host records, results and summaries as the nodes wrote them.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from compute_jobs.model import FAIL, PASS, SKIP
from compute_jobs.report import build_report, control_verdict, write_report
from compute_jobs.report_html import heatmaps, local_pairs, render, verdict

LAB = Path(__file__).parent / "data" / "lab-report.jsonl"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "chromium is not installed: scripts/bootstrap installs it (apt-get install chromium)"


@pytest.fixture(scope="module")
def lab() -> Any:
    return build_report([str(LAB)])


@pytest.fixture(scope="module")
def page(lab: Any) -> str:
    return render(lab.results, lab.summary)


def test_the_page_opens_with_the_verdict_then_failures_then_engines(lab, page):
    counts = lab.summary["counts"]
    line = f"FAIL: {counts['FAIL']} FAIL and {counts['ERROR']} ERROR among {len(lab.results)} results"
    assert f'<p id="verdict" class="verdict FAIL">{line}</p>' in page
    order = [
        page.index(marker) for marker in ('id="verdict"', 'id="failures"', 'id="engines"', 'id="results"')
    ]
    assert order == sorted(order)
    failures = page[page.index('id="failures"') : page.index('id="engines"')]
    assert failures.count("<tr>") == counts["FAIL"] + counts["ERROR"] + 1  # and the header
    assert "net.pairs.throughput[cf-ct-2]" in failures and "airflow.health" in failures


def test_one_summary_row_and_one_folded_section_per_engine(lab, page):
    engines = {str(r.get("check") or r["name"]).split(".")[0] for r in lab.results}
    summary = page[page.index('id="engines"') : page.index('id="matrices"')]
    for engine in engines:
        assert f'<a href="#engine-{engine}">{engine}</a>' in summary
        assert f'<details class="engine" id="engine-{engine}"' in page
    # engines with a FAIL or ERROR are open, the others folded
    assert '<details class="engine" id="engine-celery" open>' in page
    assert '<details class="engine" id="engine-mpi">' in page


def test_skips_are_folded_away(lab, page):
    skipped = [r for r in lab.results if r["status"] == SKIP]
    assert skipped and all(r["name"].startswith("gpu.") for r in skipped)
    assert f'<details class="skipped"><summary>{len(skipped)} SKIP</summary>' in page
    unfolded = re.sub(r'<details class="skipped">.*?</table>\s*</details>', "", page, flags=re.S)
    for result in skipped:
        assert f"<tr><td>{result['name']}</td>" not in unfolded  # its row only inside the fold


def test_mpi_and_network_matrices_become_heatmaps(lab, page):
    maps = {m["title"]: m for m in heatmaps(lab.results)}
    assert set(maps) == {
        "mpi.latency.matrix",
        "mpi.bandwidth.matrix",
        "net.pairs.latency",
        "net.pairs.throughput",
    }
    hosts = ["cf-ct-1", "cf-ct-2", "cf-ct-3"]
    for m in maps.values():
        assert [r["name"] for r in m["rows"]] == hosts and [c["name"] for c in m["cols"]] == hosts
        assert len(m["cells"]) == 9
    latency = {c["tip"].split(":")[0]: c for c in maps["mpi.latency.matrix"]["cells"]}
    assert latency["cf-ct-1 -> cf-ct-2"]["text"] == "320.4"  # the worst pair: red
    assert latency["cf-ct-1 -> cf-ct-2"]["fill"] == "hsl(0,62%,78%)"
    assert latency["cf-ct-2 -> cf-ct-2"]["text"] == "5.601"  # intra-host on the diagonal: green
    assert latency["cf-ct-2 -> cf-ct-2"]["fill"] == "hsl(120,62%,78%)"
    throughput = maps["net.pairs.throughput"]
    assert [c["tip"] for c in throughput["cells"] if c["flag"]] == ["cf-ct-1 -> cf-ct-2: 82.52 MB/s"]
    matrices = page[page.index('id="matrices"') : page.index('id="results"')]
    assert matrices.count("<svg ") == 5  # four heatmaps and the Spark bar chart
    assert 'class="flag"' in matrices


def test_cluster_figures_beside_their_local_reference_become_bar_charts(lab, page):
    pairs = local_pairs(lab.results)
    assert [(p["check"], p["label"]) for p in pairs] == [
        ("spark.performance", "session_start"),
        ("spark.performance", "trivial_job"),
    ]
    assert pairs[0]["cluster"] == pytest.approx(120.881, abs=1e-3)
    assert pairs[0]["local"] == pytest.approx(77.144, abs=1e-3)
    assert "session_start: cluster / local 1.57 (lower is better)" in page
    storage = [
        {"check": "storage.throughput", "target": "n1", "metric": m, "value": v, "unit": "MB/s",
         "better": "higher", "status": PASS, "name": f"storage.throughput.{m}"}
        for m, v in (("share_read", 100.0), ("local_read", 400.0), ("local_write", 50.0))
    ]  # fmt: skip
    assert [(p["label"], p["cluster"], p["local"]) for p in local_pairs(storage)] == [
        ("share_read on n1", 100.0, 400.0)
    ]


def test_verdict_of_a_clean_run_and_of_negative_controls():
    ok = [{"name": "x.a", "target": "a", "status": PASS}, {"name": "x.b", "target": "a", "status": SKIP}]
    assert verdict(ok, {}) == {"status": PASS, "line": "PASS: 1 of 2 results PASS, 1 SKIP, no FAIL or ERROR"}
    controlled = [{"name": "x.a", "target": "a", "status": FAIL, "control": "wrong-answer"}]
    held = verdict(controlled, {"control": control_verdict(controlled, "wrong-answer")})
    assert held == {"status": "HELD", "line": "control held: 1 of 1 controlled results FAILed (wrong-answer)"}
    survived = [{"name": "x.a", "target": "a", "status": PASS, "control": "wrong-answer"}]
    broken = verdict(survived, {"control": control_verdict(survived, "wrong-answer")})
    assert broken["status"] == "BROKEN" and broken["line"].startswith("control did NOT hold")


# --- in a browser -------------------------------------------------------------------------------


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # root in a container
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--log-level=0",  # console messages, script errors and CSP violations as INFO:CONSOLE lines
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_chromium_loads_the_report_without_errors_and_shows_the_verdict(lab, tmp_path):
    paths = write_report(lab, str(tmp_path / "out"))
    url = Path(paths["html"]).as_uri()
    done = chromium(tmp_path, "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_lines(done.stderr) == []  # no script error, nothing blocked by the page's CSP
    dom = done.stdout
    assert re.search(
        r'<p id="verdict" class="verdict FAIL">FAIL: 2 FAIL and 9 ERROR among \d+ results</p>', dom
    )
    assert dom.count("<svg ") == 5 and dom.count("<rect ") > 36
    shot = tmp_path / "report.png"
    done = chromium(tmp_path, "--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={shot}", url)
    assert done.returncode == 0 and console_lines(done.stderr) == [], done.stderr[-2000:]
    assert png_size(shot) == (1280, 2000)
    assert shot.stat().st_size > 50_000  # a page of tables, text and charts, not a blank one


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_browser_check_sees_script_errors_and_blocked_loads(tmp_path):
    """The control of the test above: a page with a script error and a foreign image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
        '<img alt="" src="http://example.invalid/x.png"><script>notDefined();</script></body></html>'
    )
    lines = console_lines(chromium(tmp_path, "--dump-dom", bad.as_uri()).stderr)
    assert any("Uncaught ReferenceError" in line for line in lines)
    assert any("Content Security Policy" in line for line in lines)
