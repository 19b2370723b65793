"""monitoring.targets and monitoring.alert against a fake Prometheus behind its gateway (HTTP) and a fake
worker host (the stop and start commands of the drill)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import pytest
from checkrun import run_checks

from compute_jobs.checks import load_all
from compute_jobs.checks import monitoring as mon
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, CheckError, Result

load_all()

AUTH = "Basic " + base64.b64encode(b"clusterforge:s3cret").decode()
JOBS = {
    "node": {"targets": {"a": "10.0.0.11:9100", "b": "10.0.0.12:9100"}},
    "dask": {
        "targets": {"a": "10.0.0.11:8787"},
        "workers": 2,
        "workers_query": 'sum(dask_scheduler_workers{job="dask"})',
        "alert": "DaskWorkersBelowDeclared",
    },
}
DRILL = {
    "alert": "DaskWorkersBelowDeclared",
    "host": "b",
    "unit": "dask-worker@0.service",
    "stop": ["sudo", "-n", "/usr/bin/systemctl", "stop", "dask-worker@0.service"],
    "start": ["sudo", "-n", "/usr/bin/systemctl", "start", "dask-worker@0.service"],
}


class Clock:
    """time.monotonic and time.sleep of the check: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakePrometheus:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.anonymous_allowed = False
        self.down: set[str] = set()  # "job/node" scraped with health down
        self.workers = 2.0
        self.exports_workers = True
        self.certificate_nodes = ["a", "b"]
        self.rules = ["TargetDown", "DiskAlmostFull", "CertificateExpiring", "DaskWorkersBelowDeclared"]
        self.fire_after = 20.0  # seconds from the stop until the alert fires (None: never)
        self.clear_after = 10.0  # seconds from the start until it is inactive again (None: never)
        self.firing_before = False
        self.stopped_at: float | None = None
        self.started_at: float | None = None
        self.commands: list[tuple[str, list[str]]] = []
        self.jobs = JOBS
        self.health: dict[str, str | None] = {}  # query -> its answer (None: no series)

    def run_on(self, host: str, command: list[str], timeout: float, what: str, hint: str = "") -> float:
        self.commands.append((host, command))
        if command[-2] == "stop":
            self.stopped_at, self.started_at = self.clock.now, None
        else:
            self.started_at = self.clock.now
        return 0.1

    def state(self) -> str:
        now = self.clock.now
        if self.firing_before:
            return "firing"
        if self.stopped_at is None:
            return "inactive"
        if (
            self.started_at is not None
            and self.clear_after is not None
            and now - self.started_at >= self.clear_after
        ):
            return "inactive"
        if self.fire_after is not None and now - self.stopped_at >= self.fire_after:
            return "firing"
        return "pending"

    def transport(self, method: str, url: str, headers: dict[str, str], body: Any, timeout: float):
        if headers.get("Authorization") != AUTH and not self.anonymous_allowed:
            return 401, b"<html>401 Authorization Required</html>"
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        path = parts.path
        if path == "/api/v1/targets":
            active = []
            for job, spec in self.jobs.items():
                for node, instance in spec["targets"].items():
                    key = f"{job}/{node}"
                    active.append(
                        {
                            "labels": {"job": job, "node": node, "instance": instance},
                            "health": "down" if key in self.down else "up",
                            "lastError": "connection refused" if key in self.down else "",
                        }
                    )
            data: Any = {"activeTargets": active}
        elif path == "/api/v1/query":
            expr = query["query"]
            if expr.startswith("count by (node)"):
                result = [{"metric": {"node": n}, "value": [0, "3"]} for n in self.certificate_nodes]
            elif "dask_scheduler_workers" in expr:
                result = [{"metric": {}, "value": [0, str(self.workers)]}] if self.exports_workers else []
            elif expr in self.health:
                answer = self.health[expr]
                result = [] if answer is None else [{"metric": {}, "value": [0, answer]}]
            else:
                result = []
            data = {"resultType": "vector", "result": result}
        elif path == "/api/v1/rules":
            data = {"groups": [{"name": "clusterforge", "rules": [{"name": r} for r in self.rules]}]}
        elif path == "/api/v1/alerts":
            state = self.state()
            alerts = (
                [] if state == "inactive" else [{"labels": {"alertname": DRILL["alert"]}, "state": state}]
            )
            data = {"alerts": alerts}
        else:
            return 404, b"not found"
        return 200, json.dumps({"status": "success", "data": data}).encode()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePrometheus:
    clock = Clock()
    server = FakePrometheus(clock)
    monkeypatch.setattr(mon, "https_transport", lambda ca_file: server.transport)
    monkeypatch.setattr(mon, "run_on", server.run_on)
    monkeypatch.setattr(mon, "time", clock)
    return server


@pytest.fixture
def cluster(cj_cluster, tmp_path):
    credentials = tmp_path / "prometheus.credentials"
    credentials.write_text("clusterforge:s3cret\n")

    def make(**engine: Any) -> Any:
        settings: dict[str, Any] = {
            "url": "https://10.0.0.11:9090",
            "ca_file": "/etc/clusterforge/tls/ca.crt",
            "credentials_file": str(credentials),
            "scrape_interval": "5s",
            "evaluation_interval": "5s",
            "alert_for": "15s",
            "jobs": JOBS,
            "drill": DRILL,
        }
        settings.update(engine)
        return cj_cluster(engines={"monitoring": settings})

    return make


def statuses(results: dict[str, Result]) -> dict[str, str]:
    return {n: r.status for n, r in results.items()}


def test_durations():
    assert mon.duration_seconds("15s") == 15
    assert mon.duration_seconds("1m30s") == 90
    assert mon.duration_seconds("500ms") == 0.5
    for bad in ("", "15", "1x", "s15"):
        with pytest.raises(CheckError):
            mon.duration_seconds(bad)


def test_every_target_up_and_counted(fake, cluster, cj_validator):
    validator = cj_validator("result.schema.json")
    results = run_checks(cluster(), ["monitoring.targets"])
    for result in results.values():
        validator.validate(result.to_dict())
    assert statuses(results) == {
        "monitoring.targets.anonymous": PASS,
        "monitoring.targets.up": PASS,
        "monitoring.targets.dask.workers": PASS,
        "monitoring.targets.certificates": PASS,
        "monitoring.targets.rules": PASS,
    }


def test_an_open_prometheus_fails(fake, cluster):
    fake.anonymous_allowed = True
    assert run_checks(cluster(), ["monitoring.targets"])["monitoring.targets.anonymous"].status == FAIL


def test_a_target_down_fails_and_is_named(fake, cluster):
    fake.down = {"node/b"}
    result = run_checks(cluster(), ["monitoring.targets"])["monitoring.targets.up"]
    assert result.status == FAIL and result.missing == ["node/b"]
    assert result.details["down"] == {"node/b": "connection refused"}


def test_an_engine_that_exports_nothing_fails(fake, cluster):
    fake.exports_workers = False
    result = run_checks(cluster(), ["monitoring.targets"])["monitoring.targets.dask.workers"]
    assert result.status == FAIL and "no series" in result.observed


def test_a_missing_worker_fails_the_count(fake, cluster):
    fake.workers = 1.0
    assert run_checks(cluster(), ["monitoring.targets"])["monitoring.targets.dask.workers"].status == FAIL


def test_a_node_without_certificate_metrics_fails(fake, cluster):
    fake.certificate_nodes = ["a"]
    result = run_checks(cluster(), ["monitoring.targets"])["monitoring.targets.certificates"]
    assert result.status == FAIL and result.missing == ["b"]


def test_a_missing_rule_fails(fake, cluster):
    fake.rules = ["TargetDown", "DiskAlmostFull", "CertificateExpiring"]
    result = run_checks(cluster(), ["monitoring.targets"])["monitoring.targets.rules"]
    assert result.status == FAIL and result.missing == ["DaskWorkersBelowDeclared"]


PG_UP = 'min(pg_up{job="postgresql"})'
HEARTBEAT = '(time() - max(airflow_scheduler_heartbeat_timestamp_seconds{job="postgresql"})) < bool 60'
WITH_POSTGRESQL = JOBS | {
    "postgresql": {
        "targets": {"a": "10.0.0.11:9187"},
        "workers": 0,
        "workers_query": "",
        "alert": "",
        "health": {"reachable": PG_UP, "airflow_scheduler_heartbeat": HEARTBEAT},
        "alerts": ["PostgreSQLDown", "AirflowSchedulerHeartbeatMissing"],
    }
}


@pytest.fixture
def with_postgresql(fake):
    fake.jobs = WITH_POSTGRESQL
    fake.health = {PG_UP: "1", HEARTBEAT: "1"}
    fake.rules = [*fake.rules, "PostgreSQLDown", "AirflowSchedulerHeartbeatMissing"]
    return fake


def test_a_service_exporter_is_up_and_healthy(with_postgresql, cluster):
    results = run_checks(cluster(jobs=WITH_POSTGRESQL), ["monitoring.targets"])
    assert statuses(results) == {
        "monitoring.targets.anonymous": PASS,
        "monitoring.targets.up": PASS,
        "monitoring.targets.dask.workers": PASS,
        "monitoring.targets.postgresql.airflow_scheduler_heartbeat": PASS,
        "monitoring.targets.postgresql.reachable": PASS,
        "monitoring.targets.certificates": PASS,
        "monitoring.targets.rules": PASS,
    }


@pytest.mark.parametrize(
    ("query", "answer", "name", "observed"),
    [
        (PG_UP, "0", "reachable", 0),  # the exporter answers, PostgreSQL does not
        (HEARTBEAT, "0", "airflow_scheduler_heartbeat", 0),  # the scheduler stopped beating
        (HEARTBEAT, None, "airflow_scheduler_heartbeat", "no series: the exporter exports nothing for it"),
        (PG_UP, "NaN", "reachable", "NaN"),
    ],
)
def test_an_unhealthy_service_fails_and_says_which(with_postgresql, cluster, query, answer, name, observed):
    with_postgresql.health[query] = answer
    result = run_checks(cluster(jobs=WITH_POSTGRESQL), ["monitoring.targets"])[
        f"monitoring.targets.postgresql.{name}"
    ]
    assert result.status == FAIL
    assert result.observed == observed or (observed == "NaN" and result.observed != result.observed)


def test_a_service_alert_rule_missing_fails(with_postgresql, cluster):
    with_postgresql.rules = [r for r in with_postgresql.rules if r != "AirflowSchedulerHeartbeatMissing"]
    result = run_checks(cluster(jobs=WITH_POSTGRESQL), ["monitoring.targets"])["monitoring.targets.rules"]
    assert result.status == FAIL and result.missing == ["AirflowSchedulerHeartbeatMissing"]


def test_unreadable_credentials_are_an_error(fake, cluster):
    result = run_checks(cluster(credentials_file="/nonexistent"), ["monitoring.targets"])[
        "monitoring.targets"
    ]
    assert result.status == ERROR and "monitoring.yml" in result.reason


def test_the_drill_fires_and_clears(fake, cluster):
    results = run_checks(cluster(), ["monitoring.alert"])
    assert statuses(results) == {
        "monitoring.alert.quiet": PASS,
        "monitoring.alert.fires": PASS,
        "monitoring.alert.clears": PASS,
        "monitoring.alert.timing": PASS,
    }
    assert [c[1][-2] for c in fake.commands] == ["stop", "start"]
    assert {c[0] for c in fake.commands} == {"b"}
    timing = results["monitoring.alert.timing"]
    assert 20 <= timing.details["fire_seconds"] <= 21 and 10 <= timing.details["clear_seconds"] <= 11


def test_an_alert_that_never_fires_fails_and_the_worker_comes_back(fake, cluster):
    fake.fire_after = None
    results = run_checks(cluster(), ["monitoring.alert"])
    assert results["monitoring.alert.fires"].status == FAIL
    assert [c[1][-2] for c in fake.commands] == ["stop", "start"]


def test_an_alert_that_never_clears_fails(fake, cluster):
    fake.clear_after = None
    results = run_checks(cluster(), ["monitoring.alert"])
    assert results["monitoring.alert.clears"].status == FAIL
    assert results["monitoring.alert.timing"].status == FAIL


def test_an_alert_firing_with_every_worker_up_fails_without_a_drill(fake, cluster):
    fake.firing_before = True
    results = run_checks(cluster(), ["monitoring.alert"])
    assert statuses(results) == {"monitoring.alert.quiet": FAIL}
    assert fake.commands == []


def test_no_drill_skips_with_the_reason(fake, cluster):
    result = run_checks(cluster(drill={}), ["monitoring.alert"])["monitoring.alert"]
    assert result.status == SKIP and "monitoring_alert_drill" in result.reason


@pytest.mark.parametrize(
    ("check", "control", "failing"),
    [
        (
            "monitoring.targets",
            "wrong-answer",
            {"monitoring.targets.anonymous", "monitoring.targets.dask.workers"},
        ),
        (
            "monitoring.targets",
            "missing-worker",
            {"monitoring.targets.up", "monitoring.targets.certificates", "monitoring.targets.rules"},
        ),
        (
            "monitoring.alert",
            "wrong-answer",
            {"monitoring.alert.quiet", "monitoring.alert.fires", "monitoring.alert.clears"},
        ),
    ],
)
def test_negative_controls(fake, cluster, check, control, failing):
    results = run_checks(cluster(), [check], inject=control)
    assert {n for n, r in results.items() if r.status == FAIL} == failing
