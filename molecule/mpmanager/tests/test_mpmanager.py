"""The Managers cluster as users and the verification suite rely on it: units, the key's
permissions, the server on the cluster address only, refusals without the key, the services that
come back after a clean exit, and the mpmanager checks end to end."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import sys

import pytest
import testinfra
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
PLATFORMS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
SERVER = PLATFORMS[0]["name"]
WORKER = PLATFORMS[1]["name"]
SECRETS = (
    pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "secrets" / "mpmanager"
)
USER = "clusterforge"
# Runs the checks and reads the key; USER, the service account, reads none.
VERIFY = "clusterforge-verify"
PYTHON = "/opt/clusterforge/venv/bin/python"
SETTINGS = "/etc/clusterforge/mpmanager/mpmanager.json"
KEY = "/etc/clusterforge/mpmanager/authkey"
PROCESSES = 2
sys.path.insert(0, str(SCENARIO.parent / "_shared"))
from services import assert_comes_back_after_a_clean_exit, assert_restart_always, restarts  # noqa: E402

# A client of the standard library only (what a course writes): argv host, port, key file, task,
# argument; prints the reply tuple, or the exception's type.
CLIENT = (
    "import sys\n"
    "from multiprocessing.managers import BaseManager\n"
    "class C(BaseManager): pass\n"
    "C.register('jobs'); C.register('results')\n"
    "try:\n"
    "    m = C(address=(sys.argv[1], int(sys.argv[2])), authkey=open(sys.argv[3], 'rb').read().strip())\n"
    "    m.connect()\n"
    "    m.jobs().put((7, 'molecule', sys.argv[4], (int(sys.argv[5]),)))\n"
    "    print(repr(m.results('molecule').get(timeout=30)))\n"
    "except Exception as exc:\n"
    "    print(type(exc).__name__)\n"
)


@pytest.fixture(scope="module")
def server():
    return testinfra.get_host(f"podman://{SERVER}")


@pytest.fixture(scope="module")
def worker():
    return testinfra.get_host(f"podman://{WORKER}")


def address(host) -> str:
    return host.interface.default().addresses[0]


def test_units_are_active_enabled_and_always_restart(server, worker):
    for node, unit in ((server, "clusterforge-mpmanager"), (worker, "clusterforge-mpmanager-worker")):
        service = node.service(unit)
        assert service.is_running and service.is_enabled, unit
        assert_restart_always(node, unit)
        pid = node.run("systemctl show -p MainPID --value %s", unit).stdout.strip()
        assert node.run("ps -o user= -p %s", pid).stdout.strip() == "mpmanager"
    children = worker.run("pgrep -c -u mpmanager -f compute_jobs.services.mpmanager").stdout.strip()
    assert int(children) == PROCESSES + 1, "one main process and one per configured worker process"


def test_the_key_is_generated_private_and_readable_by_the_group_only(server, worker):
    key = (SECRETS / "authkey").read_text().strip()
    assert len(key) == 64 and key.isalnum()
    assert (SECRETS / "authkey").stat().st_mode & 0o777 == 0o600
    for node in (server, worker):
        node_key = node.file(KEY)
        assert (node_key.user, node_key.group, node_key.mode) == ("root", "mpmanager", 0o640)
        assert node_key.content_string.strip() == key
        assert node.run("runuser -u nobody -- cat %s", KEY).rc != 0
        assert node.run("runuser -u %s -- cat %s", VERIFY, KEY).rc == 0
        assert node.run("runuser -u %s -- cat %s", USER, KEY).rc != 0
    assert key not in server.file(SETTINGS).content_string


def test_the_server_listens_on_the_cluster_address_only(server):
    sockets = {s for s in server.socket.get_listening_sockets() if s.endswith(":50000")}
    assert sockets == {f"tcp://{address(server)}:50000"}, sockets


def test_a_standard_library_client_computes_with_the_key_and_is_refused_without_it(server, worker):
    host = address(server)
    worker.run("printf '%%s' %s > /tmp/cf-mp-client.py", CLIENT)
    right = worker.run(
        "runuser -u %s -- python3 /tmp/cf-mp-client.py %s 50000 %s square 12", VERIFY, host, KEY
    )
    job_id, host_name, pid, ok, value = ast.literal_eval(right.stdout.strip())
    assert (job_id, host_name, ok, value) == (7, WORKER, True, 144) and pid > 0, right.stdout + right.stderr
    worker.run("printf 'not-the-key' > /tmp/cf-wrong-key && chmod 0644 /tmp/cf-wrong-key")
    wrong = worker.run(
        "runuser -u nobody -- python3 /tmp/cf-mp-client.py %s 50000 /tmp/cf-wrong-key square 12", host
    )
    assert wrong.stdout.strip() == "AuthenticationError", wrong.stdout + wrong.stderr


def test_both_services_come_back_after_a_clean_exit(server, worker):
    for node, unit in ((server, "clusterforge-mpmanager"), (worker, "clusterforge-mpmanager-worker")):
        before = restarts(node, unit)
        assert node.run("systemctl kill -s TERM %s", unit).rc == 0
        assert_comes_back_after_a_clean_exit(node, unit, before)


def test_mpmanager_checks_pass_from_the_head_node(server, worker):
    cluster = {
        "schema_version": 1,
        "cluster_name": "molecule-mpmanager",
        "inventory_hash": "sha256:" + "0" * 64,
        "run_id": "molecule-mpmanager",
        "hosts": [
            {
                "name": SERVER,
                "address": address(server),
                "groups": ["head", "mpmanager"],
                "cores": 2,
                "memory_mb": 256,
            },
            {
                "name": WORKER,
                "address": address(worker),
                "groups": ["workers", "mpmanager_workers"],
                "cores": 2,
                "memory_mb": 256,
            },
        ],
        "engines": {
            "mpmanager": {
                "address": f"{address(server)}:50000",
                "config": SETTINGS,
                "processes": {WORKER: PROCESSES},
            }
        },
    }
    server.run("printf '%%s' %s > /tmp/cluster.json && chmod 0644 /tmp/cluster.json", json.dumps(cluster))
    result = server.run(
        "cd /tmp && timeout 300 runuser -u %s -- %s -m compute_jobs run --cluster /tmp/cluster.json "
        "--only mpmanager --scope cluster --json /tmp/mpmanager-results.jsonl",
        VERIFY,
        PYTHON,
    )
    lines = server.run("cat /tmp/mpmanager-results.jsonl").stdout.splitlines()
    results = [r for r in map(json.loads, lines) if r.get("type") == "result"]
    failed = {r["name"]: (r["status"], r["reason"]) for r in results if r["status"] != "PASS"}
    assert result.rc == 0 and not failed, (failed, result.stdout[-3000:], result.stderr[-2000:])
    assert {r["check"] for r in results} == {"mpmanager.known_answer", "mpmanager.placement"}
    placement = next(r for r in results if r["name"] == "mpmanager.placement")
    assert placement["details"]["processes_per_host"] == {WORKER: PROCESSES}
