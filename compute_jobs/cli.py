"""Command line: ``python -m compute_jobs {list,run,calibrate,report,netserver}``.

Exit codes: 0 no FAIL/ERROR; 1 at least one FAIL or ERROR; 2 usage or input error (the message
names the offending field or file); 70 the suite itself broke (a bug: the traceback is on stderr),
never 1, which would read as "a check did not pass" with no results written.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from compute_jobs.baseline import Baseline, BaselineError, build_baseline, write_json_atomic
from compute_jobs.checks import load_all
from compute_jobs.cluster import ClusterError, load_cluster
from compute_jobs.model import (
    CONTROLS,
    ERROR,
    SCOPES,
    ParamError,
    param_table,
    registry,
    to_jsonable,
    utc_now,
)
from compute_jobs.report import (
    ReportInputError,
    cmd_report,
    render_junit,
    render_table,
    suite_broke,
    write_jsonl,
)
from compute_jobs.report import add_arguments as add_report_arguments
from compute_jobs.runner import (
    Progress,
    RunConfig,
    Runner,
    RunOutcome,
    SelectionError,
    parse_param_overrides,
    select_checks,
)

USAGE_ERRORS = (ClusterError, ParamError, SelectionError, BaselineError, ReportInputError)


def _only(values: list[str] | None) -> frozenset[str] | None:
    if not values:
        return None
    return frozenset(item.strip() for value in values for item in value.split(",") if item.strip())


def _target(cluster_hosts: list[str], requested: str | None) -> str:
    if requested:
        return requested
    name = socket.gethostname()
    short = name.split(".", 1)[0]
    return short if name not in cluster_hosts and short in cluster_hosts else name


def _common_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster", required=True, metavar="FILE", help="cluster.json rendered by verify.yml"
    )
    parser.add_argument("--only", action="append", metavar="TAGS", help="comma-separated tags or check names")
    parser.add_argument(
        "--skip",
        action="append",
        metavar="TAGS",
        help="comma-separated tags, check names or categories not to run (resilience: no kills or restarts)",
    )
    parser.add_argument("--scope", choices=SCOPES, help="only node- or only cluster-scope checks")
    parser.add_argument("--target", metavar="NAME", help="host name this runs as (default: the hostname)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="CHECK.PARAM=VALUE", help="override a check parameter"
    )
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="wall clock limit for every check")
    parser.add_argument("--quiet", action="store_true", help="do not print the result table")
    parser.add_argument(
        "--lanes",
        action="store_true",
        help="run correctness/placement checks of engines that share no service side by side",
    )
    parser.add_argument(
        "--progress",
        metavar="FILE",
        help="append one JSON line per check started and per result, as they happen",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compute_jobs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list the registered checks")
    p_list.add_argument("--json", action="store_true", help="machine-readable output")
    p_list.add_argument("-v", "--verbose", action="store_true", help="parameters, rules and metrics too")
    p_list.set_defaults(func=cmd_list)

    p_run = sub.add_parser("run", help="run the checks for this node (and the cluster, on the head)")
    _common_run_args(p_run)
    p_run.add_argument("--json", metavar="FILE", help="write host record, results and summary as JSON Lines")
    p_run.add_argument("--junit", metavar="FILE", help="write JUnit XML")
    p_run.add_argument("--inject", choices=CONTROLS, help="negative control: these results must then FAIL")
    p_run.add_argument("--baseline", metavar="FILE", help="FAIL performance below 0.75 x calibrated baseline")
    p_run.set_defaults(func=cmd_run)

    p_cal = sub.add_parser("calibrate", help="run performance checks and store a baseline for this inventory")
    _common_run_args(p_cal)
    p_cal.add_argument("--out", required=True, metavar="FILE", help="baseline JSON (merged if it exists)")
    p_cal.set_defaults(func=cmd_calibrate)

    p_rep = sub.add_parser("report", help="merge node JSONL files into results.jsonl, junit.xml, report.html")
    add_report_arguments(p_rep)
    p_rep.set_defaults(func=cmd_report)

    p_net = sub.add_parser("netserver", help="serve authenticated echo/bulk endpoints for net.pairs")
    p_net.add_argument("--bind", required=True, metavar="ADDRESS")
    p_net.add_argument("--port", required=True, type=int)
    p_net.add_argument("--token-file", required=True, metavar="FILE")
    p_net.add_argument(
        "--lifetime", required=True, type=float, metavar="SECONDS", help="exit after this long"
    )
    p_net.set_defaults(func=cmd_netserver)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output file or directory that cannot be written
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception:  # a bug of the suite, told apart from a check's FAIL (exit 1)
        return suite_broke()


# --- commands -----------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    load_all()
    rows = []
    for cls in registry:
        row: dict[str, Any] = {
            "name": cls.name,
            "category": cls.category,
            "tags": sorted(cls.tags),
            "scope": cls.scope,
            "description": cls.description,
        }
        if args.verbose or args.json:
            row["params"] = param_table(cls)
            row["correctness_rule"] = cls.correctness_rule
            row["placement_rule"] = cls.placement_rule
            row["metrics"] = [{"name": m.name, "unit": m.unit, "better": m.better} for m in cls.metrics]
            row["groups"] = list(cls.groups)
            row["engine"] = cls.engine
        rows.append(row)
    if args.json:
        print(json.dumps(to_jsonable(rows), indent=2))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        tags = ",".join(r["tags"])
        print(f"{r['name']:<{width}}  {r['category']:<11}  {r['scope']:<7}  {tags:<10}  {r['description']}")
        if args.verbose:
            for rule in (r["correctness_rule"], r["placement_rule"]):
                if rule:
                    print(f"{'':<{width}}  rule: {rule}")
            for metric in r["metrics"]:
                unit = f"[{metric['unit']}], {metric['better']} is better"
                print(f"{'':<{width}}  metric: {metric['name']} {unit}")
            for param in r["params"]:
                kind = f"({param['type']}, default {param['default']!r})"
                print(f"{'':<{width}}  param {param['name']} {kind}: {param['help']}")
    for module, problem in sorted(registry.import_errors.items()):
        print(f"import error: {module}: {problem}", file=sys.stderr)
    return 0


def _config(args: argparse.Namespace, inject: str | None = None, baseline: bool = True) -> RunConfig:
    cluster = load_cluster(args.cluster)
    overrides = parse_param_overrides(args.param)
    base = None
    if baseline and getattr(args, "baseline", None):
        base = Baseline.load(args.baseline, cluster.inventory_hash)
    return RunConfig(
        cluster=cluster,
        target=_target([h.name for h in cluster.hosts], args.target),
        only=_only(args.only),
        skip=_only(args.skip),
        scope=args.scope,
        inject=inject,
        baseline=base,
        overrides=overrides,  # type: ignore[arg-type]
        timeout=args.timeout,
        progress=args.progress,
        lanes=args.lanes,
    )


def _finish(outcome: RunOutcome, code: int) -> int:
    if outcome.abandoned:
        # A timed-out check is still running in a daemon thread: do not wait for it at shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    load_all()
    config = _config(args, inject=args.inject)
    outcome = Runner().run(config)
    results = [r.to_dict() for r in outcome.results]
    if args.json:
        write_jsonl(args.json, [outcome.host_record, *results, outcome.summary])
    if args.junit:
        with open(args.junit, "w", encoding="utf-8") as handle:
            handle.write(render_junit(results, outcome.summary))
    if not args.quiet:
        print(render_table(results))
    code = outcome.exit_code()
    Progress(args.progress).emit(event="end", rc=code)
    return _finish(outcome, code)


def cmd_calibrate(args: argparse.Namespace) -> int:
    load_all()
    config = _config(args, baseline=False)
    runner = Runner()
    selected = select_checks(runner.registry, config.only, config.scope, is_head=True, skip=config.skip)
    perf = frozenset(cls.name for cls in selected if cls.metrics)
    if not perf:
        raise SelectionError("calibrate: the selection contains no performance checks")
    config.only = perf
    outcome = runner.run(config)
    outcome.results = [r for r in outcome.results if r.check in perf or r.status == ERROR]
    previous = None
    if os.path.exists(args.out):
        try:
            with open(args.out, encoding="utf-8") as handle:
                previous = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            raise BaselineError(f"{args.out}: cannot merge into it: {exc}") from exc
    data = build_baseline(
        outcome.results, config.cluster.cluster_name, config.cluster.inventory_hash, utc_now(), previous
    )
    write_json_atomic(args.out, data)
    results = [r.to_dict() for r in outcome.results]
    if not args.quiet:
        print(render_table(results))
        stored = sum(len(t) for targets in data["baselines"].values() for t in targets.values())
        print(f"baseline: {args.out} ({stored} entries, inventory {config.cluster.inventory_hash})")
    return _finish(outcome, outcome.exit_code())


def cmd_netserver(args: argparse.Namespace) -> int:
    from compute_jobs.services.netserver import NetError, serve

    try:
        return serve(args.bind, args.port, args.token_file, args.lifetime)
    except NetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.bind}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
