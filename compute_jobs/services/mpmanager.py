"""The multiprocessing Managers cluster of clusterforge: work across machines with the standard library.

A ``BaseManager`` server on the head node holds one shared job queue and a result queue per client;
a worker service on every worker host runs one process per core that takes a job from the shared
queue, runs it, and puts the answer on the submitting client's queue. Every connection proves the
generated authkey (multiprocessing's HMAC challenge; the key itself never crosses the network).
Jobs name a task of :data:`TASKS` (no code travels: the workers run only what is installed here).

    python -m compute_jobs.services.mpmanager serve   the server   (clusterforge-mpmanager.service)
    python -m compute_jobs.services.mpmanager work    the workers  (clusterforge-mpmanager-worker.service)

Settings come from a JSON file on the node (``$CLUSTERFORGE_MPMANAGER_CONFIG``, else
``/etc/clusterforge/mpmanager/mpmanager.json``, written by the mpmanager role)::

    address       the server's cluster address            port          its TCP port
    authkey_file  file holding the key (group mpmanager)  host          this node's inventory name
    processes     worker processes on this host (0: one per core)

From a notebook or a script on any node, as a member of group ``mpmanager``::

    from compute_jobs.services.mpmanager import connect
    with connect() as cluster:
        squares = cluster.map("square", range(100))           # in order, computed on the workers
        replies = cluster.collect([cluster.submit("whoami", "t", 0.1) for _ in range(8)], 30)
        hosts = {reply.host for reply in replies}

Or with nothing but the standard library (what the course teaches; the workers answer on
``results(client)``, with ``(job id, host, pid, ok, value)``)::

    from multiprocessing.managers import BaseManager
    class Cluster(BaseManager): pass
    Cluster.register("jobs"); Cluster.register("results")
    m = Cluster(address=("10.0.0.11", 50000), authkey=open(KEYFILE, "rb").read().strip()); m.connect()
    m.jobs().put((0, "me", "square", (7,))); m.results("me").get(timeout=30)   # (0, 'node2', 4242, True, 49)

Delivery is at most once: a job a worker took when its connection broke is not asked again.
Standard library only.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from multiprocessing.managers import BaseManager, BaseProxy
from typing import Any, NamedTuple

from compute_jobs.services.settings import ConfigError, load_json_settings

CONFIG_ENV = "CLUSTERFORGE_MPMANAGER_CONFIG"
DEFAULT_CONFIG = "/etc/clusterforge/mpmanager/mpmanager.json"
CHALLENGE = b"#CHALLENGE#"

log = logging.getLogger("clusterforge.mpmanager")


def config_path(path: str | None = None) -> str:
    return path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def load_settings(path: str | None = None) -> dict[str, Any]:
    """Read the node's Managers cluster settings; ConfigError says which file and what to do."""
    return load_json_settings(
        config_path(path), ("address", "port", "authkey_file"), "mpmanager", "mpmanager"
    )


def read_authkey(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            key = handle.read().strip()
    except PermissionError as exc:
        raise ConfigError(f"{path}: permission denied; run as a member of group mpmanager") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    if not key:
        raise ConfigError(f"{path}: empty key")
    return key


# --- what the workers run ------------------------------------------------------------------------


def count_primes(below: int) -> int:
    """Primes below ``below`` (a sieve: CPU work that takes a measurable time)."""
    if below < 3:
        return 0
    sieve = bytearray([1]) * below
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(below - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, below, i)))
    return sum(sieve)


def whoami(token: Any, seconds: float = 0.0) -> Any:
    """``token`` back after ``seconds`` (the worker adds its host and pid to every reply)."""
    time.sleep(max(0.0, min(float(seconds), 60.0)))
    return token


TASKS: dict[str, Callable[..., Any]] = {
    "square": lambda x: x * x,
    "add": lambda x, y: x + y,
    "count_primes": count_primes,
    "whoami": whoami,
}


# --- the server ----------------------------------------------------------------------------------


def make_server(address: tuple[str, int], authkey: bytes) -> Any:
    """The manager's server (not started): ``jobs()`` the shared queue, ``results(client)`` a
    queue per client, created on first use."""
    jobs: queue.Queue = queue.Queue()
    results: dict[str, queue.Queue] = {}
    lock = threading.Lock()

    def results_of(client: str) -> queue.Queue:
        with lock:
            return results.setdefault(str(client), queue.Queue())

    class ServerManager(BaseManager):
        pass

    ServerManager.register("jobs", callable=lambda: jobs)
    ServerManager.register("results", callable=results_of)
    return ServerManager(address=address, authkey=authkey).get_server()


def serve(settings: dict[str, Any]) -> None:
    server = make_server(
        (str(settings["address"]), int(settings["port"])), read_authkey(settings["authkey_file"])
    )
    log.info("serving on %s:%s", settings["address"], settings["port"])
    server.serve_forever()


# --- clients and workers -------------------------------------------------------------------------


class _ClientManager(BaseManager):
    pass


_ClientManager.register("jobs")
_ClientManager.register("results")


def _connect(address: tuple[str, int], authkey: bytes, timeout: float) -> _ClientManager:
    # BaseManager.connect has no deadline: a dropped or absent server is found out here first.
    with socket.create_connection(address, timeout=timeout):
        pass
    # Proxies share one cached connection per server address and thread; after the server restarted
    # it is dead, and new proxies would take it again (broken pipe forever). Proxies made before
    # keep theirs; new ones open a fresh connection.
    BaseProxy._address_to_local.pop(address, None)  # type: ignore[attr-defined]
    manager = _ClientManager(address=address, authkey=authkey)
    manager.connect()
    return manager


class Reply(NamedTuple):
    job_id: int
    host: str
    pid: int
    ok: bool
    value: Any


def run_job(task: str, args: Iterable[Any]) -> tuple[bool, Any]:
    function = TASKS.get(task)
    if function is None:
        return False, f"unknown task {task!r} (tasks: {', '.join(sorted(TASKS))})"
    try:
        return True, function(*args)
    except Exception as exc:  # the client gets the error, the worker goes on
        return False, f"{type(exc).__name__}: {exc}"


def work_loop(address: tuple[str, int], authkey: bytes, host: str, stop: Any = None) -> None:
    """One worker process: take a job, run it, answer; reconnect when the server goes away."""
    while stop is None or not stop.is_set():
        try:
            manager = _connect(address, authkey, 10.0)
            jobs = manager.jobs()
            replies: dict[str, Any] = {}
            while stop is None or not stop.is_set():
                try:
                    job_id, client, task, args = jobs.get(True, 1.0)
                except queue.Empty:
                    continue
                ok, value = run_job(task, args)
                if client not in replies:
                    if len(replies) >= 64:
                        replies.clear()
                    replies[client] = manager.results(client)
                replies[client].put((job_id, host, os.getpid(), ok, value))
        except (OSError, EOFError) as exc:
            log.warning("server %s:%s: %s; connecting again in 2 s", *address, exc)
            time.sleep(2)


def work(settings: dict[str, Any]) -> None:
    """One process per core (or ``processes``); any that dies ends the service (systemd restarts it)."""
    address = (str(settings["address"]), int(settings["port"]))
    authkey = read_authkey(settings["authkey_file"])
    host = str(settings.get("host") or socket.gethostname())
    count = int(settings.get("processes") or 0) or (os.cpu_count() or 1)
    children = [
        multiprocessing.Process(target=work_loop, args=(address, authkey, host), name=f"mpmanager-worker-{i}")
        for i in range(count)
    ]
    for child in children:
        child.start()
    log.info("%d worker processes for %s:%s as %s", count, *address, host)

    def stop(*_: Any) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    multiprocessing.connection.wait([child.sentinel for child in children])
    log.error("a worker process ended; stopping the others")
    for child in children:
        if child.is_alive():
            child.terminate()
    sys.exit(1)


class Cluster:
    """A client: submit jobs to the shared queue, collect the answers from this client's own queue."""

    def __init__(self, settings: dict[str, Any] | None = None, timeout: float = 10.0) -> None:
        settings = settings if settings is not None else load_settings()
        self.address = (str(settings["address"]), int(settings["port"]))
        self._manager = _connect(self.address, read_authkey(settings["authkey_file"]), timeout)
        self.client = uuid.uuid4().hex
        self._jobs = self._manager.jobs()
        self._results = self._manager.results(self.client)
        self._ids = itertools.count()

    def submit(self, task: str, *args: Any) -> int:
        job_id = next(self._ids)
        self._jobs.put((job_id, self.client, task, args))
        return job_id

    def collect(self, job_ids: Iterable[int], timeout: float) -> list[Reply]:
        """The replies to ``job_ids`` (in the order they came); TimeoutError names how many came."""
        wanted = set(job_ids)
        got: list[Reply] = []
        deadline = time.monotonic() + timeout
        while wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(got)} of {len(got) + len(wanted)} answers within {timeout:.0f} s")
            try:
                reply = Reply(*self._results.get(True, min(left, 5.0)))
            except queue.Empty:
                continue
            if reply.job_id in wanted:
                wanted.discard(reply.job_id)
                got.append(reply)
        return got

    def map(self, task: str, values: Iterable[Any], timeout: float = 60.0) -> list[Any]:
        """``task`` over ``values`` (a tuple is the arguments of one job), answers in order."""
        ids = [self.submit(task, *(v if isinstance(v, tuple) else (v,))) for v in values]
        replies = sorted(self.collect(ids, timeout), key=lambda r: r.job_id)
        errors = [r for r in replies if not r.ok]
        if errors:
            raise RuntimeError(
                f"{len(errors)} of {len(replies)} jobs failed, first on {errors[0].host}: {errors[0].value}"
            )
        return [r.value for r in replies]

    def close(self) -> None:
        self._jobs = self._results = None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def connect(path: str | None = None, timeout: float = 10.0) -> Cluster:
    """A client of the cluster these node settings describe."""
    return Cluster(load_settings(path), timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compute_jobs.services.mpmanager", description=__doc__.splitlines()[0]
    )
    parser.add_argument("role", choices=["serve", "work"])
    parser.add_argument("--config", help=f"settings file (default ${CONFIG_ENV} or {DEFAULT_CONFIG})")
    parser.add_argument(
        "--processes", type=int, default=0, help="worker processes (default: settings, else one per core)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        if args.processes > 0:
            settings["processes"] = args.processes
        (serve if args.role == "serve" else work)(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
