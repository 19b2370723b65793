"""Airflow checks through the provisioned API server: health, a mapped fan-out DAG run, the file
pipeline DAG and scheduling latency. Runs are triggered over the REST API (never ``dags test``, which
bypasses the scheduler and the executor).

``engines.airflow`` in cluster.json::

    {
      "endpoint": "http://10.0.0.11:8080",            # API server base URL
      "credentials_file": "/etc/clusterforge/airflow/client.json",   # {"username", "password"}
      "executor": "celery" | "local",
      "expected_workers": ["node-2", "node-3"],       # hosts whose task instances must appear
      "fanout_dag": "clusterforge_fanout",            # optional, default shown
      "pipeline_dag": "clusterforge_pipeline",        # optional, default shown
      "pipeline_backends": {"generate": "dask", "process": "dask", "aggregate": "spark"},
      "pipeline_workers": ["node-2", "node-3"]        # hosts that must process files (Dask back end)
    }
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from clusterforge_pipeline.spec import FANOUT_LOG_MARKER, fanout_total, range_sum
from compute_jobs.checks._pipeline import judge_pipeline, pipeline_spec
from compute_jobs.context import CheckContext
from compute_jobs.model import FAIL, Check, CheckError, Metric, Param, Result, register
from compute_jobs.remote import output_of, run_on
from compute_jobs.transport import NoAnswer, Transport, https_transport, urllib_transport

COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
FANOUT_DAG = "clusterforge_fanout"
PIPELINE_DAG = "clusterforge_pipeline"
FINISHED = ("success", "failed")


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an Airflow timestamp (ISO 8601, 'Z' or offset)."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def stamp(seconds: float) -> str:
    """An Airflow-style UTC timestamp of SECONDS since the epoch."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class AirflowApi:
    """The few REST calls the checks need, with a JWT from ``POST /auth/token``."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        # One API call's limit: on a loaded host (checks side by side, other work beside the
        # cluster) the API server has answered in more than 15 s.
        timeout: float = 45.0,
        transport: Transport | None = None,
        # A read that got no answer in time is asked again this many times (reads change nothing;
        # a write is never repeated: a second trigger would start a second run).
        read_retries: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.transport = transport or urllib_transport
        self.read_retries = read_retries
        self._token: str | None = None

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        attempts = 1 + (self.read_retries if method == "GET" else 0)
        for attempt in range(1, attempts + 1):
            try:
                status, raw = self.transport(method, self.base_url + path, headers, data, self.timeout)
                break
            except NoAnswer as exc:
                if attempt == attempts:
                    raise NoAnswer(f"{exc} ({attempts} tries of {self.timeout:g} s)") from exc
        try:
            payload = json.loads(raw.decode() or "null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = raw.decode(errors="replace")[:300]
        return status, payload

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.call(method, path, body)
        if status not in (200, 201):
            raise CheckError(f"{method} {path}: HTTP {status}: {str(payload)[:300]}")
        return payload

    def token(self) -> str:
        if self._token is None:
            status, payload = self.call(
                "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
            )
            if status not in (200, 201) or not isinstance(payload, dict) or "access_token" not in payload:
                raise CheckError(
                    f"login of {self.username!r} at {self.base_url}/auth/token refused (HTTP {status}); "
                    "reconverge the airflow tier to reset the account"
                )
            self._token = payload["access_token"]
        return self._token

    def health(self) -> tuple[int, Any]:
        return self.call("GET", "/api/v2/monitor/health", auth=False)

    def unpause(self, dag_id: str) -> None:
        self.ok("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        return self.ok("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}")

    def wait(self, ctx: CheckContext, dag_id: str, run_id: str, poll: float) -> dict[str, Any]:
        """Poll the run until it finishes; CheckTimeout (via the context) when the deadline passes."""
        while True:
            run = self.run(dag_id, run_id)
            if run.get("state") in FINISHED:
                return run
            ctx.check_deadline()
            time.sleep(ctx.bounded(poll))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        payload = self.ok("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances?limit=1000")
        return list(payload.get("task_instances", []))

    def task_log(self, dag_id: str, run_id: str, ti: dict[str, Any]) -> tuple[int, Any]:
        """The whole log of one try of a task instance, as the API server reads it (from the worker's
        log server when the task ran on another host)."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{ti['task_id']}/logs/"
            f"{int(ti.get('try_number') or 1)}?full_content=true&map_index={int(ti.get('map_index', -1))}"
        )
        return self.call("GET", path)

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        )
        value = self.ok("GET", path).get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value


def _quote(run_id: str) -> str:
    return urllib.request.quote(run_id, safe="")


def engine_settings(ctx: CheckContext) -> dict[str, Any]:
    return dict(ctx.cluster.engines.get("airflow", {}))


def connect(ctx: CheckContext, transport: Transport | None = None) -> AirflowApi:
    settings = engine_settings(ctx)
    endpoint = settings.get("endpoint")
    path = settings.get("credentials_file")
    if not endpoint or not path:
        raise CheckError(f"{ctx.cluster.source}: engines.airflow needs endpoint and credentials_file")
    try:
        with open(path, encoding="utf-8") as handle:
            creds = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CheckError(
            f"cannot read the Airflow credentials {path}: {exc}; "
            "converge the airflow tier (client on the head node)"
        ) from exc
    if transport is None and str(endpoint).startswith("https://"):
        # The API server's certificate must verify against the cluster CA for the address dialled.
        if not settings.get("ca_file"):
            raise CheckError(f"{ctx.cluster.source}: engines.airflow has an https endpoint and no ca_file")
        transport = https_transport(str(settings["ca_file"]))
    return AirflowApi(endpoint, creds["username"], creds["password"], transport=transport)


def run_dag(ctx: CheckContext, api: AirflowApi, dag_id: str, conf: dict[str, Any], poll: float):
    """Trigger ``dag_id`` over the REST API, wait for it; return (run, task instances)."""
    api.unpause(dag_id)
    run = api.trigger(dag_id, conf)
    run = api.wait(ctx, dag_id, run["dag_run_id"], poll)
    return run, api.task_instances(dag_id, run["dag_run_id"])


def log_answer(api: AirflowApi, dag_id: str, run_id: str, tis: list[dict[str, Any]], host: str) -> str:
    """What the log of the first partial_sum task that ran on ``host`` says of its answer."""
    ti = next((t for t in tis if t["task_id"].startswith("partial_sum") and t.get("hostname") == host), None)
    if ti is None:
        return "no partial_sum task ran there"
    status, payload = api.task_log(dag_id, run_id, ti)
    if status != 200:
        return f"HTTP {status} for the log of {ti['task_id']}[{ti.get('map_index')}]"
    text = json.dumps(payload)
    lines = re.findall(re.escape(FANOUT_LOG_MARKER) + r" \[(\d+), (\d+)\) = (\d+)", text)
    if not lines:
        task = f"{ti['task_id']}[{ti.get('map_index')}]"
        return f"no '{FANOUT_LOG_MARKER}' line in the log of {task}: {text[:200]}"
    wrong = [line for line in lines if range_sum(int(line[0]), int(line[1])) != int(line[2])]
    if wrong:
        return f"a wrong sum in the log: {wrong[0]}"
    return "known answer in the log"


def states_view(run: dict[str, Any], tis: list[dict[str, Any]]) -> dict[str, Any]:
    failed = sorted(
        f"{t['task_id']}[{t['map_index']}]={t.get('state')}"
        if t.get("map_index", -1) >= 0
        else f"{t['task_id']}={t.get('state')}"
        for t in tis
        if t.get("state") != "success"
    )
    return {"run": run.get("state"), "not_successful": failed, "task_instances": len(tis)}


@register
class AirflowHealth(Check):
    name = "airflow.health"
    category = "correctness"
    scope = "cluster"
    engine = "airflow"
    tags = frozenset({"airflow"})
    description = (
        "API server health body: every component healthy, heartbeats fresh; anonymous API calls refused"
    )
    params = (Param("max_heartbeat_age", float, 30.0, "oldest accepted component heartbeat, s", 1.0, 3600.0),)
    correctness_rule = (
        "health body (HTTP 200 even when unhealthy) lists metadatabase, scheduler, triggerer and "
        "dag_processor as healthy with heartbeats younger than max_heartbeat_age; "
        "GET /api/v2/dags without a token is 401/403"
    )
    timeout = 100.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        api = connect(ctx)
        status, body = api.health()
        if status != 200 or not isinstance(body, dict):
            raise CheckError(f"health endpoint answered HTTP {status}: {str(body)[:200]}")
        now = time.time()
        observed, ages = {}, {}
        for component in COMPONENTS:
            entry = body.get(component)
            if not isinstance(entry, dict):
                observed[component] = "missing"
                continue
            state = entry.get("status")
            beat = next(
                (v for k, v in entry.items() if k.startswith("latest_") and k.endswith("heartbeat")), None
            )
            age = None if beat is None else now - (parse_time(beat) or 0.0)
            ages[component] = age
            if state != "healthy":
                observed[component] = f"{state}"
            elif age is not None and age > ctx.params.max_heartbeat_age:
                observed[component] = f"heartbeat {age:.0f} s old"
            else:
                observed[component] = "healthy"
        yield ctx.compare(
            dict.fromkeys(COMPONENTS, "healthy"),
            observed,
            details={"heartbeat_age_s": ages, "body": body},
        )
        anon_status, _ = api.call("GET", "/api/v2/dags", auth=False)
        yield ctx.compare(
            "refused",
            "refused" if anon_status in (401, 403) else f"answered HTTP {anon_status}",
            name="airflow.health.anonymous",
            rule="an API call without a token is refused with 401 or 403",
            details={"status": anon_status},
        )


@register
class AirflowDagRun(Check):
    name = "airflow.dag_run"
    category = "correctness"
    scope = "cluster"
    engine = "airflow"
    tags = frozenset({"airflow"})
    description = (
        "Trigger the mapped fan-out DAG over the REST API: all tasks succeed, exact total, every worker ran"
    )
    params = (
        Param("n", int, 1_000_000, "sum over [0, n)", 0, 10**9, smoke=1000),
        Param(
            "k", int, 4, "ranges (mapped task instances); at least the number of workers", 1, 1024, smoke=2
        ),
        Param("poll", float, 1.0, "seconds between run state polls", 0.1, 60.0, smoke=0.1),
    )
    correctness_rule = "run and every task instance succeeded; XCom total of task 'total' == n(n-1)/2 exactly"
    placement_rule = "hostnames of the partial_sum task instances == engines.airflow.expected_workers"
    timeout = 240.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings = engine_settings(ctx)
        dag_id = settings.get("fanout_dag", FANOUT_DAG)
        workers = list(settings.get("expected_workers") or [])
        k = max(ctx.params.k, len(workers))
        api = connect(ctx)
        run, tis = run_dag(ctx, api, dag_id, {"n": ctx.params.n, "k": k}, ctx.params.poll)
        run_id = run["dag_run_id"]
        details = {"dag_id": dag_id, "run_id": run_id, "k": k, "executor": settings.get("executor")}
        yield ctx.compare(
            {"run": "success", "not_successful": [], "task_instances": len(workers or [1]) + k + 1},
            states_view(run, tis),
            name="airflow.dag_run.states",
            rule="run and every task instance success: one ranges task per lane, k mapped sums, one total",
            details=details,
        )
        total = None
        if run.get("state") == "success":
            value = api.xcom(dag_id, run_id, "total")
            total = value.get("total") if isinstance(value, dict) else value
        yield ctx.compare(fanout_total(ctx.params.n), total, details=details)
        hosts = sorted(
            {t.get("hostname") for t in tis if t["task_id"].startswith("partial_sum") and t.get("hostname")}
        )
        if workers:
            yield ctx.compare_sets(workers, hosts, name="airflow.dag_run.placement", details=details)
            yield ctx.compare(
                {host: "known answer in the log" for host in workers},
                {host: log_answer(api, dag_id, run_id, tis, host) for host in workers},
                name="airflow.dag_run.logs",
                rule=(
                    "the log of a partial_sum task on each worker, read through the API server (which "
                    "fetches it from that worker's log server), holds its '[low, high) = sum' line, sum exact"
                ),
                details=details,
            )


@register
class AirflowPipeline(Check):
    name = "airflow.pipeline"
    category = "correctness"
    scope = "cluster"
    engine = "airflow"
    tags = frozenset({"airflow", "pipeline"})
    description = "File pipeline DAG (generate, process on Dask, aggregate on Spark) returns the known answer"
    params = (
        Param("files", int, 8, "files generated", 1, 4096, smoke=2),
        Param("mib", int, 8, "MiB per file", 1, 4096, smoke=1),
        Param("seed", int, 20261121, "data seed", 0, 2**32 - 1),
        Param("poll", float, 1.0, "seconds between run state polls", 0.1, 60.0, smoke=0.1),
    )
    correctness_rule = (
        "count, sum, sum of squares, min, max equal the closed forms; every file's SHA-256 equals the "
        "regenerated one; the steps ran on the back ends the inventory provides"
    )
    placement_rule = "hosts that summarised files == engines.airflow.pipeline_workers (Dask back end)"
    timeout = 240.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings = engine_settings(ctx)
        dag_id = settings.get("pipeline_dag", PIPELINE_DAG)
        spec = pipeline_spec(ctx, settings)
        api = connect(ctx)
        run, tis = run_dag(ctx, api, dag_id, spec.to_dict(), ctx.params.poll)
        details: dict[str, Any] = {"dag_id": dag_id, "run_id": run["dag_run_id"], "spec": spec.to_dict()}
        details["states"] = states_view(run, tis)
        result = None
        if run.get("state") == "success":
            result = api.xcom(dag_id, run["dag_run_id"], "verify")
            details["hosts"] = result.get("hosts") if isinstance(result, dict) else None
        yield from judge_pipeline(ctx, spec, result, settings, details)


@register
class AirflowPerformance(Check):
    name = "airflow.performance"
    category = "performance"
    scope = "cluster"
    engine = "airflow"
    tags = frozenset({"airflow"})
    description = "Scheduling latency: trigger to first task start, and DAG wall time, of small fan-out runs"
    params = (
        Param("repeats", int, 3, "runs triggered one after another", 1, 100, smoke=1),
        Param("n", int, 1000, "sum over [0, n) (small: the run measures scheduling, not compute)", 0, 10**9),
        Param("poll", float, 0.5, "seconds between run state polls", 0.1, 60.0, smoke=0.1),
    )
    metrics = (
        Metric("trigger_to_first_task", "s", better="lower", help="run queued_at to the first task start"),
        Metric("dag_wall", "s", better="lower", help="run queued_at to run end"),
    )
    timeout = 240.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings = engine_settings(ctx)
        dag_id = settings.get("fanout_dag", FANOUT_DAG)
        k = max(1, len(settings.get("expected_workers") or []))
        api = connect(ctx)
        delays, walls, runs = [], [], []
        for _ in range(ctx.params.repeats):
            run, tis = run_dag(ctx, api, dag_id, {"n": ctx.params.n, "k": k}, ctx.params.poll)
            runs.append(run["dag_run_id"])
            if run.get("state") != "success":
                raise CheckError(
                    f"{dag_id} run {run['dag_run_id']} ended {run.get('state')}: {states_view(run, tis)}"
                )
            queued = parse_time(run.get("queued_at"))
            starts = [parse_time(t.get("start_date")) for t in tis if t.get("start_date")]
            end = parse_time(run.get("end_date"))
            if queued is None or not starts or end is None:
                raise CheckError(f"{dag_id} run {run['dag_run_id']} lacks queued_at/start_date/end_date")
            delays.append(min(starts) - queued)
            walls.append(end - queued)
        details = {"dag_id": dag_id, "runs": runs, "executor": settings.get("executor")}
        yield ctx.performance("trigger_to_first_task", delays, details=details)
        yield ctx.performance("dag_wall", walls, details=details)


# Replaced by a fake in the unit tests: (host, command, timeout, what, hint) -> seconds.
RESTART: Callable[..., float] = run_on
RESTART_HINT = "the airflow role installs a sudo rule for the service account: airflow_restart_sudo"
# How long the API may stay unreachable while its database restarts, before the check gives up.
OUTAGE_S = 90.0


def unit_stopped_at(host: str | None, unit: str, timeout: float) -> float | None:
    """When systemd on HOST last began to stop UNIT (ActiveExitTimestamp, on that host's clock), in
    seconds since the epoch; None when it never has."""
    command = ["systemctl", "show", "-p", "ActiveExitTimestamp", "--timestamp=us+utc", unit]
    value = output_of(host, command, timeout, f"reading when {unit} stopped").strip().partition("=")[2]
    if not value:
        return None
    return datetime.strptime(value, "%a %Y-%m-%d %H:%M:%S.%f %Z").replace(tzinfo=UTC).timestamp()


# Replaced by a fake in the unit tests: (host, unit, timeout) -> seconds since the epoch or None.
STOPPED_AT: Callable[[str | None, str, float], float | None] = unit_stopped_at


@register
class AirflowResilience(Check):
    name = "airflow.resilience"
    category = "resilience"
    scope = "cluster"
    engine = "airflow"
    tags = frozenset({"airflow"})
    description = (
        "Restart the scheduler, then PostgreSQL, while the pipeline DAG runs: the run still succeeds "
        "with the known answer"
    )
    params = (
        Param("files", int, 4, "files generated", 1, 4096, smoke=2),
        Param("mib", int, 4, "MiB per file", 1, 4096, smoke=1),
        Param("seed", int, 20261122, "data seed", 0, 2**32 - 1),
        Param("poll", float, 0.5, "seconds between state polls", 0.1, 60.0, smoke=0.1),
        Param("restart_timeout", float, 60.0, "s one restart may take", 1.0, 600.0),
    )
    correctness_rule = (
        "each restart begins while the run is in progress (the run's end_date after the moment systemd "
        "began to stop each unit, both on the server's clock) and that run succeeds; count, sum, sum of "
        "squares, min, max equal the closed forms and every file's SHA-256 the regenerated one (as "
        "airflow.pipeline)"
    )
    placement_rule = "hosts that summarised files == engines.airflow.pipeline_workers (Dask back end)"
    timeout = 300.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings = engine_settings(ctx)
        restarts = dict(settings.get("restart_commands") or {})
        if not restarts:
            raise CheckError(
                f"{ctx.cluster.source}: engines.airflow has no restart_commands ({RESTART_HINT})"
            )
        dag_id = settings.get("pipeline_dag", PIPELINE_DAG)
        spec = pipeline_spec(ctx, settings)
        api = connect(ctx)
        api.unpause(dag_id)
        run_id = api.trigger(dag_id, spec.to_dict())["dag_run_id"]
        running = self.wait_for_a_task(ctx, api, dag_id, run_id)
        units = dict(settings.get("restart_units") or {})
        restarted: dict[str, float] = {}
        began: dict[str, float] = {}
        clock: dict[str, str] = {}
        for component in ("scheduler", "database"):
            if component in restarts:
                # A restart after the run ended proves nothing about riding one out. This read only
                # spares a pointless restart: the run may still end before the restart begins, which
                # the run's end time, compared below, tells.
                state = api.run(dag_id, run_id).get("state")
                if state in FINISHED:
                    yield ctx.result(
                        status=FAIL,
                        reason=(
                            f"the DAG run had ended ({state}) before the {component} restart: no restart hit "
                            "a run in progress (a larger pipeline: params files and mib)"
                        ),
                        details={
                            "dag_id": dag_id,
                            "run_id": run_id,
                            "restarted_s": restarted,
                            "started": running,
                        },
                    )
                    return
                began[component] = time.time()
                clock[component] = "this host's, before the restart command"
                seconds = RESTART(
                    settings.get("server_host"),
                    list(restarts[component]),
                    ctx.bounded(ctx.params.restart_timeout),
                    f"{component} restart",
                    RESTART_HINT,
                )
                restarted[component] = round(seconds, 3)
                # The moment systemd began to stop the unit, on the server's clock (the one that
                # stamps the run's end): no window between this host's stamp and the stop.
                if component in units:
                    host = settings.get("server_host")
                    stopped = STOPPED_AT(host, str(units[component]), ctx.bounded(ctx.params.restart_timeout))
                    if stopped is None:
                        raise CheckError(
                            f"systemd on {host} has no stop time of {units[component]} after its restart"
                        )
                    began[component] = stopped
                    clock[component] = f"systemd's on {host}: {units[component]} began to stop"
        run = self.wait_through_outages(ctx, api, dag_id, run_id)
        tis = api.task_instances(dag_id, run_id)
        details: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "spec": spec.to_dict(),
            "restarted_s": restarted,
            "restarted_while": running,
            "restart_began": {c: stamp(t) for c, t in began.items()},
            "restart_began_by": clock,
            "run_ended": run.get("end_date"),
            "states": states_view(run, tis),
            "tries": {t["task_id"]: t.get("try_number") for t in tis},
        }
        # The scheduler stamps the run's end on the server, whose systemd stamped each stop (a fact
        # without restart_units leaves this host's stamps, which NTP keeps near the server's): a run
        # that ended before a restart began did not ride it out.
        ended = parse_time(run.get("end_date"))
        early = [c for c, t in began.items() if ended is None or ended <= t]
        if early:
            yield ctx.result(
                status=FAIL,
                reason=(
                    f"the DAG run ended ({run.get('end_date') or 'no end_date'}) before the {early[0]} "
                    f"restart began ({stamp(began[early[0]])}): no restart hit a run in progress (a "
                    "larger pipeline: params files and mib)"
                ),
                details=details,
            )
            return
        result = None
        if run.get("state") == "success":
            result = api.xcom(dag_id, run_id, "verify")
            details["hosts"] = result.get("hosts") if isinstance(result, dict) else None
        yield from judge_pipeline(ctx, spec, result, settings, details)

    @staticmethod
    def wait_for_a_task(ctx: CheckContext, api: AirflowApi, dag_id: str, run_id: str) -> list[str]:
        """Poll until a task instance has started (restarts then hit a run in progress); returns
        "task=state" of the started ones."""
        while True:
            started = [
                f"{t['task_id']}={t.get('state')}"
                for t in api.task_instances(dag_id, run_id)
                if t.get("state") in ("running", "success", "failed", "up_for_retry")
            ]
            if started or api.run(dag_id, run_id).get("state") in FINISHED:
                return sorted(started)
            ctx.check_deadline()
            time.sleep(ctx.bounded(ctx.params.poll))

    @staticmethod
    def wait_through_outages(ctx: CheckContext, api: AirflowApi, dag_id: str, run_id: str) -> dict[str, Any]:
        """Poll the run until it finishes, riding out the API's own outage while its database
        restarts (errors for up to OUTAGE_S in a row)."""
        failing_since = None
        while True:
            try:
                run = api.run(dag_id, run_id)
                failing_since = None
                if run.get("state") in FINISHED:
                    return run
            except CheckError:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > OUTAGE_S:
                    raise
            ctx.check_deadline()
            time.sleep(ctx.bounded(ctx.params.poll))
