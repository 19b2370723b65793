"""Node checks that need no engine: inventory, BLAS (DGEMM), memory bandwidth (STREAM triad), disk."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from compute_jobs import sysinfo
from compute_jobs.context import CheckContext
from compute_jobs.model import FAIL, PASS, Check, CheckError, Metric, Param, Reference, Result, register
from compute_jobs.versions import library_versions, pinned_drift


@register
class NodeInventory(Check):
    name = "node.inventory"
    category = "inventory"
    tags = frozenset({"node"})
    description = (
        "CPU, SIMD, cores, memory, disks, OS and library versions against what the inventory declares"
    )
    params = (
        Param("memory_tolerance", float, 0.05, "allowed shortfall of memory against memory_mb", 0.0, 0.5),
    )
    correctness_rule = (
        "usable cores >= hosts[].cores; usable memory >= hosts[].memory_mb x (1 - memory_tolerance); "
        "installed versions == pinned_libraries"
    )
    timeout = 30.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        host = ctx.host
        if host is None:
            raise CheckError(f"{ctx.target} is not in {ctx.cluster.source}")
        cpu = sysinfo.cpu_info()
        cores = sysinfo.cpu_cores()
        memory = sysinfo.memory_info()
        pins = dict(ctx.cluster.pinned_libraries)
        drift = pinned_drift(pins)
        tolerance = ctx.params.memory_tolerance
        problems = []
        if cores["effective"] < host.cores:
            problems.append(f"cores: {cores['effective']:g} usable < {host.cores} declared")
        usable_mb = memory["effective_mb"]
        if usable_mb is None:
            problems.append("memory: MemTotal not found in /proc/meminfo")
        elif usable_mb < host.memory_mb * (1.0 - tolerance):
            problems.append(
                f"memory: {usable_mb:.0f} MiB usable < {host.memory_mb} MiB declared "
                f"(tolerance {tolerance:.0%})"
            )
        for lib, versions in drift.items():
            installed = versions["installed"] or "not installed"
            problems.append(f"drift: {lib} {installed} installed, {versions['pinned']} pinned")
        versions = library_versions()
        observed_libs = {lib: versions.get(lib) for lib in pins}
        for lib, found in drift.items():
            observed_libs[lib] = found["installed"]
        yield ctx.result(
            status=FAIL if problems else PASS,
            reason="; ".join(problems),
            expected={"cores": host.cores, "memory_mb": host.memory_mb, "libraries": pins},
            observed={
                "cores": cores["effective"],
                "memory_mb": None if usable_mb is None else round(usable_mb),
                "libraries": observed_libs,
            },
            rule=self.correctness_rule,
            details={
                "cpu": cpu,
                "cores": cores,
                "memory": memory,
                "disks": sysinfo.disks(),
                "os": sysinfo.os_release(),
                "versions": versions,
                "drift": drift,
            },
        )


def blas_info() -> dict[str, Any]:
    """numpy's BLAS as numpy reports it; {"name": "unknown"} when it cannot tell."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            config = np.show_config(mode="dicts")
        blas = (config or {}).get("Build Dependencies", {}).get("blas", {})
        if blas:
            return {
                "name": blas.get("name", "unknown"),
                "version": blas.get("version"),
                "openblas_configuration": blas.get("openblas configuration"),
            }
    except Exception:
        pass
    try:
        get_info = np.__config__.get_info  # type: ignore[attr-defined]
        for key in ("blas_opt_info", "blas_ilp64_opt_info", "openblas_info", "blas_mkl_info"):
            info = get_info(key)
            if info:
                libraries = info.get("libraries") or ["unknown"]
                return {"name": libraries[0], "version": None, "openblas_configuration": None}
    except Exception:
        pass
    return {"name": "unknown", "version": None, "openblas_configuration": None}


def dgemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """The timed kernel of node.blas: C = A B through numpy's BLAS."""
    np.matmul(a, b, out=out)


def stream_triad(a: np.ndarray, b: np.ndarray, c: np.ndarray, s: float) -> None:
    """The timed kernel of node.stream: a = b + s*c in place (no temporaries to count)."""
    np.multiply(c, s, out=a)
    np.add(a, b, out=a)


@register
class NodeBlas(Check):
    name = "node.blas"
    category = "performance"
    tags = frozenset({"node"})
    description = "DGEMM rate through numpy's BLAS with an HPL-style scaled residual check, vs CPU peak"
    params = (
        Param("n", int, 1024, "matrix order", 16, 16384, smoke=96),
        Param("repeats", int, 5, "timed repeats after warm-up", 5, 1000),
        Param("warmup", int, 1, "untimed warm-up multiplications", 1, 100),
        Param("sample", int, 32, "rows and columns of C checked against the reference", 4, 4096, smoke=8),
        Param("seed", int, 20261121, "random seed for A and B", 0),
    )
    correctness_rule = (
        "HPL scaled residual max|C - AB| / (N * eps * ||A||_inf * ||B||_inf) < 16 on a sampled block; "
        "reference computed with float64 einsum (numpy's own loops, not BLAS)"
    )
    metrics = (Metric("dgemm", "GFLOP/s", help="2 N^3 / time of one multiplication"),)
    timeout = 120.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        n = p.n
        rng = np.random.default_rng(p.seed)
        a = rng.random((n, n))
        b = rng.random((n, n))
        c = np.empty((n, n))
        durations = ctx.repeat(lambda: dgemm(a, b, c), p.repeats, p.warmup)
        rates = [2.0 * n**3 / d / 1e9 for d in durations]
        take = min(p.sample, n)
        rows = np.sort(rng.choice(n, size=take, replace=False))
        cols = np.sort(rng.choice(n, size=take, replace=False))
        reference = np.einsum("ik,kj->ij", a[rows], b[:, cols], optimize=False)
        observed = c[np.ix_(rows, cols)]
        scale = n * np.finfo(np.float64).eps * np.linalg.norm(a, np.inf) * np.linalg.norm(b, np.inf)

        def residual(expected: np.ndarray, got: np.ndarray) -> float:
            return float(np.max(np.abs(got - expected)) / scale)

        yield ctx.compare(
            reference,
            observed,
            tolerance=16.0,
            error=residual,
            details={"n": n, "sampled_rows": rows.tolist(), "sampled_cols": cols.tolist(), "scale": scale},
        )
        cores = sysinfo.cpu_cores()["effective"]
        peak, basis = sysinfo.peak_gflops(cores, sysinfo.cpu_info())
        ref = None
        if peak:
            ref = Reference(peak, None, None, "GFLOP/s", kind="peak", source=basis["assumption"])
        yield ctx.performance(
            "dgemm",
            rates,
            reference=ref,
            details={"n": n, "blas": blas_info(), "peak_gflops": peak, "peak_basis": basis},
        )


@register
class NodeStream(Check):
    name = "node.stream"
    category = "performance"
    tags = frozenset({"node"})
    description = "STREAM triad a = b + s*c with numpy: analytic-answer check and memory bandwidth"
    params = (
        Param("n", int, 5_000_000, "elements per array (3 arrays of float64)", 1000, 2**31, smoke=20_000),
        Param("repeats", int, 5, "timed repeats after one warm-up", 5, 1000),
        Param("scalar", float, 3.0, "triad scalar s", 0.5, 1e6),
    )
    correctness_rule = "average relative error of a against the analytic a[i] = i + s * 0.5 < 1e-13"
    metrics = (Metric("triad", "GB/s", help="STREAM convention: 3 x N x 8 bytes per triad"),)
    timeout = 120.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        n, s = p.n, p.scalar
        a = np.empty(n)
        b = np.arange(n, dtype=np.float64)
        c = np.full(n, 0.5)

        durations = ctx.repeat(lambda: stream_triad(a, b, c, s), p.repeats, warmup=1)
        rates = [3.0 * n * 8 / d / 1e9 for d in durations]
        expected = np.arange(n, dtype=np.float64) + s * 0.5

        def average_relative_error(want: np.ndarray, got: np.ndarray) -> float:
            return float(np.mean(np.abs(got - want) / np.abs(want)))

        yield ctx.compare(
            expected, a, tolerance=1e-13, error=average_relative_error, details={"n": n, "s": s}
        )
        yield ctx.performance(
            "triad",
            rates,
            details={
                "n": n,
                "bytes_counted": 3 * n * 8,
                "note": "numpy's in-place triad (multiply, then add) moves 5 x N x 8 bytes; the figure "
                "counts 3 x N x 8 as STREAM does, so it understates the hardware by up to 5/3",
            },
        )


@register
class NodeDisk(Check):
    name = "node.disk"
    category = "performance"
    tags = frozenset({"node"})
    description = "Write (with fsync) and read back a file in the temp dir: sha256 equality and MB/s"
    params = (
        Param("size_mb", int, 64, "file size in MiB", 1, 65536, smoke=1),
        Param("repeats", int, 5, "timed write+read repeats after one warm-up", 5, 1000),
        Param("dir", str, "", "directory for the file (empty: the system temp dir)"),
        Param("block_kb", int, 1024, "write/read block size in KiB", 4, 65536),
        Param("seed", int, 20261121, "random seed of the file content", 0),
    )
    correctness_rule = "sha256 of every read-back == sha256 of the data written (exact)"
    metrics = (
        Metric("write", "MB/s", help="size / (write + fsync time), 10^6 bytes per s"),
        Metric("read", "MB/s", help="size / read time, 10^6 bytes per s; may be served by the page cache"),
    )
    timeout = 120.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        directory = p.dir or tempfile.gettempdir()
        size = p.size_mb * 1024 * 1024
        try:
            st = os.statvfs(directory)
        except OSError as exc:
            raise CheckError(f"cannot use {directory}: {exc.strerror or exc}") from exc
        free = st.f_bavail * st.f_frsize
        if free < 2 * size:
            raise CheckError(
                f"not enough space in {directory}: {free / 1e6:.0f} MB free, {2 * size / 1e6:.0f} needed"
            )
        data = np.random.default_rng(p.seed).bytes(size)
        want = hashlib.sha256(data).hexdigest()
        block = p.block_kb * 1024
        fd, path = tempfile.mkstemp(prefix="clusterforge-disk-", dir=directory)
        os.close(fd)
        writes: list[float] = []
        reads: list[float] = []
        digests: set[str] = set()
        dropped = True
        buffer = bytearray(size)
        try:
            for index in range(1 + p.repeats):
                ctx.check_deadline()
                write_s = _write_file(path, data, block)
                dropped = _drop_cache(path) and dropped
                read_s = _read_file(path, buffer, block)
                digests.add(hashlib.sha256(buffer).hexdigest())
                if index:  # the first pass is the warm-up
                    writes.append(size / write_s / 1e6)
                    reads.append(size / read_s / 1e6)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        observed: Any = next(iter(digests)) if len(digests) == 1 else sorted(digests)
        yield ctx.compare(want, observed, details={"bytes": size, "passes": 1 + p.repeats, "dir": directory})
        cache_note = (
            "page cache dropped with posix_fadvise(DONTNEED) before each read (best effort: the kernel "
            "may still serve reads from cache)"
            if dropped
            else "page cache could not be dropped: reads are likely served from memory"
        )
        info = {"bytes": size, "dir": directory, "block_bytes": block}
        yield ctx.performance("write", writes, details={**info, "fsync": True})
        yield ctx.performance("read", reads, details={**info, "page_cache": cache_note})


def _write_file(path: str, data: bytes, block: int) -> float:
    view = memoryview(data)
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as handle:
        for offset in range(0, len(data), block):
            handle.write(view[offset : offset + block])
        os.fsync(handle.fileno())
    return max(time.perf_counter() - start, 1e-9)


def _read_file(path: str, buffer: bytearray, block: int) -> float:
    view = memoryview(buffer)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        offset = 0
        while offset < len(buffer):
            got = handle.readinto(view[offset : offset + block])
            if not got:
                raise CheckError(f"{path}: file shorter than written ({offset} of {len(buffer)} bytes)")
            offset += got
    return max(time.perf_counter() - start, 1e-9)


def _drop_cache(path: str) -> bool:
    fadvise = getattr(os, "posix_fadvise", None)
    if fadvise is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError:
        return False
    return True
