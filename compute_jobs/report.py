"""Merge result JSONL files from all nodes; add cluster-wide results; render table, JUnit and HTML.

Runs on the controller as ``python -m compute_jobs.report`` and imports the standard library and
Jinja2 only (a unit test blocks everything else; Jinja2 comes with ansible-core, and only the HTML
page, ``report_html.py``, needs it); ``python -m compute_jobs report`` is the same command on a node.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from compute_jobs.cluster import ClusterError, load_cluster
from compute_jobs.model import (
    CLUSTER_TARGET,
    ERROR,
    FAIL,
    PASS,
    SKIP,
    STATUSES,
    Result,
    build_summary,
    count_statuses,
    judge_sets,
    to_jsonable,
    utc_now,
)

DRIFT_NAME = "cluster.version_drift"
COVERAGE_NAME = "cluster.report_coverage"


class ReportInputError(ValueError):
    """An input file is unreadable or holds a line that is not a result, host or summary record."""


@dataclass
class Report:
    results: list[dict[str, Any]]
    summary: dict[str, Any]
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def exit_code(self) -> int:
        """0 all PASS/SKIP, 1 a real FAIL/ERROR; under a negative control, CONTROL_HELD or CONTROL_BROKEN."""
        control = self.summary.get("control")
        if control:
            if control["uncontrolled_failures"]:
                return 1
            return CONTROL_HELD if control["held"] else CONTROL_BROKEN
        return 1 if any(r["status"] not in (PASS, SKIP) for r in self.results) else 0


# Exit statuses of a run under --inject, apart from 0 (never, a control always FAILs something)
# and 1 (a FAIL or ERROR the control does not explain: a real failure).
CONTROL_HELD = 3
CONTROL_BROKEN = 4


def control_verdict(results: list[dict[str, Any]], inject: str) -> dict[str, Any]:
    """Whether the negative control INJECT held: every result it reached (control == INJECT) FAILed.

    Results the control did not reach must still PASS or SKIP; any FAIL or ERROR among them is a
    real failure, reported apart (``uncontrolled_failures``).
    """
    controlled = [r for r in results if r.get("control") == inject]
    failed = [r for r in controlled if r["status"] == FAIL]
    survivors = sorted(f"{r['name']}@{r['target']}" for r in controlled if r["status"] != FAIL)
    others = sorted(
        f"{r['name']}@{r['target']}"
        for r in results
        if r.get("control") != inject and r["status"] not in (PASS, SKIP)
    )
    held = bool(controlled) and not survivors
    if held:
        line = f"control held: {len(failed)} of {len(controlled)} controlled results FAILed ({inject})"
    elif not controlled:
        line = f"control did NOT hold: no result was reached by {inject}"
    else:
        line = f"control did NOT hold ({inject}): {', '.join(survivors)}"
    return {
        "inject": inject,
        "held": held,
        "controlled": len(controlled),
        "failed": len(failed),
        "not_failed": survivors,
        "uncontrolled_failures": others,
        "line": line,
    }


# --- reading ------------------------------------------------------------------------------------


def read_records(paths: Iterable[str]) -> tuple[list[dict], dict[str, dict], list[dict], list[str]]:
    """Results, host records (by target), summaries and warnings from JSONL files."""
    results: list[dict] = []
    hosts: dict[str, dict] = {}
    summaries: list[dict] = []
    warnings: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.readlines()
        except OSError as exc:
            raise ReportInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReportInputError(f"{where}: not valid JSON: {exc.msg}") from exc
            kind = record.get("type") if isinstance(record, dict) else None
            if kind == "result":
                _check_result(record, where)
                key = (record["name"], record["target"])
                if key in seen:
                    warnings.append(
                        f"{where}: {key[0]} on {key[1]} also in {seen[key]}; the later one is kept"
                    )
                    results = [r for r in results if (r["name"], r["target"]) != key]
                seen[key] = where
                results.append(record)
            elif kind == "host":
                if not isinstance(record.get("target"), str) or not isinstance(record.get("versions"), dict):
                    raise ReportInputError(
                        f"{where}: host record needs target (string) and versions (object)"
                    )
                hosts[record["target"]] = record
            elif kind == "summary":
                summaries.append(record)
            else:
                raise ReportInputError(f"{where}: expected a record with type result, host or summary")
    return results, hosts, summaries, warnings


def _check_result(record: dict, where: str) -> None:
    for key in ("name", "target", "status", "category"):
        if not isinstance(record.get(key), str):
            raise ReportInputError(f"{where}: result field {key} missing or not a string")
    if record["status"] not in STATUSES:
        raise ReportInputError(f"{where}: status {record['status']!r} is not one of {', '.join(STATUSES)}")


# --- cluster-wide results -----------------------------------------------------------------------


def _cluster_result(name: str, category: str, status: str, reason: str, **values: Any) -> dict[str, Any]:
    return Result(
        name=name,
        check=name,
        category=category,
        tags=["report"],
        target=CLUSTER_TARGET,
        status=status,
        reason=reason,
        duration_s=0.0,
        started_at=utc_now(),
        **values,
    ).to_dict()


def version_drift(versions: dict[str, dict[str, str]], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """FAIL when a library (or Python) has different versions on different hosts.

    Libraries installed on only some hosts (pyspark only on Spark nodes) are not drift; the versions
    of each library are compared among the hosts that have it.
    """
    skip = set(ignore)
    if len(versions) < 2:
        return _cluster_result(
            DRIFT_NAME, "inventory", SKIP, f"versions from {len(versions)} host(s); need 2 to compare"
        )
    table: dict[str, dict[str, list[str]]] = {}
    for host in sorted(versions):
        for lib, version in versions[host].items():
            if lib not in skip:
                table.setdefault(lib, {}).setdefault(str(version), []).append(host)
    drifted = {lib: by_version for lib, by_version in sorted(table.items()) if len(by_version) > 1}
    parts = []
    for lib, by_version in drifted.items():
        listing = "; ".join(f"{v} on {', '.join(hosts)}" for v, hosts in sorted(by_version.items()))
        parts.append(f"{lib}: {listing}")
    return _cluster_result(
        DRIFT_NAME,
        "inventory",
        FAIL if drifted else PASS,
        "version drift: " + " | ".join(parts) if drifted else "",
        expected={lib: "same version on every host that has it" for lib in sorted(table)},
        observed=drifted,
        rule="every library (and Python) has one version across the hosts that have it",
        details={"libraries": table, "ignored": sorted(skip)},
    )


def coverage(expected_hosts: Iterable[str], reported_hosts: Iterable[str]) -> dict[str, Any]:
    """Placement: every host of the cluster delivered its results."""
    verdict = judge_sets(expected_hosts, reported_hosts)
    return _cluster_result(
        COVERAGE_NAME,
        "placement",
        PASS if verdict.passed else FAIL,
        verdict.reason(),
        expected_workers=verdict.expected,
        observed_workers=verdict.observed,
        missing=verdict.missing,
        unexpected=verdict.unexpected,
        rule="hosts that delivered a result file == hosts in cluster.json",
    )


def build_report(
    paths: list[str],
    *,
    meta: dict[str, Any] | None = None,
    expected_hosts: list[str] | None = None,
    drift_ignore: Iterable[str] = (),
) -> Report:
    results, hosts, summaries, warnings = read_records(paths)
    meta = {k: v for k, v in (meta or {}).items() if v is not None}
    versions = {target: dict(record["versions"]) for target, record in sorted(hosts.items())}
    results = [r for r in results if r["name"] not in (DRIFT_NAME, COVERAGE_NAME)]
    results.append(version_drift(versions, drift_ignore))
    if expected_hosts is not None:
        results.append(coverage(expected_hosts, hosts))
    results.sort(key=lambda r: (r["target"] == CLUSTER_TARGET, r["target"], r["name"]))

    def first(key: str) -> Any:
        if key in meta:
            return meta[key]
        found = {s.get(key) for s in summaries if s.get(key)} | {
            h.get(key) for h in hosts.values() if h.get(key)
        }
        if len(found) > 1:
            warnings.append(f"inputs disagree on {key}: {', '.join(sorted(map(str, found)))}")
        return sorted(found)[0] if found else None

    starts = [s["started_at"] for s in summaries if s.get("started_at")]
    ends = [s["finished_at"] for s in summaries if s.get("finished_at")]
    summary = build_summary(
        results,
        run_id=first("run_id"),
        git_sha=first("git_sha"),
        inventory_hash=first("inventory_hash"),
        cluster_name=first("cluster_name"),
        started_at=min(starts) if starts else None,
        finished_at=max(ends) if ends else utc_now(),
        versions=versions,
    )
    injected = sorted({s["inject"] for s in summaries if s.get("inject")})
    if injected:
        summary["inject"] = injected[0]
        if len(injected) > 1:
            warnings.append(f"inputs ran different negative controls: {', '.join(injected)}")
    if injected:
        summary["control"] = control_verdict(results, injected[0])
    summary["hosts"] = sorted(hosts)
    summary["inputs"] = list(paths)
    summary["warnings"] = warnings
    return Report(results=results, summary=to_jsonable(summary), hosts=hosts)


# --- rendering ----------------------------------------------------------------------------------


def key_figure(result: dict[str, Any]) -> str:
    category = result.get("category")
    if result.get("status") == SKIP or (result.get("status") == ERROR and "value" not in result):
        return ""
    if category == "performance" and result.get("value") is not None:
        text = f"{result['value']:.4g} {result.get('unit', '')}".strip()
        if result.get("ratio") is not None:
            kind = (result.get("reference") or {}).get("kind") or "baseline"
            text += f" ({result['ratio']:.2f} x {kind})"
        return text
    if category == "correctness":
        error, tolerance = result.get("error"), result.get("tolerance")
        if tolerance is None:
            return "exact: match" if result.get("status") == PASS else "exact: mismatch"
        if error is None:
            return f"tolerance {tolerance:.3g}"
        return f"error {error:.3g} / tol {tolerance:.3g}"
    if category == "placement" and result.get("expected_workers") is not None:
        expected = result.get("expected_workers") or []
        present = [w for w in result.get("observed_workers") or [] if w in expected]
        return f"{len(present)}/{len(expected)} present"
    observed = result.get("observed")
    if category == "inventory" and isinstance(observed, dict) and "cores" in observed:
        return f"{observed.get('cores'):g} cores, {observed.get('memory_mb')} MiB"
    return ""


def render_table(results: list[dict[str, Any]], reason_width: int = 72) -> str:
    header = ("CHECK", "TARGET", "STATUS", "KEY FIGURE", "REASON")
    rows = []
    for r in results:
        reason = " ".join(str(r.get("reason") or "").split())
        if len(reason) > reason_width:
            reason = reason[: reason_width - 3] + "..."
        rows.append((r["name"], r["target"], r["status"], key_figure(r), reason))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    counts = count_statuses(results)
    lines.append("")
    lines.append("  ".join(f"{status} {counts.get(status, 0)}" for status in STATUSES))
    return "\n".join(lines)


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(value: Any) -> str:
    return _XML_BAD.sub("?", str(value))


def render_junit(results: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_target.setdefault(r["target"], []).append(r)
    counts = count_statuses(results)
    total_time = sum(float(r.get("duration_s") or 0) for r in results)
    root = ET.Element(
        "testsuites",
        name="clusterforge-verify",
        tests=str(len(results)),
        failures=str(counts[FAIL]),
        errors=str(counts[ERROR]),
        skipped=str(counts[SKIP]),
        time=f"{total_time:.3f}",
    )
    for target, items in by_target.items():
        c = count_statuses(items)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml_text(target),
            tests=str(len(items)),
            failures=str(c[FAIL]),
            errors=str(c[ERROR]),
            skipped=str(c[SKIP]),
            time=f"{sum(float(r.get('duration_s') or 0) for r in items):.3f}",
        )
        props = ET.SubElement(suite, "properties")
        for key in ("run_id", "git_sha", "inventory_hash", "cluster_name"):
            ET.SubElement(props, "property", name=key, value=_xml_text(summary.get(key) or ""))
        for r in items:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=_xml_text(f"{r.get('category', '')}.{target}"),
                name=_xml_text(r["name"]),
                time=f"{float(r.get('duration_s') or 0):.3f}",
            )
            body = _xml_text(json.dumps(r, indent=2, sort_keys=True))
            if r["status"] == FAIL:
                ET.SubElement(
                    case, "failure", message=_xml_text(r.get("reason") or ""), type="FAIL"
                ).text = body
            elif r["status"] == ERROR:
                ET.SubElement(
                    case, "error", message=_xml_text(r.get("reason") or ""), type="ERROR"
                ).text = body
            elif r["status"] == SKIP:
                ET.SubElement(case, "skipped", message=_xml_text(r.get("reason") or ""))
            figure = key_figure(r)
            if figure:
                ET.SubElement(case, "system-out").text = _xml_text(figure)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_html(results: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The self-contained HTML page (``compute_jobs/templates/report.html.j2``), rendered with Jinja2.

    Jinja2 is imported here, not at the top: the node-side suite imports this module too and its
    venv need not have Jinja2; the controller's (ansible-core's) always does.
    """
    try:
        from compute_jobs.report_html import render
    except ImportError as exc:
        raise ReportInputError(
            f"the HTML report needs Jinja2 ({exc}); run the report on the controller "
            "(python -m compute_jobs.report in the project's .venv) or pip install Jinja2"
        ) from exc
    return render(results, summary)


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(to_jsonable(record), sort_keys=True, allow_nan=False) + "\n")


def write_report(report: Report, out_dir: str) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "results": os.path.join(out_dir, "results.jsonl"),
        "junit": os.path.join(out_dir, "junit.xml"),
        "html": os.path.join(out_dir, "report.html"),
    }
    write_jsonl(paths["results"], [*report.results, report.summary])
    with open(paths["junit"], "w", encoding="utf-8") as handle:
        handle.write(render_junit(report.results, report.summary))
    with open(paths["html"], "w", encoding="utf-8") as handle:
        handle.write(render_html(report.results, report.summary))
    return paths


# --- command line (the controller runs it: standard library and Jinja2 only) --------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE.jsonl")
    parser.add_argument("--out-dir", required=True, metavar="DIR")
    parser.add_argument(
        "--summary-json", metavar="FILE", help="JSON object with run_id, git_sha, inventory_hash"
    )
    parser.add_argument("--run-id")
    parser.add_argument("--git-sha")
    parser.add_argument("--inventory-hash")
    parser.add_argument("--cluster-name")
    parser.add_argument(
        "--cluster", metavar="FILE", help="cluster.json: also FAIL when a host sent no results"
    )
    parser.add_argument(
        "--drift-ignore", action="append", default=[], metavar="LIB", help="leave out of drift"
    )
    parser.add_argument("--quiet", action="store_true")


def cmd_report(args: argparse.Namespace) -> int:
    meta: dict[str, Any] = {}
    if args.summary_json:
        try:
            with open(args.summary_json, encoding="utf-8") as handle:
                loaded = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            raise ReportInputError(f"{args.summary_json}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ReportInputError(f"{args.summary_json}: expected a JSON object")
        meta.update({k: loaded.get(k) for k in ("run_id", "git_sha", "inventory_hash", "cluster_name")})
    for key in ("run_id", "git_sha", "inventory_hash", "cluster_name"):
        if getattr(args, key) is not None:
            meta[key] = getattr(args, key)
    expected_hosts = None
    if args.cluster:
        cluster = load_cluster(args.cluster)
        expected_hosts = [h.name for h in cluster.hosts]
        meta.setdefault("cluster_name", cluster.cluster_name)
        meta.setdefault("inventory_hash", cluster.inventory_hash)
        meta.setdefault("run_id", cluster.run_id)
    report = build_report(
        args.files, meta=meta, expected_hosts=expected_hosts, drift_ignore=args.drift_ignore
    )
    paths = write_report(report, args.out_dir)
    if not args.quiet:
        print(render_table(report.results))
        for warning in report.summary.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        print("wrote " + ", ".join(paths.values()))
    control = report.summary.get("control")
    if control:
        print(control["line"])
        if control["uncontrolled_failures"]:
            print(
                "FAIL or ERROR the control does not explain: " + ", ".join(control["uncontrolled_failures"])
            )
    return report.exit_code()


EXIT_BROKEN = 70  # sysexits' EX_SOFTWARE: never 1, which reads as "a check did not pass"


def suite_broke() -> int:
    """Exit status and message of an uncaught exception: a bug of the suite, not a check result."""
    traceback.print_exc()
    print("error: the suite itself failed (a bug, not a check result); no results written", file=sys.stderr)
    return EXIT_BROKEN


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compute_jobs.report",
        description="merge node JSONL files into results.jsonl, junit.xml, report.html",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_report(args)
    except (ReportInputError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # a bug of the suite, told apart from a FAIL (exit 1)
        return suite_broke()


if __name__ == "__main__":
    sys.exit(main())
