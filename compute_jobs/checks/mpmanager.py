"""Checks of the multiprocessing Managers cluster: jobs through the provisioned server to the workers.

They run on the head node as the service account (a member of group ``mpmanager``), through the
client of :mod:`compute_jobs.services.mpmanager` and the node's settings file. cluster.json
``engines.mpmanager``::

    {
      "address": "10.0.0.11:50000",                           the server
      "config": "/etc/clusterforge/mpmanager/mpmanager.json",  client settings (default: that path)
      "processes": {"node-2": 2, "node-3": 2}                 worker host -> worker processes
    }

Without ``processes`` the expected workers are the hosts of group ``mpmanager_workers``.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from typing import Any

from compute_jobs.context import CheckContext
from compute_jobs.engines import expected_host_counts
from compute_jobs.model import Check, CheckError, Param, Result, register
from compute_jobs.services import mpmanager as service

WORKERS_GROUP = "mpmanager_workers"


def open_cluster(ctx: CheckContext) -> service.Cluster:
    section = ctx.cluster.engines["mpmanager"]
    try:
        return service.Cluster(service.load_settings(str(section.get("config") or service.DEFAULT_CONFIG)))
    except service.ConfigError as exc:
        raise CheckError(str(exc)) from exc
    except multiprocessing.AuthenticationError as exc:
        raise CheckError(f"the server {section.get('address') or '?'} refused the key: {exc}") from exc
    except OSError as exc:
        raise CheckError(f"cannot reach the server {section.get('address') or '?'}: {exc}") from exc


# The engine boundary: how a check gets a client (tests give one of a loopback cluster).
CLIENT_FACTORY: Callable[[CheckContext], service.Cluster] = open_cluster


def expected_workers(ctx: CheckContext) -> dict[str, int]:
    """Inventory host -> worker processes."""
    return expected_host_counts(ctx, "mpmanager", "processes", WORKERS_GROUP)


class _MpmanagerCheck(Check):
    scope = "cluster"
    engine = "mpmanager"


TIMEOUT = Param("result_timeout", float, 60.0, "s to wait for all answers of one batch", 1, 3600, smoke=20.0)


@register
class MpmanagerKnownAnswer(_MpmanagerCheck):
    name = "mpmanager.known_answer"
    category = "correctness"
    tags = frozenset({"mpmanager"})
    description = "squares of 1..n through the shared queue sum to n(n+1)(2n+1)/6; primes below 10^5 = 9592"
    params = (Param("n", int, 200, "jobs in the batch (squares of 1..n)", 1, 100000, smoke=50), TIMEOUT)
    correctness_rule = "sum of the workers' squares == n(n+1)(2n+1)/6; count_primes(100000) == 9592"
    timeout = 120.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        cluster = CLIENT_FACTORY(ctx)
        started = time.monotonic()
        try:
            squares = cluster.map("square", range(1, p.n + 1), timeout=ctx.bounded(p.result_timeout))
            wall = time.monotonic() - started
            (primes,) = cluster.map("count_primes", [100_000], timeout=ctx.bounded(p.result_timeout))
        except (TimeoutError, RuntimeError, OSError, EOFError) as exc:
            raise CheckError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            cluster.close()
        details = {
            "n": p.n,
            "wall_s": round(wall, 3),
            "jobs_per_s": round(p.n / wall, 1) if wall > 0 else None,
        }
        yield ctx.compare(p.n * (p.n + 1) * (2 * p.n + 1) // 6, sum(squares), details=details)
        yield ctx.compare(9592, primes, name="mpmanager.known_answer.primes")


@register
class MpmanagerPlacement(_MpmanagerCheck):
    name = "mpmanager.placement"
    category = "placement"
    tags = frozenset({"mpmanager"})
    description = "Jobs taken from the one shared queue ran on every worker host of the inventory"
    params = (
        Param("rounds", int, 4, "jobs per worker process", 1, 100, smoke=2),
        Param("seconds", float, 0.3, "each job's duration (spreads the jobs over every process)", 0.0, 10.0),
        TIMEOUT,
    )
    placement_rule = "hosts that answered jobs of the shared queue == mpmanager_workers of the inventory"
    timeout = 120.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        expected = expected_workers(ctx)
        jobs = p.rounds * sum(expected.values())
        cluster = CLIENT_FACTORY(ctx)
        try:
            ids = [cluster.submit("whoami", i, p.seconds) for i in range(jobs)]
            replies = cluster.collect(ids, ctx.bounded(p.result_timeout))
        except (TimeoutError, OSError, EOFError) as exc:
            raise CheckError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            cluster.close()
        per_host: dict[str, int] = {}
        processes: dict[str, set[int]] = {}
        for reply in replies:
            if reply.ok:
                per_host[reply.host] = per_host.get(reply.host, 0) + 1
                processes.setdefault(reply.host, set()).add(reply.pid)
        details: dict[str, Any] = {
            "jobs": jobs,
            "jobs_per_host": per_host,
            "processes_per_host": {h: len(pids) for h, pids in processes.items()},
        }
        yield ctx.compare_sets(sorted(expected), sorted(per_host), details=details)
