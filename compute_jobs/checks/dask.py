"""Dask checks: through the provisioned scheduler, with the client certificate of the service account.

Every check connects as a client with the Dask configuration the dask role writes for the service
account (mutual TLS), computes known answers on the workers, and judges what comes back. The dask
and distributed libraries are imported inside :class:`DaskSession` only; the checks talk to the
cluster through that one boundary, which the unit tests replace with a fake.

cluster.json ``engines.dask``::

    {
      "endpoint": "tls://10.0.0.11:8786",              scheduler address (protocol://host:port)
      "config_dir": "/etc/clusterforge/dask/client",   Dask config (TLS files) the client loads
      "dashboard": "https://10.0.0.11:8787/status",    optional, reported only
      "expected_workers": ["node-2", "node-3"],        worker hosts
      "workers": {                                     what the inventory provisioned, per host
        "node-2": {"address": "10.0.0.12", "nworkers": 1, "nthreads": 2, "memory_limit": 1073741824},
        "node-3": {"address": "10.0.0.13", "nworkers": 1, "nthreads": 2, "memory_limit": 1073741824}
      }
    }

Worker processes are named ``host/i`` (i-th process of that host by port) in placement results.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute_jobs.checks._reference import reference_groupby
from compute_jobs.compare import ratio
from compute_jobs.context import CheckContext
from compute_jobs.engines import worker_map
from compute_jobs.model import FAIL, PASS, Check, CheckError, Metric, Param, Result, register

ENGINE = "dask"


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process as the scheduler reports it."""

    address: str
    host: str
    name: str
    nthreads: int
    memory_limit: int


@dataclass(frozen=True)
class ExpectedHost:
    """What the inventory provisioned on one worker host."""

    name: str
    address: str
    nworkers: int
    nthreads: int
    memory_limit: int


# --- the boundary: a client session on the provisioned scheduler --------------------------------


class DaskSession:
    """A distributed.Client on the provisioned scheduler; every engine call of the checks is here."""

    def __init__(self, settings: Mapping[str, Any], timeout: float) -> None:
        try:
            import dask
            import distributed
        except ImportError as exc:
            raise CheckError(
                f"cannot import dask/distributed ({exc}): install the dask role's packages in this venv"
            ) from exc
        config_dir = settings.get("config_dir")
        if config_dir:
            files = sorted(glob.glob(os.path.join(str(config_dir), "*.yaml")))
            if not files:
                raise CheckError(f"engines.dask.config_dir {config_dir}: no *.yaml Dask configuration there")
            unreadable = [f for f in files if not os.access(f, os.R_OK)]
            if unreadable:
                raise CheckError(f"cannot read {', '.join(unreadable)}: run as the service account")
            dask.config.update(dask.config.config, dask.config.collect(paths=[str(config_dir)], env={}))
        address = settings.get("endpoint") or dask.config.get("scheduler-address", None)
        if not address:
            raise CheckError("engines.dask has no endpoint and the client configuration no scheduler-address")
        self.address = str(address)
        self._distributed = distributed
        try:
            # Security() reads distributed.comm.tls.* and require-encryption from the loaded config.
            self.client = distributed.Client(self.address, security=distributed.Security(), timeout=timeout)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise CheckError(
                f"cannot connect to the Dask scheduler {self.address}: {type(exc).__name__}: {exc} "
                "(is dask-scheduler active, and does this account read the client certificate?)"
            ) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=5)

    # inventory
    def workers(self) -> list[WorkerInfo]:
        info = self.client.scheduler_info(n_workers=-1) if _accepts_n_workers(self.client) else None
        info = info or self.client.scheduler_info()
        return [
            WorkerInfo(
                address=addr,
                host=str(w.get("host", "")),
                name=str(w.get("name", "")),
                nthreads=int(w.get("nthreads", 0)),
                memory_limit=int(w.get("memory_limit", 0) or 0),
            )
            for addr, w in info["workers"].items()
        ]

    def pids(self) -> dict[str, int]:
        """Worker address -> process id (a restarted worker keeps its address, not its pid)."""
        return {addr: int(pid) for addr, pid in self.client.run(os.getpid).items()}

    def versions(self) -> tuple[dict[str, Any], str]:
        """(scheduler packages, "" or the mismatch message of get_versions(check=True))."""
        try:
            versions = self.client.get_versions(check=True)
            problem = ""
        except ValueError as exc:
            versions = self.client.get_versions(check=False)
            problem = str(exc)
        return dict(versions.get("scheduler", {}).get("packages", {})), problem

    # known answers
    def arange_sum(self, n: int, chunk: int) -> int:
        import dask.array as da

        return int(da.arange(n, chunks=chunk, dtype="int64").sum().compute())

    def matmul(self, a: np.ndarray, b: np.ndarray, chunk: int) -> np.ndarray:
        import dask.array as da

        product = da.from_array(a, chunks=chunk) @ da.from_array(b, chunks=chunk)
        return np.asarray(product.compute())

    def groupby(self, keys: np.ndarray, values: np.ndarray, partitions: int) -> dict[str, np.ndarray]:
        import dask.dataframe as dd
        import pandas as pd

        frame = dd.from_pandas(pd.DataFrame({"key": keys, "value": values}), npartitions=partitions)
        grouped = frame.groupby("key")["value"].agg(["sum", "count"]).compute().sort_index()
        return {
            "key": grouped.index.to_numpy(dtype=np.int64),
            "sum": grouped["sum"].to_numpy(dtype=np.int64),
            "count": grouped["count"].to_numpy(dtype=np.int64),
        }

    # placement
    def tagged_tasks(self, ntasks: int, sleep_s: float, timeout: float) -> tuple[list[str], list[str]]:
        """Run ntasks sleeping tasks; return (worker that ran each task, workers holding results)."""

        def where(i: int, pause: float) -> tuple[int, str]:
            import time as _time

            from distributed import get_worker

            _time.sleep(pause)
            return i, get_worker().address

        futures = self.client.map(where, range(ntasks), pause=sleep_s, pure=False)
        ran = [addr for _, addr in self.client.gather(futures, direct=False)]
        holders = sorted({w for ws in self.client.who_has(futures).values() for w in ws})
        del futures
        return ran, holders

    # throughput
    def noop_batch(self, ntasks: int) -> None:
        def noop(x: int) -> int:
            return x

        futures = self.client.map(noop, range(ntasks), pure=False)
        self.client.gather(futures)

    def round_trip(self) -> None:
        def noop(x: int) -> int:
            return x

        self.client.submit(noop, 1, pure=False).result()

    # resilience
    def squares_sum(
        self, ntasks: int, sleep_s: float, kill_after: int | None, timeout: float
    ) -> dict[str, Any]:
        """Sum of i*i over ntasks sleeping tasks; after kill_after of them finished, SIGKILL the worker
        process that is busiest, from inside itself, so that its nanny has to restart it."""

        def square(i: int, pause: float) -> int:
            import time as _time

            _time.sleep(pause)
            return i * i

        # client.run(wait=False) needs a coroutine function: the worker answers first, then dies.
        async def die() -> None:
            import os as _os
            import signal as _signal

            _os.kill(_os.getpid(), _signal.SIGKILL)

        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        futures = self.client.map(square, range(ntasks), pause=sleep_s, pure=False)
        victim = None
        victim_pid = 0
        if kill_after is not None:
            while sum(f.done() for f in futures) < kill_after:
                if time.monotonic() > deadline:
                    raise CheckError(f"fewer than {kill_after} tasks finished in {timeout:.0f} s")
                time.sleep(0.01)
            processing = self.client.processing()
            busy = sorted(processing, key=lambda w: (-len(processing[w]), w))
            if not busy:
                raise CheckError("no worker is processing tasks: nothing to kill mid-computation")
            victim = busy[0]
            victim_pid = self.pids().get(victim, 0)
            self.client.run(die, workers=[victim], wait=False)
        killed_at = time.monotonic()
        total = sum(self.client.gather(futures))
        seconds = time.perf_counter() - start
        del futures
        return {
            "total": int(total),
            "seconds": seconds,
            "victim": victim,
            "victim_pid": victim_pid,
            "killed_at": killed_at if victim else None,
        }


class LocalDaskSession(DaskSession):
    """A LocalCluster on this host (one worker process, loopback only, stopped at close): the same
    work timed here is the reference the cluster's figures are read against, in the same run."""

    def __init__(self, nthreads: int, timeout: float) -> None:
        try:
            import dask
            import distributed
        except ImportError as exc:
            raise CheckError(f"cannot import dask/distributed ({exc})") from exc
        self._distributed = distributed
        self._stack = contextlib.ExitStack()
        # Plain TCP on 127.0.0.1 for this private, short-lived cluster, whatever the client
        # configuration of the provisioned one requires.
        self._stack.enter_context(dask.config.set({"distributed.comm.require-encryption": False}))
        security = distributed.Security(require_encryption=False)
        try:
            self.cluster = distributed.LocalCluster(
                n_workers=1,
                threads_per_worker=nthreads,
                processes=True,
                host="127.0.0.1",
                protocol="tcp://",
                dashboard_address=None,
                security=security,
                timeout=timeout,
            )
            self.client = distributed.Client(self.cluster, security=security, timeout=timeout)
        except Exception as exc:
            self._stack.close()
            raise CheckError(
                f"cannot start a LocalCluster on this host: {type(exc).__name__}: {exc}"
            ) from exc
        self.address = str(self.cluster.scheduler_address)

    def close(self) -> None:
        super().close()
        with contextlib.suppress(Exception):
            self.cluster.close(timeout=5)
        self._stack.close()


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    with contextlib.suppress(TypeError, ValueError):
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    return False


# Replaced by a fake in the unit tests: (engines.dask settings, connect timeout) -> session.
CONNECT: Callable[[Mapping[str, Any], float], Any] = DaskSession
# Replaced by a fake in the unit tests: (threads, start timeout) -> session on a LocalCluster.
LOCAL: Callable[[int, float], Any] = LocalDaskSession


@contextlib.contextmanager
def session(ctx: CheckContext) -> Iterator[Any]:
    sess = CONNECT(ctx.cluster.engines[ENGINE], ctx.bounded(ctx.params.connect_timeout))
    try:
        yield sess
    finally:
        sess.close()


# --- inventory mapping --------------------------------------------------------------------------


def expected_hosts(ctx: CheckContext) -> list[ExpectedHost]:
    """Worker hosts and their provisioned layout, from engines.dask.workers."""
    try:
        workers = worker_map(ctx.cluster.engines[ENGINE], ENGINE, ctx.cluster.source)
    except ValueError as exc:
        raise CheckError(str(exc)) from exc
    hosts = [
        ExpectedHost(
            name=name,
            address=str(spec.get("address") or _host_address(ctx, name)),
            nworkers=int(spec.get("nworkers", 1)),
            nthreads=int(spec.get("nthreads", 1)),
            memory_limit=int(spec.get("memory_limit", 0)),
        )
        for name, spec in workers.items()
    ]
    return hosts


def _host_address(ctx: CheckContext, name: str) -> str:
    host = ctx.cluster.host(name)
    return host.address if host else name


def label_workers(workers: list[WorkerInfo], hosts: list[ExpectedHost]) -> dict[str, str]:
    """Worker address -> ``host/i``: host by address (or name prefix), i by worker port order."""
    by_address = {h.address: h.name for h in hosts}
    by_name = {h.name: h.name for h in hosts}
    grouped: dict[str, list[WorkerInfo]] = defaultdict(list)
    for worker in workers:
        host = by_address.get(worker.host)
        if host is None:
            prefix = worker.name.rsplit("-", 1)[0] if worker.name not in by_name else worker.name
            host = by_name.get(worker.name) or by_name.get(prefix) or worker.host or worker.address
        grouped[host].append(worker)
    labels = {}
    for host, members in grouped.items():
        for index, worker in enumerate(sorted(members, key=lambda w: _port(w.address))):
            labels[worker.address] = f"{host}/{index}"
    return labels


def _port(address: str) -> int:
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


def expected_labels(hosts: list[ExpectedHost]) -> list[str]:
    return [f"{h.name}/{i}" for h in hosts for i in range(h.nworkers)]


def layout(workers: list[WorkerInfo], labels: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """host -> {"nworkers", "nthreads": [...], "memory_limit": [...]} of the running workers."""
    table: dict[str, dict[str, Any]] = {}
    for worker in sorted(workers, key=lambda w: labels[w.address]):
        host = labels[worker.address].rsplit("/", 1)[0]
        entry = table.setdefault(host, {"nworkers": 0, "nthreads": [], "memory_limit": []})
        entry["nworkers"] += 1
        entry["nthreads"].append(worker.nthreads)
        entry["memory_limit"].append(worker.memory_limit)
    return table


def expected_layout(hosts: list[ExpectedHost]) -> dict[str, dict[str, Any]]:
    return {
        h.name: {
            "nworkers": h.nworkers,
            "nthreads": [h.nthreads] * h.nworkers,
            "memory_limit": [h.memory_limit] * h.nworkers,
        }
        for h in hosts
    }


CONNECT_PARAM = Param("connect_timeout", float, 15.0, "s to connect to the scheduler", 0.5, 600, smoke=2.0)


class _DaskCheck(Check):
    scope = "cluster"
    engine = ENGINE
    engine_keys = ("endpoint", "config_dir")


# --- checks -------------------------------------------------------------------------------------


@register
class DaskWorkers(_DaskCheck):
    name = "dask.workers"
    category = "inventory"
    tags = frozenset({"dask"})
    description = (
        "Workers registered with the scheduler: count, threads and memory per host equal the inventory"
    )
    params = (CONNECT_PARAM,)
    correctness_rule = (
        "per worker host: worker processes == nworkers, each with nthreads threads and memory_limit bytes "
        "(exact); client.get_versions(check=True) finds no mismatch between client, scheduler and workers"
    )
    timeout = 30.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        hosts = expected_hosts(ctx)
        with session(ctx) as sess:
            workers = sess.workers()
            labels = label_workers(workers, hosts)
            yield ctx.compare(
                expected_layout(hosts),
                layout(workers, labels),
                name="dask.workers",
                details={
                    "scheduler": sess.address,
                    "workers": {labels[w.address]: w.address for w in workers},
                },
            )
            packages, problem = sess.versions()
            yield ctx.result(
                name="dask.workers.versions",
                category="inventory",
                status=FAIL if problem else PASS,
                reason=problem,
                rule="client.get_versions(check=True) raises no mismatch",
                details={"scheduler_packages": packages},
            )


@register
class DaskKnownAnswer(_DaskCheck):
    name = "dask.known_answer"
    category = "correctness"
    tags = frozenset({"dask"})
    description = "arange(n).sum() exactly, a chunked matrix product against numpy, a groupby against pandas"
    params = (
        Param("n", int, 10_000_000, "elements of arange(n)", 10, 10**10, smoke=1000),
        Param("chunk", int, 1_000_000, "arange chunk size", 1, 10**9, smoke=100),
        Param("matrix", int, 600, "order of the square matrices", 2, 20000, smoke=12),
        Param("matrix_chunk", int, 200, "block size of the matrices", 1, 20000, smoke=5),
        Param("rows", int, 200_000, "dataframe rows", 10, 10**9, smoke=200),
        Param("keys", int, 97, "distinct groupby keys", 1, 10**6, smoke=7),
        Param("partitions", int, 8, "dataframe partitions", 1, 10000, smoke=3),
        Param("seed", int, 20261121, "random seed of the matrices and the dataframe", 0),
        CONNECT_PARAM,
    )
    correctness_rule = (
        "arange(n).sum() == n(n-1)/2 exactly (int64); matrix product: HPL scaled residual "
        "max|C - AB| / (N eps ||A||_inf ||B||_inf) < 16 against numpy; groupby sum and count == reference, "
        "exactly"
    )
    timeout = 60.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        rng = np.random.default_rng(p.seed)
        a = rng.random((p.matrix, p.matrix))
        b = rng.random((p.matrix, p.matrix))
        keys = rng.integers(0, p.keys, size=p.rows, dtype=np.int64)
        values = rng.integers(-1000, 1000, size=p.rows, dtype=np.int64)
        with session(ctx) as sess:
            start = time.perf_counter()
            total = sess.arange_sum(p.n, p.chunk)
            yield ctx.compare(
                p.n * (p.n - 1) // 2,
                total,
                name="dask.known_answer.arange_sum",
                rule="da.arange(n).sum() == n(n-1)/2 exactly",
                details={"n": p.n, "chunk": p.chunk, "seconds": round(time.perf_counter() - start, 4)},
            )
            ctx.check_deadline()
            start = time.perf_counter()
            product = sess.matmul(a, b, p.matrix_chunk)
            seconds = time.perf_counter() - start
            scale = (
                p.matrix * np.finfo(np.float64).eps * np.linalg.norm(a, np.inf) * np.linalg.norm(b, np.inf)
            )

            def residual(expected: np.ndarray, got: np.ndarray) -> float:
                if np.shape(got) != np.shape(expected):
                    return float("inf")
                return float(np.max(np.abs(np.asarray(got) - expected)) / scale)

            yield ctx.compare(
                a @ b,
                product,
                tolerance=16.0,
                error=residual,
                name="dask.known_answer.matmul",
                rule="HPL scaled residual of the distributed product against numpy < 16",
                details={"n": p.matrix, "chunk": p.matrix_chunk, "seconds": round(seconds, 4)},
            )
            ctx.check_deadline()
            start = time.perf_counter()
            grouped = sess.groupby(keys, values, p.partitions)
            seconds = time.perf_counter() - start
            expected = reference_groupby(keys, values)
            yield ctx.compare(
                np.concatenate([expected["key"], expected["sum"], expected["count"]]),
                np.concatenate([grouped["key"], grouped["sum"], grouped["count"]]),
                name="dask.known_answer.groupby",
                rule="dask.dataframe groupby(key).value.agg([sum, count]) == numpy reference, exactly",
                details={
                    "rows": p.rows,
                    "keys": p.keys,
                    "partitions": p.partitions,
                    "seconds": round(seconds, 4),
                },
            )


@register
class DaskPlacement(_DaskCheck):
    name = "dask.placement"
    category = "placement"
    tags = frozenset({"dask"})
    description = "Every provisioned worker process ran tasks, and results are held across all workers"
    params = (
        Param("tasks_per_thread", int, 4, "tasks submitted per worker thread of the inventory", 1, 1000),
        Param("sleep", float, 0.05, "s each task sleeps, so that all workers get some", 0.0, 10.0, smoke=0.0),
        CONNECT_PARAM,
    )
    placement_rule = (
        "worker processes (host/i) that ran tasks == those of the inventory; same for result holders"
    )
    timeout = 40.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        hosts = expected_hosts(ctx)
        expected = expected_labels(hosts)
        threads = sum(h.nworkers * h.nthreads for h in hosts)
        ntasks = max(len(expected), threads * ctx.params.tasks_per_thread)
        with session(ctx) as sess:
            labels = label_workers(sess.workers(), hosts)
            ran, holders = sess.tagged_tasks(ntasks, ctx.params.sleep, ctx.remaining())
        per_worker: dict[str, int] = defaultdict(int)
        for address in ran:
            per_worker[labels.get(address, address)] += 1
        yield ctx.compare_sets(
            expected,
            sorted(per_worker),
            name="dask.placement",
            details={"tasks": ntasks, "tasks_per_worker": dict(sorted(per_worker.items()))},
        )
        yield ctx.compare_sets(
            expected,
            sorted({labels.get(a, a) for a in holders}),
            name="dask.placement.results",
            rule="workers holding task results (who_has) == worker processes of the inventory",
        )


@register
class DaskThroughput(_DaskCheck):
    name = "dask.throughput"
    category = "performance"
    tags = frozenset({"dask"})
    description = "No-op tasks per second through the scheduler, and the submit-to-result round trip"
    params = (
        Param("tasks", int, 100, "no-op tasks per timed batch", 10, 10**7, smoke=20),
        Param("repeats", int, 5, "timed batches after one warm-up", 5, 1000),
        Param("round_trips", int, 30, "timed single submit->result round trips", 5, 100000, smoke=5),
        Param(
            "local_threads",
            int,
            2,
            "threads of the LocalCluster (one worker process) timed on the head node as the same-run "
            "reference; 0 skips it",
            0,
            1024,
        ),
        CONNECT_PARAM,
    )
    metrics = (
        Metric("tasks_per_s", "tasks/s", help="no-op tasks / time of client.map + gather"),
        Metric("round_trip", "ms", better="lower", help="client.submit(noop).result(), one at a time"),
        Metric("tasks_per_s_local", "tasks/s", help="the same batches on a LocalCluster on the head node"),
        Metric("round_trip_local", "ms", better="lower", help="the same round trip on that LocalCluster"),
    )
    timeout = 60.0

    @staticmethod
    def measure(ctx: CheckContext, sess: Any) -> tuple[list[float], list[float]]:
        """tasks/s of each timed batch and round trips in ms, through one session."""
        p = ctx.params
        durations = ctx.repeat(lambda: sess.noop_batch(p.tasks), p.repeats, warmup=1)
        trips = ctx.repeat(sess.round_trip, p.round_trips, warmup=3)
        return [p.tasks / d for d in durations], [t * 1000.0 for t in trips]

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        with session(ctx) as sess:
            rates, trips = self.measure(ctx, sess)
        rate = ctx.performance("tasks_per_s", rates, details={"tasks": p.tasks})
        trip = ctx.performance("round_trip", trips)
        if p.local_threads > 0:
            local = LOCAL(p.local_threads, ctx.bounded(p.connect_timeout))
            try:
                local_rates, local_trips = self.measure(ctx, local)
            finally:
                local.close()
            where = {
                "local_cluster": f"1 worker process x {p.local_threads} threads on {ctx.cluster.head.name}"
            }
            local_rate = ctx.performance(
                "tasks_per_s_local", local_rates, details={"tasks": p.tasks, **where}
            )
            local_trip = ctx.performance("round_trip_local", local_trips, details=where)
            rate.details["cluster_to_local"] = ratio(rate.value, local_rate.value)
            trip.details["cluster_to_local"] = ratio(trip.value, local_trip.value)
            yield from (rate, trip, local_rate, local_trip)
        else:
            yield from (rate, trip)


@register
class DaskResilience(_DaskCheck):
    name = "dask.resilience"
    category = "resilience"
    tags = frozenset({"dask"})
    description = "SIGKILL one worker process mid-computation: exact result, nanny restarts it, extra time"
    params = (
        Param(
            "tasks", int, 48, "tasks of the computation (at least 8 per worker thread)", 4, 100000, smoke=8
        ),
        Param("sleep", float, 0.1, "s each task sleeps", 0.0, 60.0, smoke=0.01),
        Param("kill_fraction", float, 0.25, "kill once this fraction of the tasks finished", 0.0, 0.9),
        Param("recover_timeout", float, 30.0, "s the killed worker has to come back", 1.0, 3600, smoke=5.0),
        CONNECT_PARAM,
    )
    correctness_rule = "sum of i*i for i < tasks after a worker was killed mid-computation == exact value"
    metrics = (
        Metric("extra_time", "s", better="lower", help="run time with the kill - run time without"),
        Metric("recovery", "s", better="lower", help="kill -> worker registered again by a new process"),
    )
    timeout = 90.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        hosts = expected_hosts(ctx)
        expected_count = sum(h.nworkers for h in hosts)
        with session(ctx) as sess:
            before = sess.workers()
            if len(before) < 2:
                raise CheckError(
                    f"{len(before)} worker process(es) registered: killing one would leave none to finish"
                )
            # Work left to kill into however many threads the cluster has: with a fixed count, a
            # large cluster finished the rest while the victim was being chosen.
            tasks = max(p.tasks, 8 * sum(w.nthreads for w in before))
            exact = sum(i * i for i in range(tasks))
            baseline = sess.squares_sum(tasks, p.sleep, None, ctx.remaining())
            yield ctx.compare(exact, baseline["total"], name="dask.resilience.baseline")
            killed = sess.squares_sum(tasks, p.sleep, max(1, int(tasks * p.kill_fraction)), ctx.remaining())
            yield ctx.compare(
                exact,
                killed["total"],
                name="dask.resilience",
                details={"victim": killed["victim"], "seconds": round(killed["seconds"], 4), "tasks": tasks},
            )
            recovered, workers, recovered_at = _wait_recovered(
                sess, killed["victim"], killed["victim_pid"], expected_count, ctx.bounded(p.recover_timeout)
            )
        recovery = recovered_at - killed["killed_at"]
        yield ctx.result(
            name="dask.resilience.recovered",
            category="resilience",
            status=PASS if recovered else FAIL,
            reason=""
            if recovered
            else (
                f"after {p.recover_timeout:g} s: {len(workers)} of {expected_count} worker processes "
                f"registered, {killed['victim']} not restarted by its nanny"
            ),
            rule="the killed worker registers again (new process) and the count returns to the inventory's",
            expected=expected_count,
            observed=len(workers),
            details={"victim": killed["victim"]},
        )
        yield ctx.performance(
            "extra_time",
            [killed["seconds"] - baseline["seconds"]],
            details={"baseline_s": round(baseline["seconds"], 4), "with_kill_s": round(killed["seconds"], 4)},
        )
        if recovered:
            yield ctx.performance("recovery", [recovery], details={"victim": killed["victim"]})


def _wait_recovered(
    sess: Any, victim: str | None, victim_pid: int, expected: int, timeout: float
) -> tuple[bool, list[WorkerInfo], float]:
    """Poll until the victim's address is registered again by a new process and the count is back;
    return (recovered, last worker list, when)."""
    deadline = time.monotonic() + timeout
    workers = sess.workers()
    while True:
        now = time.monotonic()
        restarted = False
        if any(w.address == victim for w in workers):
            with contextlib.suppress(Exception):  # a worker still starting may not answer run() yet
                restarted = sess.pids().get(victim or "", victim_pid) != victim_pid
        if restarted and len(workers) >= expected:
            return True, workers, now
        if now >= deadline:
            return False, workers, now
        time.sleep(0.2)
        workers = sess.workers()
