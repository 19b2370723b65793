"""Select checks, resolve their parameters, run each under a wall clock limit, collect results.

Each check runs in a daemon worker thread. The runner waits at most the check's ``timeout``; a check
still running then is recorded as ERROR ("timed out") and abandoned, so one hung endpoint never
stalls the run. Checks also get the same deadline on their context (``ctx.bounded``,
``ctx.check_deadline``) so that well-behaved checks stop on their own and free the CPU.
"""

from __future__ import annotations

import json
import platform
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from compute_jobs.baseline import Baseline
from compute_jobs.cluster import Cluster, ClusterError
from compute_jobs.context import CheckContext
from compute_jobs.model import (
    CATEGORIES,
    CLUSTER_TARGET,
    ERROR,
    FAIL,
    PASS,
    SKIP,
    STATUSES,
    Check,
    CheckError,
    ParamError,
    Registry,
    Result,
    SkipCheck,
    build_summary,
    count_statuses,
    release_shared_sessions,
    utc_now,
)
from compute_jobs.model import (
    registry as default_registry,
)
from compute_jobs.report import key_figure
from compute_jobs.versions import library_versions

__all__ = ["build_summary", "count_statuses"]

# Which negative control each result category honours.
CONTROL_OF_CATEGORY = {"correctness": "wrong-answer", "placement": "missing-worker", "security": "open-door"}


class SelectionError(ValueError):
    """--only / --scope / --target do not match anything this cluster or registry knows."""


@dataclass
class RunConfig:
    cluster: Cluster
    target: str
    only: frozenset[str] | None = None
    skip: frozenset[str] | None = None
    scope: str | None = None
    inject: str | None = None
    baseline: Baseline | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeout: float | None = None
    progress: str | None = None  # a file that gets one JSON line per check started and per result
    lanes: bool = False  # run checks that do not disturb each other side by side (see plan_lanes)


# Engines whose checks share the same services run in one lane: the Airflow and Luigi pipelines
# and the notebooks compute on the Dask and Spark clusters, so their checks queue behind Dask's
# and Spark's.
LANE_OF_ENGINE = {
    "airflow": "dataflow",
    "luigi": "dataflow",
    "dask": "dataflow",
    "spark": "dataflow",
    "jupyter": "dataflow",
}
# Lanes that run at once, the longest first: on small nodes more lanes made the Airflow API miss
# its request timeouts (measured on the 2-core lab, README "Verification").
LANES_AT_ONCE = 2


def _lost(cls: type[Check], config: RunConfig) -> Result:
    """The ERROR of a check whose lane died before it reported (a bug in the runner, not the check)."""
    return Result(
        name=cls.name,
        check=cls.name,
        category=cls.category,
        tags=sorted(cls.tags),
        target=CLUSTER_TARGET if cls.scope == "cluster" else config.target,
        status=ERROR,
        reason="the lane that ran this check stopped before it reported",
        started_at=utc_now(),
        duration_s=0.0,
    )


def plan_lanes(checks: list[type[Check]]) -> tuple[list[list[type[Check]]], list[type[Check]]]:
    """Split CHECKS into lanes that may run side by side, and the rest, to run one by one after.

    A lane holds the correctness, placement and inventory checks of engines that share services,
    in their order; lanes touch different services. Performance checks (a figure another check
    would disturb) and resilience checks (they kill and restart services) stay out of the lanes:
    they run once every lane is done, the performance checks one by one, then the resilience
    checks, two at a time where they share no engine (see run_apart and Check.engines_used).
    """
    lanes: dict[str, list[type[Check]]] = {}
    serial: list[type[Check]] = []
    for cls in checks:
        if cls.category in ("performance", "resilience") or cls.scope != "cluster":
            serial.append(cls)
            continue
        key = cls.engine or cls.name.split(".")[0]
        lanes.setdefault(LANE_OF_ENGINE.get(key, key), []).append(cls)
    serial.sort(key=lambda cls: cls.category == "resilience")
    return list(lanes.values()), serial


def run_apart(
    checks: list[type[Check]],
    uses: Callable[[type[Check]], frozenset[str]],
    at_once: int,
    run_one: Callable[[type[Check]], None],
) -> None:
    """RUN_ONE each of CHECKS, up to AT_ONCE at a time: a check starts once every check before it in
    the list that USES one of its engines has finished, so two that share an engine never overlap
    and keep their order, and those that share none run side by side."""
    lock = threading.Condition()
    pending = list(checks)
    running: list[type[Check]] = []

    def ready(cls: type[Check]) -> bool:
        earlier = [*running, *pending[: pending.index(cls)]]
        return not any(uses(cls) & uses(other) for other in earlier)

    def worker() -> None:
        while True:
            with lock:
                while True:
                    if not pending:
                        return
                    cls = next((c for c in pending if ready(c)), None)
                    if cls is not None:
                        break
                    lock.wait()
                pending.remove(cls)
                running.append(cls)
            try:
                run_one(cls)
            finally:
                with lock:
                    running.remove(cls)
                    lock.notify_all()

    with ThreadPoolExecutor(max_workers=max(1, at_once), thread_name_prefix="apart") as pool:
        for _ in range(max(1, min(at_once, len(checks)))):
            pool.submit(worker)


class Progress:
    """Appends one JSON line per event to a file an operator (or the play) follows while checks run.

    ``{"event": "start", "check", "target", "deadline"}`` when a check starts (its deadline in UTC),
    ``{"event": "result", "check", "target", "status", "figure"}`` per result as the check finishes,
    ``{"event": "end", "rc"}`` once the run's outputs are written.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lock = threading.Lock()

    def emit(self, **record: Any) -> None:
        if not self.path:
            return
        line = json.dumps({"at": utc_now(), **record}, sort_keys=True) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)

    def started(self, cls: type[Check], target: str, limit: float) -> None:
        deadline = datetime.now(UTC) + timedelta(seconds=limit)
        self.emit(event="start", check=cls.name, target=target, deadline=deadline.strftime("%H:%M:%SZ"))

    def finished(self, results: list[Result]) -> None:
        for result in results:
            record = result.to_dict()
            self.emit(
                event="result",
                check=result.name,
                target=result.target,
                status=result.status,
                figure=key_figure(record),
                reason=(result.reason or "")[:200] if result.status != PASS else "",
            )


@dataclass
class RunOutcome:
    results: list[Result]
    host_record: dict[str, Any]
    summary: dict[str, Any]
    abandoned: list[str]

    def exit_code(self) -> int:
        return 1 if any(r.status not in (PASS, SKIP) for r in self.results) else 0


# --- parameters ---------------------------------------------------------------------------------


def resolve_params(
    cls: type[Check],
    cluster_params: dict[str, Any] | None,
    overrides: dict[str, Any] | None = None,
    timeout: float | None = None,
    source: str = "cluster.json",
) -> dict[str, Any]:
    """Defaults <- cluster.json ``params.<check>`` <- ``--param``; every value checked and named."""
    declared = {p.name: p for p in cls.all_params()}
    values = {p.name: p.default for p in declared.values()}
    layers = [
        (cluster_params or {}, f"{source}: params.{cls.name}"),
        (overrides or {}, f"--param {cls.name}"),
    ]
    for layer, where in layers:
        for key, value in layer.items():
            if key not in declared:
                known = ", ".join(sorted(declared))
                raise ParamError(f"{where}.{key}: unknown parameter (known: {known})")
            values[key] = declared[key].coerce(value, f"{where}.{key}")
    if timeout is not None:
        values["timeout"] = declared["timeout"].coerce(timeout, "--timeout")
    return values


def validate_params(cluster: Cluster, registry: Registry, overrides: dict[str, dict[str, Any]]) -> None:
    """Reject params for unknown checks or parameters before anything runs (exit code 2)."""
    problems = []
    for label, table in ((f"{cluster.source}: params", cluster.params), ("--param", overrides)):
        for name in table:
            if name not in registry:
                if registry.import_errors:
                    continue  # the check may live in a module that failed to import; that is reported
                problems.append(f"{label}.{name}: unknown check (see 'python -m compute_jobs list')")
    for cls in registry:
        try:
            resolve_params(cls, cluster.params.get(cls.name), overrides.get(cls.name), source=cluster.source)
        except ParamError as exc:
            problems.append(str(exc))
    if problems:
        raise ClusterError("", problems)


def parse_param_overrides(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``node.stream.n=4096`` -> ``{"node.stream": {"n": "4096"}}`` (typed later by the Param)."""
    table: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        check, dot, param = key.rpartition(".")
        if not sep or not dot or not check or not param:
            raise ParamError(f"--param {item!r}: expected CHECK.PARAM=VALUE, e.g. node.stream.n=4096")
        table.setdefault(check, {})[param] = value
    return table


# --- selection ----------------------------------------------------------------------------------


def select_checks(
    registry: Registry,
    only: frozenset[str] | None,
    scope: str | None,
    is_head: bool,
    skip: frozenset[str] | None = None,
) -> list[type[Check]]:
    """Checks to run. ``only`` matches tags or check names, ``skip`` tags, check names or categories
    (``resilience``: the checks that kill or restart services); no ``scope`` means node-scope checks
    everywhere plus cluster-scope checks on the head node; ``--scope cluster`` runs them wherever asked."""
    if only:
        known = registry.tags() | {cls.name for cls in registry}
        unknown = sorted(only - known)
        if unknown:
            tags = ", ".join(sorted(registry.tags()))
            raise SelectionError(f"--only: unknown tag or check {', '.join(unknown)} (tags: {tags})")
    if skip:
        unknown = sorted(skip - registry.tags() - {cls.name for cls in registry} - set(CATEGORIES))
        if unknown:
            kinds = ", ".join(CATEGORIES)
            raise SelectionError(
                f"--skip: unknown tag, check or category {', '.join(unknown)} (categories: {kinds})"
            )
    chosen = []
    for cls in registry:
        if only and not (cls.tags & only or cls.name in only):
            continue
        if skip and (cls.tags & skip or cls.name in skip or cls.category in skip):
            continue
        if scope is not None and cls.scope != scope:
            continue
        if scope is None and cls.scope == "cluster" and not is_head:
            continue
        chosen.append(cls)
    return chosen


def default_skip_reason(cls: type[Check], ctx: CheckContext) -> str | None:
    """The declarative part of applicability: inventory groups and engines."""
    if cls.groups:
        wanted = set(cls.groups)
        if cls.scope == "node":
            if ctx.host is None or not wanted & set(ctx.host.groups):
                return f"{ctx.target} is not in group {' or '.join(sorted(wanted))}"
        elif not any(wanted & set(h.groups) for h in ctx.cluster.hosts):
            return f"no host is in group {' or '.join(sorted(wanted))}"
    if cls.engine and cls.engine not in ctx.cluster.engines:
        return f"{ctx.cluster.source} declares no engines.{cls.engine}"
    if cls.engine_keys and not any(ctx.cluster.engines[cls.engine].get(k) for k in cls.engine_keys):
        keys = " nor ".join(cls.engine_keys)
        has = f"neither {keys}" if len(cls.engine_keys) > 1 else f"no {keys}"
        return f"{ctx.cluster.source}: engines.{cls.engine} has {has}"
    return None


def unavailable_engine(cls: type[Check], ctx: CheckContext) -> str | None:
    """Why the engine of ``cls`` cannot be checked although the inventory provisions it, if so.

    The verification tier writes ``engines.<name>: {"unavailable": why}`` when an engine's groups
    have members but its hosts recorded no facts of it (a tier not converged, a failed install):
    such checks FAIL, they are not skipped.
    """
    if cls.engine is None:
        return None
    settings = ctx.cluster.engines.get(cls.engine)
    if isinstance(settings, Mapping) and settings.get("unavailable"):
        return f"engines.{cls.engine} unavailable: {settings['unavailable']}"
    return None


# --- running ------------------------------------------------------------------------------------


class _Box:
    def __init__(self) -> None:
        self.results: list[Result] = []
        self.skip: str | None = None
        self.failure: str | None = None
        self.error: str | None = None
        self.trace: str | None = None


def _work(check: Check, ctx: CheckContext, box: _Box) -> None:
    try:
        failure = unavailable_engine(type(check), ctx)
        if failure:
            box.failure = failure
            return
        reason = default_skip_reason(type(check), ctx) or check.applies(ctx)
        if reason:
            box.skip = reason
            return
        for result in check.run(ctx):
            box.results.append(result)
    except SkipCheck as exc:
        box.skip = str(exc) or "not applicable"
    except CheckError as exc:
        box.error = str(exc) or type(exc).__name__
    except BaseException as exc:  # a bug in a check must become ERROR, never crash the runner
        box.error = f"{type(exc).__name__}: {exc}"
        box.trace = traceback.format_exc(limit=6)


class Runner:
    def __init__(self, registry: Registry = default_registry) -> None:
        self.registry = registry
        self.abandoned: list[str] = []

    def run_check(self, cls: type[Check], config: RunConfig, params: dict[str, Any]) -> list[Result]:
        cluster = config.cluster
        host = cluster.host(config.target)
        target = CLUSTER_TARGET if cls.scope == "cluster" else config.target
        started_at = utc_now()
        start = time.monotonic()
        limit = float(params["timeout"])
        check = cls()
        ctx = CheckContext(
            check, cluster, target, host, params, config.inject, config.baseline, deadline=start + limit
        )
        box = _Box()
        worker = threading.Thread(target=_work, args=(check, ctx, box), name=f"check:{cls.name}", daemon=True)
        worker.start()
        worker.join(limit)
        duration = time.monotonic() - start
        results = list(box.results)  # a snapshot: an abandoned worker may still append
        if worker.is_alive():
            self.abandoned.append(cls.name)
            box.error = f"timed out after {duration:.1f} s (limit {limit:g} s); check abandoned"
        results = self._finish(cls, ctx, box, results, config.inject)
        for result in results:
            result.started_at = result.started_at or started_at
            result.duration_s = round(duration, 6) if result.duration_s is None else result.duration_s
        return results

    def _finish(
        self, cls: type[Check], ctx: CheckContext, box: _Box, results: list[Result], inject: str | None
    ) -> list[Result]:
        if box.failure is not None:
            return [ctx.result(category=cls.category, status=FAIL, reason=box.failure)]
        if box.skip is not None and box.error is None:
            return [ctx.result(category=cls.category, status=SKIP, reason=box.skip)]
        if box.error is not None:
            details: dict[str, Any] = {}
            if box.trace:
                details["traceback"] = box.trace
            kept = []
            for result in results:
                if result.name == cls.name:
                    details.setdefault("partial", []).append(result.to_dict())
                else:
                    kept.append(result)
            return [*kept, ctx.result(category=cls.category, status=ERROR, reason=box.error, details=details)]
        if not results:
            return [ctx.result(category=cls.category, status=ERROR, reason="check produced no results")]
        return [self._vet(cls, ctx, result, inject, index, results) for index, result in enumerate(results)]

    @staticmethod
    def _vet(
        cls: type[Check], ctx: CheckContext, result: Any, inject: str | None, index: int, results: list[Any]
    ) -> Result:
        """Turn malformed results into ERROR, and enforce that controls reached every judged result."""
        if not isinstance(result, Result):
            return ctx.error(
                f"check yielded {type(result).__name__}, not a Result", name=f"{cls.name}#{index}"
            )
        problems = []
        if result.status not in STATUSES:
            problems.append(f"status {result.status!r} is not one of {', '.join(STATUSES)}")
        if result.category not in CATEGORIES:
            problems.append(f"category {result.category!r} is not one of {', '.join(CATEGORIES)}")
        if result.target != ctx.target:
            problems.append(f"target {result.target!r} differs from {ctx.target!r}")
        if any(other.name == result.name for other in results[:index] if isinstance(other, Result)):
            problems.append("duplicate result name")
        control = CONTROL_OF_CATEGORY.get(result.category)
        if (
            inject is not None
            and inject == control
            and result.status in (PASS, FAIL)
            and result.control != inject
        ):
            helper = {"wrong-answer": "ctx.compare()", "missing-worker": "ctx.compare_sets()"}.get(
                control, f"its {control} control"
            )
            problems.append(
                f"{result.category} result not built with {helper}, cannot honour --inject {inject}"
            )
        if problems:
            result.details = {**result.details, "result_status": result.status}
            result.status = ERROR
            result.reason = "; ".join(problems)
        return result

    def run(self, config: RunConfig) -> RunOutcome:
        cluster = config.cluster
        if cluster.host(config.target) is None and config.scope != "cluster":
            known = ", ".join(h.name for h in cluster.hosts)
            raise SelectionError(
                f"target {config.target!r} is not a host in {cluster.source} (hosts: {known})"
            )
        validate_params(cluster, self.registry, config.overrides)
        is_head = cluster.head.name == config.target
        checks = select_checks(self.registry, config.only, config.scope, is_head, config.skip)
        started_at = utc_now()
        results: list[Result] = []
        for module, problem in sorted(self.registry.import_errors.items()):
            results.append(
                Result(
                    name=f"import.{module.rsplit('.', 1)[-1]}",
                    check=module,
                    category="inventory",
                    tags=[],
                    target=config.target,
                    status=ERROR,
                    reason=f"checks module {module} failed to import: {problem}",
                    started_at=started_at,
                    duration_s=0.0,
                )
            )
        progress = Progress(config.progress)
        done: dict[str, list[Result]] = {}

        def run_one(cls: type[Check]) -> None:
            params = resolve_params(
                cls,
                cluster.params.get(cls.name),
                config.overrides.get(cls.name),
                config.timeout,
                cluster.source,
            )
            target = CLUSTER_TARGET if cls.scope == "cluster" else config.target
            progress.started(cls, target, float(params["timeout"]))
            done[cls.name] = self.run_check(cls, config, params)
            progress.finished(done[cls.name])

        lanes, serial = plan_lanes(checks) if config.lanes else ([], checks)
        if lanes:
            with ThreadPoolExecutor(max_workers=LANES_AT_ONCE, thread_name_prefix="lane") as pool:
                for lane in sorted(lanes, key=len, reverse=True):
                    pool.submit(lambda lane=lane: [run_one(c) for c in lane])
        resilience = [cls for cls in serial if cls.category == "resilience"] if config.lanes else []
        for cls in serial:
            if cls in resilience:
                continue
            # One by one: an engine's shared session (every Spark core) does not outlive its checks.
            release_shared_sessions(keep=cls.engine or cls.name.split(".")[0])
            run_one(cls)
        if resilience:
            release_shared_sessions()

            def drill(cls: type[Check]) -> None:
                try:
                    run_one(cls)
                finally:  # its session does not hold cores a later check of the engine waits for
                    release_shared_sessions(only=cls.engines_used(cluster))

            run_apart(resilience, lambda cls: cls.engines_used(cluster), LANES_AT_ONCE, drill)
        for cls in checks:  # results in the order of the checks, however they ran
            results.extend(done.get(cls.name) or [_lost(cls, config)])
        finished_at = utc_now()
        versions = library_versions()
        host_record = {
            "type": "host",
            "target": config.target,
            "cluster_name": cluster.cluster_name,
            "run_id": cluster.run_id,
            "inventory_hash": cluster.inventory_hash,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "versions": versions,
            "recorded_at": finished_at,
        }
        summary = build_summary(
            results,
            run_id=cluster.run_id,
            git_sha=None,
            inventory_hash=cluster.inventory_hash,
            cluster_name=cluster.cluster_name,
            started_at=started_at,
            finished_at=finished_at,
            versions={config.target: versions},
        )
        if config.inject:
            summary["inject"] = config.inject
        return RunOutcome(results, host_record, summary, list(self.abandoned))
