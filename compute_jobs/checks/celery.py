"""Celery checks: tasks sent through the provisioned broker to the provisioned workers.

They run on the head node as the service account. Connection settings (broker URL with its password)
come from the node's client configuration file, read by :mod:`compute_jobs.services.celery_app`; celery is
imported lazily, inside :class:`CeleryClient`, so this module loads on nodes without it.

cluster.json ``engines.celery``::

    {
      "config": "/etc/clusterforge/celery/celery.json",   client configuration (default: that path)
      "workers": {"node-2": 2, "node-3": 2},               inventory host -> configured concurrency
      "flower_url": "https://10.0.0.11:5555"                optional, reported only
    }

Without ``workers`` the expected workers are the hosts of group ``celery_workers`` with their cores.
Worker node names are ``celery@<host>``; each worker consumes its own queue ``<prefix><host>``
(prefix from the client configuration, default ``worker.``) and the shared queue.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from compute_jobs.context import CheckContext
from compute_jobs.engines import expected_host_counts
from compute_jobs.model import Check, CheckError, Metric, Param, Result, register
from compute_jobs.remote import run_on

WORKERS_GROUP = "celery_workers"
DEFAULT_CONFIG = "/etc/clusterforge/celery/celery.json"
NODE_PREFIX = "celery@"
TASK = "clusterforge."


class CeleryClient:
    """The boundary to Celery: every call the checks make, with plain Python values in and out."""

    def __init__(self, config: str) -> None:
        try:
            from compute_jobs.services import celery_app
        except ImportError as exc:
            raise CheckError(f"celery is not importable here ({exc}); install it into the node venv") from exc
        try:
            self.settings = celery_app.load_settings(config)
        except celery_app.ConfigError as exc:
            raise CheckError(str(exc)) from exc
        self._module = celery_app
        self.app = celery_app.create_app(self.settings)

    # --- configuration ---------------------------------------------------------------------------

    @property
    def shared_queue(self) -> str:
        return str(self.settings.get("shared_queue", "clusterforge"))

    def own_queue(self, host: str) -> str:
        return str(self.settings.get("worker_queue_prefix", "worker.")) + host

    @property
    def broker(self) -> dict[str, Any]:
        return dict(self.settings.get("broker") or {})

    def reconnect(self) -> None:
        """A fresh app (new connection pools), e.g. after the broker restarted."""
        self.close()
        self.app = self._module.create_app(self.settings)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.app.close()

    # --- workers ---------------------------------------------------------------------------------

    def _retry(self, call: Any, attempts: int = 3) -> Any:
        """Run ``call``; retry on a broker connection error. A Redis connection cached in the process
        from before a broker restart fails once ("Connection closed by server"), then works."""
        errors: list[type[BaseException]] = [ConnectionError, OSError]
        with contextlib.suppress(ImportError):
            import kombu.exceptions
            import redis.exceptions

            errors += [redis.exceptions.ConnectionError, kombu.exceptions.OperationalError]
        for attempt in range(attempts):
            try:
                return call()
            except tuple(errors):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)
        return None

    def stats(self, timeout: float) -> dict[str, dict[str, Any]]:
        """Worker node name -> {"concurrency": n, "processes": [pids]} for every worker that answered."""
        replies = self._retry(lambda: self.app.control.inspect(timeout=timeout).stats()) or {}
        out = {}
        for name, stats in replies.items():
            pool = stats.get("pool") or {}
            out[name] = {
                "concurrency": pool.get("max-concurrency"),
                "processes": list(pool.get("processes") or []),
            }
        return out

    def active_queues(self, timeout: float) -> dict[str, list[str]]:
        replies = self._retry(lambda: self.app.control.inspect(timeout=timeout).active_queues()) or {}
        return {name: sorted(q["name"] for q in queues) for name, queues in replies.items()}

    # --- tasks -----------------------------------------------------------------------------------

    def signature(self, task: str, *args: Any, queue: str | None = None) -> Any:
        options = {"queue": queue} if queue else {}
        return self.app.signature(TASK + task, args=args, options=options)

    def call(self, task: str, *args: Any, queue: str | None = None, timeout: float = 10.0) -> Any:
        return self.signature(task, *args, queue=queue).apply_async().get(timeout=timeout)

    def submit(self, task: str, *args: Any, queue: str | None = None) -> Any:
        return self.signature(task, *args, queue=queue).apply_async()

    def chord_sum_of_squares(self, n: int, timeout: float) -> int:
        from celery import chord

        header = [self.signature("square", i, queue=self.shared_queue) for i in range(1, n + 1)]
        return chord(header)(self.signature("xsum", queue=self.shared_queue)).get(timeout=timeout)

    def chain_add_mul(self, timeout: float) -> int:
        from celery import chain

        flow = chain(self.signature("add", 2, 2, queue=self.shared_queue), self.signature("mul", 8))
        return flow.apply_async().get(timeout=timeout)

    def group_add(self, n: int, timeout: float) -> list[int]:
        from celery import group

        flow = group(self.signature("add", i, i, queue=self.shared_queue) for i in range(n))
        return flow.apply_async().get(timeout=timeout)

    def group_echo(self, n: int, timeout: float) -> tuple[float, list[int]]:
        """(seconds from submission to the last result, results) of a group of n echo tasks."""
        from celery import group

        flow = group(self.signature("echo", i, queue=self.shared_queue) for i in range(n))
        start = time.perf_counter()
        values = flow.apply_async().get(timeout=timeout)
        return time.perf_counter() - start, values

    def round_trip(self, value: int, timeout: float) -> tuple[float, Any]:
        start = time.perf_counter()
        result = self.call("add", value, value, queue=self.shared_queue, timeout=timeout)
        return time.perf_counter() - start, result

    def wait_state(self, result: Any, states: tuple[str, ...], deadline: float) -> tuple[str, Any]:
        """Poll a result until its state is one of ``states`` or the deadline passes."""
        state, info = result.state, None
        while time.monotonic() < deadline:
            state = result.state
            if state in states:
                return state, result.info
            time.sleep(0.05)
        return state, info

    def kill_pool_child(self, worker: str, pid: int, timeout: float) -> dict[str, Any]:
        replies = self._retry(
            lambda: self.app.control.broadcast(
                "cf_kill_pool_child",
                arguments={"pid": pid},
                destination=[worker],
                reply=True,
                timeout=timeout,
            )
        )
        for reply in replies or []:
            if worker in reply:
                return dict(reply[worker])
        return {"error": f"{worker} did not answer the kill request within {timeout:g} s"}

    def restart_broker(self, timeout: float) -> float:
        """Restart the broker unit (sudo rule of the celery role); return the seconds it took."""
        broker = self.broker
        command = list(broker.get("restart_command") or [])
        if not command:
            raise CheckError("the client configuration names no broker restart_command (celery role)")
        return run_on(
            broker.get("host"),
            command,
            timeout,
            "broker restart",
            "the celery role installs a sudo rule for the service account: celery_broker_restart_sudo",
        )


# --- shared helpers -----------------------------------------------------------------------------

CLIENT_FACTORY = CeleryClient


def client_for(ctx: CheckContext) -> CeleryClient:
    config = str(ctx.cluster.engines["celery"].get("config") or DEFAULT_CONFIG)
    return CLIENT_FACTORY(config)


def expected_workers(ctx: CheckContext) -> dict[str, int]:
    """Inventory host -> configured concurrency."""
    return expected_host_counts(ctx, "celery", "workers", WORKERS_GROUP)


def host_of(node: str) -> str:
    return node[len(NODE_PREFIX) :] if node.startswith(NODE_PREFIX) else node


class _CeleryCheck(Check):
    scope = "cluster"
    engine = "celery"


CONNECT = Param(
    "reply_timeout", float, 3.0, "s to wait for worker replies to inspect/control", 0.2, 120, smoke=1.0
)


@register
class CeleryWorkers(_CeleryCheck):
    name = "celery.workers"
    category = "placement"
    tags = frozenset({"celery"})
    description = "Workers answering through the broker == inventory; concurrency and queues as configured"
    params = (CONNECT,)
    placement_rule = "hosts of the workers that answered inspect stats == celery_workers of the inventory"
    correctness_rule = "pool max-concurrency == configured concurrency; queues == own queue + shared queue"
    timeout = 30.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        expected = expected_workers(ctx)
        client = client_for(ctx)
        try:
            stats = client.stats(ctx.bounded(ctx.params.reply_timeout))
            queues = client.active_queues(ctx.bounded(ctx.params.reply_timeout))
        finally:
            client.close()
        observed = {host_of(name): info for name, info in stats.items()}
        yield ctx.compare_sets(sorted(expected), sorted(observed), details={"nodes": sorted(stats)})
        present = sorted(set(expected) & set(observed))
        yield ctx.compare(
            {h: expected[h] for h in present},
            {h: observed[h]["concurrency"] for h in present},
            name="celery.workers.concurrency",
            rule="prefork max-concurrency == configured concurrency (cores unless set)",
        )
        yield ctx.compare(
            {h: sorted([client.own_queue(h), client.shared_queue]) for h in present},
            {h: queues.get(NODE_PREFIX + h, []) for h in present},
            name="celery.workers.queues",
            rule="each worker consumes exactly its own queue and the shared queue",
        )


@register
class CeleryCanvas(_CeleryCheck):
    name = "celery.canvas"
    category = "correctness"
    tags = frozenset({"celery"})
    description = "chord of squares 1..100 summed = 338350; chain add(2,2)|mul(8) = 32; group exact"
    params = (
        Param("n", int, 100, "chord header size (squares 1..n)", 1, 100000, smoke=10),
        Param("group_size", int, 100, "tasks in the add group", 1, 100000, smoke=10),
        Param("result_timeout", float, 20.0, "s to wait for each canvas result", 0.5, 3600),
    )
    correctness_rule = "chord sum == n(n+1)(2n+1)/6; chain == 32; group add(i, i) == [2i for i in range(n)]"
    timeout = 60.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        client = client_for(ctx)
        try:
            chord_value = client.chord_sum_of_squares(p.n, ctx.bounded(p.result_timeout))
            chain_value = client.chain_add_mul(ctx.bounded(p.result_timeout))
            group_values = client.group_add(p.group_size, ctx.bounded(p.result_timeout))
        finally:
            client.close()
        n = p.n
        yield ctx.compare(n * (n + 1) * (2 * n + 1) // 6, chord_value, details={"n": n})
        yield ctx.compare(32, chain_value, name="celery.canvas.chain")
        yield ctx.compare(
            [2 * i for i in range(p.group_size)], list(group_values), name="celery.canvas.group"
        )


@register
class CeleryPlacement(_CeleryCheck):
    name = "celery.placement"
    category = "placement"
    tags = frozenset({"celery"})
    description = "A task sent to every worker's own queue ran on that worker's host"
    params = (
        Param("result_timeout", float, 15.0, "s to wait for each worker's answer", 0.5, 3600, smoke=5.0),
    )
    placement_rule = "hosts whose own queue ran the task on that same host == celery_workers of the inventory"
    timeout = 45.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        expected = expected_workers(ctx)
        client = client_for(ctx)
        answers: dict[str, Any] = {}
        try:
            pending = {host: client.submit("whoami", host, queue=client.own_queue(host)) for host in expected}
            for host, result in pending.items():
                try:
                    answers[host] = result.get(timeout=ctx.bounded(ctx.params.result_timeout))
                except Exception as exc:  # one silent worker must not hide the others
                    answers[host] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            client.close()
        ran_home = [
            host
            for host, answer in answers.items()
            if answer.get("host") == host and answer.get("token") == host
        ]
        yield ctx.compare_sets(sorted(expected), sorted(ran_home), details={"answers": answers})


@register
class CeleryPerformance(_CeleryCheck):
    name = "celery.performance"
    category = "performance"
    tags = frozenset({"celery"})
    description = "Task round trip (submit to result) p50/p95 and group throughput in tasks/s"
    params = (
        Param("round_trips", int, 50, "sequential add tasks timed", 5, 100000, smoke=5),
        Param("group_size", int, 200, "echo tasks per group", 10, 1000000, smoke=20),
        Param("repeats", int, 5, "timed groups after one warm-up", 5, 1000),
        Param("result_timeout", float, 30.0, "s to wait for one result or group", 0.5, 3600),
    )
    correctness_rule = "every round trip returns 2i; every group returns 0..size-1 in order"
    metrics = (
        Metric(
            "round_trip", "ms", better="lower", help="apply_async to result, one add task (median; p95 too)"
        ),
        Metric("group_throughput", "tasks/s", help="group size / time from submission to the last result"),
    )
    timeout = 90.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        client = client_for(ctx)
        try:
            for i in range(3):  # warm-up: connections, worker pools, result backend
                client.round_trip(i, ctx.bounded(p.result_timeout))
            trips, answers = [], []
            for i in range(p.round_trips):
                ctx.check_deadline()
                seconds, value = client.round_trip(i, ctx.bounded(p.result_timeout))
                trips.append(seconds * 1e3)
                answers.append(value)
            client.group_echo(min(p.group_size, 50), ctx.bounded(p.result_timeout))
            rates, groups_ok = [], True
            for _ in range(p.repeats):
                ctx.check_deadline()
                seconds, values = client.group_echo(p.group_size, ctx.bounded(p.result_timeout))
                rates.append(p.group_size / seconds)
                groups_ok = groups_ok and list(values) == list(range(p.group_size))
        finally:
            client.close()
        yield ctx.compare(
            {"round_trips": [2 * i for i in range(p.round_trips)], "groups_in_order": True},
            {"round_trips": answers, "groups_in_order": groups_ok},
            name="celery.performance.answers",
        )
        yield ctx.performance("round_trip", trips, details={"count": p.round_trips})
        yield ctx.performance("group_throughput", rates, details={"group_size": p.group_size})


@register
class CeleryResilience(_CeleryCheck):
    name = "celery.resilience"
    category = "resilience"
    tags = frozenset({"celery"})
    description = (
        "SIGKILL a pool process mid-task: redelivered and right; restart the broker: workers reconnect"
    )
    params = (
        Param("task_seconds", float, 2.0, "duration of the redelivered task", 0.2, 600, smoke=0.5),
        Param(
            "hold",
            float,
            60.0,
            "s the first delivery waits for its kill (no kill: it ends then)",
            1,
            600,
            smoke=20.0,
        ),
        Param("start_timeout", float, 15.0, "s for the task to start on its worker", 0.5, 600, smoke=5.0),
        Param("result_timeout", float, 30.0, "s for the redelivered task to finish", 0.5, 3600, smoke=10.0),
        Param("reconnect_timeout", float, 45.0, "s for every worker to answer after the restart", 1, 3600),
        Param("restart_broker", bool, True, "also restart the broker (needs the celery role's sudo rule)"),
        CONNECT,
    )
    correctness_rule = (
        "killed task: result 2 x value from a different pool process; "
        "after the broker restart every worker runs a task from its own queue"
    )
    placement_rule = "workers whose killed task was redelivered and finished == inventory workers"
    timeout = 150.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        expected = expected_workers(ctx)
        client = client_for(ctx)
        try:
            yield from self._kill(ctx, client, expected)
            if ctx.params.restart_broker:
                yield from self._restart(ctx, client, expected)
        finally:
            client.close()

    def _kill(self, ctx: CheckContext, client: CeleryClient, expected: Mapping[str, int]) -> Iterator[Result]:
        p = ctx.params
        values = {host: 1000 + index for index, host in enumerate(sorted(expected))}
        pending = {
            host: client.submit(
                "slow_double", values[host], p.task_seconds, p.hold, queue=client.own_queue(host)
            )
            for host in sorted(expected)
        }
        killed: dict[str, Any] = {}
        deadline = time.monotonic() + ctx.bounded(p.start_timeout)
        for host, result in pending.items():
            state, info = client.wait_state(result, ("PROGRESS",), deadline)
            if state != "PROGRESS" or not isinstance(info, dict) or "pid" not in info:
                killed[host] = {"error": f"task did not start within {p.start_timeout:g} s (state {state})"}
                continue
            reply = client.kill_pool_child(NODE_PREFIX + host, int(info["pid"]), ctx.bounded(p.reply_timeout))
            killed[host] = {"pid": int(info["pid"]), **reply}
        outcomes: dict[str, Any] = {}
        deadline = time.monotonic() + ctx.bounded(p.result_timeout)
        for host, result in pending.items():
            if "ok" not in killed[host]:
                outcomes[host] = {"error": killed[host].get("error")}
                continue
            state, info = client.wait_state(result, ("SUCCESS",), deadline)
            outcomes[host] = info if state == "SUCCESS" and isinstance(info, dict) else {"state": state}
        finished = [h for h, o in outcomes.items() if "value" in o]
        yield ctx.compare_sets(
            sorted(expected),
            sorted(finished),
            name="celery.resilience.redelivered",
            details={"killed": killed, "outcomes": outcomes},
        )
        yield ctx.compare(
            {h: 2 * values[h] for h in finished},
            {h: outcomes[h]["value"] for h in finished},
            name="celery.resilience.redelivered_value",
        )
        yield ctx.compare(
            dict.fromkeys(finished, True),
            {h: outcomes[h].get("pid") not in (None, killed[h]["pid"]) for h in finished},
            name="celery.resilience.new_process",
            rule="the redelivered task ran in another pool process than the killed one",
        )

    def _restart(
        self, ctx: CheckContext, client: CeleryClient, expected: Mapping[str, int]
    ) -> Iterator[Result]:
        p = ctx.params
        seconds = client.restart_broker(ctx.bounded(60.0))
        client.reconnect()
        start = time.monotonic()
        deadline = start + ctx.bounded(p.reconnect_timeout)
        answered: dict[str, float] = {}
        errors: dict[str, str] = {}
        # A worker still reconnecting leaves the message queued: it runs as soon as it is back.
        pending: dict[str, Any] = {}
        while time.monotonic() < deadline and set(pending) != set(expected):
            for host in sorted(set(expected) - set(pending)):
                try:
                    pending[host] = client.submit("whoami", host, queue=client.own_queue(host))
                except Exception as exc:  # the broker may still be starting
                    errors[host] = f"{type(exc).__name__}: {exc}"
            if set(pending) != set(expected):
                time.sleep(0.5)
        for host, result in pending.items():
            try:
                answer = result.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                errors[host] = f"{type(exc).__name__}: {exc}"
                continue
            if answer.get("host") == host:
                answered[host] = time.monotonic() - start
        yield ctx.compare_sets(
            sorted(expected),
            sorted(answered),
            name="celery.resilience.reconnected",
            details={"restart_s": round(seconds, 3), "answered_after_s": answered, "errors": errors},
        )
