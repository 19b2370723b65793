"""Shared storage checks: the data directory and the homes are mounted on every node, hold the same
files everywhere, keep their permissions, and how fast the share is next to local disk.
``storage.dask_dataset`` has every Dask worker read a dataset the head node wrote there, and
``mpi.io`` runs MPI-IO on COMM_WORLD over one file in the data directory.

cluster.json ``engines.storage`` (published by the shared_storage role)::

    {
      "backend": "sshfs",                      nfs or sshfs
      "server": "node-1",                      the storage server (it bind-mounts its own trees)
      "data_dir": "/shared/data",              the shared data directory
      "home_dir": "/shared/home",              parent of the shared homes
      "accounts": ["clusterforge", "alice"],   accounts with a shared home <home_dir>/<account>
      "service_user": "clusterforge"
    }
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from compute_jobs.checks import dask as dask_checks
from compute_jobs.checks import spark as spark_checks
from compute_jobs.checks.mpi import JOB_PACKAGE, expected_slots, launcher_for, single_record
from compute_jobs.context import CheckContext
from compute_jobs.model import Check, CheckError, Metric, Param, Result, SkipCheck, register
from compute_jobs.remote import as_service_account, on_host, service_account
from compute_jobs.services.mpi_jobs.fileio import expected_sha256

ENGINE = "storage"
# Where the checks leave their files, under the data directory (removed when a check ends).
CHECK_DIR = ".clusterforge-check"
# File system types the clients of each backend must show (the server bind-mounts its own disk).
CLIENT_FSTYPES = {"nfs": ("nfs4", "nfs"), "sshfs": ("fuse.sshfs",)}


def settings(ctx: CheckContext) -> Mapping[str, Any]:
    return ctx.cluster.engines[ENGINE]


def make_check_dir(directory: str) -> None:
    """Create ``directory`` (under the data directory) writable by the data group: the suite writes
    there as the verification account, MPI ranks and the commands on other nodes as the service
    account (compute_jobs.remote). The service account creates it when the suite runs as another
    account: on an sshfs client every file of the data directory shows as the service account's, so
    only its own umask 002 leaves the directory writable for the group."""
    if os.path.isdir(directory):
        return
    argv = as_service_account(["sh", "-c", 'umask 002 && mkdir -p -- "$1"', "sh", directory])
    if argv[0] == "sudo":
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd="/")
        if done.returncode != 0:
            raise OSError(f"{' '.join(argv[:5])} mkdir -p {directory}: {done.stderr.strip()[-200:]}")
        return
    os.makedirs(directory, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o2775)


# --- mounts ---------------------------------------------------------------------------------------


def read_mountinfo() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        return mountinfo.read()


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal (\\040)."""
    return field.encode().decode("unicode_escape")


def parse_mountinfo(text: str) -> dict[str, str]:
    """Mount point -> file system type, the last mount of a point winning (it hides the others)."""
    mounts: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 7:
            continue
        after = line.split(" - ", 1)[1].split()
        mounts[_unescape(fields[4])] = after[0] if after else ""
    return mounts


def covering_mount(path: str, mounts: Mapping[str, str]) -> str:
    """The mount point that holds ``path``: the longest mount point that is ``path`` or a parent of it."""
    best = "/"
    for point in mounts:
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best = point
    return best


def required_mounts(section: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Path that must be shared -> mount points that may hold it (the path itself, or for a home its
    parent, mounted whole by NFS and by the server's bind mount)."""
    data_dir, home_dir = str(section["data_dir"]), str(section.get("home_dir") or "")
    wanted: dict[str, tuple[str, ...]] = {data_dir: (data_dir,)}
    for account in section.get("accounts") or []:
        home = f"{home_dir}/{account}"
        wanted[home] = (home, home_dir)
    return wanted


@register
class StorageMounts(Check):
    name = "storage.mounts"
    category = "placement"
    tags = frozenset({"storage"})
    description = "The data directory and every shared home are mounted on this node, from the share"
    placement_rule = (
        "shared paths held by their own mount (of the backend's file system type on clients) == "
        "the data directory and <home_dir>/<account> for every account"
    )
    engine = ENGINE
    engine_keys = ("data_dir",)
    timeout = 20.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        section = settings(ctx)
        mounts = parse_mountinfo(read_mountinfo())
        wanted = required_mounts(section)
        fstypes = CLIENT_FSTYPES.get(str(section.get("backend")), ())
        on_server = ctx.target == section.get("server")
        held: dict[str, str] = {}
        mounted = []
        for path, allowed in wanted.items():
            point = covering_mount(path, mounts)
            held[path] = f"{point} ({mounts.get(point, '?')})"
            if point in allowed and (on_server or not fstypes or mounts.get(point) in fstypes):
                mounted.append(path)
        yield ctx.compare_sets(
            sorted(wanted),
            sorted(mounted),
            details={"held_by": held, "backend": section.get("backend"), "server": on_server},
        )


# --- one file, every node ------------------------------------------------------------------------


def run_shell(host: str | None, script: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a shell script on ``host`` as this account (over SSH unless it is this machine)."""
    argv = on_host(host, ["sh", "-c", script])
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 255, "", f"{type(exc).__name__}: {exc}")


SHELL: Callable[[str | None, str, float], subprocess.CompletedProcess] = run_shell


def parse_sha256sum(text: str, directory: str) -> dict[str, str]:
    """``sha256sum`` output for files of ``directory`` -> {file name: hex digest}."""
    seen = {}
    for line in text.splitlines():
        digest, _, path = line.partition("  ")
        if path.startswith(directory + "/") and len(digest) == 64:
            seen[path[len(directory) + 1 :]] = digest
    return seen


@register
class StorageShared(Check):
    name = "storage.shared"
    category = "correctness"
    tags = frozenset({"storage"})
    description = (
        "Every node writes a file of random bytes to the data directory; every node reads all of them"
    )
    scope = "cluster"
    params = (
        Param("bytes", int, 4 << 20, "random bytes each node writes", 1, 1 << 30, smoke=4096),
        Param("io_timeout", float, 60.0, "s one node may take to write or hash the files", 1.0, 3600),
    )
    correctness_rule = "sha256 of every node's file, read on each node == sha256 of what its writer wrote"
    placement_rule = "nodes that read every node's file intact == every host of cluster.json"
    engine = ENGINE
    engine_keys = ("data_dir",)
    timeout = 300.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        hosts = [h.name for h in ctx.cluster.hosts]
        directory = f"{settings(ctx)['data_dir']}/{CHECK_DIR}/shared-{uuid.uuid4().hex[:12]}"
        written: dict[str, str] = {}
        failures: dict[str, str] = {}
        try:
            for writer in hosts:
                ctx.check_deadline()
                target = shlex.quote(f"{directory}/{writer}")
                script = (
                    f"umask 002 && mkdir -p {shlex.quote(directory)} && head -c {p.bytes} /dev/urandom "
                    f"| tee {target}.tmp | sha256sum && mv {target}.tmp {target}"
                )
                done = SHELL(writer, script, ctx.bounded(p.io_timeout))
                digest = done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() else ""
                if len(digest) == 64:
                    written[writer] = digest
                else:
                    failures[writer] = f"write failed ({done.returncode}): {done.stderr.strip()[-300:]}"
            if not written:
                raise CheckError(f"no node could write to {directory}: {failures}")
            seen: dict[str, dict[str, str]] = {}
            files = " ".join(shlex.quote(f"{directory}/{w}") for w in written)
            for reader in hosts:
                ctx.check_deadline()
                done = SHELL(reader, f"sha256sum {files}", ctx.bounded(p.io_timeout))
                seen[reader] = parse_sha256sum(done.stdout, directory)
                if done.returncode != 0:
                    failures.setdefault(reader, f"read: {done.stderr.strip()[-300:]}")
        finally:
            SHELL(None, f"rm -rf {shlex.quote(directory)}", 30.0)
        for reader in hosts:
            yield ctx.compare(
                written,
                seen[reader],
                name=f"storage.shared[{reader}]",
                details={"reader": reader, "error": failures.get(reader, "")},
            )
        intact = [r for r in hosts if seen[r] == written and not failures.get(r)]
        yield ctx.compare_sets(hosts, intact, name="storage.shared.placement", details={"failures": failures})


# --- permissions ---------------------------------------------------------------------------------


# The probe as the service account runs it (see try_create): the same steps in a child interpreter
# that imports nothing of the suite (one start per probed path).
_PROBE = """
import os, sys
try:
    fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
except PermissionError:
    print("refused")
except OSError as exc:
    print(f"error: {exc.strerror or exc}")
else:
    os.close(fd)
    os.unlink(sys.argv[1])
    print("written")
"""


def try_create(path: str) -> str:
    """``written`` when the account under test could create (and remove again) ``path``, else
    ``refused``: the service account (the one with a shared home) when the suite runs as another
    account, through ``sudo -n -u``, else this account."""
    argv = as_service_account([sys.executable, "-c", _PROBE, path])
    if argv[0] == "sudo":
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, cwd="/")
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"error: {exc}"
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return f"error: the probe as {argv[3]} exited {done.returncode}: {done.stderr.strip()[-200:]}"
        return lines[-1]
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except PermissionError:
        return "refused"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"
    try:
        os.write(fd, b"clusterforge permission probe\n")
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
    return "written"


CREATE: Callable[[str], str] = try_create


def this_account() -> str:
    """The account whose permissions the check tests: the service account when the suite reaches it
    through sudo, else this one."""
    return service_account() or pwd.getpwuid(os.getuid()).pw_name


@register
class StoragePermissions(Check):
    name = "storage.permissions"
    category = "correctness"
    tags = frozenset({"storage"})
    description = (
        "This account writes its own shared home and the data directory, and no other account's home"
    )
    correctness_rule = (
        "creating a file: own home and data directory written; every other account's home refused"
    )
    engine = ENGINE
    engine_keys = ("accounts",)
    timeout = 30.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        section = settings(ctx)
        me = this_account()
        accounts = [str(a) for a in section.get("accounts") or []]
        if me not in accounts:
            raise SkipCheck(f"this account ({me}) has no shared home; accounts: {', '.join(accounts)}")
        if me == "root":
            raise CheckError("run as the service account: root bypasses the permissions under test")
        probe = f".clusterforge-probe-{ctx.target}-{os.getpid()}"
        home_dir = section["home_dir"]
        expected = {"data_dir": "written", f"home:{me}": "written"}
        observed = {
            "data_dir": CREATE(f"{section['data_dir']}/{probe}"),
            f"home:{me}": CREATE(f"{home_dir}/{me}/{probe}"),
        }
        for other in accounts:
            if other != me:
                expected[f"home:{other}"] = "refused"
                observed[f"home:{other}"] = CREATE(f"{home_dir}/{other}/{probe}")
        details: dict[str, Any] = {
            "account": me,
            "differs": [key for key, value in expected.items() if observed[key] != value],
        }
        if len(accounts) < 2:
            details["foreign_homes"] = "none: no other account has a shared home (shared_storage_users)"
        yield ctx.compare(expected, observed, details=details)


# --- throughput ----------------------------------------------------------------------------------


def timed_write(path: str, nbytes: int) -> float:
    """Seconds to write ``nbytes`` into a new file at ``path`` and fsync them.

    The previous sample's file is removed first, not reopened: on an sshfs share every file shows
    as the service account's, so the verification account may create and remove files in the
    group-writable check directory but not write into one it created (0644 under a umask of 022)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    chunk = os.urandom(min(nbytes, 1 << 20))
    start = time.perf_counter()
    with open(path, "wb") as out:
        left = nbytes
        while left > 0:
            left -= out.write(chunk[: min(left, len(chunk))])
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - start


def timed_read(path: str) -> float:
    """Seconds to read ``path`` back after dropping it from this node's page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        start = time.perf_counter()
        while os.read(fd, 1 << 20):
            pass
        return time.perf_counter() - start
    finally:
        os.close(fd)


@register
class StorageThroughput(Check):
    name = "storage.throughput"
    category = "performance"
    tags = frozenset({"storage"})
    description = "Sequential write (with fsync) and read of the share next to the same on local disk"
    params = (
        Param("bytes", int, 32 << 20, "bytes per write/read sample", 4096, 1 << 34, smoke=1 << 16),
        Param("repeats", int, 5, "timed samples after one warm-up", 5, 100),
        Param("local_dir", str, "/var/tmp", "directory on this node's local disk to compare with"),
    )
    metrics = (
        Metric("share_write", "MB/s", help="10^6 bytes/s into the data directory, fsync included"),
        Metric("share_read", "MB/s", help="10^6 bytes/s from the data directory, page cache dropped"),
        Metric("local_write", "MB/s", help="the same into local_dir"),
        Metric("local_read", "MB/s", help="the same from local_dir"),
    )
    engine = ENGINE
    engine_keys = ("data_dir",)
    timeout = 600.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        name = f"throughput-{ctx.target}-{os.getpid()}"
        places = {
            "share": f"{settings(ctx)['data_dir']}/{CHECK_DIR}",
            "local": p.local_dir,
        }
        figures: dict[str, dict[str, list[float]]] = {}
        for where, directory in places.items():
            path = f"{directory}/{name}"
            try:
                if where == "share":
                    make_check_dir(directory)
                else:
                    os.makedirs(directory, exist_ok=True)
                writes = ctx.repeat(lambda path=path: timed_write(path, p.bytes), p.repeats)
                reads = [timed_read(path) for _ in range(1 + p.repeats)][1:]
            except OSError as exc:
                raise CheckError(f"{where} ({directory}): {exc}") from exc
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            figures[where] = {
                "write": [p.bytes / s / 1e6 for s in writes],
                "read": [p.bytes / s / 1e6 for s in reads],
            }
        for op in ("write", "read"):
            share = sorted(figures["share"][op])[len(figures["share"][op]) // 2]
            local = sorted(figures["local"][op])[len(figures["local"][op]) // 2]
            ratio = {"share_vs_local": round(share / local, 4) if local else None}
            yield ctx.performance(f"share_{op}", figures["share"][op], details=ratio)
            yield ctx.performance(f"local_{op}", figures["local"][op], details={"dir": p.local_dir})


# --- MPI-IO -------------------------------------------------------------------------------------


@register
class MpiIo(Check):
    name = "mpi.io"
    category = "correctness"
    tags = frozenset({"mpi", "storage"})
    description = (
        "MPI-IO on COMM_WORLD: collective write of one block per rank to a file in the shared data "
        "directory, collective read of the neighbour's block, whole file hashed"
    )
    scope = "cluster"
    params = (
        Param("block", int, 1 << 20, "bytes each rank writes", 1, 1 << 30, smoke=4096),
        Param(
            "launch_timeout", float, 120.0, "s the mpirun may take (MPI-IO hangs without a share)", 1.0, 3600
        ),
    )
    correctness_rule = (
        "sha256 of the file read by rank 0 == sha256 of the blocks of ranks 0..size-1; "
        "every rank reads its neighbour's block intact"
    )
    placement_rule = "hosts that ran ranks == MPI hosts of the inventory"
    engine = "mpi"
    engine_keys = ("hostfile", "slots")
    timeout = 180.0

    def applies(self, ctx: CheckContext) -> str | None:
        if ENGINE not in ctx.cluster.engines:
            return (
                f"{ctx.cluster.source} declares no engines.storage: without a file system shared by the MPI "
                "hosts there is no common file for MPI-IO on COMM_WORLD"
            )
        return None

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        storage = ctx.cluster.engines[ENGINE]
        if storage.get("unavailable"):
            raise CheckError(f"engines.storage unavailable: {storage['unavailable']}")
        slots = expected_slots(ctx)
        size = sum(slots.values())
        directory = f"{storage['data_dir']}/{CHECK_DIR}"
        try:
            make_check_dir(directory)
        except OSError as exc:
            raise CheckError(f"cannot create {directory} on the launching node: {exc}") from exc
        path = f"{directory}/mpi-io-{uuid.uuid4().hex[:12]}.dat"
        block = ctx.params.block
        try:
            run = launcher_for(ctx).job(
                "fileio", [path, str(block)], ctx.bounded(ctx.params.launch_timeout), np=size
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        record = single_record(run, "fileio", size)
        ranks = record.get("ranks") or []
        details = {
            "file": path,
            "bytes": size * block,
            "write_s": record.get("write_s"),
            "read_s": record.get("read_s"),
            "job": f"{JOB_PACKAGE}.fileio",
        }
        yield ctx.compare(expected_sha256(size, block), record.get("sha256"), details=details)
        yield ctx.compare(
            [True] * size,
            [bool(r.get("neighbour_ok")) for r in sorted(ranks, key=lambda r: r.get("rank", 0))],
            name="mpi.io.neighbour_blocks",
            rule="every rank reads the block its neighbour wrote from another host, intact",
        )
        yield ctx.compare_sets(
            sorted(slots), sorted({str(r.get("host")) for r in ranks}), name="mpi.io.placement"
        )


# --- a dataset in the data directory, read by every Dask and Spark worker ------------------------


def write_dataset(directory: str, files: int, nbytes: int) -> dict[str, str]:
    """Write ``files`` files of random bytes to a new ``directory``, readable by every account
    (the engines' workers run as their own users): {file name: sha256}."""
    written: dict[str, str] = {}
    try:
        make_check_dir(os.path.dirname(directory))
        os.makedirs(directory, mode=0o755)
        for index in range(files):
            name = f"part-{index:04d}.bin"
            payload = os.urandom(nbytes)
            with open(f"{directory}/{name}", "wb") as out:
                out.write(payload)
            os.chmod(f"{directory}/{name}", 0o644)
            written[name] = hashlib.sha256(payload).hexdigest()
    except OSError as exc:
        raise CheckError(f"cannot write the dataset to {directory}: {exc}") from exc
    return written


def scratch_place(report: Mapping[str, Any], section: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the scratch directory a worker reported (``scratch``) lies on its local disk, judged
    from that worker's mount table (``mountinfo``), and where: ``<path> on <mount point> (<type>)``."""
    path = str(report.get("scratch") or "")
    mounts = parse_mountinfo(str(report.get("mountinfo") or ""))
    point = covering_mount(path, mounts)
    fstype = mounts.get(point, "?")
    shared = [str(section[key]) for key in ("data_dir", "home_dir") if section.get(key)]
    on_share = fstype in CLIENT_FSTYPES.get(str(section.get("backend")), ()) or any(
        path == top or path.startswith(top.rstrip("/") + "/") for top in shared
    )
    return bool(path) and not on_share, f"{path or '(none)'} on {point} ({fstype})"


def read_on_every_worker(sess: Any, paths: list[str]) -> dict[str, dict[str, Any]]:
    """Worker address -> {"digests": {file name: sha256 or "error: ..."}, "scratch": the worker's
    local directory (spill), "mountinfo": its mount table}, read by every worker process itself."""

    def digests(paths: list[str], dask_worker: Any = None) -> dict[str, Any]:
        import hashlib as _hashlib
        import os as _os

        out = {}
        for path in paths:
            try:
                with open(path, "rb") as data:
                    out[_os.path.basename(path)] = _hashlib.sha256(data.read()).hexdigest()
            except OSError as exc:
                out[_os.path.basename(path)] = f"error: {exc.strerror or exc}"
        with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
            table = mountinfo.read()
        scratch = str(getattr(dask_worker, "local_directory", "") or "")
        return {"digests": out, "scratch": scratch, "mountinfo": table}

    return dict(sess.client.run(digests, paths))


DASK_READ: Callable[[Any, list[str]], dict[str, dict[str, Any]]] = read_on_every_worker


def scratch_result(
    ctx: CheckContext, name: str, expected: list[str], places: Mapping[str, tuple[bool, str]]
) -> Result:
    """Placement result: the workers whose scratch lies on local disk == every worker."""
    return ctx.compare_sets(
        expected,
        sorted(worker for worker, (local, _) in places.items() if local),
        name=name,
        rule="workers whose scratch directory lies on local disk, not on the share == every worker",
        details={"scratch": {worker: where for worker, (_, where) in sorted(places.items())}},
    )


DATASET_PARAMS = (
    Param("files", int, 4, "files in the dataset", 1, 1000, smoke=2),
    Param("bytes", int, 1 << 20, "bytes per file", 1, 1 << 30, smoke=1024),
)


class _DatasetCheck(Check):
    """A dataset the head node writes to the data directory, read by an engine's workers."""

    category = "placement"
    scope = "cluster"

    def applies(self, ctx: CheckContext) -> str | None:
        if ENGINE not in ctx.cluster.engines:
            return f"{ctx.cluster.source} declares no engines.storage: the workers share no data directory"
        return None

    @staticmethod
    def storage(ctx: CheckContext) -> Mapping[str, Any]:
        section = ctx.cluster.engines[ENGINE]
        if section.get("unavailable"):
            raise CheckError(f"engines.storage unavailable: {section['unavailable']}")
        return section

    @staticmethod
    def directory(section: Mapping[str, Any]) -> str:
        return f"{section['data_dir']}/{CHECK_DIR}/dataset-{uuid.uuid4().hex[:12]}"


@register
class StorageDaskDataset(_DatasetCheck):
    name = "storage.dask_dataset"
    tags = frozenset({"storage", "dask"})
    description = (
        "A dataset written to the data directory on the head node is read, intact, by every Dask "
        "worker; every worker's spill directory lies on its local disk"
    )
    params = (*DATASET_PARAMS, dask_checks.CONNECT_PARAM)
    correctness_rule = "sha256 of every file, read by each worker process == sha256 of what the head wrote"
    placement_rule = (
        "Dask worker processes (host/i) that read every file intact == those of the inventory; "
        "those whose local directory (spill) is on local disk == the same"
    )
    engine = "dask"
    engine_keys = ("endpoint", "config_dir")
    timeout = 120.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        storage = self.storage(ctx)
        p = ctx.params
        directory = self.directory(storage)
        try:
            written = write_dataset(directory, p.files, p.bytes)
            hosts = dask_checks.expected_hosts(ctx)
            with dask_checks.session(ctx) as sess:
                labels = dask_checks.label_workers(sess.workers(), hosts)
                seen = DASK_READ(sess, [f"{directory}/{name}" for name in written])
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        by_label = {labels.get(address, address): report for address, report in sorted(seen.items())}
        for label, report in sorted(by_label.items()):
            name = f"storage.dask_dataset[{label}]"
            yield ctx.compare(written, report.get("digests"), name=name, details={"dir": directory})
        expected = dask_checks.expected_labels(hosts)
        yield ctx.compare_sets(
            expected,
            sorted(label for label, report in by_label.items() if report.get("digests") == written),
            details={"files": len(written), "bytes_per_file": p.bytes},
        )
        places = {label: scratch_place(report, storage) for label, report in by_label.items()}
        yield scratch_result(ctx, "storage.dask_dataset.scratch", expected, places)


def read_on_every_executor(handle: Any, paths: list[str], tasks: int, sleep_s: float) -> list[dict[str, Any]]:
    """One record per Spark task, read by the executor's Python worker itself: {"host", "digests":
    {file name: sha256 or "error: ..."}, "scratch": the executor's local directories (shuffle and
    spill, SPARK_EXECUTOR_DIRS), "mountinfo": its mount table}."""

    def read(_: int, rows: Iterator[int]) -> Iterator[dict[str, Any]]:
        import hashlib as _hashlib
        import os as _os
        import socket as _socket
        import time as _time

        for _row in rows:
            pass
        _time.sleep(sleep_s)  # long enough that every executor gets tasks
        out = {}
        for path in paths:
            try:
                with open(path, "rb") as data:
                    out[_os.path.basename(path)] = _hashlib.sha256(data.read()).hexdigest()
            except OSError as exc:
                out[_os.path.basename(path)] = f"error: {exc.strerror or exc}"
        with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
            table = mountinfo.read()
        dirs = _os.environ.get("SPARK_EXECUTOR_DIRS") or _os.environ.get("SPARK_LOCAL_DIRS") or ""
        # The worker's own address; SPARK_LOCAL_IP is loopback where a worker keeps its UI local.
        names = [_os.environ.get(key, "") for key in ("SPARK_LOCAL_IP", "SPARK_PUBLIC_DNS")]
        names = [n for n in names if n and not n.startswith("127.") and n not in ("localhost", "::1")]
        yield {
            "host": names[0] if names else _socket.gethostname(),
            "digests": out,
            "scratch": dirs.split(_os.pathsep)[0] if dirs else "",
            "mountinfo": table,
        }

    return handle.sc.parallelize(range(tasks), tasks).mapPartitionsWithIndex(read).collect()


SPARK_READ: Callable[[Any, list[str], int, float], list[dict[str, Any]]] = read_on_every_executor


@register
class StorageSparkDataset(_DatasetCheck):
    name = "storage.spark_dataset"
    tags = frozenset({"storage", "spark"})
    description = (
        "A dataset written to the data directory on the head node is read, intact, by a Spark job on "
        "every worker host; every executor's local directories (shuffle, spill) lie on local disk"
    )
    params = (
        *DATASET_PARAMS,
        Param("tasks_per_core", int, 2, "tasks per worker core of the inventory", 1, 1000),
        Param("sleep", float, 0.5, "s each task sleeps, so every executor gets some", 0.0, 60, smoke=0.0),
        spark_checks.START_PARAM,
        spark_checks.JOB_PARAM,
    )
    correctness_rule = "sha256 of every file, read by every task == sha256 of what the head wrote"
    placement_rule = (
        "worker hosts whose tasks all read every file intact == worker hosts of the inventory; "
        "hosts whose executors' local directories are on local disk == the same"
    )
    engine = "spark"
    engine_keys = ("endpoint", "conf_dir")
    timeout = 300.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        storage = self.storage(ctx)
        p = ctx.params
        workers = spark_checks.expected_workers(ctx)
        name_of = spark_checks.host_names(workers)
        tasks = max(len(workers), p.tasks_per_core * sum(w.cores for w in workers))
        directory = self.directory(storage)
        try:
            written = write_dataset(directory, p.files, p.bytes)
            handle = spark_checks.handle_for(ctx)
            with handle.bounded(ctx.bounded(p.job_timeout), "dataset job"):
                records = SPARK_READ(handle, [f"{directory}/{name}" for name in written], tasks, p.sleep)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        by_host: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_host.setdefault(name_of(str(record.get("host"))), []).append(record)
        for host, reports in sorted(by_host.items()):
            bad = [r.get("digests") for r in reports if r.get("digests") != written]
            yield ctx.compare(
                written,
                bad[0] if bad else reports[0].get("digests"),
                name=f"storage.spark_dataset[{host}]",
                details={"dir": directory, "tasks": len(reports), "tasks_wrong": len(bad)},
            )
        expected = [w.name for w in workers]
        yield ctx.compare_sets(
            expected,
            sorted(h for h, reports in by_host.items() if all(r.get("digests") == written for r in reports)),
            details={"files": len(written), "bytes_per_file": p.bytes, "tasks": tasks},
        )
        places: dict[str, tuple[bool, str]] = {}
        for host, reports in by_host.items():
            judged = [scratch_place(report, storage) for report in reports]
            places[host] = next((j for j in judged if not j[0]), judged[0])
        yield scratch_result(ctx, "storage.spark_dataset.scratch", expected, places)
