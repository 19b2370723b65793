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
    python -m compute_jobs.services.drain probe --out /var/tmp/x.json --seconds 30
        # a Dask computation and a Celery batch of known answers, submitted before the drain and
        # collected after it: writes <out>.started once both are running, then the verdict to <out>

The probe's verdict: the exact sums, which hosts ran the tasks, and ``ok`` (both sums exact).
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


def probe(out: str, seconds: float, dask_tasks: int, celery_tasks: int) -> dict[str, Any]:
    """Submit both workloads, announce them (OUT.started), collect them, write the verdict to OUT."""
    verdict: dict[str, Any] = {"ok": False}
    client = app = None
    futures: list[Any] = []
    celery_result = None
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
        pause = seconds * threads / dask_tasks
        futures = client.map(square_on, range(dask_tasks), pause=pause, pure=False)
    if celery_tasks:
        from celery import group

        from compute_jobs.services import celery_app

        settings = celery_app.load_settings()
        app = celery_app.create_app(settings)
        queue = str(settings.get("shared_queue", "clusterforge"))
        pause = seconds / max(1, celery_tasks // 4)
        flow = group(
            app.signature(celery_app.TASK_PREFIX + "slow_double", args=(i, pause), queue=queue)
            for i in range(celery_tasks)
        )
        celery_result = flow.apply_async()
    with open(out + ".started", "w", encoding="utf-8") as handle:
        json.dump({"dask_tasks": dask_tasks, "celery_tasks": celery_tasks}, handle)
    ok = True
    if client is not None:
        values = client.gather(futures)
        total = sum(v for v, _ in values)
        expected = sum(i * i for i in range(dask_tasks))
        verdict["dask"] = {
            "expected": expected,
            "observed": total,
            "tasks": dask_tasks,
            "hosts": sorted({h for _, h in values}),
        }
        ok = ok and total == expected
        client.close()
    if celery_result is not None:
        values = celery_result.get(timeout=max(60.0, 10 * seconds))
        total = sum(v["value"] for v in values)
        expected = sum(2 * i for i in range(celery_tasks))
        verdict["celery"] = {
            "expected": expected,
            "observed": total,
            "tasks": celery_tasks,
            "hosts": sorted({v["host"] for v in values}),
            "redelivered": sum(bool(v.get("redelivered")) for v in values),
        }
        ok = ok and total == expected
    verdict["ok"] = ok
    verdict["seconds"] = round(time.monotonic() - started, 2)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(verdict, handle)
    os.replace(tmp, out)
    return verdict


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
        result = probe(args.out, args.seconds, args.dask_tasks, args.celery_tasks)
    json.dump(result, sys.stdout)
    print()
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
