"""storage.* and mpi.io against their boundaries: the node's mount table, a shell on each host (here
local shells over per-host views of a directory), file creation, and a simulated mpirun. Each check
is shown to PASS on a healthy share and to FAIL when a mount is missing, a node reads different
bytes, a foreign home is writable, or an MPI rank reads a wrong block."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from checkrun import run_checks

from compute_jobs.checks import dask as dask_checks
from compute_jobs.checks import load_all
from compute_jobs.checks import mpi as mpi_checks
from compute_jobs.checks import spark as spark_checks
from compute_jobs.checks import storage as st
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Result
from compute_jobs.services.mpi_jobs import MARKER, fileio

load_all()

HOSTS = ["a", "b", "c"]
ACCOUNTS = ["svc", "alice"]


@pytest.fixture
def shared(tmp_path: Path) -> dict[str, Path]:
    paths = {"data": tmp_path / "shared/data", "home": tmp_path / "shared/home"}
    for account in ACCOUNTS:
        (paths["home"] / account).mkdir(parents=True)
    paths["data"].mkdir(parents=True)
    return paths


@pytest.fixture
def cluster(cj_cluster, shared):
    def make(storage: bool = True, **section: Any):
        hosts = [
            {"name": h, "address": "127.0.0.1", "groups": ["mpi_hosts"] + (["head"] if h == "a" else [])}
            | {"cores": 1, "memory_mb": 16}
            for h in HOSTS
        ]
        engines: dict[str, Any] = {
            "mpi": {"hostfile": "/etc/clusterforge/mpi/hostfile", "slots": {h: 1 for h in HOSTS}}
        }
        if storage:
            engines["storage"] = {
                "backend": "sshfs",
                "server": "a",
                "data_dir": str(shared["data"]),
                "home_dir": str(shared["home"]),
                "accounts": ACCOUNTS,
                "service_user": "svc",
            } | section
        return cj_cluster(hosts, engines=engines)

    return make


def statuses(results: dict[str, Result]) -> dict[str, str]:
    return {name: r.status for name, r in results.items()}


# --- storage.mounts ------------------------------------------------------------------------------


def mountinfo(mounts: dict[str, str]) -> str:
    lines = ["22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw"]
    for i, (point, fstype) in enumerate(mounts.items()):
        escaped = point.replace(" ", "\\040")
        lines.append(f"{30 + i} 22 0:{40 + i} / {escaped} rw,nosuid - {fstype} svc@10.0.0.1:/srv rw")
    return "\n".join(lines) + "\n"


def client_mounts(shared: dict[str, Path], fstype: str = "fuse.sshfs") -> dict[str, str]:
    return {str(shared["data"]): fstype} | {str(shared["home"] / a): fstype for a in ACCOUNTS}


def run_mounts(cluster, monkeypatch, mounts: dict[str, str], target: str = "b") -> Result:
    monkeypatch.setattr(st, "read_mountinfo", lambda: mountinfo(mounts))
    return run_checks(cluster, ["storage.mounts"], target=target)["storage.mounts"]


def test_mounts_pass_when_every_shared_path_is_mounted_from_the_share(cluster, shared, monkeypatch):
    result = run_mounts(cluster(), monkeypatch, client_mounts(shared))
    assert result.status == PASS, result.reason
    assert result.observed_workers == sorted(client_mounts(shared))


def test_a_node_without_the_data_mount_fails_and_names_it(cluster, shared, monkeypatch):
    mounts = client_mounts(shared)
    del mounts[str(shared["data"])]
    result = run_mounts(cluster(), monkeypatch, mounts)
    assert result.status == FAIL
    assert result.missing == [str(shared["data"])]
    assert result.details["held_by"][str(shared["data"])] == "/ (overlay)"


def test_a_local_filesystem_mounted_at_the_path_is_not_the_share(cluster, shared, monkeypatch):
    result = run_mounts(cluster(), monkeypatch, client_mounts(shared, fstype="ext4"))
    assert result.status == FAIL
    assert len(result.missing) == 3


def test_the_server_and_nfs_clients_may_hold_homes_in_one_mount(cluster, shared, monkeypatch):
    whole = {str(shared["data"]): "ext4", str(shared["home"]): "ext4"}
    assert run_mounts(cluster(), monkeypatch, whole, target="a").status == PASS
    nfs = {str(shared["data"]): "nfs4", str(shared["home"]): "nfs4"}
    assert run_mounts(cluster(backend="nfs"), monkeypatch, nfs).status == PASS
    assert run_mounts(cluster(backend="nfs"), monkeypatch, whole).status == FAIL


def test_mountinfo_parsing_decodes_escaped_mount_points():
    text = mountinfo({"/shared/my data": "fuse.sshfs"})
    assert st.parse_mountinfo(text)["/shared/my data"] == "fuse.sshfs"
    mounts = {"/": "overlay", "/shared/home": "nfs4", "/shared/homework": "ext4"}
    assert st.covering_mount("/shared/home/alice", mounts) == "/shared/home"
    assert st.covering_mount("/shared/data", mounts) == "/"


# --- storage.shared ------------------------------------------------------------------------------


class Hosts:
    """A shell per host over its own view of the data directory: shared, or a private copy (a node
    whose mount is missing writes and reads its local directory), optionally corrupting reads."""

    def __init__(self, data: Path, tmp: Path, private: tuple[str, ...] = (), corrupt: str = "") -> None:
        self.data, self.tmp, self.private, self.corrupt = str(data), tmp, private, corrupt
        self.calls: list[tuple[str | None, str]] = []

    def __call__(self, host: str | None, script: str, timeout: float) -> subprocess.CompletedProcess:
        self.calls.append((host, script))
        if host in self.private:
            local = self.tmp / f"local-{host}"
            local.mkdir(exist_ok=True)
            script = script.replace(self.data, str(local))
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=timeout)
        if host == self.corrupt and script.startswith("sha256sum"):
            done.stdout = done.stdout.replace(done.stdout[:1], "0" if done.stdout[:1] != "0" else "1", 1)
        if host in self.private:
            done.stdout = done.stdout.replace(str(self.tmp / f"local-{host}"), self.data)
        return done


def test_a_script_for_another_host_reaches_its_shell_in_one_piece(monkeypatch):
    seen: list[list[str]] = []
    real_run = subprocess.run

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        seen.append(argv)
        # What ssh does: the words after the host name, joined by spaces, run by the remote shell.
        remote = " ".join(argv[argv.index("another-host.invalid") + 1 :])
        return real_run(remote, shell=True, capture_output=True, text=True, check=False)

    monkeypatch.setattr(st.subprocess, "run", fake_run)
    done = st.run_shell("another-host.invalid", "mkdir -p /tmp && echo 'a  b' | cat", 10)
    assert seen[0][:2] == ["ssh", "-o"] and "another-host.invalid" in seen[0]
    assert done.stdout == "a  b\n"  # one quoted word for the remote shell, not split by ssh


def run_shared(cluster, monkeypatch, fake: Hosts) -> dict[str, Result]:
    monkeypatch.setattr(st, "SHELL", fake)
    return run_checks(cluster, ["storage.shared"], target="cluster", scope="cluster")


def test_every_node_reads_every_other_nodes_file(cluster, shared, tmp_path, monkeypatch):
    fake = Hosts(shared["data"], tmp_path)
    results = run_shared(cluster(), monkeypatch, fake)
    assert set(statuses(results).values()) == {PASS}, {n: r.reason for n, r in results.items()}
    assert sorted(results) == ["storage.shared.placement"] + [f"storage.shared[{h}]" for h in HOSTS]
    assert [host for host, _ in fake.calls[:3]] == HOSTS  # each node wrote its own file
    assert list((shared["data"] / st.CHECK_DIR).iterdir()) == []  # and the check cleaned up


def test_a_node_without_the_share_fails_on_every_node(cluster, shared, tmp_path, monkeypatch):
    results = run_shared(cluster(), monkeypatch, Hosts(shared["data"], tmp_path, private=("c",)))
    placement = results["storage.shared.placement"]
    assert placement.status == FAIL and placement.observed_workers == []
    assert results["storage.shared[a]"].status == FAIL  # a cannot see c's file
    assert results["storage.shared[c]"].status == FAIL  # c sees only its own


def test_a_node_reading_different_bytes_fails(cluster, shared, tmp_path, monkeypatch):
    results = run_shared(cluster(), monkeypatch, Hosts(shared["data"], tmp_path, corrupt="b"))
    assert results["storage.shared[b]"].status == FAIL
    assert results["storage.shared[a]"].status == PASS
    assert results["storage.shared.placement"].missing == ["b"]


def test_wrong_answer_control_fails_the_hash_comparison(cluster, shared, tmp_path, monkeypatch):
    monkeypatch.setattr(st, "SHELL", Hosts(shared["data"], tmp_path))
    results = run_checks(
        cluster(), ["storage.shared"], target="cluster", scope="cluster", inject="wrong-answer"
    )
    assert results["storage.shared[a]"].status == FAIL


# --- storage.permissions -------------------------------------------------------------------------


def run_permissions(cluster, monkeypatch, create) -> Result:
    monkeypatch.setattr(st, "this_account", lambda: "svc")
    monkeypatch.setattr(st, "CREATE", create)
    return run_checks(cluster, ["storage.permissions"], target="b")["storage.permissions"]


def test_own_home_and_data_written_foreign_home_refused(cluster, shared, monkeypatch):
    def create(path: str) -> str:
        return "refused" if "/alice/" in path else st.try_create(path)

    result = run_permissions(cluster(), monkeypatch, create)
    assert result.status == PASS, result.reason
    assert json.loads(json.dumps(result.observed))["home:alice"] == "refused"
    assert list(shared["home"].joinpath("svc").iterdir()) == []  # probes removed


def test_a_writable_foreign_home_fails(cluster, shared, monkeypatch):
    result = run_permissions(cluster(), monkeypatch, st.try_create)  # nothing refuses here
    assert result.status == FAIL
    assert result.details["differs"] == ["home:alice"]


def test_an_unwritable_own_home_fails(cluster, shared, monkeypatch):
    result = run_permissions(cluster(), monkeypatch, lambda path: "refused")
    assert result.status == FAIL


def test_an_account_without_shared_home_is_skipped_with_the_reason(cluster, monkeypatch):
    monkeypatch.setattr(st, "this_account", lambda: "nobody")
    result = run_checks(cluster(), ["storage.permissions"], target="b")["storage.permissions"]
    assert result.status == SKIP and "nobody" in result.reason


# --- storage.throughput --------------------------------------------------------------------------


def test_throughput_reports_share_and_local_figures(cluster, tmp_path, monkeypatch):
    overrides = {"storage.throughput": {"bytes": 65536, "local_dir": str(tmp_path / "local")}}
    results = run_checks(cluster(), ["storage.throughput"], target="b", overrides=overrides)
    assert sorted(results) == [
        f"storage.throughput.{w}_{op}" for w in ("local", "share") for op in ("read", "write")
    ]
    for result in results.values():
        assert result.status == PASS and result.unit == "MB/s" and result.value > 0
        assert len(result.samples) == 5
    assert results["storage.throughput.share_write"].details["share_vs_local"] > 0


def test_each_write_sample_goes_to_a_new_file_not_into_the_last_one(tmp_path):
    # On an sshfs share the verification account may create and remove files in the check
    # directory but not reopen one for writing (every file shows as the service account's, 0644):
    # a sample must never truncate the previous sample's file. A hard link keeps that file's bytes.
    path = tmp_path / "sample"
    path.write_bytes(b"previous sample")
    os.link(path, tmp_path / "previous")
    assert st.timed_write(str(path), 4096) > 0
    assert path.stat().st_size == 4096
    assert (tmp_path / "previous").read_bytes() == b"previous sample"


def test_a_missing_storage_engine_is_not_silently_skipped_when_unavailable(cj_cluster):
    hosts = [{"name": "a", "address": "127.0.0.1", "groups": ["head"], "cores": 1, "memory_mb": 16}]
    cluster = cj_cluster(
        hosts, engines={"storage": {"unavailable": "a published no clusterforge_engine_storage"}}
    )
    results = run_checks(cluster, ["storage.mounts", "storage.throughput"], target="a")
    assert {r.status for r in results.values()} == {FAIL}


# --- mpi.io --------------------------------------------------------------------------------------


class FakeIo:
    """mpirun of the fileio job: ranks write their blocks into one file (really, in the shared dir)."""

    def __init__(self, corrupt_rank: int | None = None, unreached: str = "", hang: bool = False) -> None:
        self.corrupt_rank, self.unreached, self.hang = corrupt_rank, unreached, hang
        self.argv: list[str] = []

    def __call__(self, argv: list[str], timeout: float) -> mpi_checks.JobRun:
        self.argv = argv
        if self.hang:
            raise mpi_checks.CheckError(f"{' '.join(argv[:6])} ... ran past {timeout:.0f} s and was killed")
        path, block = argv[-2], int(argv[-1])
        size = int(argv[argv.index("-np") + 1])
        hosts = [h for h in HOSTS if h != self.unreached]
        with open(path, "wb") as out:
            for rank in range(size):
                data = fileio.block_of(rank, block)
                if rank == self.corrupt_rank:
                    data = bytes(block)
                out.write(data)
        whole = Path(path).read_bytes()
        ranks = [
            {
                "rank": r,
                "host": hosts[r % len(hosts)],
                "neighbour_ok": whole[((r + 1) % size) * block :][:block]
                == fileio.block_of((r + 1) % size, block),
            }
            for r in range(size)
        ]
        record = {"job": "fileio", "size": size, "block": block, "ranks": ranks}
        record |= {"sha256": fileio.hashlib.sha256(whole).hexdigest(), "write_s": 0.01, "read_s": 0.01}
        return mpi_checks.JobRun(argv, 0, MARKER + json.dumps(record) + "\n", "", 0.1)


def run_io(cluster, monkeypatch, fake: FakeIo) -> dict[str, Result]:
    monkeypatch.setattr(mpi_checks, "RUN_PROCESS", fake)
    mpi_checks._LAUNCHERS.clear()
    return run_checks(cluster, ["mpi.io"], target="cluster", scope="cluster")


def test_mpi_io_collective_file_hashes_as_expected(cluster, shared, monkeypatch):
    fake = FakeIo()
    results = run_io(cluster(), monkeypatch, fake)
    assert statuses(results) == {"mpi.io": PASS, "mpi.io.neighbour_blocks": PASS, "mpi.io.placement": PASS}
    assert fake.argv[fake.argv.index("-m") + 1] == "compute_jobs.services.mpi_jobs.fileio"
    assert fake.argv[-2].startswith(str(shared["data"]))
    assert not Path(fake.argv[-2]).exists()


def test_mpi_io_fails_on_a_wrong_block_and_a_missing_host(cluster, monkeypatch):
    results = run_io(cluster(), monkeypatch, FakeIo(corrupt_rank=1))
    assert results["mpi.io"].status == FAIL
    assert results["mpi.io.neighbour_blocks"].status == FAIL
    results = run_io(cluster(), monkeypatch, FakeIo(unreached="c"))
    assert results["mpi.io.placement"].status == FAIL


def test_mpi_io_that_hangs_is_an_error_not_a_hang(cluster, monkeypatch):
    results = run_io(cluster(), monkeypatch, FakeIo(hang=True))
    assert results["mpi.io"].status == ERROR
    assert "killed" in results["mpi.io"].reason


def test_mpi_io_without_a_shared_filesystem_says_why(cluster, monkeypatch):
    results = run_io(cluster(storage=False), monkeypatch, FakeIo())
    assert results["mpi.io"].status == SKIP
    assert "engines.storage" in results["mpi.io"].reason


def test_the_job_payload_hash_is_the_concatenation_of_the_blocks():
    blocks = b"".join(fileio.block_of(r, 100) for r in range(3))
    assert fileio.expected_sha256(3, 100) == fileio.hashlib.sha256(blocks).hexdigest()
    assert fileio.block_of(0, 100) != fileio.block_of(1, 100)


# --- storage.dask_dataset and storage.spark_dataset ---------------------------------------------


def worker_report(digests: dict[str, str], paths: list[str], spill_on_share: str = "") -> dict[str, Any]:
    """What a worker reports: its digests, its scratch directory and the mount table holding it
    (on local disk, or inside the sshfs data directory when ``spill_on_share``)."""
    data_dir = str(Path(paths[0]).parents[2]) if paths else "/shared/data"
    table = {"/": "overlay", data_dir: "fuse.sshfs"}
    scratch = f"{data_dir}/spill" if spill_on_share else "/var/lib/engine/local"
    return {"digests": digests, "scratch": scratch, "mountinfo": mountinfo(table)}


class FakeDask:
    """The Dask session: two worker processes on b and one on c; reads go through ``read``."""

    def __init__(self, blind: str = "", spill_on_share: str = "") -> None:
        self.blind = blind
        self.spill_on_share = spill_on_share
        self.closed = False

    def workers(self) -> list[Any]:
        return [
            dask_checks.WorkerInfo("tls://10.0.0.2:40001", "10.0.0.2", "b-0", 1, 0),
            dask_checks.WorkerInfo("tls://10.0.0.2:40002", "10.0.0.2", "b-1", 1, 0),
            dask_checks.WorkerInfo("tls://10.0.0.3:40001", "10.0.0.3", "c-0", 1, 0),
        ]

    def read(self, sess: Any, paths: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for worker in self.workers():
            if worker.address == self.blind:  # a worker whose node has no share sees no dataset
                digests = {Path(p).name: "error: No such file or directory" for p in paths}
            else:
                digests = {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
            spill = self.spill_on_share if worker.address == self.spill_on_share else ""
            out[worker.address] = worker_report(digests, paths, spill)
        return out

    def close(self) -> None:
        self.closed = True


def run_dataset(cj_cluster, shared, monkeypatch, fake: FakeDask, storage: bool = True) -> dict[str, Result]:
    hosts = [
        {"name": h, "address": f"10.0.0.{i + 1}", "groups": ["head"] if h == "a" else ["dask_workers"]}
        | {"cores": 1, "memory_mb": 16}
        for i, h in enumerate(HOSTS)
    ]
    engines: dict[str, Any] = {
        "dask": {
            "endpoint": "tls://10.0.0.1:8786",
            "config_dir": "/etc/clusterforge/dask/client",
            "workers": {
                "b": {"address": "10.0.0.2", "nworkers": 2, "nthreads": 1},
                "c": {"address": "10.0.0.3", "nworkers": 1, "nthreads": 1},
            },
        }
    }
    if storage:
        engines["storage"] = {"backend": "sshfs", "server": "a", "data_dir": str(shared["data"])}
    monkeypatch.setattr(dask_checks, "CONNECT", lambda settings, timeout: fake)
    monkeypatch.setattr(st, "DASK_READ", fake.read)
    cluster = cj_cluster(hosts, engines=engines)
    return run_checks(cluster, ["storage.dask_dataset"], target="cluster", scope="cluster")


def test_every_dask_worker_reads_the_dataset(cj_cluster, shared, monkeypatch):
    fake = FakeDask()
    results = run_dataset(cj_cluster, shared, monkeypatch, fake)
    assert set(statuses(results).values()) == {PASS}, {n: r.reason for n, r in results.items()}
    assert results["storage.dask_dataset"].observed_workers == ["b/0", "b/1", "c/0"]
    assert fake.closed and list((shared["data"] / st.CHECK_DIR).iterdir()) == []


def test_a_dask_worker_that_cannot_read_the_dataset_fails(cj_cluster, shared, monkeypatch):
    results = run_dataset(cj_cluster, shared, monkeypatch, FakeDask(blind="tls://10.0.0.3:40001"))
    assert results["storage.dask_dataset"].status == FAIL
    assert results["storage.dask_dataset"].missing == ["c/0"]
    assert results["storage.dask_dataset[c/0]"].status == FAIL


def test_the_dask_dataset_needs_a_shared_data_directory(cj_cluster, shared, monkeypatch):
    results = run_dataset(cj_cluster, shared, monkeypatch, FakeDask(), storage=False)
    assert results["storage.dask_dataset"].status == SKIP


def test_a_dask_worker_spilling_to_the_share_fails(cj_cluster, shared, monkeypatch):
    results = run_dataset(cj_cluster, shared, monkeypatch, FakeDask(spill_on_share="tls://10.0.0.2:40002"))
    assert results["storage.dask_dataset"].status == PASS
    scratch = results["storage.dask_dataset.scratch"]
    assert scratch.status == FAIL and scratch.missing == ["b/1"]
    assert "fuse.sshfs" in scratch.details["scratch"]["b/1"]


class FakeSpark:
    """The shared Spark session: tasks run on b and c unless ``hosts`` says otherwise."""

    def __init__(self, hosts: tuple[str, ...] = ("10.0.0.2", "10.0.0.3"), blind: str = "", spill: str = ""):
        self.hosts, self.blind, self.spill = hosts, blind, spill
        self.tasks = 0

    def bounded(self, seconds: float, what: str) -> Any:
        return contextlib.nullcontext()

    def read(self, handle: Any, paths: list[str], tasks: int, sleep_s: float) -> list[dict[str, Any]]:
        self.tasks = tasks
        records = []
        for task in range(tasks):
            host = self.hosts[task % len(self.hosts)]
            if host == self.blind:
                digests = {Path(p).name: "error: No such file or directory" for p in paths}
            else:
                digests = {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
            records.append(
                {"host": host} | worker_report(digests, paths, "yes" if host == self.spill else "")
            )
        return records


def run_spark_dataset(cj_cluster, shared, monkeypatch, fake: FakeSpark, storage: bool = True):
    hosts = [
        {"name": h, "address": f"10.0.0.{i + 1}", "groups": ["head"] if h == "a" else ["spark_workers"]}
        | {"cores": 2, "memory_mb": 16}
        for i, h in enumerate(HOSTS)
    ]
    engines: dict[str, Any] = {
        "spark": {
            "endpoint": "spark://10.0.0.1:7077",
            "conf_dir": "/etc/clusterforge/spark/client",
            "workers": {
                "b": {"address": "10.0.0.2", "cores": 2, "memory_mb": 1024},
                "c": {"address": "10.0.0.3", "cores": 2, "memory_mb": 1024},
            },
        }
    }
    if storage:
        engines["storage"] = {"backend": "sshfs", "server": "a", "data_dir": str(shared["data"])}
    monkeypatch.setattr(spark_checks, "CONNECT", lambda settings, timeout, executors, partitions: fake)
    monkeypatch.setattr(st, "SPARK_READ", fake.read)
    cluster = cj_cluster(hosts, engines=engines)
    try:
        return run_checks(cluster, ["storage.spark_dataset"], target="cluster", scope="cluster")
    finally:
        spark_checks._HANDLES.clear()


def test_a_spark_job_reads_the_dataset_on_every_worker_host(cj_cluster, shared, monkeypatch):
    fake = FakeSpark()
    results = run_spark_dataset(cj_cluster, shared, monkeypatch, fake)
    assert set(statuses(results).values()) == {PASS}, {n: r.reason for n, r in results.items()}
    assert results["storage.spark_dataset"].observed_workers == ["b", "c"]
    assert fake.tasks == 8  # 2 tasks per core of the 2 workers
    assert list((shared["data"] / st.CHECK_DIR).iterdir()) == []


def test_a_spark_worker_host_that_cannot_read_the_dataset_fails(cj_cluster, shared, monkeypatch):
    results = run_spark_dataset(cj_cluster, shared, monkeypatch, FakeSpark(blind="10.0.0.3"))
    assert results["storage.spark_dataset"].status == FAIL
    assert results["storage.spark_dataset"].missing == ["c"]
    assert results["storage.spark_dataset[c]"].status == FAIL


def test_a_spark_job_that_never_ran_on_a_worker_fails(cj_cluster, shared, monkeypatch):
    results = run_spark_dataset(cj_cluster, shared, monkeypatch, FakeSpark(hosts=("10.0.0.2",)))
    assert results["storage.spark_dataset"].missing == ["c"]
    assert results["storage.spark_dataset.scratch"].missing == ["c"]


def test_spark_local_dirs_on_the_share_fail(cj_cluster, shared, monkeypatch):
    results = run_spark_dataset(cj_cluster, shared, monkeypatch, FakeSpark(spill="10.0.0.2"))
    assert results["storage.spark_dataset"].status == PASS
    assert results["storage.spark_dataset.scratch"].status == FAIL
    assert results["storage.spark_dataset.scratch"].missing == ["b"]


def test_the_spark_dataset_needs_a_shared_data_directory(cj_cluster, shared, monkeypatch):
    results = run_spark_dataset(cj_cluster, shared, monkeypatch, FakeSpark(), storage=False)
    assert results["storage.spark_dataset"].status == SKIP


def test_scratch_is_judged_by_the_mount_holding_it():
    section = {"backend": "sshfs", "data_dir": "/shared/data", "home_dir": "/shared/home"}
    table = mountinfo({"/": "overlay", "/shared/data": "fuse.sshfs", "/scratch": "fuse.sshfs"})
    assert st.scratch_place({"scratch": "/var/lib/dask", "mountinfo": table}, section) == (
        True,
        "/var/lib/dask on / (overlay)",
    )
    assert not st.scratch_place({"scratch": "/shared/data/x", "mountinfo": table}, section)[0]
    assert not st.scratch_place({"scratch": "/scratch/x", "mountinfo": table}, section)[0]
    assert not st.scratch_place({"scratch": "", "mountinfo": table}, section)[0]
