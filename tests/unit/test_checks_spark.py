"""Spark checks against a fake application and a fake master /json/: they pass on a healthy cluster,
and FAIL when the cluster (or a negative control) is wrong. Only the boundary is faked (SparkHandle
and the HTTP fetch); the checks' judging, host mapping and placement logic run for real."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from checkrun import run_checks
from loopback_http import basic_auth_server

from compute_jobs.checks import load_all
from compute_jobs.checks import spark as spark_checks
from compute_jobs.checks.spark import SUM_OF_SQUARES_1E6, ExecutorInfo
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Result, registry

load_all()

SPARK_CHECKS = [
    "spark.workers",
    "spark.known_answer",
    "spark.placement",
    "spark.performance",
    "spark.resilience",
]

HOSTS = [
    {"name": "a", "address": "10.0.0.1", "groups": ["head", "spark_master"], "cores": 2, "memory_mb": 4096},
    {"name": "b", "address": "10.0.0.2", "groups": ["spark_workers"], "cores": 2, "memory_mb": 4096},
    {"name": "c", "address": "10.0.0.3", "groups": ["spark_workers"], "cores": 4, "memory_mb": 8192},
]


def engine(**overrides: Any) -> dict[str, Any]:
    settings = {
        "endpoint": "spark://10.0.0.1:7077",
        "master_webui": "http://10.0.0.1:8080",
        "conf_dir": "/etc/clusterforge/spark/client",
        "expected_workers": ["b", "c"],
        "workers": {
            "b": {"address": "10.0.0.2", "cores": 2, "memory_mb": 2048},
            "c": {"address": "10.0.0.3", "cores": 4, "memory_mb": 4096},
        },
    }
    settings.update(overrides)
    return settings


def master_json(*workers: dict[str, Any], status: str = "ALIVE") -> dict[str, Any]:
    return {
        "url": "spark://10.0.0.1:7077",
        "workers": list(workers),
        "aliveworkers": sum(1 for w in workers if w["state"] == "ALIVE"),
        "cores": sum(w["cores"] for w in workers),
        "memory": sum(w["memory"] for w in workers),
        "status": status,
    }


def worker_row(host: str, cores: int, memory: int, state: str = "ALIVE") -> dict[str, Any]:
    return {
        "id": f"worker-{host}",
        "host": host,
        "port": 7078,
        "cores": cores,
        "memory": memory,
        "state": state,
    }


HEALTHY_MASTER = master_json(worker_row("10.0.0.2", 2, 2048), worker_row("10.0.0.3", 4, 4096))


class FakeHandle:
    """Stands in for SparkHandle: executors on the worker hosts, exact answers, fault knobs."""

    def __init__(self, hosts: list[str], **faults: Any) -> None:
        self.hosts = hosts
        self.faults = faults
        self.session_start_s = 3.0
        self.executors_ready_s = 1.0
        self.dead: list[ExecutorInfo] = []
        self.tasks: Counter[str] = Counter()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    @contextlib.contextmanager
    def bounded(self, seconds: float, what: str) -> Iterator[None]:
        assert seconds > 0
        yield

    def executors(self, include_dead: bool = False) -> list[ExecutorInfo]:
        live = [ExecutorInfo(str(i), h, True, self.tasks[h]) for i, h in enumerate(self.hosts)]
        return live + (self.dead if include_dead else [])

    def executor_hosts(self) -> list[str]:
        return list(self.hosts)

    def wait_executors(self, count: int, timeout: float) -> float:
        if len(self.hosts) < count:
            raise spark_checks.CheckError(f"{len(self.hosts)} of {count} executors registered")
        return 0.5

    def sum_of_squares(self, n: int, partitions: int) -> int:
        return sum(i * i for i in range(1, n + 1)) + self.faults.get("sum_offset", 0)

    def word_counts(self, words: list[str], partitions: int) -> dict[str, int]:
        counts = dict(Counter(words))
        if self.faults.get("lose_word"):
            counts.pop(words[0])
        return counts

    def pandas_groupby(self, keys: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
        result = spark_checks.reference_groupby(keys, values)
        if self.faults.get("groupby_offset"):
            result["sum"] = result["sum"] + self.faults["groupby_offset"]
        return result

    def task_hosts(self, tasks: int, sleep_s: float) -> list[str]:
        busy = [h for h in self.hosts if h not in self.faults.get("idle", ())]
        ran = [busy[i % len(busy)] for i in range(tasks)]
        self.tasks.update(ran)
        return ran

    def trivial_job(self) -> None:
        pass

    def shuffle(self, rows: int, groups: int, partitions: int) -> list[int]:
        return list(Counter(i % groups for i in range(rows)).values())

    def squares_job(self, n: int, partitions: int, sleep_s: float, kill_partition: int | None) -> int:
        if kill_partition is not None and self.faults.get("kill_works", True):
            self.dead.append(ExecutorInfo("9", self.hosts[0], False, 3))
            if not self.faults.get("replaced", True):
                self.hosts = self.hosts[1:]
        time.sleep(0.01)
        return sum(i * i for i in range(1, n + 1)) + self.faults.get("resilience_offset", 0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[FakeHandle]]:
    """Install a FakeHandle factory and a fake master /json/; returns the handles opened."""
    opened: list[FakeHandle] = []

    def install(
        hosts: list[str] | None = None, master: dict[str, Any] | None = None, **faults: Any
    ) -> list[FakeHandle]:
        def connect(settings: dict[str, Any], timeout: float, executors: int, partitions: int) -> FakeHandle:
            handle = FakeHandle(list(hosts if hosts is not None else ["10.0.0.2", "10.0.0.3"]), **faults)
            handle.wait_executors(executors, timeout)
            opened.append(handle)
            return handle

        def fetch(url: str, timeout: float) -> Any:
            assert url == "http://10.0.0.1:8080/json/"
            return master if master is not None else HEALTHY_MASTER

        def local(cores: int, repeats: int, timeout: float) -> dict[str, Any]:
            assert cores == 2 and timeout > 0
            return {"session_start_s": 1.5, "trivial_ms": [20.0] * repeats}

        monkeypatch.setattr(spark_checks, "CONNECT", connect)
        monkeypatch.setattr(spark_checks, "LOCAL_REFERENCE", local)
        monkeypatch.setattr(spark_checks, "FETCH_JSON", fetch)
        monkeypatch.setattr(spark_checks, "_HANDLES", {})
        return opened

    return install


def run(cluster: Any, names: list[str] = SPARK_CHECKS, **config: Any) -> dict[str, Result]:
    return run_checks(cluster, names, **config)


def test_spark_checks_are_registered_as_cluster_checks_of_the_spark_engine():
    for name in SPARK_CHECKS:
        cls = registry.get(name)
        assert cls.scope == "cluster" and cls.engine == "spark" and "spark" in cls.tags
    assert "compute_jobs.checks.spark" not in registry.import_errors
    assert sum(i * i for i in range(1, 10**6 + 1)) == SUM_OF_SQUARES_1E6


def test_healthy_cluster_passes_and_shares_one_application(cj_cluster, fake, cj_validator):
    handles = fake()
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}))
    validator = cj_validator("result.schema.json")
    for name, result in results.items():
        assert result.status == PASS, (name, result.reason)
        validator.validate(result.to_dict())
    assert len(handles) == 1, "the checks must share one SparkSession"
    assert {
        "spark.workers",
        "spark.workers.master",
        "spark.known_answer.sum_of_squares",
        "spark.known_answer.reduce_by_key",
        "spark.known_answer.pandas_groupby",
        "spark.placement",
        "spark.placement.executors",
        "spark.performance.session_start",
        "spark.performance.trivial_job",
        "spark.performance.shuffle",
        "spark.resilience",
        "spark.resilience.recovered",
        "spark.resilience.extra_time",
    } <= set(results)
    assert results["spark.placement"].observed_workers == ["b", "c"]
    assert results["spark.performance.session_start"].value == 3.0
    # The same-run local[2] reference and the cluster-to-local ratios.
    assert results["spark.performance.session_start_local"].value == 1.5
    assert results["spark.performance.session_start"].details["cluster_to_local"] == 2.0
    job = results["spark.performance.trivial_job"]
    assert job.details["cluster_to_local"] == round(job.value / 20.0, 3)


def test_the_known_answer_of_the_default_parameters_is_the_published_one(cj_cluster, fake):
    fake()
    overrides = {"spark.known_answer": {"words": 3, "rows": 10, "keys": 2}}
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.known_answer"], overrides=overrides)
    assert results["spark.known_answer.sum_of_squares"].expected == 333333833333500000


def test_wrong_answer_control_fails_every_correctness_result(cj_cluster, fake):
    fake()
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), inject="wrong-answer")
    for name in (
        "spark.workers",
        "spark.known_answer.sum_of_squares",
        "spark.known_answer.reduce_by_key",
        "spark.known_answer.pandas_groupby",
        "spark.performance.shuffle_counts",
        "spark.resilience",
    ):
        assert results[name].status == FAIL, name
        assert results[name].control == "wrong-answer"


def test_missing_worker_control_fails_placement(cj_cluster, fake):
    fake()
    results = run(
        cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.placement"], inject="missing-worker"
    )
    for name in ("spark.placement", "spark.placement.executors"):
        assert results[name].status == FAIL
        assert results[name].missing == ["c"]


def test_dead_workers_are_not_counted_even_though_master_totals_include_them(cj_cluster, fake):
    master = master_json(
        worker_row("10.0.0.2", 2, 2048),
        worker_row("10.0.0.3", 4, 4096, state="DEAD"),
    )
    assert master["cores"] == 6  # the trap: totals still count the dead worker
    fake(master=master)
    result = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.workers"])["spark.workers"]
    assert result.status == FAIL
    assert "c" not in result.observed
    assert result.details["not_alive"] == {"DEAD": 1}


def test_a_restarted_worker_listed_dead_and_alive_passes(cj_cluster, fake):
    master = master_json(
        worker_row("10.0.0.2", 2, 2048, state="DEAD"),
        worker_row("10.0.0.2", 2, 2048),
        worker_row("10.0.0.3", 4, 4096),
    )
    fake(master=master)
    result = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.workers"])["spark.workers"]
    assert result.status == PASS, result.reason


def test_cores_or_memory_other_than_the_inventory_fail(cj_cluster, fake):
    fake(master=master_json(worker_row("10.0.0.2", 1, 2048), worker_row("10.0.0.3", 4, 1024)))
    result = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.workers"])["spark.workers"]
    assert result.status == FAIL
    assert result.observed == {"b": {"cores": 1, "memory_mb": 2048}, "c": {"cores": 4, "memory_mb": 1024}}


def test_standby_master_fails(cj_cluster, fake):
    fake(
        master=master_json(worker_row("10.0.0.2", 2, 2048), worker_row("10.0.0.3", 4, 4096), status="STANDBY")
    )
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.workers"])
    assert results["spark.workers.master"].status == FAIL


@pytest.mark.parametrize(
    ("fault", "result"),
    [
        ({"sum_offset": 1}, "spark.known_answer.sum_of_squares"),
        ({"lose_word": True}, "spark.known_answer.reduce_by_key"),
        ({"groupby_offset": 1}, "spark.known_answer.pandas_groupby"),
    ],
)
def test_a_wrong_engine_answer_fails(cj_cluster, fake, fault, result):
    fake(**fault)
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.known_answer"])
    assert results[result].status == FAIL
    assert all(r.status == PASS for n, r in results.items() if n != result)


def test_an_idle_worker_fails_placement(cj_cluster, fake):
    fake(idle={"10.0.0.3"})
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.placement"])
    assert results["spark.placement"].status == FAIL and results["spark.placement"].missing == ["c"]
    assert results["spark.placement.executors"].missing == ["c"]


def test_executors_that_never_register_are_an_error_naming_the_count(cj_cluster, fake):
    fake(hosts=["10.0.0.2"])
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.placement"])
    assert results["spark.placement"].status == ERROR
    assert "1 of 2 executors" in results["spark.placement"].reason


def test_a_kill_that_did_not_happen_fails_resilience(cj_cluster, fake):
    fake(kill_works=False)
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.resilience"])
    assert results["spark.resilience"].status == PASS
    assert results["spark.resilience.recovered"].status == FAIL
    assert "no executor died" in results["spark.resilience.recovered"].reason


def test_an_executor_not_replaced_fails_resilience(cj_cluster, fake):
    fake(replaced=False)
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.resilience"])
    assert results["spark.resilience.recovered"].status == FAIL
    assert "executors registered" in results["spark.resilience.recovered"].reason


def test_a_wrong_sum_after_the_kill_fails(cj_cluster, fake):
    fake(resilience_offset=-4)
    results = run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.resilience"])
    assert results["spark.resilience"].status == FAIL
    assert results["spark.resilience.baseline"].status == FAIL


def test_without_engine_the_checks_skip(cj_cluster, fake):
    fake()
    results = run(cj_cluster(HOSTS))
    assert {r.status for r in results.values()} == {SKIP}


def test_engine_without_worker_layout_is_an_error(cj_cluster, fake):
    fake()
    settings = engine()
    del settings["workers"]
    results = run(cj_cluster(HOSTS, engines={"spark": settings}), ["spark.workers"])
    assert results["spark.workers"].status == ERROR
    assert "engines.spark.workers" in results["spark.workers"].reason


def test_shared_session_is_stopped_at_exit(cj_cluster, fake):
    handles = fake()
    run(cj_cluster(HOSTS, engines={"spark": engine()}), ["spark.performance"])
    spark_checks.stop_all()
    assert handles and all(h.stopped for h in handles)
    assert spark_checks._HANDLES == {}


# --- the master UI behind the authenticating web gateway ----------------------------------------


@contextlib.contextmanager
def spark_ui(user: str, password: str) -> Iterator[str]:
    """The master's /json/ behind basic auth on loopback."""
    routes = {"/json/": ("application/json", b'{"status": "ALIVE"}')}
    with basic_auth_server(user, password, routes, realm="spark") as (base, _seen):
        yield base


def test_fetch_json_sends_the_gateway_credentials_only_where_they_were_registered(tmp_path):
    credentials = tmp_path / "webui.credentials"
    credentials.write_text("clusterforge:s3cret\n")
    with spark_ui("clusterforge", "s3cret") as base:
        with pytest.raises(spark_checks.CheckError, match="401"):
            spark_checks.fetch_json(base + "/json/", 5.0)
        spark_checks.use_gateway_credentials(base + "/json/", str(credentials))
        assert spark_checks.fetch_json(base + "/json/", 5.0) == {"status": "ALIVE"}


def test_wrong_gateway_credentials_are_refused(tmp_path):
    credentials = tmp_path / "webui.credentials"
    credentials.write_text("clusterforge:wrong\n")
    with spark_ui("clusterforge", "s3cret") as base:
        spark_checks.use_gateway_credentials(base + "/json/", str(credentials))
        with pytest.raises(spark_checks.CheckError, match="401"):
            spark_checks.fetch_json(base + "/json/", 5.0)


def test_unreadable_or_malformed_credentials_name_the_file_and_what_to_do(tmp_path):
    with pytest.raises(spark_checks.CheckError, match="service account"):
        spark_checks.read_gateway_credentials(str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.write_text("no separator")
    with pytest.raises(spark_checks.CheckError, match="user:password"):
        spark_checks.read_gateway_credentials(str(bad))


def test_workers_check_is_an_error_when_the_gateway_credentials_are_unreadable(cj_cluster, fake, tmp_path):
    fake()
    settings = engine(webui_credentials=str(tmp_path / "missing"))
    results = run(cj_cluster(HOSTS, engines={"spark": settings}), ["spark.workers"])
    assert results["spark.workers"].status == ERROR
    assert "webui.credentials" not in results["spark.workers"].reason
    assert str(tmp_path / "missing") in results["spark.workers"].reason


def test_resilience_skips_with_one_worker(cj_cluster, fake):
    """A 2-node lab has one Spark worker: nothing would be left to finish the stage, so the check
    says so (SKIP with the reason) instead of killing the only executor."""
    fake(hosts=["10.0.0.2"])
    one = engine(
        expected_workers=["b"], workers={"b": {"address": "10.0.0.2", "cores": 2, "memory_mb": 2048}}
    )
    result = run(cj_cluster(HOSTS[:2], engines={"spark": one}), ["spark.resilience"])["spark.resilience"]
    assert result.status == SKIP and "needs two Spark workers" in result.reason


def test_the_checks_session_asks_for_every_core_where_the_master_grants_a_share():
    workers = {"n2": {"cores": 2}, "n3": {"cores": 3}}
    shared = spark_checks.session_conf({"workers": workers, "app_default_cores": 2}, 10)
    assert shared == {
        "spark.sql.shuffle.partitions": "10",
        "spark.default.parallelism": "10",
        "spark.cores.max": "5",
    }
    # Spark's default (every free core): nothing to ask for.
    for settings in ({"workers": workers, "app_default_cores": 0}, {"workers": workers}):
        assert "spark.cores.max" not in spark_checks.session_conf(settings, 10)
