"""mpmanager checks against a real Managers cluster on loopback: the service's own server and worker
loops (threads here, processes on the nodes), the settings file and key file the role writes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from checkrun import run_checks

from compute_jobs.checks import load_all
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Result
from compute_jobs.services import mpmanager as service

load_all()

NAMES = ["mpmanager.known_answer", "mpmanager.placement"]
KEY = b"0123456789abcdef" * 4
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loopback_cluster(tmp_path) -> Iterator[Callable[..., str]]:
    """Factory: a server on 127.0.0.1 with worker loops named ``hosts``; returns the settings file
    (key file ``key`` by default)."""
    stop = threading.Event()
    servers: list[Any] = []

    def start(hosts: list[str], key: bytes = KEY, client_key: bytes | None = None) -> str:
        server = service.make_server(("127.0.0.1", 0), key)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        for host in hosts:
            threading.Thread(
                target=service.work_loop, args=(server.address, key, host, stop), daemon=True
            ).start()
        keyfile = tmp_path / f"authkey-{len(servers)}"
        keyfile.write_bytes((client_key or key) + b"\n")
        settings = tmp_path / f"mpmanager-{len(servers)}.json"
        settings.write_text(
            json.dumps({"address": "127.0.0.1", "port": server.address[1], "authkey_file": str(keyfile)})
        )
        return str(settings)

    yield start
    stop.set()


def run(cj_cluster, config: str, processes: dict[str, int], **options: Any) -> dict[str, Result]:
    engines = {"mpmanager": {"address": "127.0.0.1:1", "config": config, "processes": processes}}
    return run_checks(cj_cluster(engines=engines), NAMES, **options)


def test_the_known_answers_come_back_from_every_worker(cj_cluster, loopback_cluster, cj_validator):
    validator = cj_validator("result.schema.json")
    results = run(cj_cluster, loopback_cluster(["w1", "w2"]), {"w1": 1, "w2": 1})
    for result in results.values():
        validator.validate(result.to_dict())
    assert {n: r.status for n, r in results.items()} == {
        "mpmanager.known_answer": PASS,
        "mpmanager.known_answer.primes": PASS,
        "mpmanager.placement": PASS,
    }
    placement = results["mpmanager.placement"]
    assert set(placement.details["jobs_per_host"]) == {"w1", "w2"}
    assert results["mpmanager.known_answer"].observed == 50 * 51 * 101 // 6


def test_a_worker_host_that_takes_no_job_fails_placement_by_name(cj_cluster, loopback_cluster):
    results = run(cj_cluster, loopback_cluster(["w1"]), {"w1": 1, "w2": 1})
    assert results["mpmanager.known_answer"].status == PASS
    placement = results["mpmanager.placement"]
    assert placement.status == FAIL and "w2" in placement.reason, placement.reason


@pytest.mark.parametrize(
    ("inject", "failing"),
    [("wrong-answer", "mpmanager.known_answer"), ("missing-worker", "mpmanager.placement")],
)
def test_negative_controls_fail_the_judged_results(cj_cluster, loopback_cluster, inject, failing):
    results = run(cj_cluster, loopback_cluster(["w1", "w2"]), {"w1": 1, "w2": 1}, inject=inject)
    assert results[failing].status == FAIL and results[failing].control == inject


def test_a_wrong_key_is_refused_and_says_so(cj_cluster, loopback_cluster):
    config = loopback_cluster(["w1"], client_key=b"not-the-key")
    results = run(cj_cluster, config, {"w1": 1})
    for name in NAMES:
        assert results[name].status == ERROR, (name, results[name].status)
    assert "refused the key" in results["mpmanager.known_answer"].reason


def test_no_server_and_no_settings_are_errors_that_say_what_to_do(cj_cluster, tmp_path):
    keyfile = tmp_path / "key"
    keyfile.write_bytes(KEY)
    settings = tmp_path / "dead.json"
    settings.write_text(json.dumps({"address": "127.0.0.1", "port": 9, "authkey_file": str(keyfile)}))
    dead = run(cj_cluster, str(settings), {"w1": 1})["mpmanager.known_answer"]
    assert dead.status == ERROR and "cannot reach the server" in dead.reason
    missing = run(cj_cluster, str(tmp_path / "absent.json"), {"w1": 1})["mpmanager.known_answer"]
    assert missing.status == ERROR and "converge the mpmanager tier" in missing.reason


def test_without_the_engine_the_checks_skip(cj_cluster):
    results = run_checks(cj_cluster(), NAMES)
    assert {r.status for r in results.values()} == {SKIP}


def test_jobs_name_tasks_and_errors_come_back_as_answers():
    assert service.count_primes(100_000) == 9592 and service.count_primes(2) == 0
    assert service.run_job("square", (12,)) == (True, 144)
    ok, why = service.run_job("no-such-task", ())
    assert not ok and "unknown task 'no-such-task'" in why
    ok, why = service.run_job("add", (1,))
    assert not ok and why.startswith("TypeError")


# The server in a process of its own, as on the nodes: started, not forked from this multi-threaded
# test process (fork() there copies the other threads' locks and is deprecated).
SERVE = (
    "import sys; from compute_jobs.services import mpmanager as s;"
    " s.make_server((sys.argv[1], int(sys.argv[2])), sys.stdin.buffer.read()).serve_forever()"
)


def test_workers_and_clients_carry_on_after_the_server_restarts(tmp_path):
    """The server process dies and a new one takes its address: the worker loop connects again, and
    a new client in the same process gets answers (no stale cached connection)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
    stop = threading.Event()
    keyfile = tmp_path / "key"
    keyfile.write_bytes(KEY)
    settings = {"address": address[0], "port": address[1], "authkey_file": str(keyfile)}
    servers = []

    def start() -> None:
        argv = [sys.executable, "-c", SERVE, address[0], str(address[1])]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, env=env)
        server.stdin.write(KEY)
        server.stdin.close()
        servers.append(server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
                return
            time.sleep(0.05)

    try:
        start()
        threading.Thread(target=service.work_loop, args=(address, KEY, "w1", stop), daemon=True).start()
        assert service.Cluster(settings).map("square", [3], timeout=30) == [9]
        servers[0].kill()
        servers[0].wait(5)
        start()
        assert service.Cluster(settings).map("square", [4], timeout=30) == [16]
    finally:
        stop.set()
        for server in servers:
            server.kill()
            server.wait(5)
