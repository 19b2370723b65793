"""celery checks against a simulated Celery cluster: the fake client routes tasks to fake workers by
queue and runs the same task logic, so the checks' judging code is what passes or fails."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from checkrun import run_checks

from compute_jobs.checks import celery as celery_checks
from compute_jobs.checks import load_all
from compute_jobs.model import ERROR, FAIL, PASS, CheckError, Registry, Result, registry
from compute_jobs.runner import RunConfig, Runner

load_all()

CELERY_CHECKS = [
    "celery.workers",
    "celery.canvas",
    "celery.placement",
    "celery.performance",
    "celery.resilience",
]
WORKERS = {"w1": 2, "w2": 4}

TASKS = {
    "add": lambda x, y: x + y,
    "mul": lambda x, y: x * y,
    "square": lambda x: x * x,
    "xsum": sum,
    "echo": lambda v: v,
}


class FakeResult:
    def __init__(self, value: Any = None, error: str | None = None, state: str = "SUCCESS", info: Any = None):
        self.value, self.error, self.state, self.info = value, error, state, info

    def get(self, timeout: float) -> Any:
        if self.error:
            raise TimeoutError(self.error)
        return self.value


class FakeCluster:
    """Workers with queues and pool processes; knobs for the failures the checks must catch."""

    def __init__(self, workers: dict[str, int] = WORKERS, **faults: Any) -> None:
        self.faults = faults
        self.workers = {h: c for h, c in workers.items() if h != faults.get("absent")}
        self.pids = itertools.count(1000)
        self.restarts = 0


class FakeClient:
    shared_queue = "clusterforge"

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.faults = cluster.faults
        self.broker = {"host": "head", "unit": "clusterforge-redis.service"}
        self.killed: dict[int, bool] = {}

    def own_queue(self, host: str) -> str:
        return f"worker.{host}"

    def close(self) -> None:
        pass

    def reconnect(self) -> None:
        pass

    def stats(self, timeout: float) -> dict[str, dict[str, Any]]:
        wrong = self.faults.get("concurrency", {})
        return {
            f"celery@{h}": {"concurrency": wrong.get(h, c), "processes": list(range(c))}
            for h, c in self.cluster.workers.items()
        }

    def active_queues(self, timeout: float) -> dict[str, list[str]]:
        lost = self.faults.get("lost_own_queue")
        return {
            f"celery@{h}": sorted([self.shared_queue] + ([] if h == lost else [self.own_queue(h)]))
            for h in self.cluster.workers
        }

    def _consumer(self, queue: str | None) -> str | None:
        """The host whose worker takes a message from ``queue``."""
        if queue in (None, self.shared_queue):
            return next(iter(self.cluster.workers), None)
        host = queue.removeprefix("worker.")
        if host == self.faults.get("lost_own_queue") or host not in self.cluster.workers:
            return None
        return self.faults.get("misrouted", {}).get(host, host)

    def _run(self, task: str, args: tuple[Any, ...], host: str) -> Any:
        if task == "whoami":
            return {
                "token": args[0],
                "host": host,
                "worker": f"celery@{host}",
                "pid": next(self.cluster.pids),
            }
        value = TASKS[task](*args)
        if task == "add" and self.faults.get("wrong_add"):
            value += 1
        return value

    def submit(self, task: str, *args: Any, queue: str | None = None) -> FakeResult:
        host = self._consumer(queue)
        if host is None:
            return FakeResult(error="no worker consumes " + str(queue), state="PENDING")
        if task == "slow_double":
            pid = next(self.cluster.pids)
            return FakeResult(state="PROGRESS", info={"pid": pid, "host": host, "args": args})
        if self.cluster.restarts and host in self.faults.get("no_reconnect", ()):
            return FakeResult(error="worker never came back", state="PENDING")
        return FakeResult(self._run(task, args, host))

    def wait_state(self, result: FakeResult, states: tuple[str, ...], deadline: float) -> tuple[str, Any]:
        if "SUCCESS" in states and result.state == "PROGRESS":
            pid, host = result.info["pid"], result.info["host"]
            if self.killed.get(pid) and not self.faults.get("no_redelivery"):
                new_pid = pid if self.faults.get("same_process") else next(self.cluster.pids)
                result.state = "SUCCESS"
                result.info = {"pid": new_pid, "host": host, "value": 2 * result.info["args"][0]}
            return result.state, result.info
        return result.state, result.info

    def kill_pool_child(self, worker: str, pid: int, timeout: float) -> dict[str, Any]:
        self.killed[pid] = True
        return {"ok": f"killed pool process {pid}"}

    def restart_broker(self, timeout: float) -> float:
        if self.faults.get("no_sudo"):
            raise CheckError("broker restart `sudo -n ...` exited 1: a password is required")
        self.cluster.restarts += 1
        return 0.5

    def chord_sum_of_squares(self, n: int, timeout: float) -> int:
        members = [self._run("square", (i,), "w1") for i in range(1, n + 1)]
        if self.faults.get("lost_chord_member"):
            members.pop()
        return self._run("xsum", (members,), "w1")

    def chain_add_mul(self, timeout: float) -> int:
        return self._run("mul", (self._run("add", (2, 2), "w1"), 8), "w1")

    def group_add(self, n: int, timeout: float) -> list[int]:
        return [self._run("add", (i, i), "w1") for i in range(n)]

    def group_echo(self, n: int, timeout: float) -> tuple[float, list[int]]:
        values = [self._run("echo", (i,), "w1") for i in range(n)]
        if self.faults.get("reordered_group"):
            values.reverse()
        return n / 500.0, values

    def round_trip(self, value: int, timeout: float) -> tuple[float, Any]:
        return 0.0015, self._run("add", (value, value), "w1")


@pytest.fixture
def celery_cluster(cj_cluster):
    def make(workers: dict[str, int] = WORKERS) -> Any:
        hosts = [
            {
                "name": "head",
                "address": "127.0.0.1",
                "groups": ["head", "celery_broker"],
                "cores": 2,
                "memory_mb": 16,
            }
        ] + [
            {"name": h, "address": "127.0.0.1", "groups": ["celery_workers"], "cores": c, "memory_mb": 16}
            for h, c in workers.items()
        ]
        return cj_cluster(
            hosts, engines={"celery": {"config": "/nonexistent/celery.json", "workers": dict(workers)}}
        )

    return make


def run(
    cluster: Any, fake: FakeCluster, monkeypatch, names: list[str] = CELERY_CHECKS, **config: Any
) -> dict[str, Result]:
    monkeypatch.setattr(celery_checks, "CLIENT_FACTORY", lambda config: FakeClient(fake))
    return run_checks(cluster, names, target="head", scope="cluster", **config)


def failing(results: dict[str, Result]) -> set[str]:
    return {name for name, r in results.items() if r.status != PASS}


def test_healthy_cluster_passes_every_celery_check(celery_cluster, monkeypatch):
    results = run(celery_cluster(), FakeCluster(), monkeypatch)
    assert not failing(results), {n: (r.status, r.reason) for n, r in results.items() if r.status != PASS}
    # The smoke parameters' n = 10: the sum of squares 1..10, computed by the fake workers' tasks.
    assert results["celery.canvas"].observed == 10 * 11 * 21 // 6 == results["celery.canvas"].expected
    assert results["celery.performance.round_trip"].value == pytest.approx(1.5)
    assert results["celery.performance.group_throughput"].value == pytest.approx(500.0)
    assert results["celery.resilience.reconnected"].observed_workers == ["w1", "w2"]


def test_chord_of_100_squares_is_338350(celery_cluster, monkeypatch):
    cluster = celery_cluster()
    monkeypatch.setattr(celery_checks, "CLIENT_FACTORY", lambda config: FakeClient(FakeCluster()))
    local = Registry()
    local.register(registry.get("celery.canvas"))
    outcome = Runner(local).run(RunConfig(cluster=cluster, target="head", scope="cluster"))
    chord = next(r for r in outcome.results if r.name == "celery.canvas")
    assert chord.status == PASS and chord.expected == 338350 and chord.observed == 338350


@pytest.mark.parametrize(
    ("faults", "expected_failures"),
    [
        (
            {"absent": "w2"},
            {
                "celery.workers",
                "celery.placement",
                "celery.resilience.redelivered",
                "celery.resilience.reconnected",
            },
        ),
        ({"concurrency": {"w2": 1}}, {"celery.workers.concurrency"}),
        (
            {"lost_own_queue": "w1"},
            {
                "celery.workers.queues",
                "celery.placement",
                "celery.resilience.redelivered",
                "celery.resilience.reconnected",
            },
        ),
        ({"misrouted": {"w1": "w2"}}, {"celery.placement", "celery.resilience.reconnected"}),
        ({"lost_chord_member": True}, {"celery.canvas"}),
        (
            {"wrong_add": True},
            {"celery.canvas.chain", "celery.canvas.group", "celery.performance.answers"},
        ),
        ({"reordered_group": True}, {"celery.performance.answers"}),
        ({"no_redelivery": True}, {"celery.resilience.redelivered"}),
        ({"same_process": True}, {"celery.resilience.new_process"}),
        # the fake turns w2 deaf only after the broker restart: placement ran before and passed
        ({"no_reconnect": ("w2",)}, {"celery.resilience.reconnected"}),
    ],
)
def test_each_fault_fails_exactly_the_checks_that_cover_it(
    celery_cluster, monkeypatch, faults, expected_failures
):
    results = run(celery_cluster(), FakeCluster(**faults), monkeypatch)
    assert failing(results) == expected_failures, {n: (r.status, r.reason) for n, r in results.items()}
    for name in expected_failures:
        assert results[name].status == FAIL


def test_broker_restart_without_the_sudo_rule_is_an_error(celery_cluster, monkeypatch):
    results = run(celery_cluster(), FakeCluster(no_sudo=True), monkeypatch, ["celery.resilience"])
    assert results["celery.resilience"].status == ERROR
    assert "password is required" in results["celery.resilience"].reason
    # the kill part ran and passed before the restart failed
    assert results["celery.resilience.redelivered"].status == PASS


@pytest.mark.parametrize("control", ["wrong-answer", "missing-worker"])
def test_negative_controls_fail_the_judged_results(celery_cluster, monkeypatch, control):
    results = run(celery_cluster(), FakeCluster(), monkeypatch, inject=control)
    category = "correctness" if control == "wrong-answer" else "placement"
    judged = [r for r in results.values() if r.category == category]
    assert judged and all(r.status == FAIL and r.control == control for r in judged)
    assert all(r.status == PASS for r in results.values() if r.category not in (category, "performance"))


def test_expected_workers_default_to_the_inventory_group(cj_cluster, monkeypatch):
    hosts = [
        {"name": "head", "address": "127.0.0.1", "groups": ["head"], "cores": 2, "memory_mb": 16},
        {"name": "w1", "address": "127.0.0.1", "groups": ["celery_workers"], "cores": 2, "memory_mb": 16},
        {"name": "w2", "address": "127.0.0.1", "groups": ["celery_workers"], "cores": 4, "memory_mb": 16},
    ]
    cluster = cj_cluster(hosts, engines={"celery": {}})
    results = run(cluster, FakeCluster(), monkeypatch, ["celery.workers"])
    assert not failing(results)


def test_checks_skip_without_the_celery_engine(cj_cluster, monkeypatch):
    results = run(cj_cluster(), FakeCluster(), monkeypatch, ["celery.workers"])
    assert results["celery.workers"].status == "SKIP"


def test_missing_celery_library_is_an_error_that_says_what_to_do(celery_cluster):
    local = Registry()
    local.register(registry.get("celery.workers"))
    outcome = Runner(local).run(RunConfig(cluster=celery_cluster(), target="head", scope="cluster"))
    (result,) = outcome.results
    assert result.status == ERROR
    assert "celery" in result.reason and ("install" in result.reason or "converge" in result.reason)


def test_worker_node_names_map_to_hosts():
    assert celery_checks.host_of("celery@node-2") == "node-2"
    assert celery_checks.host_of("node-2") == "node-2"
