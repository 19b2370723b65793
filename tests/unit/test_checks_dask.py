"""Dask checks against a fake scheduler session: they pass on a healthy cluster, and FAIL when the
cluster (or a negative control) is wrong. The fake replaces only the boundary (DaskSession); the
checks' own judging, worker mapping and placement logic run for real."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from checkrun import run_checks

from compute_jobs.checks import dask as dask_checks
from compute_jobs.checks import load_all
from compute_jobs.checks.dask import ExpectedHost, WorkerInfo, label_workers
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Registry, Result, registry
from compute_jobs.runner import RunConfig, Runner

load_all()

DASK_CHECKS = ["dask.workers", "dask.known_answer", "dask.placement", "dask.throughput", "dask.resilience"]
MEMORY = 2 * 1024**3

HOSTS = [
    {"name": "a", "address": "10.0.0.1", "groups": ["head", "dask_scheduler"], "cores": 2, "memory_mb": 4096},
    {"name": "b", "address": "10.0.0.2", "groups": ["dask_workers"], "cores": 2, "memory_mb": 4096},
    {"name": "c", "address": "10.0.0.3", "groups": ["dask_workers"], "cores": 4, "memory_mb": 8192},
]


def engine(**overrides: Any) -> dict[str, Any]:
    settings = {
        "endpoint": "tls://10.0.0.1:8786",
        "config_dir": "/etc/clusterforge/dask/client",
        "expected_workers": ["b", "c"],
        "workers": {
            "b": {"address": "10.0.0.2", "nworkers": 1, "nthreads": 2, "memory_limit": MEMORY},
            "c": {"address": "10.0.0.3", "nworkers": 2, "nthreads": 2, "memory_limit": MEMORY},
        },
    }
    settings.update(overrides)
    return settings


class FakeSession:
    """Stands in for DaskSession: the scheduler's view and the workers' answers, with fault knobs."""

    def __init__(self, workers: list[WorkerInfo], **faults: Any) -> None:
        self.address = "tls://10.0.0.1:8786"
        self.live = list(workers)
        self.faults = faults
        self.pid = {w.address: 100 + i for i, w in enumerate(workers)}
        self.closed = False
        self.ntasks: list[int] = []
        self.killed: list[str] = []

    def close(self) -> None:
        self.closed = True

    def workers(self) -> list[WorkerInfo]:
        return list(self.live)

    def pids(self) -> dict[str, int]:
        return {w.address: self.pid[w.address] for w in self.live}

    def versions(self) -> tuple[dict[str, Any], str]:
        return {"dask": "2026.8.0"}, self.faults.get("version_problem", "")

    def arange_sum(self, n: int, chunk: int) -> int:
        return int(np.arange(n, dtype=np.int64).sum()) + self.faults.get("sum_offset", 0)

    def matmul(self, a: np.ndarray, b: np.ndarray, chunk: int) -> np.ndarray:
        product = a @ b
        product[0, 0] += self.faults.get("matmul_offset", 0.0)
        return product

    def groupby(self, keys: np.ndarray, values: np.ndarray, partitions: int) -> dict[str, np.ndarray]:
        import collections

        sums: dict[int, int] = collections.defaultdict(int)
        counts: dict[int, int] = collections.defaultdict(int)
        for k, v in zip(keys.tolist(), values.tolist(), strict=True):
            sums[k] += v
            counts[k] += 1
        order = sorted(sums)
        if self.faults.get("drop_group"):
            order = order[1:]
        return {
            "key": np.array(order, dtype=np.int64),
            "sum": np.array([sums[k] for k in order], dtype=np.int64),
            "count": np.array([counts[k] for k in order], dtype=np.int64),
        }

    def tagged_tasks(self, ntasks: int, sleep_s: float, timeout: float) -> tuple[list[str], list[str]]:
        busy = [w.address for w in self.live if w.address not in self.faults.get("idle", ())]
        ran = [busy[i % len(busy)] for i in range(ntasks)]
        return ran, sorted(set(ran))

    def noop_batch(self, ntasks: int) -> None:
        pass

    def round_trip(self) -> None:
        pass

    def squares_sum(
        self, ntasks: int, sleep_s: float, kill_after: int | None, timeout: float
    ) -> dict[str, Any]:
        self.ntasks.append(ntasks)
        victim = None
        pid = 0
        if kill_after is not None:
            victim = self.live[0].address
            pid = self.pid[victim]
            self.killed.append(victim)
            if self.faults.get("restarts", True):
                self.pid[victim] = pid + 1000  # the nanny started a new process on the same address
            else:
                self.live = [w for w in self.live if w.address != victim]
        return {
            "total": sum(i * i for i in range(ntasks)) + self.faults.get("resilience_offset", 0),
            "seconds": 1.5 if victim else 1.0,
            "victim": victim,
            "victim_pid": pid,
            "killed_at": time.monotonic() if victim else None,
        }


def healthy_workers() -> list[WorkerInfo]:
    return [
        WorkerInfo("tls://10.0.0.2:8790", "10.0.0.2", "b", 2, MEMORY),
        WorkerInfo("tls://10.0.0.3:8791", "10.0.0.3", "c-1", 2, MEMORY),
        WorkerInfo("tls://10.0.0.3:8790", "10.0.0.3", "c-0", 2, MEMORY),
    ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[FakeSession]]:
    """Install a FakeSession factory; returns the list of sessions the checks opened."""
    opened: list[FakeSession] = []
    opened_local: list[FakeSession] = []

    def install(workers: list[WorkerInfo] | None = None, **faults: Any) -> list[FakeSession]:
        def connect(settings: dict[str, Any], timeout: float) -> FakeSession:
            assert timeout > 0
            session = FakeSession(workers if workers is not None else healthy_workers(), **faults)
            opened.append(session)
            return session

        def local(nthreads: int, timeout: float) -> FakeSession:
            assert nthreads == 2 and timeout > 0
            session = FakeSession(healthy_workers())
            session.local = True
            opened_local.append(session)
            return session

        monkeypatch.setattr(dask_checks, "CONNECT", connect)
        monkeypatch.setattr(dask_checks, "LOCAL", local)
        return opened

    return install


def run(cluster: Any, names: list[str] = DASK_CHECKS, **config: Any) -> dict[str, Result]:
    return run_checks(cluster, names, **config)


def test_dask_checks_are_registered_as_cluster_checks_of_the_dask_engine():
    for name in DASK_CHECKS:
        cls = registry.get(name)
        assert cls.scope == "cluster" and cls.engine == "dask" and "dask" in cls.tags
    assert "compute_jobs.checks.dask" not in registry.import_errors


def test_healthy_cluster_passes_every_result(cj_cluster, fake, cj_validator):
    sessions = fake()
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}))
    assert set(results) == {
        "dask.workers",
        "dask.workers.versions",
        "dask.known_answer.arange_sum",
        "dask.known_answer.matmul",
        "dask.known_answer.groupby",
        "dask.placement",
        "dask.placement.results",
        "dask.throughput.tasks_per_s",
        "dask.throughput.round_trip",
        "dask.throughput.tasks_per_s_local",
        "dask.throughput.round_trip_local",
        "dask.resilience.baseline",
        "dask.resilience",
        "dask.resilience.recovered",
        "dask.resilience.extra_time",
        "dask.resilience.recovery",
    }
    validator = cj_validator("result.schema.json")
    for name, result in results.items():
        assert result.status == PASS, (name, result.reason)
        validator.validate(result.to_dict())
    assert results["dask.placement"].observed_workers == ["b/0", "c/0", "c/1"]
    assert results["dask.resilience.extra_time"].value == pytest.approx(0.5)
    # The same-run LocalCluster reference: its figures and the cluster-to-local ratios.
    local_rate = results["dask.throughput.tasks_per_s_local"]
    assert local_rate.unit == "tasks/s" and "local_cluster" in local_rate.details
    ratio = results["dask.throughput.tasks_per_s"].details["cluster_to_local"]
    assert ratio == pytest.approx(results["dask.throughput.tasks_per_s"].value / local_rate.value, rel=1e-2)
    assert all(s.closed for s in sessions) and len(sessions) == len(DASK_CHECKS)


def test_wrong_answer_control_fails_every_correctness_result(cj_cluster, fake):
    fake()
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), inject="wrong-answer")
    for name in (
        "dask.workers",
        "dask.known_answer.arange_sum",
        "dask.known_answer.matmul",
        "dask.known_answer.groupby",
        "dask.resilience",
    ):
        assert results[name].status == FAIL, name
        assert results[name].control == "wrong-answer"
    assert results["dask.throughput.tasks_per_s"].status == PASS


def test_missing_worker_control_fails_placement(cj_cluster, fake):
    fake()
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.placement"], inject="missing-worker")
    for name in ("dask.placement", "dask.placement.results"):
        assert results[name].status == FAIL
        assert results[name].missing == ["c/1"]
        assert results[name].control == "missing-worker"


def test_a_dead_worker_fails_inventory_and_placement(cj_cluster, fake):
    fake(healthy_workers()[:2])  # c's second process never registered
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.workers", "dask.placement"])
    assert results["dask.workers"].status == FAIL
    assert results["dask.workers"].observed["c"]["nworkers"] == 1
    assert results["dask.placement"].status == FAIL and results["dask.placement"].missing == ["c/1"]


def test_a_worker_that_takes_no_tasks_fails_placement(cj_cluster, fake):
    fake(idle={"tls://10.0.0.2:8790"})
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.placement"])
    assert results["dask.placement"].status == FAIL
    assert results["dask.placement"].missing == ["b/0"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("nthreads", 1), ("memory_limit", MEMORY // 2)],
)
def test_threads_or_memory_other_than_the_inventory_fail(cj_cluster, fake, field, value):
    workers = healthy_workers()
    first = workers[0]
    workers[0] = WorkerInfo(
        first.address,
        first.host,
        first.name,
        value if field == "nthreads" else first.nthreads,
        value if field == "memory_limit" else first.memory_limit,
    )
    fake(workers)
    result = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.workers"])["dask.workers"]
    assert result.status == FAIL
    assert result.observed["b"][field] == [value]


def test_version_mismatch_fails(cj_cluster, fake):
    fake(version_problem="Mismatched versions found: numpy 2.2.6 vs 2.3.0")
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.workers"])
    assert results["dask.workers.versions"].status == FAIL
    assert "numpy" in results["dask.workers.versions"].reason


@pytest.mark.parametrize(
    ("fault", "result"),
    [
        ({"sum_offset": 1}, "dask.known_answer.arange_sum"),
        ({"matmul_offset": 1e-3}, "dask.known_answer.matmul"),
        ({"drop_group": True}, "dask.known_answer.groupby"),
    ],
)
def test_a_wrong_engine_answer_fails(cj_cluster, fake, fault, result):
    fake(**fault)
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.known_answer"])
    assert results[result].status == FAIL, results[result].reason
    others = [r for n, r in results.items() if n != result]
    assert all(r.status == PASS for r in others)


def test_matmul_tolerance_accepts_rounding_but_not_errors(cj_cluster, fake):
    fake(matmul_offset=1e-15)
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.known_answer"])
    assert results["dask.known_answer.matmul"].status == PASS
    assert results["dask.known_answer.matmul"].tolerance == 16.0


def test_worker_not_restarted_fails_resilience(cj_cluster, fake):
    fake(restarts=False)
    cluster = cj_cluster(HOSTS, engines={"dask": engine()})
    local = Registry()
    local.register(registry.get("dask.resilience"))
    params = {"dask.resilience": {"recover_timeout": 1.0, "tasks": 8, "sleep": 0.0}}
    outcome = Runner(local).run(RunConfig(cluster=cluster, target="a", overrides=params))
    results = {r.name: r for r in outcome.results}
    assert results["dask.resilience"].status == PASS
    assert results["dask.resilience.recovered"].status == FAIL
    assert "not restarted" in results["dask.resilience.recovered"].reason
    assert "dask.resilience.recovery" not in results


def test_resilience_has_work_left_for_every_thread_when_the_kill_comes(cj_cluster, fake):
    """48 tasks on 3 x 32 threads would be over before a victim is chosen: 8 per thread instead."""
    wide = [WorkerInfo(w.address, w.host, w.name, 32, MEMORY) for w in healthy_workers()]
    sessions = fake(wide)
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.resilience"])
    assert results["dask.resilience"].status == PASS
    assert results["dask.resilience"].details["tasks"] == 8 * 96
    assert sessions[0].ntasks == [8 * 96, 8 * 96]
    fake()
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.resilience"])
    assert results["dask.resilience"].details["tasks"] == 48


def test_resilience_needs_two_workers(cj_cluster, fake):
    fake(healthy_workers()[:1])
    results = run(cj_cluster(HOSTS, engines={"dask": engine()}), ["dask.resilience"])
    assert results["dask.resilience"].status == ERROR
    assert "killing one would leave none" in results["dask.resilience"].reason


def test_without_engine_the_checks_skip(cj_cluster, fake):
    fake()
    results = run(cj_cluster(HOSTS))
    assert {r.status for r in results.values()} == {SKIP}


def test_engine_without_worker_layout_is_an_error_that_says_what_is_missing(cj_cluster, fake):
    fake()
    settings = engine()
    del settings["workers"]
    results = run(cj_cluster(HOSTS, engines={"dask": settings}), ["dask.workers"])
    assert results["dask.workers"].status == ERROR
    assert "engines.dask.workers" in results["dask.workers"].reason


def test_expected_workers_must_agree_with_the_layout(cj_cluster, fake):
    fake()
    settings = engine(expected_workers=["b"])
    results = run(cj_cluster(HOSTS, engines={"dask": settings}), ["dask.workers"])
    assert results["dask.workers"].status == ERROR
    assert "differs" in results["dask.workers"].reason


def test_workers_are_labelled_by_host_address_and_port_order():
    hosts = [ExpectedHost("b", "10.0.0.2", 1, 2, MEMORY), ExpectedHost("c", "10.0.0.3", 2, 2, MEMORY)]
    labels = label_workers(healthy_workers(), hosts)
    assert labels == {
        "tls://10.0.0.2:8790": "b/0",
        "tls://10.0.0.3:8790": "c/0",
        "tls://10.0.0.3:8791": "c/1",
    }
    stranger = WorkerInfo("tls://10.9.9.9:8790", "10.9.9.9", "x", 1, 1)
    assert label_workers([stranger], hosts) == {"tls://10.9.9.9:8790": "10.9.9.9/0"}
