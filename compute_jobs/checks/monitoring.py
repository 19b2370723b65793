"""Monitoring checks: Prometheus scrapes every declared target, counts every engine's workers, and
its worker-count alert fires when a worker stops and clears when it returns.

``engines.monitoring`` in cluster.json::

    {
      "url": "https://10.0.0.11:9090",                     # Prometheus behind its HTTPS gateway
      "ca_file": "/etc/clusterforge/tls/ca.crt",
      "credentials_file": "/etc/clusterforge/monitoring/client/prometheus.credentials",  # user:password
      "scrape_interval": "15s", "evaluation_interval": "15s", "alert_for": "1m",
      "jobs": {
        "node": {"targets": {"node-1": "10.0.0.11:9100", ...}},
        "dask": {"targets": {"node-1": "10.0.0.11:8787"}, "workers": 2,
                 "workers_query": "sum(dask_scheduler_workers{job=\\"dask\\"})",
                 "alert": "DaskWorkersBelowDeclared"}
      },
      "drill": {"alert": "DaskWorkersBelowDeclared", "host": "node-2", "unit": "dask-worker@0.service",
                "stop": ["sudo", "-n", "/usr/bin/systemctl", "stop", "dask-worker@0.service"],
                "start": ["sudo", "-n", "/usr/bin/systemctl", "start", "dask-worker@0.service"]}
    }
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from compute_jobs.context import CheckContext
from compute_jobs.model import FAIL, PASS, SKIP, Check, CheckError, Param, Result, register
from compute_jobs.remote import run_on
from compute_jobs.transport import Transport, https_transport, read_user_password

# Alerts every Prometheus of the monitoring role loads, besides one per engine job.
BASE_ALERTS = ("TargetDown", "DiskAlmostFull", "CertificateExpiring")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``15s``, ``1m30s``) in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CheckError(f"'{text}' is not a Prometheus duration (15s, 1m30s)")
    return sum(int(n) * _UNITS[u] for n, u in parts)


class Prometheus:
    """Prometheus's HTTP API through its gateway: GET, the JSON ``data`` of a successful answer."""

    def __init__(self, settings: dict[str, Any], transport: Transport, credentials: tuple[str, str]) -> None:
        self.url = str(settings["url"]).rstrip("/")
        self.transport = transport
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}

    def status(self, path: str, authenticated: bool = True) -> int:
        status, _ = self.transport("GET", self.url + path, self.headers if authenticated else {}, None, 10.0)
        return status

    def get(self, path: str, **query: str) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        status, raw = self.transport("GET", url, self.headers, None, 15.0)
        try:
            answer = json.loads(raw.decode("utf-8"))
        except ValueError:
            answer = {}
        if status != 200 or answer.get("status") != "success":
            raise CheckError(f"GET {url}: HTTP {status} {answer.get('error') or raw[:200]!r}")
        return answer.get("data")

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        data = self.get("/api/v1/query", query=expr)
        return [(item.get("metric", {}), float(item["value"][1])) for item in data.get("result", [])]

    def alert_state(self, name: str) -> str:
        """``firing``, ``pending`` or ``inactive`` (no such alert active) of the alert NAME."""
        states = {
            a.get("state")
            for a in self.get("/api/v1/alerts").get("alerts", [])
            if a["labels"].get("alertname") == name
        }
        return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


def connect(
    ctx: CheckContext, transport_factory: Callable[[str], Transport]
) -> tuple[dict[str, Any], Prometheus]:
    settings = dict(ctx.cluster.engines.get("monitoring", {}))
    for key in ("url", "ca_file", "credentials_file", "jobs"):
        if not settings.get(key):
            raise CheckError(f"{ctx.cluster.source}: engines.monitoring needs {key}")
    credentials = read_user_password(settings["credentials_file"], "playbooks/monitoring.yml")
    return settings, Prometheus(settings, transport_factory(settings["ca_file"]), credentials)


@register
class MonitoringTargets(Check):
    name = "monitoring.targets"
    category = "correctness"
    scope = "cluster"
    engine = "monitoring"
    tags = frozenset({"monitoring"})
    description = (
        "Prometheus scrapes every declared node and engine, counts each engine's workers, loads the alerts"
    )
    correctness_rule = (
        "every declared target is up; each engine's worker count equals the inventory's; each service "
        "exporter reaches its service (and Airflow's scheduler heartbeat is fresh); every node "
        "exports the certificate expiry metric; every alert rule is loaded; a request without "
        "credentials gets 401"
    )
    placement_rule = "targets up == the targets engines.monitoring.jobs declares"
    timeout = 90.0

    def __init__(self, transport_factory: Callable[[str], Transport] | None = None) -> None:
        self.transport_factory = transport_factory or https_transport

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings, prom = connect(ctx, self.transport_factory)
        jobs: dict[str, dict[str, Any]] = settings["jobs"]
        anonymous = prom.status("/api/v1/targets", authenticated=False)
        yield ctx.compare(
            "refused",
            "refused" if anonymous == 401 else f"answered HTTP {anonymous}",
            name="monitoring.targets.anonymous",
            rule="Prometheus is reachable only through its gateway, which answers 401 without credentials",
            details={"status": anonymous},
        )
        # A freshly (re)started Prometheus has not scraped every target yet: wait up to two intervals.
        wait = 2 * duration_seconds(str(settings.get("scrape_interval") or "15s")) + 5
        deadline = time.monotonic() + min(wait, max(1.0, ctx.remaining() - 30))
        expected = {
            f"{job}/{node}": target
            for job, spec in jobs.items()
            for node, target in spec.get("targets", {}).items()
        }
        while True:
            health = {}
            for t in prom.get("/api/v1/targets", state="active").get("activeTargets", []):
                labels = t.get("labels", {})
                key = f"{labels.get('job')}/{labels.get('node')}"
                if key in expected and labels.get("instance") == expected[key]:
                    health[key] = (t.get("health"), t.get("lastError", ""))
            up = sorted(k for k, (h, _) in health.items() if h == "up")
            if len(up) == len(expected) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        down = {}
        for key in expected:
            if key not in up:
                state, error = health.get(key, ("not a target", ""))
                down[key] = error or state
        yield ctx.compare_sets(
            sorted(expected),
            up,
            name="monitoring.targets.up",
            rule="every target engines.monitoring.jobs declares is scraped with health up",
            details={"down": down} if down else None,
        )
        for job, spec in sorted(jobs.items()):
            if not spec.get("workers_query"):
                continue
            series = prom.query(spec["workers_query"])
            observed: Any = series[0][1] if series else "no series: the engine exports no worker count"
            yield ctx.compare(
                int(spec.get("workers", 0)),
                int(observed) if isinstance(observed, float) else observed,
                name=f"monitoring.targets.{job}.workers",
                rule=f"{spec['workers_query']} equals the workers the inventory declares",
                details={"query": spec["workers_query"]},
            )
        for job, spec in sorted(jobs.items()):
            for what, expr in sorted((spec.get("health") or {}).items()):
                series = prom.query(expr)
                answer: Any = series[0][1] if series else "no series: the exporter exports nothing for it"
                yield ctx.compare(
                    1,
                    int(answer) if isinstance(answer, float) and answer == answer else answer,
                    name=f"monitoring.targets.{job}.{what}",
                    rule=f"{expr} answers 1",
                    details={"query": expr},
                )
        nodes = sorted(jobs.get("node", {}).get("targets", {}))
        exported = sorted(
            {
                labels.get("node", "")
                for labels, _ in prom.query("count by (node) (clusterforge_certificate_not_after_seconds)")
            }
        )
        yield ctx.compare_sets(
            nodes,
            exported,
            name="monitoring.targets.certificates",
            rule="every node exports its certificates' expiry (clusterforge_certificate_not_after_seconds)",
        )
        rules = prom.get("/api/v1/rules", type="alert")
        loaded = sorted({r.get("name") for g in rules.get("groups", []) for r in g.get("rules", [])})
        wanted = sorted(
            set(BASE_ALERTS)
            | {s["alert"] for s in jobs.values() if s.get("alert")}
            | {a for s in jobs.values() for a in s.get("alerts") or []}
        )
        yield ctx.compare_sets(
            wanted,
            [a for a in loaded if a in wanted],
            name="monitoring.targets.rules",
            rule="Prometheus has loaded every alert rule of the monitoring role",
            details={"loaded": loaded},
        )


@register
class MonitoringAlert(Check):
    name = "monitoring.alert"
    category = "resilience"
    scope = "cluster"
    engine = "monitoring"
    also_uses = frozenset({"dask"})  # the drill stops a Dask worker
    tags = frozenset({"monitoring"})
    description = (
        "Stop one Dask worker: the worker-count alert fires within its window, and clears after it returns"
    )
    params = (Param("poll", float, 1.0, "seconds between two looks at the alert", 0.1, 60),)
    correctness_rule = (
        "the alert is inactive with every worker up; it fires within alert_for + 2 scrape + 2 "
        "evaluation intervals + 30 s of the stop; it is inactive again within 2 scrape + 2 evaluation "
        "intervals + 90 s of the start"
    )
    timeout = 420.0

    def __init__(self, transport_factory: Callable[[str], Transport] | None = None) -> None:
        self.transport_factory = transport_factory or https_transport

    def wait_state(
        self, prom: Prometheus, alert: str, want: Callable[[str], bool], limit: float, poll: float
    ) -> tuple[str, float]:
        start = time.monotonic()
        while True:
            state = prom.alert_state(alert)
            elapsed = time.monotonic() - start
            if want(state) or elapsed > limit:
                return state, elapsed
            time.sleep(poll)

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings, prom = connect(ctx, self.transport_factory)
        drill = dict(settings.get("drill") or {})
        if not drill:
            yield ctx.result(
                status=SKIP,
                reason="the alert drill is off (monitoring_alert_drill, default cluster_resilience_checks)",
            )
            return
        for key in ("alert", "host", "stop", "start"):
            if not drill.get(key):
                raise CheckError(f"{ctx.cluster.source}: engines.monitoring.drill needs {key}")
        alert = str(drill["alert"])
        scrape = duration_seconds(str(settings.get("scrape_interval") or "15s"))
        evaluation = duration_seconds(str(settings.get("evaluation_interval") or "15s"))
        window = duration_seconds(str(settings.get("alert_for") or "1m"))
        fire_limit = window + 2 * scrape + 2 * evaluation + 30
        clear_limit = 2 * scrape + 2 * evaluation + 90
        if ctx.remaining() < fire_limit + clear_limit + 30:
            raise CheckError(
                f"the drill needs {fire_limit + clear_limit + 30:.0f} s and the check has "
                f"{ctx.remaining():.0f} s left: raise monitoring.alert's timeout or shorten "
                "monitoring_alert_for"
            )
        before = prom.alert_state(alert)
        yield ctx.compare(
            "inactive",
            before,
            name="monitoring.alert.quiet",
            rule=f"{alert} is inactive while every worker is up",
        )
        if before != "inactive":
            return
        host = str(drill["host"])
        unit = str(drill.get("unit") or "the worker")

        def worker(action: str) -> None:
            run_on(host, list(drill[action]), 60, f"{action} {unit} on {host}")

        worker("stop")
        stopped = True
        try:
            state, fired = self.wait_state(prom, alert, lambda s: s == "firing", fire_limit, ctx.params.poll)
            yield ctx.compare(
                "firing",
                state,
                name="monitoring.alert.fires",
                rule=f"{alert} fires within {fire_limit:.0f} s of the stop (for: {window:.0f} s)",
                details={"seconds": round(fired, 1), "host": host, "unit": unit},
            )
            worker("start")
            stopped = False
            state, cleared = self.wait_state(
                prom, alert, lambda s: s == "inactive", clear_limit, ctx.params.poll
            )
            yield ctx.compare(
                "inactive",
                state,
                name="monitoring.alert.clears",
                rule=f"{alert} is inactive within {clear_limit:.0f} s of the start",
                details={"seconds": round(cleared, 1)},
            )
            yield ctx.result(
                "monitoring.alert.timing",
                category="performance",
                status=PASS if state == "inactive" else FAIL,
                metric="alert_fire_seconds",
                value=round(fired, 1),
                unit="s",
                better="lower",
                reason="" if state == "inactive" else "the alert did not clear",
                details={
                    "fire_seconds": round(fired, 1),
                    "clear_seconds": round(cleared, 1),
                    "for_seconds": window,
                },
            )
        finally:
            if stopped:
                worker("start")
