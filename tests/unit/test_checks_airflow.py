"""Airflow checks against a fake API server at the HTTP boundary (no Airflow needed).

The fake answers the few REST calls the checks make. Its results are computed with the real
pipeline code (split_ranges, the local pipeline steps), and each test can break one thing: a wrong
total, an idle worker, an unhealthy component, an API that lets anonymous callers in.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from checkrun import run_checks

from clusterforge_pipeline import data
from clusterforge_pipeline.spec import Spec, range_sum, split_ranges
from compute_jobs import transport
from compute_jobs.checks import airflow as af
from compute_jobs.checks import load_all
from compute_jobs.model import ERROR, FAIL, PASS, Result

load_all()

WORKERS = ["b", "c"]
NAMES = ["airflow.health", "airflow.dag_run", "airflow.pipeline", "airflow.performance"]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class FakeAirflow:
    """Just enough of the Airflow 3 REST API; knobs break one behaviour at a time."""

    def __init__(self, workers: list[str]) -> None:
        self.workers = workers
        self.password = "s3cret"
        self.health_override: dict[str, Any] = {}
        self.stale_scheduler = False
        self.anonymous_allowed = False
        self.total_offset = 0
        self.only_worker: str | None = None
        self.fail_task: str | None = None
        self.pipeline_backends = {"generate": "dask", "process": "dask", "aggregate": "spark"}
        self.pipeline_sum_offset = 0
        # the worker whose log server does not answer (the API server then says so in the log)
        self.log_server_down: str | None = None
        self.log_sum_offset = 0
        self.runs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        # how many reads of a run answer "running" before its end state (0: ended when first read)
        self.running_reads = 0
        # True: a run's end_date is the moment a read first finds it ended (else a fixed past time)
        self.end_on_read = False

    # --- HTTP -------------------------------------------------------------------------------------
    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float):
        path = url.split("://", 1)[1].split("/", 1)[1]
        path = "/" + path
        self.calls.append((method, path))
        payload = json.loads(body) if body else None
        if path == "/auth/token" and method == "POST":
            if payload == {"username": "checks", "password": self.password}:
                return 201, json.dumps({"access_token": "tok"}).encode()
            return 401, b'{"detail": "Invalid credentials"}'
        if path == "/api/v2/monitor/health":
            return 200, json.dumps(self.health()).encode()
        if headers.get("Authorization") != "Bearer tok" and not self.anonymous_allowed:
            return 401, b'{"detail": "Not authenticated"}'
        if path == "/api/v2/dags":
            return 200, b'{"dags": [], "total_entries": 0}'
        if match := re.fullmatch(r"/api/v2/dags/([^/]+)", path):
            return 200, json.dumps({"dag_id": match.group(1), "is_paused": False}).encode()
        if match := re.fullmatch(r"/api/v2/dags/([^/]+)/dagRuns", path):
            return 200, json.dumps(self.trigger(match.group(1), payload["conf"])).encode()
        if match := re.fullmatch(r"/api/v2/dags/([^/]+)/dagRuns/([^/]+)", path):
            run = self.runs[_unquote(match.group(2))]
            run["reads"] = run.get("reads", 0) + 1
            running = run["reads"] <= self.running_reads
            if not running and self.end_on_read and not run.get("ended"):
                run["ended"] = True
                run["run"]["end_date"] = iso(datetime.now(UTC))
            return 200, json.dumps(dict(run["run"], state="running") if running else run["run"]).encode()
        if match := re.fullmatch(r"/api/v2/dags/[^/]+/dagRuns/([^/]+)/taskInstances\?limit=1000", path):
            run = self.runs[_unquote(match.group(1))]
            return 200, json.dumps({"task_instances": run["tis"], "total_entries": len(run["tis"])}).encode()
        if match := re.fullmatch(
            r"/api/v2/dags/[^/]+/dagRuns/([^/]+)/taskInstances/([^/]+)/xcomEntries/return_value", path
        ):
            value = self.runs[_unquote(match.group(1))]["xcom"][match.group(2)]
            return 200, json.dumps({"key": "return_value", "value": value}).encode()
        if match := re.fullmatch(
            r"/api/v2/dags/[^/]+/dagRuns/([^/]+)/taskInstances/([^/]+)/logs/1\?full_content=true&map_index=(-?\d+)",
            path,
        ):
            return 200, json.dumps(
                self.log(_unquote(match.group(1)), match.group(2), int(match.group(3)))
            ).encode()
        return 404, b'{"detail": "Not Found"}'

    # --- behaviour --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        body = {
            "metadatabase": {"status": "healthy"},
            "scheduler": {
                "status": "healthy",
                "latest_scheduler_heartbeat": iso(
                    now - timedelta(seconds=300 if self.stale_scheduler else 2)
                ),
            },
            "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": iso(now)},
            "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": iso(now)},
        }
        body.update(self.health_override)
        return body

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        run_id = f"manual__{len(self.runs)}+00:00"
        queued = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC) + timedelta(minutes=len(self.runs))
        tis, xcom = self.fanout(conf, queued) if dag_id == af.FANOUT_DAG else self.pipeline(conf, queued)
        state = "failed" if any(t["state"] != "success" for t in tis) else "success"
        run = {
            "dag_run_id": run_id,
            "dag_id": dag_id,
            "state": state,
            "queued_at": iso(queued),
            "end_date": iso(queued + timedelta(seconds=9)),
        }
        self.runs[run_id] = {"run": run, "tis": tis, "xcom": xcom, "conf": conf}
        return dict(run, state="queued")

    def ti(self, task_id: str, host: str, start: datetime, map_index: int = -1) -> dict[str, Any]:
        state = "failed" if task_id == self.fail_task else "success"
        return {
            "task_id": task_id,
            "map_index": map_index,
            "state": state,
            "hostname": host,
            "start_date": iso(start),
            "try_number": 1,
        }

    def log(self, run_id: str, task_id: str, map_index: int) -> dict[str, Any]:
        """Airflow 3's structured log of a partial sum: its own line, or the API server's note that
        the worker's log server did not answer."""
        run = self.runs[run_id]
        ti = next(t for t in run["tis"] if t["task_id"] == task_id and t["map_index"] == map_index)
        if ti["hostname"] == self.log_server_down:
            event = f"Could not read served logs: HTTPConnectionPool(host='{ti['hostname']}', port=8793)"
            return {"content": [{"event": event, "level": "error"}], "continuation_token": None}
        low, high = split_ranges(run["conf"]["n"], run["conf"]["k"])[map_index]
        line = f"clusterforge partial_sum [{low}, {high}) = {range_sum(low, high) + self.log_sum_offset}"
        return {"content": [{"event": "Task started"}, {"event": line, "logger": "task.stdout"}]}

    def fanout(self, conf: dict[str, Any], queued: datetime):
        lanes = self.workers or ["a"]
        tis = [self.ti(f"ranges_{lane}", lane, queued + timedelta(seconds=1.5)) for lane in lanes]
        parts = []
        for i, (low, high) in enumerate(split_ranges(conf["n"], conf["k"])):
            lane = lanes[i % len(lanes)]
            host = self.only_worker or lane
            tis.append(self.ti(f"partial_sum_{lane}", host, queued + timedelta(seconds=3), map_index=i))
            parts.append(range_sum(low, high))
        tis.append(self.ti("total", lanes[0], queued + timedelta(seconds=6)))
        return tis, {"total": {"total": sum(parts) + self.total_offset, "n": conf["n"], "k": conf["k"]}}

    def pipeline(self, conf: dict[str, Any], queued: datetime):
        spec = Spec.from_dict(conf)
        partials = [dict(data.summarize_array(data.file_values(spec, j)), index=j) for j in range(spec.files)]
        totals = data.totals_of(partials)
        totals["sum"] = str(int(totals["sum"]) + self.pipeline_sum_offset)
        verdict = data.judge(spec, totals, data.expected_digests(spec))
        value = {
            "ok": verdict["ok"],
            "problems": verdict["problems"],
            "expected": verdict["expected"],
            "observed": verdict["observed"],
            "digests_ok": verdict["digests_ok"],
            "backends": self.pipeline_backends,
            "hosts": {
                "generate": self.workers,
                "process": [self.only_worker] if self.only_worker else self.workers,
            },
        }
        tis = [
            self.ti(t, "a", queued + timedelta(seconds=2))
            for t in ("generate", "process", "aggregate", "verify")
        ]
        return tis, {"verify": value}


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeAirflow:
    server = FakeAirflow(WORKERS)
    monkeypatch.setattr(af, "urllib_transport", server)
    return server


@pytest.fixture
def cluster(cj_cluster, tmp_path):
    creds = tmp_path / "client.json"
    creds.write_text(json.dumps({"username": "checks", "password": "s3cret"}))

    def make(**engine: Any) -> Any:
        settings = {
            "endpoint": "http://airflow.invalid:8090",
            "credentials_file": str(creds),
            "executor": "celery",
            "expected_workers": WORKERS,
            "pipeline_backends": {"generate": "dask", "process": "dask", "aggregate": "spark"},
            "pipeline_workers": WORKERS,
        }
        settings.update(engine)
        hosts = [
            {
                "name": n,
                "address": "127.0.0.1",
                "groups": ["head"] if n == "a" else ["workers"],
                "cores": 1,
                "memory_mb": 16,
            }
            for n in ["a", *WORKERS]
        ]
        return cj_cluster(hosts, engines={"airflow": settings})

    return make


def run(cluster: Any, names: list[str], **config: Any) -> dict[str, Result]:
    return run_checks(cluster, names, **config)


def test_every_check_passes_on_a_sane_installation(fake, cluster, cj_validator):
    validator = cj_validator("result.schema.json")
    results = run(cluster(), NAMES)
    for result in results.values():
        validator.validate(result.to_dict())
    assert {n: r.status for n, r in results.items()} == {
        "airflow.health": PASS,
        "airflow.health.anonymous": PASS,
        "airflow.dag_run.states": PASS,
        "airflow.dag_run": PASS,
        "airflow.dag_run.placement": PASS,
        "airflow.dag_run.logs": PASS,
        "airflow.pipeline": PASS,
        "airflow.pipeline.placement": PASS,
        "airflow.performance.trigger_to_first_task": PASS,
        "airflow.performance.dag_wall": PASS,
    }
    assert results["airflow.performance.trigger_to_first_task"].value == pytest.approx(1.5)
    assert results["airflow.performance.dag_wall"].value == pytest.approx(9.0)
    assert ("GET", "/api/v2/dags") in fake.calls, "the anonymous probe must really be made"


def test_runs_are_triggered_through_the_rest_api_with_a_token(fake, cluster):
    run(cluster(), ["airflow.dag_run"])
    assert ("POST", "/api/v2/dags/clusterforge_fanout/dagRuns") in fake.calls
    assert fake.calls[0] == ("POST", "/auth/token")


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("health_override", {"scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": None}}),
        ("health_override", {"triggerer": None}),
        ("stale_scheduler", True),
    ],
)
def test_health_body_is_parsed_not_just_the_status_code(fake, cluster, knob, value):
    setattr(fake, knob, value)
    assert run(cluster(), ["airflow.health"])["airflow.health"].status == FAIL


def test_anonymous_access_fails_the_health_check(fake, cluster):
    fake.anonymous_allowed = True
    results = run(cluster(), ["airflow.health"])
    assert results["airflow.health.anonymous"].status == FAIL
    assert results["airflow.health"].status == PASS


def test_a_wrong_total_fails(fake, cluster):
    fake.total_offset = 1
    assert run(cluster(), ["airflow.dag_run"])["airflow.dag_run"].status == FAIL


def test_a_failed_task_fails_the_states(fake, cluster):
    fake.fail_task = "total"
    results = run(cluster(), ["airflow.dag_run"])
    assert results["airflow.dag_run.states"].status == FAIL
    assert results["airflow.dag_run"].status == FAIL  # no total without a successful run


def test_an_idle_worker_fails_placement(fake, cluster):
    fake.only_worker = "b"
    results = run(cluster(), ["airflow.dag_run", "airflow.pipeline"])
    assert results["airflow.dag_run.placement"].status == FAIL
    assert results["airflow.dag_run.placement"].missing == ["c"]
    assert results["airflow.pipeline.placement"].status == FAIL


def test_a_worker_whose_log_server_does_not_answer_fails_the_logs(fake, cluster):
    """Task logs live on the worker that ran the task; the API server fetches them from that
    worker's log server. One that does not answer leaves its tasks' logs unreadable: FAIL, named."""
    fake.log_server_down = "c"
    logs = run(cluster(), ["airflow.dag_run"])["airflow.dag_run.logs"]
    assert logs.status == FAIL
    assert logs.observed["b"] == "known answer in the log"
    assert logs.observed["c"].startswith("no 'clusterforge partial_sum' line in the log of partial_sum_c")
    assert "Could not read served logs" in logs.observed["c"]


def test_a_wrong_sum_in_a_task_log_fails_the_logs(fake, cluster):
    fake.log_sum_offset = 1
    logs = run(cluster(), ["airflow.dag_run"])["airflow.dag_run.logs"]
    assert logs.status == FAIL and all(v.startswith("a wrong sum in the log") for v in logs.observed.values())


def test_the_pipeline_makes_at_least_one_file_per_worker_host(fake, cluster):
    """With more worker hosts than ``files`` each still gets a file to process (placement can pass)."""
    workers = ["b", "c", "d"]
    fake.workers = workers
    results = run(cluster(expected_workers=workers, pipeline_workers=workers), ["airflow.pipeline"])
    assert results["airflow.pipeline"].details["spec"]["files"] == 3  # smoke parameters: files=2
    assert results["airflow.pipeline.placement"].status == PASS


def test_k_is_raised_to_the_number_of_workers(fake, cluster):
    results = run(cluster(expected_workers=["b", "c", "d"]), ["airflow.dag_run"])
    assert results["airflow.dag_run"].details["k"] == 3


def test_a_wrong_pipeline_answer_fails(fake, cluster):
    fake.pipeline_sum_offset = 1
    assert run(cluster(), ["airflow.pipeline"])["airflow.pipeline"].status == FAIL


def test_a_silent_local_fallback_fails_the_pipeline(fake, cluster):
    fake.pipeline_backends = {"generate": "local", "process": "local", "aggregate": "local"}
    assert run(cluster(), ["airflow.pipeline"])["airflow.pipeline"].status == FAIL


def test_a_local_cluster_expects_local_backends(fake, cluster):
    fake.workers = []
    fake.pipeline_backends = {"generate": "local", "process": "local", "aggregate": "local"}
    results = run(
        cluster(executor="local", expected_workers=["a"], pipeline_backends=None, pipeline_workers=None),
        ["airflow.pipeline", "airflow.dag_run"],
    )
    assert results["airflow.pipeline"].status == PASS
    assert "airflow.pipeline.placement" not in results
    assert results["airflow.dag_run.placement"].status == PASS


@pytest.mark.parametrize(
    ("control", "failing"),
    [
        (
            "wrong-answer",
            {
                "airflow.health",
                "airflow.health.anonymous",
                "airflow.dag_run",
                "airflow.dag_run.states",
                "airflow.dag_run.logs",
                "airflow.pipeline",
            },
        ),
        ("missing-worker", {"airflow.dag_run.placement", "airflow.pipeline.placement"}),
    ],
)
def test_negative_controls_fail_the_judged_results(fake, cluster, control, failing):
    results = run(cluster(), ["airflow.health", "airflow.dag_run", "airflow.pipeline"], inject=control)
    assert {n for n, r in results.items() if r.status == FAIL} == failing
    assert all(r.status == PASS for n, r in results.items() if n not in failing)


def test_refused_login_is_an_error_that_says_what_to_do(fake, cluster):
    fake.password = "rotated"
    result = run(cluster(), ["airflow.dag_run"])["airflow.dag_run"]
    assert result.status == ERROR
    assert "reconverge the airflow tier" in result.reason


def test_missing_credentials_file_is_an_error(fake, cluster):
    result = run(cluster(credentials_file="/nonexistent/client.json"), ["airflow.health"])["airflow.health"]
    assert result.status == ERROR and "converge the airflow tier" in result.reason


def test_without_the_engine_the_checks_skip(cj_cluster):
    results = run(cj_cluster(), NAMES)
    assert {r.status for r in results.values()} == {"SKIP"}


# --- airflow.resilience: restarts mid-run ---------------------------------------------------------

RESTARTS = {
    "scheduler": ["sudo", "-n", "/usr/bin/systemctl", "restart", "airflow-scheduler.service"],
    "database": ["sudo", "-n", "/usr/bin/systemctl", "restart", "postgresql.service"],
}
UNITS = {"scheduler": "airflow-scheduler.service", "database": "postgresql.service"}


@pytest.fixture
def stops(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """systemd's stop time of each unit, as the server reads it: the moment of the read, shifted by
    stops["shift"] seconds (its clock, or a restart that reached the unit later than this host
    stamped it)."""
    state: dict[str, Any] = {"shift": 0.0, "read": []}

    def stopped_at(host: str | None, unit: str, timeout: float) -> float | None:
        assert timeout > 0
        state["read"].append((host, unit))
        return None if state["shift"] is None else time.time() + state["shift"]

    monkeypatch.setattr(af, "STOPPED_AT", stopped_at)
    return state


@pytest.fixture
def restarts(
    fake: FakeAirflow, monkeypatch: pytest.MonkeyPatch, stops: dict[str, Any]
) -> list[tuple[Any, ...]]:
    done: list[tuple[Any, ...]] = []

    def restart(host: str, command: list[str], timeout: float, what: str, hint: str) -> float:
        assert timeout > 0 and "airflow_restart_sudo" in hint
        done.append((host, command, what))
        return 1.25

    monkeypatch.setattr(af, "RESTART", restart)
    fake.running_reads = 2  # the run goes on through both restarts
    fake.end_on_read = True
    return done


def test_resilience_restarts_scheduler_then_database_mid_run_and_judges_the_answer(fake, cluster, restarts):
    results = run(
        cluster(restart_commands=RESTARTS, restart_units=UNITS, server_host="a"), ["airflow.resilience"]
    )
    assert {n: r.status for n, r in results.items()} == {
        "airflow.resilience": PASS,
        "airflow.resilience.placement": PASS,
    }
    assert restarts == [
        ("a", RESTARTS["scheduler"], "scheduler restart"),
        ("a", RESTARTS["database"], "database restart"),
    ]
    details = results["airflow.resilience"].details
    assert details["restarted_s"] == {"scheduler": 1.25, "database": 1.25}
    assert details["restarted_while"], "the restarts must come after a task started"
    assert set(details["restart_began"]) == {"scheduler", "database"}
    assert all(began < details["run_ended"] for began in details["restart_began"].values())
    assert details["restart_began_by"] == {
        "scheduler": "systemd's on a: airflow-scheduler.service began to stop",
        "database": "systemd's on a: postgresql.service began to stop",
    }


def test_resilience_takes_each_restart_s_start_from_systemd_on_the_server(fake, cluster, restarts, stops):
    """The run ended after this host stamped each restart, but before systemd on the server began to
    stop the unit (the restart command reached it late): no restart hit a run in progress. Without
    the units published, this host's stamps are all the check has, and it passes."""
    stops["shift"] = 3600.0
    result = run(
        cluster(restart_commands=RESTARTS, restart_units=UNITS, server_host="a"), ["airflow.resilience"]
    )["airflow.resilience"]
    assert result.status == FAIL and "before the scheduler restart began" in result.reason, result.reason
    assert stops["read"] == [("a", UNITS["scheduler"]), ("a", UNITS["database"])]
    fake.running_reads = 2
    without = run(cluster(restart_commands=RESTARTS, server_host="a"), ["airflow.resilience"])[
        "airflow.resilience"
    ]
    assert without.status == PASS, without.reason
    assert set(without.details["restart_began_by"].values()) == {"this host's, before the restart command"}


def test_resilience_without_systemd_s_stop_time_is_an_error_naming_the_unit(fake, cluster, restarts, stops):
    stops["shift"] = None
    result = run(
        cluster(restart_commands=RESTARTS, restart_units=UNITS, server_host="a"), ["airflow.resilience"]
    )["airflow.resilience"]
    assert result.status == ERROR, result.reason
    assert "systemd on a has no stop time of airflow-scheduler.service after its restart" in result.reason


def test_the_stop_time_is_read_from_systemctl_show_in_utc_microseconds(monkeypatch):
    asked: list[tuple[Any, ...]] = []
    answers = iter(["ActiveExitTimestamp=Tue 2026-12-08 02:28:41.185722 UTC\n", "ActiveExitTimestamp=\n"])

    def output_of(host: str | None, command: list[str], timeout: float, what: str) -> str:
        asked.append((host, command, timeout))
        return next(answers)

    monkeypatch.setattr(af, "output_of", output_of)
    expected = datetime(2026, 12, 8, 2, 28, 41, 185722, tzinfo=UTC).timestamp()
    assert af.unit_stopped_at("a", "postgresql.service", 5.0) == expected
    assert af.unit_stopped_at("a", "postgresql.service", 5.0) is None
    command = ["systemctl", "show", "-p", "ActiveExitTimestamp", "--timestamp=us+utc", "postgresql.service"]
    assert asked == [("a", command, 5.0)] * 2


def test_resilience_fails_when_the_run_ended_before_a_restart_began(fake, cluster, restarts):
    """Read as running just before each restart, yet stamped as ended earlier (it ended between
    the read and the restart): the restart hit no run in progress."""
    fake.end_on_read = False  # the fake's runs end nine seconds after 2026-11-21 10:00
    results = run(
        cluster(restart_commands=RESTARTS, restart_units=UNITS, server_host="a"), ["airflow.resilience"]
    )
    result = results["airflow.resilience"]
    assert result.status == FAIL, result.reason
    assert result.reason.startswith(
        "the DAG run ended (2026-11-21T10:00:09Z) before the scheduler restart began (20"
    ), result.reason
    assert len(restarts) == 2


def test_resilience_fails_when_the_run_ended_before_a_restart(fake, cluster, restarts):
    fake.running_reads = 1  # still running at the scheduler's restart, ended by the database's
    results = run(
        cluster(restart_commands=RESTARTS, restart_units=UNITS, server_host="a"), ["airflow.resilience"]
    )
    result = results["airflow.resilience"]
    assert result.status == FAIL and "had ended (success) before the database restart" in result.reason, (
        result.reason
    )
    assert restarts == [("a", RESTARTS["scheduler"], "scheduler restart")]


def test_resilience_fails_on_a_wrong_answer_after_the_restarts(fake, cluster, restarts):
    fake.pipeline_sum_offset = 1
    results = run(
        cluster(restart_commands=RESTARTS, restart_units=UNITS, server_host="a"), ["airflow.resilience"]
    )
    assert results["airflow.resilience"].status == FAIL
    assert len(restarts) == 2


def test_resilience_without_restart_commands_is_an_error_that_says_what_to_do(fake, cluster, restarts):
    results = run(cluster(), ["airflow.resilience"])
    (result,) = results.values()
    assert result.status == ERROR and "airflow_restart_sudo" in result.reason
    assert restarts == []


def test_resilience_rides_out_the_api_outage_while_the_database_restarts(fake, cluster, monkeypatch, stops):
    calls = {"n": 0}
    original = af.AirflowApi.run

    def flaky(self, dag_id, run_id):
        calls["n"] += 1
        if 3 <= calls["n"] <= 5:  # after the reads before each restart
            raise af.CheckError("GET /api/v2/...: [Errno 111] Connection refused")
        return original(self, dag_id, run_id)

    fake.running_reads = 2
    fake.end_on_read = True
    monkeypatch.setattr(af.AirflowApi, "run", flaky)
    monkeypatch.setattr(af, "RESTART", lambda *args: 0.5)
    results = run(
        cluster(restart_commands=RESTARTS, restart_units=UNITS, server_host="a"), ["airflow.resilience"]
    )
    assert results["airflow.resilience"].status == PASS
    assert calls["n"] == 6, "a read before each restart, three refused polls, then the finished run"


def test_a_read_without_an_answer_is_asked_again_and_a_write_never(fake, cluster, monkeypatch):
    """A busy API server that lets a poll time out twice does not fail the DAG run check; a
    trigger (a write) that times out is not repeated (a second one would start a second run)."""
    misses = {"GET": 2, "POST": 0}

    def busy(method, url, headers, body, timeout):
        if "/dagRuns" in url and misses.get(method, 0) > 0:
            misses[method] -= 1
            raise transport.NoAnswer(f"{method} {url}: timed out")
        return fake(method, url, headers, body, timeout)

    monkeypatch.setattr(af, "urllib_transport", busy)
    results = run(cluster(), ["airflow.dag_run"])
    assert results["airflow.dag_run"].status == PASS, results["airflow.dag_run"].reason
    assert misses["GET"] == 0

    api = af.AirflowApi("http://a:8090", "checks", "s3cret", transport=busy)
    misses["POST"] = 1
    triggers = sum(1 for method, path in fake.calls if method == "POST" and path.endswith("/dagRuns"))
    with pytest.raises(transport.NoAnswer):
        api.trigger(af.FANOUT_DAG, {})
    assert sum(1 for method, path in fake.calls if method == "POST" and path.endswith("/dagRuns")) == triggers


def test_a_read_that_never_gets_an_answer_says_how_often_it_asked(fake):
    def silent(method, url, headers, body, timeout):
        if method == "GET":
            raise transport.NoAnswer(f"{method} {url}: timed out")
        return fake(method, url, headers, body, timeout)

    api = af.AirflowApi("http://a:8090", "checks", "s3cret", transport=silent, timeout=1.0)
    with pytest.raises(transport.NoAnswer, match=r"timed out \(3 tries of 1 s\)"):
        api.run(af.FANOUT_DAG, "manual__x")


def test_a_socket_timeout_is_no_answer_and_a_refusal_is_not(monkeypatch):
    import urllib.error
    import urllib.request

    def opener(error):
        def urlopen(*args, **kwargs):
            raise error

        return urlopen

    monkeypatch.setattr(urllib.request, "urlopen", opener(urllib.error.URLError(TimeoutError("timed out"))))
    with pytest.raises(transport.NoAnswer):
        transport.urllib_transport("GET", "http://a/x", {}, None, 1.0)
    monkeypatch.setattr(urllib.request, "urlopen", opener(TimeoutError("timed out")))
    with pytest.raises(transport.NoAnswer):
        transport.urllib_transport("GET", "http://a/x", {}, None, 1.0)
    monkeypatch.setattr(
        urllib.request, "urlopen", opener(urllib.error.URLError(ConnectionRefusedError(111, "refused")))
    )
    with pytest.raises(af.CheckError) as refused:
        transport.urllib_transport("GET", "http://a/x", {}, None, 1.0)
    assert not isinstance(refused.value, transport.NoAnswer)


def test_an_https_api_server_is_verified_against_the_declared_ca(fake, cluster, monkeypatch):
    trusted: list[str] = []

    def https_transport(ca_file: str) -> Any:
        trusted.append(ca_file)
        return fake

    monkeypatch.setattr(af, "https_transport", https_transport)
    results = run(
        cluster(endpoint="https://10.0.0.11:8090", ca_file="/etc/clusterforge/tls/ca.crt"), ["airflow.health"]
    )
    assert results["airflow.health"].status == PASS
    assert trusted == ["/etc/clusterforge/tls/ca.crt"]
    unverified = run(cluster(endpoint="https://10.0.0.11:8090"), ["airflow.health"])["airflow.health"]
    assert unverified.status == ERROR and "https endpoint and no ca_file" in unverified.reason
