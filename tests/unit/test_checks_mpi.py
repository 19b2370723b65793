"""mpi checks against a simulated mpirun: the fake launcher plays the MPI library (it moves the payloads
the way the collectives define them), so the checks' judging code is what passes or fails."""

from __future__ import annotations

import itertools
import json
import math
import time
from typing import Any

import numpy as np
import pytest
from checkrun import run_checks

from compute_jobs.checks import load_all
from compute_jobs.checks import mpi as mpi_checks
from compute_jobs.model import ERROR, FAIL, PASS, CheckError, Result
from compute_jobs.services.mpi_jobs import MARKER, parse_output
from compute_jobs.services.mpi_jobs import collectives as coll
from compute_jobs.services.mpi_jobs import pi as pi_job
from compute_jobs.services.mpi_jobs.pingpong import plan_pairs

load_all()

MPI_CHECKS = ["mpi.placement", "mpi.library", "mpi.collectives", "mpi.pi", "mpi.latency", "mpi.bandwidth"]
SLOTS = {"n1": 2, "n2": 2, "n3": 1}
LIBRARY = "Open MPI v5.0.7, package: Debian OpenMPI, ident: 5.0.7, repo rev: v5.0.7, Feb 14, 2025"


class FakeMpirun:
    """Parses the mpirun command line the checks build and answers like a correct Open MPI would.

    Knobs make it misbehave the ways real clusters do: singletons (foreign mpirun), a host that is
    not reached, a corrupted Alltoall row, another library version, a libmpi from a wheel, a slow link.
    """

    def __init__(self, slots: dict[str, int] = SLOTS, **faults: Any) -> None:
        self.slots = dict(slots)
        self.faults = faults
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float) -> mpi_checks.JobRun:
        self.calls.append(argv)
        if argv[1:] == ["--version"]:
            version = self.faults.get("mpirun_version", "5.0.7")
            return self._done(
                argv, f"mpirun (Open MPI) {version}\n\nReport bugs to https://www.open-mpi.org/\n"
            )
        layout = self._layout(argv)
        program = argv[self._program_index(argv) :]
        if program[0].endswith("cf-mpi-pingpong"):
            return self._done(argv, self._c_pingpong(layout))
        module = program[2].rsplit(".", 1)[-1]
        args = program[3:]
        if self.faults.get("singletons"):
            records = [self._job(module, args, [host], 0) for host in layout]
        else:
            records = [self._job(module, args, layout, None)]
        return self._done(argv, "".join(MARKER + json.dumps(r) + "\n" for r in records))

    @staticmethod
    def _program_index(argv: list[str]) -> int:
        index = 1
        while index < len(argv) and argv[index].startswith("-"):
            index += 3 if argv[index] == "--mca" else 2
        return index

    def _layout(self, argv: list[str]) -> list[str]:
        """Host of every rank, filled slot by slot like mpirun's default mapping."""
        if "--host" in argv:
            pairs = [item.split(":") for item in argv[argv.index("--host") + 1].split(",")]
            hosts = {name: int(count) for name, count in pairs}
        else:
            hosts = dict(self.slots)
        missing = self.faults.get("unreached")
        if missing:
            hosts.pop(missing, None)
        ranks = [name for name, count in hosts.items() for _ in range(count)]
        np_ = int(argv[argv.index("-np") + 1]) if "-np" in argv else len(ranks)
        while len(ranks) < np_:  # oversubscribe onto the remaining hosts
            ranks.append(ranks[len(ranks) % max(1, len(ranks))])
        return ranks[:np_]

    @staticmethod
    def _done(argv: list[str], stdout: str) -> mpi_checks.JobRun:
        return mpi_checks.JobRun(argv, 0, stdout, "", 0.01)

    def _job(self, module: str, args: list[str], hosts: list[str], only: int | None) -> dict[str, Any]:
        size = len(hosts)
        options = dict(zip(args[::2], args[1::2], strict=False))
        if module == "probe":
            libmpi = self.faults.get("libmpi", "/usr/lib/x86_64-linux-gnu/libmpi.so.40.40.7")
            ranks = [
                {"rank": r, "size": size, "host": h, "library": LIBRARY, "libmpi": libmpi, "mpi4py": "4.1.2"}
                for r, h in enumerate(hosts)
            ]
            return {"job": "probe", "size": size, "ranks": ranks}
        if module == "collectives":
            return {
                "job": "collectives",
                "size": size,
                "hosts": hosts,
                **self._collectives(size, int(options["--elements"])),
            }
        if module == "pi":
            n = int(options["--points"])
            pi = sum(
                pi_job.partial_sum(*pi_job.block(r, size, n), n, int(options["--chunk"])) for r in range(size)
            )
            return {
                "job": "pi",
                "size": size,
                "points": n,
                "pi": pi,
                "error": abs(pi - math.pi),
                "hosts": hosts,
                "seconds": 1.0 / size if size > 1 else 1.0,
            }
        if module == "pingpong":
            return self._pingpong(hosts)
        raise AssertionError(f"unexpected job {module}")

    def _collectives(self, size: int, k: int) -> dict[str, Any]:
        """What each rank ends up with when the data moves as MPI defines it."""
        total = sum(r + 1 for r in range(size))
        gathered = np.stack([coll.gather_row(r, k) for r in range(size)])
        received = [np.stack([coll.alltoall_send(s, size, k)[r] for s in range(size)]) for r in range(size)]
        if self.faults.get("corrupt_alltoall"):
            received[-1] = received[-1].copy()
            received[-1][0, 0] += 1
        alltoall = [coll.checksum(buf) for buf in received]
        bcast = coll.checksum(coll.bcast_payload(k))
        return {
            "allreduce_buffer": [total] * size,
            "allreduce_pickle": [total] * size,
            "bcast_buffer": [bcast] * size,
            "bcast_pickle": [bcast] * size,
            "gather_buffer": coll.checksum(gathered),
            "gather_pickle": coll.checksum(gathered.tolist()),
            "alltoall_buffer": alltoall,
            "alltoall_pickle": alltoall,
        }

    def _pingpong(self, hosts: list[str]) -> dict[str, Any]:
        pairs = []
        slow = self.faults.get("slow_link")
        self.matrices = getattr(self, "matrices", 0) + 1
        if self.faults.get("slow_once") and self.matrices > 1:
            slow = None
        for index, pair in enumerate(plan_pairs(hosts)):
            inter = pair["kind"] == "inter"
            latency = 20.0 if inter else 1.5
            bandwidth = 1000.0 if inter else 5000.0
            if slow and {pair["host_a"], pair["host_b"]} == set(slow):
                latency, bandwidth = latency * 20, bandwidth / 20
            pairs.append(
                {
                    **pair,
                    "index": index,
                    "latency_us": [latency * f for f in (1.0, 1.01, 0.99, 1.02, 0.98)],
                    "bandwidth_mbs": {str(b): [bandwidth] * 5 for b in mpi_checks.BANDWIDTH_BYTES},
                }
            )
        return {"job": "pingpong", "size": len(hosts), "hosts": hosts, "pairs": pairs}

    @staticmethod
    def _c_pingpong(layout: list[str]) -> str:
        record = {
            "job": "pingpong.c",
            "bytes": 8,
            "hosts": layout,
            "library": LIBRARY,
            "one_way_us": [0.2 if layout[0] == layout[1] else 15.0] * 5,
        }
        return MARKER + json.dumps(record) + "\n"


@pytest.fixture
def mpi_cluster(cj_cluster, tmp_path):
    def make(slots: dict[str, int] = SLOTS, pingpong: bool = True) -> Any:
        binary = tmp_path / "cf-mpi-pingpong"
        binary.write_text("")
        hosts = [
            {
                "name": name,
                "address": "127.0.0.1",
                "groups": ["mpi_hosts"] + (["head"] if i == 0 else []),
                "cores": count,
                "memory_mb": 16,
            }
            for i, (name, count) in enumerate(slots.items())
        ]
        engine = {
            "hostfile": "/etc/clusterforge/mpi/hostfile",
            "slots": dict(slots),
            "mpirun": "mpirun",
            "python": "/opt/clusterforge/venv/bin/python",
        }
        if pingpong:
            engine["pingpong"] = str(binary)
        return cj_cluster(hosts, engines={"mpi": engine})

    return make


def run(
    cluster: Any, fake: FakeMpirun, monkeypatch, names: list[str] = MPI_CHECKS, **config: Any
) -> dict[str, Result]:
    monkeypatch.setattr(mpi_checks, "RUN_PROCESS", fake)
    mpi_checks._LAUNCHERS.clear()
    return run_checks(cluster, names, target="n1", scope="cluster", **config)


def statuses(results: dict[str, Result]) -> dict[str, str]:
    return {name: r.status for name, r in results.items()}


def test_healthy_cluster_passes_every_mpi_check(mpi_cluster, monkeypatch):
    fake = FakeMpirun()
    results = run(mpi_cluster(), fake, monkeypatch)
    assert all(r.status == PASS for r in results.values()), {
        n: (r.status, r.reason) for n, r in results.items()
    }
    assert results["mpi.placement.world_size"].observed == 5
    assert results["mpi.latency.c_latency_inter[n1<->n2]"].value == 15.0
    assert results["mpi.pi.efficiency"].value == pytest.approx(1.0 / (5 * 0.2))
    # placement and library share one probe launch; latency and bandwidth one ping-pong matrix
    launched = [c for c in fake.calls if c[1:] != ["--version"]]
    assert sum("compute_jobs.services.mpi_jobs.probe" in c for c in launched) == 1
    assert sum("compute_jobs.services.mpi_jobs.pingpong" in c for c in launched) == 1
    assert all(c[1] in ("--hostfile", "--host") for c in launched)


def test_matrix_covers_every_host_and_pair(mpi_cluster, monkeypatch):
    results = run(mpi_cluster(), FakeMpirun(), monkeypatch, ["mpi.latency"])
    pairs = results["mpi.latency.pairs"]
    # n3 has one slot: no shared-memory pair there, but it is in every network pair
    assert pairs.observed_workers == ["n1", "n1<->n2", "n1<->n3", "n2", "n2<->n3"]
    assert set(results["mpi.latency.matrix"].details["matrix_us"]) == {"n1", "n2", "n3"}


def test_singletons_from_a_foreign_mpirun_fail_placement(mpi_cluster, monkeypatch):
    results = run(
        mpi_cluster(), FakeMpirun(singletons=True), monkeypatch, ["mpi.placement", "mpi.collectives"]
    )
    world = results["mpi.placement.world_size"]
    assert world.status == FAIL and world.expected == 5 and world.observed == 1
    assert world.details["singletons"] == 5
    assert results["mpi.collectives"].status == ERROR
    assert "singletons" in results["mpi.collectives"].reason


def test_unreached_host_fails_placement_and_names_it(mpi_cluster, monkeypatch):
    results = run(mpi_cluster(), FakeMpirun(unreached="n2"), monkeypatch, ["mpi.placement"])
    assert results["mpi.placement"].status == FAIL
    assert results["mpi.placement"].missing == ["n2"]
    assert results["mpi.placement.ranks_per_host"].status == FAIL


def test_corrupted_alltoall_fails_collectives(mpi_cluster, monkeypatch):
    results = run(mpi_cluster(), FakeMpirun(corrupt_alltoall=True), monkeypatch, ["mpi.collectives"])
    assert results["mpi.collectives.alltoall_buffer"].status == FAIL
    assert results["mpi.collectives.allreduce_buffer"].status == PASS


@pytest.mark.parametrize(
    ("fault", "failing"),
    [
        ({"mpirun_version": "4.1.4"}, "mpi.library"),
        (
            {"libmpi": "/opt/clusterforge/venv/lib/python3.13/site-packages/mpi4py.libs/libmpi.so.40"},
            "mpi.library.libmpi",
        ),
    ],
)
def test_library_mismatch_fails(mpi_cluster, monkeypatch, fault, failing):
    results = run(mpi_cluster(), FakeMpirun(**fault), monkeypatch, ["mpi.library"])
    assert results[failing].status == FAIL, results[failing].reason
    assert sum(r.status == FAIL for r in results.values()) == 1


def test_slow_link_is_flagged_as_outlier(mpi_cluster, monkeypatch):
    slots = {"n1": 2, "n2": 2, "n3": 2, "n4": 2}
    results = run(
        mpi_cluster(slots),
        FakeMpirun(slots, slow_link=("n2", "n4")),
        monkeypatch,
        ["mpi.latency", "mpi.bandwidth"],
    )
    latency = results["mpi.latency.matrix"]
    assert latency.status == FAIL and list(latency.details["outliers"]) == ["n2<->n4"]
    assert latency.details["remeasured"]["n2<->n4"] == pytest.approx(400.0)
    bandwidth = results["mpi.bandwidth.matrix"]
    assert bandwidth.status == FAIL and list(bandwidth.details["outliers"]) == ["n2<->n4"]
    assert "in two measurements" in bandwidth.reason
    assert results["mpi.latency.latency_inter[n1<->n2]"].status == PASS


def test_one_slow_round_is_remeasured_and_not_judged_a_bad_link(mpi_cluster, monkeypatch):
    slots = {"n1": 2, "n2": 2, "n3": 2, "n4": 2}
    fake = FakeMpirun(slots, slow_link=("n2", "n4"), slow_once=True)
    results = run(mpi_cluster(slots), fake, monkeypatch, ["mpi.latency", "mpi.bandwidth"])
    for name in ("mpi.latency.matrix", "mpi.bandwidth.matrix"):
        summary = results[name]
        assert summary.status == PASS, summary.reason
        assert summary.details["outliers"] == {}
        assert summary.details["transient_outliers"] == ["n2<->n4"]
    # one confirming matrix, shared by both checks
    assert sum("compute_jobs.services.mpi_jobs.pingpong" in c for c in fake.calls) == 2


@pytest.mark.parametrize("control", ["wrong-answer", "missing-worker"])
def test_negative_controls_fail_the_judged_results(mpi_cluster, monkeypatch, control):
    results = run(mpi_cluster(), FakeMpirun(), monkeypatch, inject=control)
    category = "correctness" if control == "wrong-answer" else "placement"
    judged = [r for r in results.values() if r.category == category]
    assert judged and all(r.status == FAIL and r.control == control for r in judged), [
        (r.name, r.status) for r in judged
    ]
    others = [r for r in results.values() if r.category not in (category, "performance")]
    assert all(r.status == PASS for r in others)


def test_launch_timeout_kills_the_process_group():
    start = time.monotonic()
    with pytest.raises(CheckError, match="ran past"):
        mpi_checks.run_process(["sh", "-c", "sleep 30 & sleep 30"], 0.5)
    assert time.monotonic() - start < 10


def test_launch_timeout_asks_the_launcher_to_stop_before_killing_it(tmp_path):
    """mpirun stops the ranks on the other hosts on SIGTERM; SIGKILL would leave them running."""
    said = tmp_path / "said"
    script = f"trap 'echo TERM > {said}; exit 143' TERM; sleep 30 & wait"
    with pytest.raises(CheckError, match="ran past"):
        mpi_checks.run_process(["sh", "-c", script], 0.5)
    assert said.read_text().strip() == "TERM"


def test_a_launcher_that_ignores_sigterm_is_killed(monkeypatch):
    monkeypatch.setattr(mpi_checks, "TERM_GRACE", 0.5)
    start = time.monotonic()
    with pytest.raises(CheckError, match="ran past"):
        mpi_checks.run_process(["sh", "-c", "trap '' TERM; sleep 30"], 0.5)
    assert time.monotonic() - start < 10


def test_missing_launcher_is_an_error_that_says_what_to_do():
    with pytest.raises(CheckError, match="Open MPI"):
        mpi_checks.run_process(["/nonexistent/mpirun", "--version"], 5)


def test_checks_skip_without_the_mpi_engine(cj_cluster, monkeypatch):
    results = run(cj_cluster(), FakeMpirun(), monkeypatch, ["mpi.placement"])
    assert results["mpi.placement"].status == "SKIP"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mpirun (Open MPI) 5.0.7\n\nReport bugs to", ("Open MPI", "5.0.7")),
        ("mpirun (Open MPI) 4.1.4", ("Open MPI", "4.1.4")),
        (LIBRARY, ("Open MPI", "5.0.7")),
        ("MPICH Version:      4.2.0\nMPICH Release date: ...", ("MPICH", "4.2.0")),
        ("HYDRA build details:\n    Version:                                 4.0.2", ("MPICH", "4.0.2")),
        ("something else", None),
    ],
)
def test_mpi_version_parsing(text, expected):
    assert mpi_checks.mpi_version(text) == expected


# --- the job helpers (pure numpy, run here for real) --------------------------------------------


def test_pi_blocks_cover_every_point_once_and_the_rule_is_accurate():
    n = 10**6 + 7
    for size in (1, 2, 3, 7):
        blocks = [pi_job.block(r, size, n) for r in range(size)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
        total = sum(pi_job.partial_sum(lo, hi, n, 1 << 16) for lo, hi in blocks)
        assert abs(total - math.pi) < 1e-9


def test_checksum_is_order_sensitive_and_exact():
    data = np.arange(1000, dtype=np.int64) * 7919
    assert coll.checksum(data) == coll.checksum(data.tolist())
    swapped = data.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    assert coll.checksum(swapped) != coll.checksum(data)
    assert coll.checksum([2**40, 2**41]) == (2**40 + 2 * 2**41) % coll.MODULUS


def test_expected_collectives_match_a_simulated_exchange():
    fake = FakeMpirun()
    for size in (1, 2, 5):
        simulated = fake._collectives(size, 8)
        assert simulated == coll.expected_results(size, 8)


def test_pair_plan_and_output_parsing():
    pairs = plan_pairs(["a", "a", "b", "c", "c"])
    assert [(p["kind"], p["a"], p["b"]) for p in pairs] == [
        ("intra", 0, 1),
        ("intra", 3, 4),
        ("inter", 0, 2),
        ("inter", 0, 3),
        ("inter", 2, 3),
    ]
    text = "warning: noise\n" + MARKER + '{"job": "probe", "size": 2}\n' + "CFJSONx not a record\n"
    assert parse_output(text) == [{"job": "probe", "size": 2}]
