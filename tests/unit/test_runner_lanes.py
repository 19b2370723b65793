"""Checks that do not disturb each other run side by side; performance and resilience stay serial."""

from __future__ import annotations

import threading
import time
from typing import Any

from compute_jobs.model import PASS, Check, Registry
from compute_jobs.runner import RunConfig, Runner, plan_lanes

LOG: list[tuple[str, str, float]] = []
LOCK = threading.Lock()


def _check(name: str, category: str, engine: str | None = None, seconds: float = 0.6) -> type[Check]:
    class Fake(Check):
        def run(self, ctx: Any):
            with LOCK:
                LOG.append((self.name, "start", time.monotonic()))
            time.sleep(seconds)
            with LOCK:
                LOG.append((self.name, "end", time.monotonic()))
            yield ctx.compare(1, 1)

    Fake.name = name
    Fake.category = category
    Fake.scope = "cluster"
    Fake.engine = None
    Fake.tags = frozenset({name.split(".")[0]})
    Fake.description = name
    Fake.__name__ = name.replace(".", "_")
    return Fake


CHECKS = [
    _check("celery.canvas", "correctness"),
    _check("celery.performance", "performance"),
    _check("celery.resilience", "resilience"),
    _check("dask.known_answer", "correctness"),
    _check("mpi.pi", "correctness"),
    _check("mpi.placement", "placement"),
    _check("spark.known_answer", "correctness"),
]


def test_lanes_group_engines_that_share_services_and_leave_disturbing_checks_serial():
    lanes, serial = plan_lanes(CHECKS)
    assert [[c.name for c in lane] for lane in lanes] == [
        ["celery.canvas"],
        ["dask.known_answer", "spark.known_answer"],  # Airflow/Luigi/Dask/Spark share the clusters
        ["mpi.pi", "mpi.placement"],
    ]
    assert [c.name for c in serial] == ["celery.performance", "celery.resilience"]


def test_lanes_run_side_by_side_then_the_serial_checks_one_by_one(cj_cluster):
    local = Registry()
    for cls in CHECKS:
        local.register(cls)
    LOG.clear()
    cluster = cj_cluster()
    outcome = Runner(local).run(RunConfig(cluster=cluster, target="a", scope="cluster", lanes=True))
    assert [r.name for r in outcome.results] == [c.name for c in CHECKS]  # the checks' order
    assert {r.status for r in outcome.results} == {PASS}
    times = {(name, edge): at for name, edge, at in LOG}
    # two lanes at once, the longest first: the Dask/Spark and the MPI lanes overlap, the Celery
    # lane waits for one of them
    assert times[("mpi.pi", "start")] < times[("dask.known_answer", "end")]
    lane_checks = [c.name for c in CHECKS if c.category not in ("performance", "resilience")]
    for name in lane_checks:
        at = times[(name, "start")]
        running = [n for n in lane_checks if times[(n, "start")] <= at < times[(n, "end")]]
        assert len(running) <= 2, (name, running)
    first_free = min(times[("dask.known_answer", "end")], times[("mpi.pi", "end")])
    assert times[("celery.canvas", "start")] >= first_free
    # performance and resilience start only once every lane is done, and one at a time
    lanes_done = max(
        at
        for (name, edge), at in times.items()
        if edge == "end" and name not in ("celery.performance", "celery.resilience")
    )
    assert times[("celery.performance", "start")] >= lanes_done
    assert times[("celery.resilience", "start")] >= times[("celery.performance", "end")]


def test_without_lanes_every_check_runs_alone(cj_cluster):
    local = Registry()
    for cls in CHECKS[:3]:
        local.register(cls)
    LOG.clear()
    Runner(local).run(RunConfig(cluster=cj_cluster(), target="a", scope="cluster"))
    edges = [edge for _, edge, _ in LOG]
    assert edges == ["start", "end"] * 3


def test_a_shared_session_is_released_before_another_engine_runs_one_by_one(cj_cluster):
    """The shared SparkSession holds every Spark core: an Airflow check that runs a Spark stage of
    its own after the Spark checks must not wait for cores the run itself keeps."""
    from compute_jobs import model

    spark = _check("spark.performance", "performance")
    airflow = _check("airflow.resilience", "resilience")
    local = Registry()
    for cls in (spark, airflow):
        local.register(cls)
    LOG.clear()
    saved = dict(model.SHARED_SESSIONS)
    model.SHARED_SESSIONS.clear()
    released = ("spark session", "released", 0.0)
    model.register_shared_session("spark", lambda: LOG.append(released))
    try:
        Runner(local).run(RunConfig(cluster=cj_cluster(), target="a", scope="cluster", lanes=True))
    finally:
        model.SHARED_SESSIONS.clear()
        model.SHARED_SESSIONS.update(saved)
    assert [(name, edge) for name, edge, _ in LOG] == [
        ("spark.performance", "start"),
        ("spark.performance", "end"),
        ("spark session", "released"),
        ("airflow.resilience", "start"),
        ("airflow.resilience", "end"),
    ]


DRILLS = [
    _check("airflow.resilience", "resilience"),
    _check("celery.resilience", "resilience"),
    _check("dask.resilience", "resilience", seconds=1.2),  # the Celery drill ends first
    _check("monitoring.alert", "resilience"),
    # Starts when the Celery drill ends, before the Dask one: still running when the alert drill starts.
    _check("spark.resilience", "resilience", seconds=1.2),
]
DRILLS[3].also_uses = frozenset({"dask"})  # its drill stops a Dask worker
PIPELINE = {"executor": "celery", "pipeline_backends": {"generate": "dask", "aggregate": "spark"}}
ENGINES = {"airflow": PIPELINE, "celery": {}, "dask": {}, "monitoring": {}, "spark": {}}


def run_drills(cluster: Any, lanes: bool = True) -> dict[tuple[str, str], float]:
    local = Registry()
    for cls in DRILLS:
        local.register(cls)
    LOG.clear()
    outcome = Runner(local).run(RunConfig(cluster=cluster, target="a", scope="cluster", lanes=lanes))
    assert [r.name for r in outcome.results] == [c.name for c in DRILLS]  # the checks' order
    assert {r.status for r in outcome.results} == {PASS}
    return {(name, edge): at for name, edge, at in LOG}


def overlap(times: dict[tuple[str, str], float], one: str, other: str) -> bool:
    return times[(one, "start")] < times[(other, "end")] and times[(other, "start")] < times[(one, "end")]


def test_resilience_checks_that_share_no_engine_run_side_by_side(cj_cluster):
    times = run_drills(cj_cluster(engines=ENGINES))
    names = [c.name for c in DRILLS]
    # Airflow's pipeline runs on Dask, Spark and its Celery executor: it shares an engine with every
    # other drill, so it runs alone, first (its place in the list)
    assert not any(overlap(times, "airflow.resilience", other) for other in names[1:])
    assert all(times[(other, "start")] >= times[("airflow.resilience", "end")] for other in names[1:])
    assert overlap(times, "celery.resilience", "dask.resilience")
    # the alert drill stops a Dask worker: after the Dask drill, beside the Spark one
    assert times[("monitoring.alert", "start")] >= times[("dask.resilience", "end")]
    assert overlap(times, "monitoring.alert", "spark.resilience")
    for name in names:
        at = times[(name, "start")]
        assert sum(times[(n, "start")] <= at < times[(n, "end")] for n in names) <= 2, name


def test_without_its_backends_declared_the_airflow_drill_overlaps_the_others(cj_cluster):
    times = run_drills(cj_cluster(engines={**ENGINES, "airflow": {}}))
    assert overlap(times, "airflow.resilience", "celery.resilience")


def test_without_lanes_the_drills_run_one_by_one(cj_cluster):
    times = run_drills(cj_cluster(engines=ENGINES), lanes=False)
    names = [c.name for c in DRILLS]
    assert not any(overlap(times, a, b) for a in names for b in names if a < b)
