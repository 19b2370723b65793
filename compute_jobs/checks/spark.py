"""Spark checks: applications submitted from the head node to the provisioned standalone master.

The checks share one SparkSession per run (a session costs seconds of JVM and executor start-up;
the first check to run carries that cost, which is why every check's timeout allows for it);
it reads the client configuration the spark role writes (``SPARK_CONF_DIR``: master URL, the shared
``spark.authenticate`` secret, RPC encryption, the driver address). pyspark is imported inside
:class:`SparkHandle` only; the checks talk to Spark through that boundary and to the master's web
UI through :data:`FETCH_JSON`, both replaced by fakes in the unit tests.

cluster.json ``engines.spark``::

    {
      "endpoint": "spark://10.0.0.11:7077",              master URL
      "master_webui": "https://10.0.0.11:8080",          master web UI (its /json/ lists workers), behind
                                                         the web gateway: HTTPS from the cluster CA
      "webui_credentials": "/etc/clusterforge/spark/client/webui.credentials",  user:password of the gateway
      "conf_dir": "/etc/clusterforge/spark/client",      SPARK_CONF_DIR of the driver
      "python": "/opt/clusterforge/venv/bin/python",     optional: executors' Python (default: this one)
      "expected_workers": ["node-2", "node-3"],          worker hosts
      "workers": {                                       what the inventory provisioned, per host
        "node-2": {"address": "10.0.0.12", "cores": 2, "memory_mb": 4096},
        "node-3": {"address": "10.0.0.13", "cores": 2, "memory_mb": 4096}
      }
    }
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute_jobs.checks._reference import reference_groupby
from compute_jobs.compare import ratio
from compute_jobs.context import CheckContext
from compute_jobs.engines import spark_share, worker_map
from compute_jobs.model import (
    FAIL,
    PASS,
    Check,
    CheckError,
    Metric,
    Param,
    Result,
    SkipCheck,
    register,
    register_secret,
    register_shared_session,
)
from compute_jobs.transport import read_user_password

ENGINE = "spark"
SUM_OF_SQUARES_1E6 = 333333833333500000


@dataclass(frozen=True)
class ExpectedWorker:
    name: str
    address: str
    cores: int
    memory_mb: int


@dataclass(frozen=True)
class ExecutorInfo:
    """One executor of the application (the driver is left out)."""

    id: str
    host: str
    active: bool
    total_tasks: int


# Credentials of the web gateways, by URL prefix: sent with the first request (the gateway of the
# master and worker UIs answers 401 without them). The cluster CA is in the node's trust store.
_GATEWAY_PASSWORDS = urllib.request.HTTPPasswordMgrWithPriorAuth()


def read_gateway_credentials(path: str) -> tuple[str, str]:
    """(user, password) from a web gateway credentials file (``user:password``)."""
    return read_user_password(path, "the spark tier (client)")


def use_gateway_credentials(url: str, path: str) -> None:
    """Send the credentials in ``path`` with every request under ``url``."""
    user, password = read_gateway_credentials(path)
    register_secret(password)
    _GATEWAY_PASSWORDS.add_password(None, url, user, password, is_authenticated=True)


def fetch_json(url: str, timeout: float) -> Any:
    """GET a JSON document (the master's /json/, the application's REST API)."""
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(_GATEWAY_PASSWORDS))
    try:
        with opener.open(url, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CheckError(f"cannot read {url}: {exc}") from exc


# Replaced by a fake in the unit tests.
FETCH_JSON: Callable[[str, float], Any] = fetch_json


# --- the boundary: one SparkSession on the provisioned master -----------------------------------


def session_conf(settings: Mapping[str, Any], partitions: int) -> dict[str, str]:
    """Properties of the checks' shared application, on top of the client configuration."""
    conf = {"spark.sql.shuffle.partitions": str(partitions), "spark.default.parallelism": str(partitions)}
    share, cores = spark_share(settings)
    if share > 0 and cores > 0:
        # Where the master grants an application a share of the cores, the checks' session asks for
        # every core: its checks run with no other application, and the figures of spark.performance
        # are the whole cluster's.
        conf["spark.cores.max"] = str(cores)
    return conf


class SparkHandle:
    """A SparkSession on the standalone master, with every engine call the checks make."""

    def __init__(self, settings: Mapping[str, Any], timeout: float, executors: int, partitions: int) -> None:
        conf_dir = settings.get("conf_dir")
        if conf_dir:
            defaults = os.path.join(str(conf_dir), "spark-defaults.conf")
            if not os.access(defaults, os.R_OK):
                raise CheckError(f"cannot read {defaults}: run as the service account (it holds the secret)")
            # spark-submit (started by pyspark) reads spark-defaults.conf and spark-env.sh from here.
            os.environ["SPARK_CONF_DIR"] = str(conf_dir)
        os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
        # Python workers on the executors run this interpreter's path (the same venv on every node):
        # pyspark reads PYSPARK_PYTHON from the environment, not spark.pyspark.python.
        os.environ["PYSPARK_PYTHON"] = str(settings.get("python") or sys.executable)
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:
            raise CheckError(f"cannot import pyspark ({exc}): install the spark role's packages") from exc
        builder = SparkSession.builder.appName("clusterforge-verify")
        for key, value in session_conf(settings, partitions).items():
            builder = builder.config(key, value)
        if settings.get("endpoint"):
            builder = builder.master(str(settings["endpoint"]))
        start = time.perf_counter()
        try:
            self.spark = builder.getOrCreate()
        except Exception as exc:
            raise CheckError(f"cannot start a Spark application: {type(exc).__name__}: {exc}") from exc
        self.session_start_s = time.perf_counter() - start
        self.sc = self.spark.sparkContext
        self.executors_ready_s = self.wait_executors(executors, timeout)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.spark.stop()

    @contextlib.contextmanager
    def bounded(self, seconds: float, what: str) -> Iterator[None]:
        """Cancel every job still running after ``seconds``; the job then fails with a clear cause."""
        timer = threading.Timer(max(0.1, seconds), self.sc.cancelAllJobs)
        timer.daemon = True
        timer.start()
        start = time.monotonic()
        try:
            yield
        except Exception as exc:
            if time.monotonic() - start >= seconds:
                raise CheckError(f"{what}: cancelled after {seconds:.0f} s") from exc
            raise CheckError(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
        finally:
            timer.cancel()

    # executors
    def executors(self, include_dead: bool = False) -> list[ExecutorInfo]:
        url = self.sc.uiWebUrl
        if not url:
            raise CheckError("the application has no web UI (spark.ui.enabled=false): cannot list executors")
        kind = "allexecutors" if include_dead else "executors"
        rows = FETCH_JSON(f"{url}/api/v1/applications/{self.sc.applicationId}/{kind}", 30.0)
        return [
            ExecutorInfo(
                id=str(row["id"]),
                host=str(row["hostPort"]).rsplit(":", 1)[0],
                active=bool(row.get("isActive", True)),
                total_tasks=int(row.get("totalTasks", 0)),
            )
            for row in rows
            if row.get("id") != "driver"
        ]

    def executor_hosts(self) -> list[str]:
        """Hosts of the registered executors, from the JVM's status tracker (the driver left out)."""
        infos = self.sc._jsc.sc().statusTracker().getExecutorInfos()
        hosts = [str(info.host()) for info in infos]
        driver = str(self.sc.getConf().get("spark.driver.host", ""))
        if driver in hosts:
            hosts.remove(driver)  # the tracker lists the driver's block manager once
        return hosts

    def wait_executors(self, count: int, timeout: float) -> float:
        start = time.monotonic()
        found: list[str] = []
        while time.monotonic() - start < timeout:
            found = self.executor_hosts()
            if len(found) >= count:
                return time.monotonic() - start
            time.sleep(0.25)
        raise CheckError(
            f"{len(found)} of {count} executors registered within {timeout:.0f} s "
            f"({', '.join(sorted(found)) or 'none'}); are the workers ALIVE with free cores "
            "and memory, and do they share the application's secret?"
        )

    # known answers
    def sum_of_squares(self, n: int, partitions: int) -> int:
        from pyspark.sql import functions as F

        frame = self.spark.range(1, n + 1, 1, partitions)
        return int(frame.select(F.sum(F.col("id") * F.col("id"))).first()[0])

    def word_counts(self, words: list[str], partitions: int) -> dict[str, int]:
        pairs = self.sc.parallelize(words, partitions).map(lambda w: (w, 1))
        return dict(pairs.reduceByKey(lambda a, b: a + b, partitions).collect())

    def pandas_groupby(self, keys: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
        import pyspark.pandas as ps

        frame = ps.DataFrame({"key": keys.tolist(), "value": values.tolist()})
        grouped = frame.groupby("key").agg({"value": ["sum", "count"]}).to_pandas().sort_index()
        return {
            "key": grouped.index.to_numpy(dtype=np.int64),
            "sum": grouped[("value", "sum")].to_numpy(dtype=np.int64),
            "count": grouped[("value", "count")].to_numpy(dtype=np.int64),
        }

    # placement
    def task_hosts(self, tasks: int, sleep_s: float) -> list[str]:
        def where(_: int, rows: Iterator[int]) -> Iterator[str]:
            import os as _os
            import socket as _socket
            import time as _time

            for _row in rows:
                pass
            _time.sleep(sleep_s)
            # SPARK_LOCAL_IP is loopback on workers whose UI sits behind the web gateway.
            local_ip = _os.environ.get("SPARK_LOCAL_IP", "")
            public = _os.environ.get("SPARK_PUBLIC_DNS", "")
            names = [n for n in (local_ip, public) if n and not n.startswith("127.")]
            yield names[0] if names else _socket.gethostname()

        return self.sc.parallelize(range(tasks), tasks).mapPartitionsWithIndex(where).collect()

    # performance
    def trivial_job(self) -> None:
        self.sc.parallelize([1], 1).count()

    def shuffle(self, rows: int, groups: int, partitions: int) -> list[int]:
        from pyspark.sql import functions as F

        frame = self.spark.range(0, rows, 1, partitions)
        counted = frame.groupBy((F.col("id") % groups).alias("g")).count().orderBy("g").collect()
        return [int(row["count"]) for row in counted]

    # resilience
    def squares_job(self, n: int, partitions: int, sleep_s: float, kill_partition: int | None) -> int:
        """Sum of i*i for i in 1..n over sleeping tasks; the first attempt of ``kill_partition``
        SIGKILLs its own executor JVM (found up the process tree) while the other tasks run."""

        def part(index: int, rows: Iterator[int]) -> Iterator[int]:
            import os as _os
            import signal as _signal
            import time as _time

            from pyspark import TaskContext

            total = sum(r * r for r in rows)
            _time.sleep(sleep_s)
            task = TaskContext.get()
            # One stage, so only the first attempt of that one task kills; its retry computes.
            if kill_partition is not None and index == kill_partition and task.attemptNumber() == 0:
                pid = _os.getppid()
                while pid > 1:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        cmdline = handle.read()
                    if b"CoarseGrainedExecutorBackend" in cmdline:
                        _os.kill(pid, _signal.SIGKILL)
                        _os._exit(1)  # no one is left to take this task's result
                    with open(f"/proc/{pid}/stat") as handle:
                        pid = int(handle.read().rsplit(")", 1)[1].split()[1])
                raise RuntimeError("no executor JVM found above this Python worker")
            yield total

        rdd = self.sc.parallelize(range(1, n + 1), partitions).mapPartitionsWithIndex(part)
        return int(rdd.sum())


# One session per run and cluster, shared by the checks; stopped when the process exits.
_HANDLES: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def _open_handle(settings: Mapping[str, Any], timeout: float, executors: int, partitions: int) -> Any:
    return SparkHandle(settings, timeout, executors, partitions)


# Replaced by a fake in the unit tests: (settings, timeout, executors, partitions) -> handle.
CONNECT: Callable[[Mapping[str, Any], float, int, int], Any] = _open_handle


def handle_for(ctx: CheckContext) -> Any:
    settings = ctx.cluster.engines[ENGINE]
    key = (id(ctx.cluster), settings.get("endpoint"), settings.get("conf_dir"))
    with _LOCK:
        handle = _HANDLES.get(key)
        if handle is None:
            workers = expected_workers(ctx)
            partitions = max(2, 2 * sum(w.cores for w in workers))
            handle = CONNECT(settings, ctx.bounded(ctx.params.start_timeout), len(workers), partitions)
            _HANDLES[key] = handle
        return handle


@atexit.register
def stop_all() -> None:
    """Stop every shared session (the master then releases the executors at once)."""
    with _LOCK:
        for handle in _HANDLES.values():
            handle.stop()
        _HANDLES.clear()


register_shared_session(ENGINE, stop_all)


# --- inventory mapping --------------------------------------------------------------------------


def expected_workers(ctx: CheckContext) -> list[ExpectedWorker]:
    try:
        workers = worker_map(ctx.cluster.engines[ENGINE], ENGINE, ctx.cluster.source)
    except ValueError as exc:
        raise CheckError(str(exc)) from exc
    found = []
    for name, spec in workers.items():
        host = ctx.cluster.host(name)
        found.append(
            ExpectedWorker(
                name=name,
                address=str(spec.get("address") or (host.address if host else name)),
                cores=int(spec.get("cores", 1)),
                memory_mb=int(spec.get("memory_mb", 0)),
            )
        )
    return found


def host_names(workers: list[ExpectedWorker]) -> Callable[[str], str]:
    """Map an address or hostname reported by Spark to the inventory name of the worker host."""
    by_address = {w.address: w.name for w in workers}
    names = {w.name for w in workers}

    def name_of(reported: str) -> str:
        if reported in by_address:
            return by_address[reported]
        short = reported.split(".", 1)[0]
        return short if short in names else reported

    return name_of


START_PARAM = Param(
    "start_timeout",
    float,
    120.0,
    "s to start the application and register all executors",
    1.0,
    3600,
    smoke=5.0,
)
JOB_PARAM = Param("job_timeout", float, 120.0, "s one Spark job may run before it is cancelled", 1.0, 3600)


class _SparkCheck(Check):
    scope = "cluster"
    engine = ENGINE
    engine_keys = ("endpoint", "conf_dir")


# --- checks -------------------------------------------------------------------------------------


@register
class SparkWorkers(_SparkCheck):
    name = "spark.workers"
    category = "inventory"
    tags = frozenset({"spark"})
    description = (
        "ALIVE workers on the master (counted by state): cores and memory per host equal the inventory"
    )
    params = (Param("http_timeout", float, 10.0, "s to read the master's /json/", 0.5, 600, smoke=2.0),)
    correctness_rule = (
        "workers in state ALIVE on the master's /json/ == worker hosts of the inventory, each with its cores "
        "and memory_mb (exact); totals of the master are not used: they include dead workers"
    )
    timeout = 30.0
    # It reads the master's web UI only (not the master URL or the driver configuration).
    engine_keys = ("master_webui",)

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        workers = expected_workers(ctx)
        name_of = host_names(workers)
        settings = ctx.cluster.engines[ENGINE]
        url = str(settings["master_webui"]).rstrip("/") + "/json/"
        if settings.get("webui_credentials"):
            use_gateway_credentials(url, str(settings["webui_credentials"]))
        state = FETCH_JSON(url, ctx.bounded(ctx.params.http_timeout))
        rows = state.get("workers", []) if isinstance(state, dict) else []
        alive = [w for w in rows if w.get("state") == "ALIVE"]
        others = Counter(str(w.get("state")) for w in rows if w.get("state") != "ALIVE")
        observed: dict[str, dict[str, int]] = {}
        duplicates = []
        for row in alive:
            host = name_of(str(row.get("host", "")))
            if host in observed:
                duplicates.append(host)
            observed[host] = {"cores": int(row.get("cores", 0)), "memory_mb": int(row.get("memory", 0))}
        expected = {w.name: {"cores": w.cores, "memory_mb": w.memory_mb} for w in workers}
        yield ctx.compare(
            expected,
            observed,
            name="spark.workers",
            details={
                "master": url,
                "master_status": state.get("status") if isinstance(state, dict) else None,
                "not_alive": dict(others),
                "duplicate_alive_hosts": duplicates,
                "master_totals_include_dead": {"cores": state.get("cores"), "memory": state.get("memory")}
                if isinstance(state, dict)
                else None,
            },
        )
        status = state.get("status") if isinstance(state, dict) else None
        yield ctx.result(
            name="spark.workers.master",
            category="inventory",
            status=PASS if status == "ALIVE" else FAIL,
            reason=""
            if status == "ALIVE"
            else f"master status is {status!r}, not ALIVE (standby or recovering)",
            rule="the master's /json/ status == ALIVE",
        )


@register
class SparkKnownAnswer(_SparkCheck):
    name = "spark.known_answer"
    category = "correctness"
    tags = frozenset({"spark"})
    description = "Sum of squares 1..10^6, exact reduceByKey word counts, a pandas-on-Spark groupby vs pandas"
    params = (
        Param("n", int, 1_000_000, "sum i^2 for i in 1..n", 1, 10**9, smoke=100),
        Param("words", int, 200, "distinct words; word k occurs k times", 1, 10**5, smoke=10),
        Param("rows", int, 20_000, "rows of the pandas-on-Spark frame", 10, 10**8, smoke=50),
        Param("keys", int, 31, "distinct groupby keys", 1, 10**6, smoke=5),
        Param("partitions", int, 8, "partitions of the jobs", 1, 10000, smoke=2),
        Param("seed", int, 20261121, "random seed of the corpus order and the frame", 0),
        START_PARAM,
        JOB_PARAM,
    )
    correctness_rule = (
        "sum of i^2 for i in 1..n == n(n+1)(2n+1)/6 (333333833333500000 for 10^6), exactly; reduceByKey "
        "count of word k == k for every k; pandas-on-Spark groupby(key).value sum and count == reference, "
        "exactly"
    )
    timeout = 300.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        handle = handle_for(ctx)
        rng = np.random.default_rng(p.seed)
        with handle.bounded(ctx.bounded(p.job_timeout), "sum of squares"):
            total = handle.sum_of_squares(p.n, p.partitions)
        yield ctx.compare(
            p.n * (p.n + 1) * (2 * p.n + 1) // 6,
            total,
            name="spark.known_answer.sum_of_squares",
            details={"n": p.n, "partitions": p.partitions},
        )
        ctx.check_deadline()
        corpus = [f"w{k}" for k in range(1, p.words + 1) for _ in range(k)]
        order = rng.permutation(len(corpus))
        corpus = [corpus[i] for i in order]
        with handle.bounded(ctx.bounded(p.job_timeout), "reduceByKey"):
            counts = handle.word_counts(corpus, p.partitions)
        yield ctx.compare(
            {f"w{k}": k for k in range(1, p.words + 1)},
            counts,
            name="spark.known_answer.reduce_by_key",
            rule="reduceByKey(add) over (word, 1): count of word k == k, for every k, exactly",
            details={"words": p.words, "corpus": len(corpus)},
        )
        ctx.check_deadline()
        keys = rng.integers(0, p.keys, size=p.rows, dtype=np.int64)
        values = rng.integers(-1000, 1000, size=p.rows, dtype=np.int64)
        with handle.bounded(ctx.bounded(p.job_timeout), "pandas-on-Spark groupby"):
            grouped = handle.pandas_groupby(keys, values)
        expected = reference_groupby(keys, values)
        yield ctx.compare(
            np.concatenate([expected["key"], expected["sum"], expected["count"]]),
            np.concatenate([grouped["key"], grouped["sum"], grouped["count"]]),
            name="spark.known_answer.pandas_groupby",
            rule="pyspark.pandas groupby(key).value.agg([sum, count]) == numpy reference, exactly",
            details={"rows": p.rows, "keys": p.keys},
        )


@register
class SparkPlacement(_SparkCheck):
    name = "spark.placement"
    category = "placement"
    tags = frozenset({"spark"})
    description = "An executor on every worker host ran tasks of the application"
    params = (
        Param("tasks_per_core", int, 3, "tasks per worker core of the inventory", 1, 1000),
        Param(
            "sleep", float, 0.5, "s each task sleeps, so that every executor gets some", 0.0, 60, smoke=0.0
        ),
        START_PARAM,
        JOB_PARAM,
    )
    placement_rule = (
        "hosts whose executors completed tasks (application REST API) == worker hosts of the inventory; "
        "hosts the tasks report running on == the same"
    )
    timeout = 300.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        workers = expected_workers(ctx)
        name_of = host_names(workers)
        handle = handle_for(ctx)
        tasks = max(len(workers), p.tasks_per_core * sum(w.cores for w in workers))
        with handle.bounded(ctx.bounded(p.job_timeout), "placement job"):
            ran_on = handle.task_hosts(tasks, p.sleep)
        per_host = Counter(name_of(h) for h in ran_on)
        yield ctx.compare_sets(
            [w.name for w in workers],
            sorted(per_host),
            name="spark.placement",
            details={"tasks": tasks, "tasks_per_host": dict(sorted(per_host.items()))},
        )
        busy = Counter()
        for executor in handle.executors():
            if executor.total_tasks > 0:
                busy[name_of(executor.host)] += executor.total_tasks
        yield ctx.compare_sets(
            [w.name for w in workers],
            sorted(busy),
            name="spark.placement.executors",
            rule="hosts with an active executor that completed tasks == worker hosts of the inventory",
            details={"tasks_per_host": dict(sorted(busy.items()))},
        )


@register
class SparkPerformance(_SparkCheck):
    name = "spark.performance"
    category = "performance"
    tags = frozenset({"spark"})
    description = "Application start, trivial-job latency and DataFrame shuffle rows per second"
    params = (
        Param("trivial_repeats", int, 10, "timed one-task jobs after 2 warm-ups", 5, 10000, smoke=5),
        Param("rows", int, 1_000_000, "rows shuffled by the groupBy", 1000, 10**10, smoke=2000),
        Param("groups", int, 100, "groupBy keys (rows % groups)", 1, 10**7, smoke=10),
        Param("partitions", int, 4, "partitions of the shuffled range", 1, 10000, smoke=2),
        Param("repeats", int, 5, "timed shuffles after one warm-up", 5, 1000),
        Param(
            "local_cores",
            int,
            2,
            "cores of the local[n] application timed on the head node as the same-run reference; 0 skips it",
            0,
            1024,
        ),
        START_PARAM,
        JOB_PARAM,
    )
    correctness_rule = "every group of the shuffle counts rows/groups (+1 for the first rows % groups groups)"
    metrics = (
        Metric("session_start", "s", better="lower", help="SparkSession.getOrCreate() against the master"),
        Metric("executors_ready", "s", better="lower", help="after start, until every executor registered"),
        Metric("trivial_job", "ms", better="lower", help="sc.parallelize([1], 1).count()"),
        Metric("shuffle", "rows/s", help="range(rows).groupBy(id % groups).count() rows per second"),
        Metric("session_start_local", "s", better="lower", help="the same start of a local[n] application"),
        Metric("trivial_job_local", "ms", better="lower", help="the same one-task job in that application"),
    )
    timeout = 360.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        handle = handle_for(ctx)
        start = ctx.performance(
            "session_start",
            [handle.session_start_s],
            details={"note": "one sample: the run's shared application"},
        )
        yield ctx.performance("executors_ready", [handle.executors_ready_s])
        with handle.bounded(ctx.bounded(p.job_timeout), "trivial jobs"):
            trivial = ctx.repeat(handle.trivial_job, p.trivial_repeats, warmup=2)
        job = ctx.performance("trivial_job", [t * 1000 for t in trivial])
        if p.local_cores > 0:
            local = LOCAL_REFERENCE(p.local_cores, p.trivial_repeats, ctx.bounded(p.job_timeout))
            where = {"application": f"local[{p.local_cores}] on {ctx.cluster.head.name}, in a child process"}
            local_start = ctx.performance("session_start_local", [local["session_start_s"]], details=where)
            local_job = ctx.performance("trivial_job_local", local["trivial_ms"], details=where)
            start.details["cluster_to_local"] = ratio(start.value, local_start.value)
            job.details["cluster_to_local"] = ratio(job.value, local_job.value)
            yield from (start, job, local_start, local_job)
        else:
            yield from (start, job)
        counts: list[int] = []

        def shuffle() -> None:
            counts[:] = handle.shuffle(p.rows, p.groups, p.partitions)

        with handle.bounded(ctx.bounded(p.job_timeout * 2), "shuffle"):
            durations = ctx.repeat(shuffle, p.repeats, warmup=1)
        groups = min(p.groups, p.rows)
        expected = [p.rows // p.groups + (1 if g < p.rows % p.groups else 0) for g in range(groups)]
        yield ctx.compare(
            expected,
            counts,
            name="spark.performance.shuffle_counts",
            details={"rows": p.rows, "groups": p.groups},
        )
        yield ctx.performance(
            "shuffle",
            [p.rows / d for d in durations],
            details={"rows": p.rows, "groups": p.groups, "partitions": p.partitions},
        )


def local_reference(cores: int, repeats: int, timeout: float) -> dict[str, Any]:
    """Start a local[cores] application and time the trivial job there, in a child process (one
    SparkContext per process, and no cluster configuration: SPARK_CONF_DIR is not passed on)."""
    env = {k: v for k, v in os.environ.items() if k != "SPARK_CONF_DIR"}
    env["PYSPARK_PYTHON"] = sys.executable
    code = "from compute_jobs.checks.spark import _local_reference_main; _local_reference_main()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(cores), str(repeats)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckError(f"the local[{cores}] reference did not finish in {timeout:.0f} s") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise CheckError(
            f"the local[{cores}] reference failed (exit {proc.returncode}): {proc.stderr[-600:]}"
        )
    return json.loads(lines[-1])


def _local_reference_main() -> None:
    cores, repeats = int(sys.argv[1]), int(sys.argv[2])
    from pyspark.sql import SparkSession

    start = time.perf_counter()
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("clusterforge-verify-local")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "512m")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    started = time.perf_counter() - start
    sc = spark.sparkContext
    for _ in range(2):
        sc.parallelize([1], 1).count()
    trivial = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sc.parallelize([1], 1).count()
        trivial.append((time.perf_counter() - t0) * 1000)
    spark.stop()
    print(json.dumps({"session_start_s": started, "trivial_ms": trivial}), flush=True)


# Replaced by a fake in the unit tests: (cores, repeats, timeout) -> {"session_start_s", "trivial_ms"}.
LOCAL_REFERENCE: Callable[[int, int, float], dict[str, Any]] = local_reference


@register
class SparkResilience(_SparkCheck):
    name = "spark.resilience"
    category = "resilience"
    tags = frozenset({"spark"})
    description = (
        "SIGKILL one executor mid-stage: the job still returns the exact sum, the executor comes back"
    )
    params = (
        Param("n", int, 1_000_000, "sum i^2 for i in 1..n", 10, 10**9, smoke=100),
        Param("tasks_per_core", int, 2, "tasks per worker core of the inventory", 1, 1000),
        Param("sleep", float, 1.0, "s each task sleeps", 0.0, 60, smoke=0.1),
        Param("recover_timeout", float, 60.0, "s for the master to replace the executor", 1.0, 3600, smoke=5),
        START_PARAM,
        JOB_PARAM,
    )
    correctness_rule = (
        "sum of i^2 for i in 1..n with one executor killed mid-stage == n(n+1)(2n+1)/6, exactly"
    )
    metrics = (
        Metric("extra_time", "s", better="lower", help="job time with the kill - job time without"),
        Metric(
            "recovery", "s", better="lower", help="end of the job -> executor count back to the inventory's"
        ),
    )
    timeout = 300.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        workers = expected_workers(ctx)
        handle = handle_for(ctx)
        if len(workers) < 2:
            raise SkipCheck(
                "needs two Spark workers: killing the one executor would leave none to finish the stage"
            )
        partitions = max(2, p.tasks_per_core * sum(w.cores for w in workers))
        exact = p.n * (p.n + 1) * (2 * p.n + 1) // 6
        start = time.perf_counter()
        with handle.bounded(ctx.bounded(p.job_timeout), "baseline job"):
            baseline = handle.squares_job(p.n, partitions, p.sleep, None)
        baseline_s = time.perf_counter() - start
        yield ctx.compare(exact, baseline, name="spark.resilience.baseline")
        dead_before = {e.id for e in handle.executors(include_dead=True) if not e.active}
        start = time.perf_counter()
        with handle.bounded(ctx.bounded(p.job_timeout), "job with a killed executor"):
            total = handle.squares_job(p.n, partitions, p.sleep, partitions // 2)
        killed_s = time.perf_counter() - start
        dead = [e for e in handle.executors(include_dead=True) if not e.active and e.id not in dead_before]
        yield ctx.compare(
            exact,
            total,
            name="spark.resilience",
            details={"killed_executors": [f"{e.id}@{e.host}" for e in dead], "seconds": round(killed_s, 3)},
        )
        ended = time.monotonic()
        try:
            handle.wait_executors(len(workers), ctx.bounded(p.recover_timeout))
            recovered, why = True, ""
        except CheckError as exc:
            recovered, why = False, str(exc)
        recovery = time.monotonic() - ended
        if not dead:
            recovered, why = False, "no executor died: the kill did not happen, the check proved nothing"
        yield ctx.result(
            name="spark.resilience.recovered",
            category="resilience",
            status=PASS if recovered else FAIL,
            reason=why,
            rule="exactly the killed executor is lost and the master starts a replacement on a worker",
            expected=1,
            observed=len(dead),
        )
        yield ctx.performance(
            "extra_time",
            [killed_s - baseline_s],
            details={"baseline_s": round(baseline_s, 3), "with_kill_s": round(killed_s, 3)},
        )
        if recovered:
            yield ctx.performance("recovery", [recovery])
