"""The MPI tier as users and the verification suite rely on it: same MPI in mpirun and mpi4py,
mpirun over SSH to every node as the service account, traffic pinned, the mpi checks pass."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import testinfra
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
PLATFORMS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
NODES = [p["name"] for p in PLATFORMS]
DEFAULTS = yaml.safe_load((ROOT / "roles/mpi/defaults/main.yml").read_text())
USER = "clusterforge"
PYTHON = "/opt/clusterforge/venv/bin/python"
HOSTFILE = "/etc/clusterforge/mpi/hostfile"
PINGPONG = "/opt/clusterforge/bin/cf-mpi-pingpong"


@pytest.fixture(scope="module")
def head():
    return testinfra.get_host(f"podman://{NODES[0]}")


def as_user(host, command: str, *args: str, timeout: int = 120):
    return host.run(f"cd /tmp && timeout {timeout} runuser -u {USER} -- " + command, *args)


def slots_of(host) -> int:
    return int(host.run("nproc").stdout.strip())


def test_hostfile_lists_every_mpi_host_with_its_cores(host):
    lines = [
        line for line in host.file(HOSTFILE).content_string.splitlines() if line and not line.startswith("#")
    ]
    assert [line.split()[0] for line in lines] == NODES
    for line in lines:
        node, slots = line.split()
        assert slots == f"slots={slots_of(testinfra.get_host('podman://' + node))}"


def test_mpi4py_is_pinned_and_loads_the_distribution_libmpi(host):
    code = (
        "import mpi4py; mpi4py.rc.initialize = False\n"
        "from mpi4py import MPI\n"
        "print(mpi4py.__version__)\n"
        "print(MPI.Get_library_version().strip())\n"
        "print([l.split()[-1] for l in open('/proc/self/maps') if '/libmpi.so' in l][0])\n"
    )
    result = host.run("%s -c %s", PYTHON, code)
    assert result.rc == 0, result.stderr
    version, library, libmpi = result.stdout.splitlines()
    assert version == DEFAULTS["mpi_mpi4py_version"]
    mpirun = host.run("mpirun --version").stdout
    mpirun_version = re.search(r"\(Open MPI\) (\S+)", mpirun).group(1)
    assert f"Open MPI v{mpirun_version}," in library
    owner = host.run("dpkg-query --search %s", host.file(libmpi).linked_to or libmpi)
    assert owner.rc == 0 and owner.stdout.startswith("libopenmpi"), owner.stdout + owner.stderr


def test_traffic_is_pinned_to_the_cluster_network(host):
    address = host.interface.default().addresses[0]
    prefix = ".".join(address.split(".")[:3])
    btl = host.run("ompi_info --param btl tcp --level 9 --parsable").stdout
    assert re.search(rf"btl_tcp_if_include:value:{re.escape(prefix)}\.0/\d+", btl), btl[-500:]
    # containers: no single-copy shared memory (podman's seccomp refuses process_vm_readv)
    params = host.file("/etc/openmpi/openmpi-mca-params.conf").content_string
    assert "smsc = ^cma" in params or "btl_vader_single_copy_mechanism = none" in params


def test_mpirun_reaches_every_node_as_the_service_account(head):
    total = sum(slots_of(testinfra.get_host("podman://" + n)) for n in NODES)
    result = as_user(head, f"mpirun --hostfile {HOSTFILE} {PYTHON} -m compute_jobs.services.mpi_jobs.hello")
    assert result.rc == 0, result.stderr[-2000:]
    rows = re.findall(r"rank (\d+) of (\d+) on (\S+)", result.stdout)
    assert sorted(int(r) for r, _, _ in rows) == list(range(total))
    assert {n for _, n, _ in rows} == {str(total)}
    assert sorted({h for _, _, h in rows}) == NODES


def test_plain_mpirun_uses_the_cluster_hostfile(head):
    result = as_user(head, f"mpirun -np {len(NODES)} --map-by node hostname")
    assert result.rc == 0, result.stderr[-2000:]
    assert sorted(result.stdout.split()) == NODES


def test_c_pingpong_runs_between_nodes(head):
    result = as_user(head, f"mpirun --host {NODES[0]}:1,{NODES[1]}:1 -np 2 {PINGPONG} 8 100 5")
    assert result.rc == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.split("CFJSON ", 1)[1])
    assert record["hosts"] == NODES and len(record["one_way_us"]) == 5
    assert all(0 < us < 100000 for us in record["one_way_us"])


def test_mpi_checks_pass_from_the_head_node(head):
    nodes = [testinfra.get_host("podman://" + n) for n in NODES]
    slots = {name: slots_of(node) for name, node in zip(NODES, nodes, strict=True)}
    cluster = {
        "schema_version": 1,
        "cluster_name": "molecule-mpi",
        "inventory_hash": "sha256:" + "0" * 64,
        "run_id": "molecule-mpi",
        "hosts": [
            {
                "name": name,
                "address": node.interface.default().addresses[0],
                "groups": ["mpi_hosts"] + (["head"] if name == NODES[0] else []),
                "cores": slots[name],
                "memory_mb": 256,
            }
            for name, node in zip(NODES, nodes, strict=True)
        ],
        "engines": {
            "mpi": {
                "hostfile": HOSTFILE,
                "slots": slots,
                "mpirun": "/usr/bin/mpirun",
                "python": PYTHON,
                "pingpong": PINGPONG,
            }
        },
        "params": {
            "mpi.pi": {"points": 10**7},
            "mpi.latency": {"latency_iterations": 50},
            "mpi.bandwidth": {"latency_iterations": 50},
        },
    }
    head.run("printf '%%s' %s > /tmp/cluster.json && chmod 0644 /tmp/cluster.json", json.dumps(cluster))
    # As the suite runs on a cluster: as the verification account, which launches mpirun as the
    # service account through its sudo rule (it has no SSH key of its own).
    result = head.run(
        "cd /tmp && timeout 300 runuser -u clusterforge-verify -- env CLUSTERFORGE_SERVICE_ACCOUNT=%s "
        # mpi.io needs the shared data directory (engines.storage), which this scenario does not
        # provision: it runs where the storage tier does (the lab).
        f"{PYTHON} -m compute_jobs run --cluster /tmp/cluster.json --only mpi --skip mpi.io --scope cluster "
        "--json /tmp/mpi-results.jsonl",
        USER,
    )
    lines = head.run("cat /tmp/mpi-results.jsonl").stdout.splitlines()
    results = [r for r in map(json.loads, lines) if r.get("type") == "result"]
    failed = {r["name"]: (r["status"], r["reason"]) for r in results if r["status"] != "PASS"}
    assert result.rc == 0 and not failed, (failed, result.stdout[-3000:], result.stderr[-2000:])
    checks = {r["check"] for r in results}
    assert checks == {
        "mpi.placement",
        "mpi.library",
        "mpi.collectives",
        "mpi.pi",
        "mpi.latency",
        "mpi.bandwidth",
    }
