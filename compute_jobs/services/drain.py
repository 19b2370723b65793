"""Drain workers before their hosts leave the cluster, and prove that the work in flight survives.

Run on the head node as the service account (``playbooks/scale.yml`` does)::

    python -m compute_jobs.services.drain dask --addresses 10.0.0.13
        # the Dask workers on these addresses hand their results to the others and take no new
        # task (retire_workers, left "closing gracefully"); their units are stopped after this
    python -m compute_jobs.services.drain rejoin --celery-worker celery@node3
        # wait until the host's Celery worker answers again (playbooks/upgrade.yml, after a
        # host's upgrade)
    python -m compute_jobs.services.drain idle --timeout 600
        # wait until the Dask scheduler has no task to run (processing, queued, waiting): Dask
        # runs one version everywhere, so an upgrade restarts all of it once the work is done
    python -m compute_jobs.services.drain spark-idle --master-webui https://10.0.0.11:8080 \\
        --credentials /etc/clusterforge/spark/client/webui.credentials
        # the same for Spark standalone: until the master lists no running application
    python -m compute_jobs.services.drain spark-decommission --master-webui https://10.0.0.11:8080 \\
        --credentials /etc/clusterforge/spark/client/webui.credentials --workers 10.0.0.13:7078
        # after SIGPWR to those workers: until the master lists them DECOMMISSIONED (it starts no
        # executor there) with no core in use (their executors finished and handed over their blocks)
    python -m compute_jobs.services.drain probe --out /var/tmp/x.json --seconds 30 \\
        --release /var/tmp/x.json.release
        # a Dask computation and a Celery batch of known answers, kept in flight across the drain
        # (a new round of tasks whenever half a round is left) until the release file exists, then
        # collected: writes <out>.started once both run, then the verdict to <out>

The probe's verdict: the exact sums, which hosts ran the tasks, how many Celery worker processes
each host ran them in (a restart mid-batch makes two), the fewest tasks in flight at any moment
(``min_in_flight``: 0 means the work ran dry and a drain may have come after it), and ``ok``: both
sums exact, released before the stream limit, and never dry.
Standard library at import; dask and celery are imported when used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def retire_dask(addresses: list[str], timeout: float) -> dict[str, Any]:
    """Retire every Dask worker listening on one of ADDRESSES (its data moves to the others)."""
    from distributed import Client

    with Client(timeout=30) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        chosen = sorted(w for w in workers if w.split("://", 1)[-1].rsplit(":", 1)[0] in addresses)
        start = time.monotonic()
        if chosen:
            client.retire_workers(workers=chosen, close_workers=False, remove=False)
        # Retired workers stay known but take no task; the scheduler lists the others as running.
        deadline = start + timeout
        while time.monotonic() < deadline:
            running = set(client.scheduler_info(n_workers=-1)["workers"]) - set(chosen)
            if running:
                break
            time.sleep(0.5)
        return {"retired": chosen, "seconds": round(time.monotonic() - start, 2)}


def rejoin(celery_worker: str, timeout: float) -> dict[str, Any]:
    """Wait until CELERY_WORKER answers a ping."""
    from compute_jobs.services import celery_app

    start = time.monotonic()
    app = celery_app.create_app(celery_app.load_settings())
    answered = False
    while not answered and time.monotonic() - start < timeout:
        answered = bool(app.control.ping(destination=[celery_worker], timeout=2.0))
    return {"ok": answered, "worker": celery_worker, "seconds": round(time.monotonic() - start, 2)}


# Task states of work not done yet (tasks held in memory are done: a restart loses them, not work).
BUSY_STATES = ("processing", "waiting", "queued", "no-worker")


def busy_tasks(states: dict[str, int]) -> int:
    """How many tasks of a scheduler's state counts are still to run."""
    return sum(states.get(state, 0) for state in BUSY_STATES)


def _task_states(dask_scheduler: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in dask_scheduler.tasks.values():
        counts[task.state] = counts.get(task.state, 0) + 1
    return counts


def wait_idle(timeout: float) -> dict[str, Any]:
    """Wait until the Dask scheduler has nothing to run; the last state counts and whether it did."""
    from distributed import Client

    start = time.monotonic()
    with Client(timeout=30) as client:
        while True:
            states = client.run_on_scheduler(_task_states)
            if busy_tasks(states) == 0 or time.monotonic() - start > timeout:
                break
            time.sleep(1)
    return {"ok": busy_tasks(states) == 0, "states": states, "seconds": round(time.monotonic() - start, 2)}


def running_apps(status: dict[str, Any]) -> list[str]:
    """Ids of the applications a Spark master's /json/ lists as active."""
    return sorted(str(app.get("id", "?")) for app in status.get("activeapps") or [])


def watch_spark_master(
    master_webui: str,
    credentials: str,
    timeout: float,
    pause: float,
    waiting_for: Callable[[dict[str, Any]], list[str]],
) -> tuple[list[str], dict[str, Any], float]:
    """Read the master's /json/ through its HTTPS gateway every PAUSE s until WAITING_FOR(status) is
    empty or TIMEOUT s have passed: (what is still waited for, the last status, the seconds waited)."""
    from compute_jobs.checks import spark

    url = master_webui.rstrip("/") + "/json/"
    spark.use_gateway_credentials(master_webui, credentials)
    start = time.monotonic()
    while True:
        status = spark.fetch_json(url, 10.0)
        waiting = waiting_for(status)
        if not waiting or time.monotonic() - start > timeout:
            return waiting, status, round(time.monotonic() - start, 2)
        time.sleep(pause)


def wait_spark_idle(master_webui: str, credentials: str, timeout: float) -> dict[str, Any]:
    """Wait until the Spark master runs no application."""
    apps, _, seconds = watch_spark_master(master_webui, credentials, timeout, 2.0, running_apps)
    return {"ok": not apps, "running": apps, "seconds": seconds}


def spark_workers(status: dict[str, Any], endpoints: list[str]) -> dict[str, dict[str, Any]]:
    """The live entry (not DEAD) of each worker ``host:port`` of ENDPOINTS that the master's /json/ lists."""
    found: dict[str, dict[str, Any]] = {}
    for worker in status.get("workers") or []:
        key = f"{worker.get('host')}:{worker.get('port')}"
        if key in endpoints and str(worker.get("state")) != "DEAD":
            found[key] = worker
    return found


def undrained(workers: dict[str, dict[str, Any]], endpoints: list[str]) -> list[str]:
    """ENDPOINTS still to wait for: listed and not DECOMMISSIONED yet, or still running executors
    (a worker the master no longer lists runs nothing)."""
    return [
        key
        for key in endpoints
        if key in workers
        and (workers[key].get("state") != "DECOMMISSIONED" or int(workers[key].get("coresused") or 0) > 0)
    ]


def wait_spark_decommissioned(
    master_webui: str, credentials: str, endpoints: list[str], timeout: float
) -> dict[str, Any]:
    """Wait until the master lists every worker of ENDPOINTS as DECOMMISSIONED with no core in use."""
    waiting, status, seconds = watch_spark_master(
        master_webui, credentials, timeout, 1.0, lambda s: undrained(spark_workers(s, endpoints), endpoints)
    )
    workers = spark_workers(status, endpoints)
    return {
        "ok": not waiting,
        "waiting": waiting,
        "workers": {
            key: {"state": w.get("state"), "coresused": w.get("coresused")} for key, w in workers.items()
        },
        "seconds": seconds,
    }


class Stream:
    """One workload kept in flight: rounds of ROUND tasks, the next one submitted whenever half a
    round or less is outstanding, so that work runs across a drain or a roll however long it takes.

    SUBMIT(first) submits the round whose task numbers start at FIRST and returns its handles; DONE
    tells a finished handle. ``tick`` counts the outstanding handles and remembers the smallest
    count it saw (``min_in_flight``): 0 means the workload ran dry at some moment.
    """

    def __init__(self, round_size: int, submit: Callable[[int], list[Any]], done: Callable[[Any], bool]):
        self.round_size = round_size
        self.submit = submit
        self.done = done
        self.handles: list[Any] = []
        self.pending: list[Any] = []
        self.rounds = 0
        self.min_in_flight: int | None = None
        self.top_up()

    def top_up(self) -> None:
        new = self.submit(self.rounds * self.round_size)
        self.rounds += 1
        self.handles.extend(new)
        self.pending.extend(new)

    def tick(self, more: bool) -> int:
        """Count the outstanding handles; with MORE, submit a round when half a round or less is."""
        self.pending = [h for h in self.pending if not self.done(h)]
        count = len(self.pending)
        self.min_in_flight = count if self.min_in_flight is None else min(self.min_in_flight, count)
        if more and count <= self.round_size // 2:
            self.top_up()
        return count

    @property
    def tasks(self) -> int:
        return self.rounds * self.round_size


def run_streams(
    streams: dict[str, Stream], release: str | None, stream_limit: float, pause: float = 0.5
) -> dict[str, Any]:
    """Keep STREAMS in flight until the file RELEASE exists (the drain or roll is over) or
    STREAM_LIMIT s have passed; without RELEASE, submit nothing more. What each had in flight then."""
    start = time.monotonic()
    released = release is None or os.path.exists(release)
    while not released and time.monotonic() - start < stream_limit:
        for stream in streams.values():
            stream.tick(more=True)
        time.sleep(pause)
        released = release is None or os.path.exists(release)
    at_release = {name: stream.tick(more=False) for name, stream in streams.items()}
    return {
        "released": released,
        "in_flight_at_release": at_release,
        "seconds": round(time.monotonic() - start, 2),
    }


def probe(
    out: str,
    seconds: float,
    dask_tasks: int,
    celery_tasks: int,
    release: str | None = None,
    stream_limit: float = 600.0,
) -> dict[str, Any]:
    """Submit both workloads, announce them (OUT.started), keep them in flight until RELEASE exists,
    collect them, write the verdict to OUT."""
    verdict: dict[str, Any] = {"ok": False}
    client = app = None
    streams: dict[str, Stream] = {}
    started = time.monotonic()
    if dask_tasks:
        from distributed import Client

        # Defined here so that it travels by value: the workers need not import this module.
        def square_on(i: int, pause: float) -> tuple[int, str]:
            import socket as _socket
            import time as _time

            _time.sleep(pause)
            return i * i, _socket.gethostname()

        client = Client(timeout=30)
        threads = max(1, sum(client.nthreads().values()))
        dask_pause = seconds * threads / dask_tasks
        streams["dask"] = Stream(
            dask_tasks,
            lambda first: client.map(
                square_on, range(first, first + dask_tasks), pause=dask_pause, pure=False
            ),
            lambda future: future.done(),
        )
    if celery_tasks:
        from celery import group

        from compute_jobs.services import celery_app

        settings = celery_app.load_settings()
        app = celery_app.create_app(settings)
        queue = str(settings.get("shared_queue", "clusterforge"))
        celery_pause = seconds / max(1, celery_tasks // 4)

        def batch(first: int) -> list[Any]:
            flow = group(
                app.signature(celery_app.TASK_PREFIX + "slow_double", args=(i, celery_pause), queue=queue)
                for i in range(first, first + celery_tasks)
            )
            return list(flow.apply_async().results)

        streams["celery"] = Stream(celery_tasks, batch, lambda result: result.ready())
    with open(out + ".started", "w", encoding="utf-8") as handle:
        json.dump({"dask_tasks": dask_tasks, "celery_tasks": celery_tasks}, handle)
    flow_state = run_streams(streams, release, stream_limit)
    verdict["released"] = flow_state["released"]
    ok = bool(flow_state["released"])
    if client is not None:
        stream = streams["dask"]
        values = client.gather(stream.handles)
        verdict["dask"] = {
            **judge(range(stream.tasks), [v for v, _ in values], lambda i: i * i),
            "hosts": sorted({h for _, h in values}),
            **stream_figures(stream, flow_state, "dask"),
        }
        client.close()
    if app is not None:
        stream = streams["celery"]
        wait = max(60.0, 10 * seconds)
        values = [result.get(timeout=wait) for result in stream.handles]
        verdict["celery"] = {
            **judge(range(stream.tasks), [v["value"] for v in values], lambda i: 2 * i),
            "hosts": sorted({v["host"] for v in values}),
            "instances": worker_instances(values),
            "redelivered": sum(bool(v.get("redelivered")) for v in values),
            **stream_figures(stream, flow_state, "celery"),
        }
    for name in streams:
        ok = ok and verdict[name]["exact"] and (release is None or verdict[name]["min_in_flight"] > 0)
    verdict["ok"] = ok
    verdict["seconds"] = round(time.monotonic() - started, 2)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(verdict, handle)
    os.replace(tmp, out)
    return verdict


def judge(numbers: range, observed: list[int], answer: Callable[[int], int]) -> dict[str, Any]:
    """The exact sum of ANSWER over NUMBERS against the sum of the OBSERVED values."""
    expected = sum(answer(i) for i in numbers)
    total = sum(observed)
    return {
        "exact": total == expected and len(observed) == len(numbers),
        "expected": expected,
        "observed": total,
        "tasks": len(numbers),
    }


def stream_figures(stream: Stream, flow_state: dict[str, Any], name: str) -> dict[str, Any]:
    """How the workload stayed in flight: rounds submitted, the fewest tasks outstanding at any
    moment the probe looked (0: it ran dry, the drain may have come after it), and at the release."""
    return {
        "rounds": stream.rounds,
        # run_streams's last look, at the release, is among those counted.
        "min_in_flight": stream.min_in_flight,
        "in_flight_at_release": flow_state["in_flight_at_release"][name],
    }


def worker_instances(values: list[dict[str, Any]]) -> dict[str, int]:
    """Per worker (its name without ``celery@``: the inventory's name of its host), how many worker
    processes (main process ids: a restart makes a new one) ran a part of the batch; 2 or more
    means that worker ran it before and after a restart."""
    seen: dict[str, set[Any]] = {}
    for value in values:
        name = str(value.get("worker") or value["host"]).split("@", 1)[-1]
        seen.setdefault(name, set()).add(value.get("parent"))
    return {host: len(parents) for host, parents in sorted(seen.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compute_jobs.services.drain", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dask", help="retire the Dask workers on these addresses")
    d.add_argument("--addresses", required=True, help="comma-separated cluster addresses")
    d.add_argument("--timeout", type=float, default=120.0)
    r = sub.add_parser("rejoin", help="wait until a host's Celery worker answers again")
    r.add_argument("--celery-worker", required=True, help="the host's Celery worker name (celery@HOST)")
    r.add_argument("--timeout", type=float, default=180.0)
    i = sub.add_parser("idle", help="wait until the Dask scheduler has no task to run")
    i.add_argument("--timeout", type=float, default=600.0)
    si = sub.add_parser("spark-idle", help="wait until the Spark master runs no application")
    si.add_argument("--master-webui", required=True, help="https://MASTER:8080 (the gateway)")
    si.add_argument("--credentials", required=True, help="the gateway's user:password file")
    si.add_argument("--timeout", type=float, default=600.0)
    sd = sub.add_parser(
        "spark-decommission", help="wait until the master lists these workers decommissioned and idle"
    )
    sd.add_argument("--master-webui", required=True, help="https://MASTER:8080 (the gateway)")
    sd.add_argument("--credentials", required=True, help="the gateway's user:password file")
    sd.add_argument("--workers", required=True, help="comma-separated host:port of the workers (RPC port)")
    sd.add_argument("--timeout", type=float, default=300.0)
    p = sub.add_parser("probe", help="known-answer workloads across the drain")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=30.0, help="about how long each workload runs")
    p.add_argument("--dask-tasks", type=int, default=0)
    p.add_argument("--celery-tasks", type=int, default=0)
    p.add_argument(
        "--release", help="keep the workloads in flight until this file exists (the drain is over)"
    )
    p.add_argument("--stream-limit", type=float, default=600.0, help="stop submitting after this long anyway")
    args = parser.parse_args(argv)
    if args.command == "dask":
        result = retire_dask([a for a in args.addresses.split(",") if a], args.timeout)
    elif args.command == "idle":
        result = wait_idle(args.timeout)
    elif args.command == "spark-idle":
        result = wait_spark_idle(args.master_webui, args.credentials, args.timeout)
    elif args.command == "spark-decommission":
        endpoints = [w for w in args.workers.split(",") if w]
        result = wait_spark_decommissioned(args.master_webui, args.credentials, endpoints, args.timeout)
    elif args.command == "rejoin":
        result = rejoin(args.celery_worker, args.timeout)
    else:
        result = probe(
            args.out, args.seconds, args.dask_tasks, args.celery_tasks, args.release, args.stream_limit
        )
    json.dump(result, sys.stdout)
    print()
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
