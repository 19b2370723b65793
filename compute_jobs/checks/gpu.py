"""NVIDIA GPU checks: inventory through NVML, GEMM through CuPy/cuBLAS, a STREAM triad through a Numba
CUDA kernel, pinned host<->device transfers against the PCIe link, and peer-to-peer copies.

Node scope; they apply to hosts in group ``gpu_nodes``. A host in that group on which no GPU is found
is FAIL, never SKIP. Everything that touches the GPU goes through :data:`BACKEND` (NVML, CuPy, Numba,
all imported lazily); the unit tests replace it with a numpy stand-in at that boundary, so the judging
code that runs on a real GPU is the code the tests exercise.

``engines.gpu`` in cluster.json (optional) declares what ``gpu.inventory`` compares besides
``hosts[].gpus`` and ``hosts[].gpu_models``::

    {"driver_version": "580.95.05", "cuda_version": "13.0", "memory_mib": 143771,
     "hosts": {"gpu-1": {"driver_version": "...", "cuda_version": "...", "memory_mib": 0}}}

Empty strings and 0 mean "not declared": the value is reported, not compared.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from compute_jobs.context import CheckContext
from compute_jobs.gpu.backend import CudaBackend, Device, GpuInfo, Inventory, nvml_inventory
from compute_jobs.gpu.datasheet import (
    DATASHEET,
    SYSFS_PCI,
    GpuSpec,
    datasheet,
    gemm_unsupported,
    link_generation,
    pcie_peak_gbs,
    scan_pci,
)
from compute_jobs.model import (
    FAIL,
    SKIP,
    Check,
    CheckError,
    Metric,
    Param,
    Reference,
    Result,
    SkipCheck,
    register,
)

__all__ = [
    "DATASHEET",
    "CudaBackend",
    "Device",
    "GpuInfo",
    "GpuSpec",
    "Inventory",
    "datasheet",
    "link_generation",
    "nvml_inventory",
    "pcie_peak_gbs",
    "scan_pci",
]

GPU_GROUP = "gpu_nodes"
GEMM_DTYPES = ("fp64", "fp32", "bf16")

BACKEND: Any = CudaBackend()


# --- shared pieces ----------------------------------------------------------------------------------


def no_gpu_result(ctx: CheckContext, inventory: Inventory) -> Result:
    """The FAIL of a host in gpu_nodes without a usable GPU (category inventory: no control applies)."""
    if inventory.pci:
        addresses = ", ".join(p["address"] for p in inventory.pci)
        reason = (
            f"{ctx.target} is in group {GPU_GROUP} and has NVIDIA GPUs on the PCI bus ({addresses}) but the "
            f"driver does not answer: {'; '.join(inventory.errors) or 'NVML lists no GPU'}"
        )
    else:
        reason = (
            f"{ctx.target} is in group {GPU_GROUP} but no NVIDIA GPU was found: no PCI function with vendor "
            f"0x10de and a display/3D class under {SYSFS_PCI}"
            + (f"; {'; '.join(inventory.errors)}" if inventory.errors else "")
        )
    return ctx.result(
        category="inventory",
        status=FAIL,
        reason=reason,
        details={"pci": inventory.pci, "nvml_errors": inventory.errors},
    )


def declared_gpus(ctx: CheckContext, inventory: Inventory) -> int:
    """The GPUs this host must have: hosts[].gpus, else NVML's count."""
    return ctx.host.gpus if ctx.host is not None and ctx.host.gpus else inventory.count


def gpu_devices(ctx: CheckContext) -> tuple[Inventory, list[Device]]:
    """The inventory, and the devices when there are any (empty list: the caller yields the FAIL)."""
    inventory = BACKEND.inventory()
    if inventory.count == 0:
        return inventory, []
    return inventory, BACKEND.devices()


def _specs_details(device: Device) -> dict[str, Any]:
    spec = datasheet(device.name)
    return {
        "gpu": device.label,
        "model": device.name,
        "pci_address": device.pci_address,
        "datasheet": spec and spec.model,
    }


def _peak(spec: GpuSpec | None, value: float | None, unit: str, what: str) -> Reference | None:
    if spec is None or value is None:
        return None
    return Reference(value, None, None, unit, kind="peak", source=f"{spec.source}: {what}")


# --- checks -----------------------------------------------------------------------------------------


@register
class GpuInventory(Check):
    name = "gpu.inventory"
    category = "inventory"
    tags = frozenset({"gpu"})
    groups = (GPU_GROUP,)
    description = "GPU count, models, memory, driver and CUDA versions (NVML) against the inventory"
    params = (
        Param("memory_tolerance", float, 0.01, "allowed difference of memory per GPU, fraction", 0.0, 0.5),
    )
    correctness_rule = (
        "count == hosts[].gpus (>= 1 when not declared); models == hosts[].gpu_models; memory per GPU "
        "within memory_tolerance of engines.gpu memory_mib; driver and CUDA versions == engines.gpu"
    )
    timeout = 60.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        inventory = BACKEND.inventory()
        if inventory.count == 0:
            yield no_gpu_result(ctx, inventory)
            return
        expected = expected_inventory(ctx)
        observed: dict[str, Any] = {
            "count": inventory.count,
            "models": sorted(g.name or "" for g in inventory.gpus),
            "memory_mib": sorted(g.memory_mib or 0 for g in inventory.gpus),
            "driver_version": inventory.driver_version,
            "cuda_version": inventory.cuda_version,
        }
        problems: list[str] = []

        def mismatches(want: dict[str, Any], got: dict[str, Any]) -> float:
            problems.clear()
            problems.extend(inventory_problems(want, got, ctx.params.memory_tolerance))
            return float(len(problems))

        result = ctx.compare(
            expected,
            {key: observed[key] for key in expected},
            error=mismatches,
            details={
                "gpus": [g.__dict__ for g in inventory.gpus],
                "pci": inventory.pci,
                "source": inventory.source,
                "reported": observed,
            },
        )
        if problems:
            result.reason = "; ".join(problems) + f" ({result.reason})"
        yield result


def expected_inventory(ctx: CheckContext) -> dict[str, Any]:
    """What cluster.json declares for this host; undeclared fields are left out (reported only)."""
    host = ctx.host
    engine = dict(ctx.cluster.engines.get("gpu", {}))
    per_host = dict((engine.get("hosts") or {}).get(ctx.target, {}))
    declared = {**{k: v for k, v in engine.items() if k != "hosts"}, **per_host}
    expected: dict[str, Any] = {"count": host.gpus if host and host.gpus else "at least 1"}
    if host and host.gpu_models:
        expected["models"] = sorted(host.gpu_models)
    if declared.get("memory_mib"):
        expected["memory_mib"] = int(declared["memory_mib"])
    for key in ("driver_version", "cuda_version"):
        if declared.get(key):
            expected[key] = str(declared[key])
    return expected


def _model_key(name: str) -> str:
    name = name.strip().casefold()
    return name[len("nvidia ") :] if name.startswith("nvidia ") else name


def inventory_problems(expected: dict[str, Any], observed: dict[str, Any], tolerance: float) -> list[str]:
    """Each way ``observed`` differs from ``expected`` (keys only one side has count as differences)."""
    problems = [f"unexpected field {key!r}" for key in sorted(set(observed) - set(expected), key=str)]
    problems += [f"{key} not observed" for key in sorted(set(expected) - set(observed), key=str)]
    count = observed.get("count")
    if "count" in expected and "count" in observed:
        want = expected["count"]
        if (want == "at least 1" and not (isinstance(count, int) and count >= 1)) or (
            want != "at least 1" and count != want
        ):
            problems.append(f"count: {count} GPUs, inventory declares {want}")
    if "models" in expected and "models" in observed:
        want_models = [_model_key(m) for m in expected["models"]]
        got_models = [_model_key(m) for m in observed["models"]]
        ok = sorted(got_models) == sorted(want_models) or (
            len(set(want_models)) == 1
            and len(want_models) < len(got_models)
            and set(got_models) == set(want_models)
        )
        if not ok:
            problems.append(f"models: {observed['models']}, inventory declares {expected['models']}")
    if "memory_mib" in expected and "memory_mib" in observed:
        want_mib = expected["memory_mib"]
        got = observed["memory_mib"]
        if not isinstance(got, list) or any(abs(m - want_mib) > tolerance * want_mib for m in got):
            problems.append(
                f"memory_mib: {got} per GPU, inventory declares {want_mib} (tolerance {tolerance:.0%})"
            )
    for key in ("driver_version", "cuda_version"):
        if key in expected and key in observed and observed[key] != expected[key]:
            problems.append(f"{key}: {observed[key]}, inventory declares {expected[key]}")
    return problems


# GEMM ------------------------------------------------------------------------------------------------


def to_bf16_bits(xp: Any, x32: Any) -> Any:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even (inputs are finite)."""
    bits = x32.view(xp.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(xp.uint16)


def from_bf16_bits(xp: Any, bits: Any) -> Any:
    """bfloat16 bit patterns (uint16) -> the float32 values they represent exactly."""
    return (bits.astype(xp.uint32) << 16).view(xp.float32)


def residual(c_block: np.ndarray, reference: np.ndarray, bound: np.ndarray, n: int, eps: float) -> float:
    """Componentwise scaled residual max |C - AB| / (sqrt(N) eps |A||B|), element by element.

    sqrt(N) eps |A||B| is the probabilistic bound of the rounding error of an N-term dot product;
    the normwise HPL form (N eps ||A||_inf ||B||_inf) is about N times looser on one element and lets
    a product that is wrong by 100 % through in FP32 and BF16 at N = 8192.
    """
    scale = math.sqrt(n) * eps * np.maximum(bound, np.finfo(np.float64).tiny)
    return float(np.max(np.abs(c_block.astype(np.float64) - reference) / scale))


@register
class GpuGemm(Check):
    name = "gpu.gemm"
    category = "performance"
    tags = frozenset({"gpu"})
    groups = (GPU_GROUP,)
    description = (
        "FP64, FP32 and BF16 GEMM through CuPy/cuBLAS: componentwise residual, bitwise repeatability, TFLOP/s"
    )
    params = (
        Param("n", int, 8192, "matrix order", 16, 65536, smoke=48),
        Param("repeats", int, 5, "timed multiplications after warm-up", 5, 1000),
        Param("warmup", int, 2, "untimed multiplications", 1, 100),
        Param(
            "sample", int, 64, "rows and columns of C checked against the float64 reference", 4, 4096, smoke=8
        ),
        Param("dtypes", str, ",".join(GEMM_DTYPES), "comma-separated subset of fp64, fp32, bf16"),
        Param("seed", int, 20261121, "random seed of A and B", 0),
    )
    correctness_rule = (
        "componentwise residual max |C - AB| / (sqrt(N) eps |A||B|) < 16 on a sampled block against a "
        "float64 reference of the exact inputs (eps of the accumulation: fp64, or fp32 for FP32 and BF16); "
        "the product after the timed repeats is bitwise equal to the first one"
    )
    metrics = tuple(Metric(d, "TFLOP/s", help=f"{d.upper()} GEMM, 2 N^3 / device time") for d in GEMM_DTYPES)
    timeout = 600.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        dtypes = [d.strip() for d in ctx.params.dtypes.split(",") if d.strip()]
        unknown = sorted(set(dtypes) - set(GEMM_DTYPES))
        if unknown or not dtypes:
            raise CheckError(f"gpu.gemm dtypes {ctx.params.dtypes!r}: choose from {', '.join(GEMM_DTYPES)}")
        inventory, devices = gpu_devices(ctx)
        if not devices:
            yield no_gpu_result(ctx, inventory)
            return
        ran = []
        for device in devices:
            with device.activate():
                for dtype in dtypes:
                    yield from self._one(ctx, device, dtype)
            ran.append(device.label)
        declared = declared_gpus(ctx, inventory)
        yield ctx.compare_sets(
            [f"gpu{i}" for i in range(declared)],
            ran,
            name=f"{self.name}.placement",
            rule="every GPU of the inventory (hosts[].gpus, else NVML's count) ran every GEMM",
            details={"visible_to_cuda": len(devices), "nvml_count": inventory.count},
        )

    def _one(self, ctx: CheckContext, device: Device, dtype: str) -> Iterator[Result]:
        unsupported = gemm_unsupported(datasheet(device.name), dtype)
        if unsupported:
            yield ctx.result(
                f"{self.name}.{dtype}[{device.label}]",
                status=SKIP,
                reason=unsupported,
                details=_specs_details(device),
            )
            return
        p = ctx.params
        xp, n = device.xp, p.n
        rng = xp.random.default_rng(p.seed)
        if dtype == "fp64":
            a = rng.random((n, n), dtype=xp.float64)
            b = rng.random((n, n), dtype=xp.float64)
            exact_a, exact_b = a, b
            c = xp.empty((n, n), dtype=xp.float64)

            def multiply() -> None:
                xp.matmul(a, b, out=c)

            eps = float(np.finfo(np.float64).eps)
        elif dtype == "fp32":
            a = rng.random((n, n), dtype=xp.float32)
            b = rng.random((n, n), dtype=xp.float32)
            exact_a, exact_b = a, b
            c = xp.empty((n, n), dtype=xp.float32)

            def multiply() -> None:
                xp.matmul(a, b, out=c)

            eps = float(np.finfo(np.float32).eps)
        else:
            a = to_bf16_bits(xp, rng.random((n, n), dtype=xp.float32))
            b = to_bf16_bits(xp, rng.random((n, n), dtype=xp.float32))
            exact_a, exact_b = from_bf16_bits(xp, a), from_bf16_bits(xp, b)
            c = xp.empty((n, n), dtype=xp.float32)

            def multiply() -> None:
                device.matmul_bf16(a, b, c)

            eps = float(np.finfo(np.float32).eps)
        multiply()
        device.synchronize()
        first = c.copy()
        durations = device.timed(multiply, p.repeats, p.warmup, ctx)
        device.synchronize()
        take = min(p.sample, n)
        pick = np.random.default_rng(p.seed + 1)
        rows = np.sort(pick.choice(n, size=take, replace=False))
        cols = np.sort(pick.choice(n, size=take, replace=False))
        a_rows = device.to_host(exact_a[xp.asarray(rows)]).astype(np.float64)
        b_cols = device.to_host(exact_b[:, xp.asarray(cols)]).astype(np.float64)
        reference = np.einsum("ik,kj->ij", a_rows, b_cols, optimize=False)
        bound = np.einsum("ik,kj->ij", np.abs(a_rows), np.abs(b_cols), optimize=False)
        observed = device.to_host(c[xp.ix_(xp.asarray(rows), xp.asarray(cols))]).astype(np.float64)
        info = {
            **_specs_details(device),
            "n": n,
            "dtype": dtype,
            "eps": eps,
        }
        yield ctx.compare(
            reference,
            observed,
            tolerance=16.0,
            error=lambda want, got: residual(got, want, bound, n, eps),
            name=f"{self.name}.{dtype}.residual[{device.label}]",
            rule=f"max |C - AB| / (sqrt(N) eps |A||B|) < 16 against a float64 reference, eps = {eps:.3g}",
            details={**info, "sampled_rows": rows.tolist(), "sampled_cols": cols.tolist()},
        )
        unsigned = {2: xp.uint16, 4: xp.uint32, 8: xp.uint64}[c.dtype.itemsize]
        differing = int((first.view(unsigned) != c.view(unsigned)).sum())
        yield ctx.compare(
            0,
            differing,
            name=f"{self.name}.{dtype}.repeat[{device.label}]",
            rule="elements of the last product that differ bitwise from the first one == 0",
            details={**info, "products": 1 + p.warmup + p.repeats},
        )
        spec = datasheet(device.name)
        peaks = {"fp64": "FP64 tensor core", "fp32": "FP32", "bf16": "BF16 tensor core, dense"}
        yield ctx.performance(
            dtype,
            [2.0 * n**3 / d / 1e12 for d in durations],
            peer=device.label,
            reference=_peak(spec, spec and getattr(spec, dtype), "TFLOP/s", peaks[dtype]),
            details=info,
        )


class _EachDevice(Check):
    """A check run on each GPU of the node in turn (``_one``), or the one no-GPU result."""

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        inventory, devices = gpu_devices(ctx)
        if not devices:
            yield no_gpu_result(ctx, inventory)
            return
        for device in devices:
            with device.activate():
                yield from self._one(ctx, device)

    def _one(self, ctx: CheckContext, device: Device) -> Iterator[Result]:
        raise NotImplementedError


# STREAM triad ------------------------------------------------------------------------------------------


@register
class GpuStream(_EachDevice):
    name = "gpu.stream"
    category = "performance"
    tags = frozenset({"gpu"})
    groups = (GPU_GROUP,)
    description = "STREAM triad a = b + s*c through a Numba CUDA kernel: answer check and HBM bandwidth"
    params = (
        Param("n", int, 2**27, "elements per float64 array (3 arrays)", 1024, 2**32, smoke=4096),
        Param("repeats", int, 10, "timed triads after warm-up", 5, 10000),
        Param("warmup", int, 2, "untimed triads (the first one compiles the kernel)", 1, 100),
        Param("scalar", float, 3.0, "triad scalar s", 0.5, 1e6),
    )
    correctness_rule = (
        "average relative error of a against the exact a[i] = (i mod 1024)/4 + s (i mod 517)/2 + 1 < 1e-13"
    )
    metrics = (Metric("triad", "GB/s", help="STREAM convention: 3 x N x 8 bytes per triad, device time"),)
    timeout = 300.0

    def _one(self, ctx: CheckContext, device: Device) -> Iterator[Result]:
        p = ctx.params
        xp, n, s = device.xp, p.n, p.scalar
        index = xp.arange(n, dtype=xp.int64)
        b = (index % 1024).astype(xp.float64) * 0.25 + 1.0
        c = (index % 517).astype(xp.float64) * 0.5
        del index
        a = xp.zeros(n, dtype=xp.float64)
        durations = device.timed(lambda: device.triad(a, b, c, s), p.repeats, p.warmup, ctx)
        got = device.to_host(a)
        host_index = np.arange(n, dtype=np.int64)
        want = (
            (host_index % 1024).astype(np.float64) * 0.25
            + 1.0
            + s * ((host_index % 517).astype(np.float64) * 0.5)
        )

        def average_relative_error(expected: np.ndarray, observed: np.ndarray) -> float:
            return float(np.mean(np.abs(observed - expected) / np.abs(expected)))

        info = {**_specs_details(device), "n": n, "s": s, "bytes_counted": 3 * n * 8}
        yield ctx.compare(
            want,
            got,
            tolerance=1e-13,
            error=average_relative_error,
            name=f"{self.name}[{device.label}]",
            details=info,
        )
        spec = datasheet(device.name)
        yield ctx.performance(
            "triad",
            [3.0 * n * 8 / d / 1e9 for d in durations],
            peer=device.label,
            reference=_peak(spec, spec and spec.hbm, "GB/s", "HBM bandwidth"),
            details={
                **info,
                "typical": "achieved triad is 0.75-0.85 of HBM peak (DCGM floor for H100: 1900 GB/s)",
            },
        )


# host <-> device transfers -----------------------------------------------------------------------------


def _measure_link(device: Device, load: Callable[[], None], seconds: float = 0.3) -> dict[str, Any]:
    """The PCIe link while ``load`` keeps copying: GPUs retrain to a slow link when idle, so an idle
    reading says nothing. Returns the best current generation/width seen and the maxima."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def keep_busy() -> None:
        try:
            while not stop.is_set():
                load()
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=keep_busy, daemon=True)
    worker.start()
    samples = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(device.link())
            time.sleep(seconds / 6)
    finally:
        stop.set()
        worker.join(30)
    if failure:
        raise failure[0]
    best = max(samples, key=lambda s: ((s["current_generation"] or 0), (s["current_width"] or 0)))
    return {**best, "samples": len(samples)}


@register
class GpuTransfer(_EachDevice):
    name = "gpu.transfer"
    category = "performance"
    tags = frozenset({"gpu"})
    groups = (GPU_GROUP,)
    description = "Pinned host<->device round trips: checksum, GB/s per direction, PCIe link not downtrained"
    params = (
        Param("mib", int, 256, "bytes per copy, MiB", 1, 65536, smoke=1),
        Param("repeats", int, 10, "timed copies per direction after warm-up", 5, 10000),
        Param("seed", int, 20261121, "random seed of the payload", 0),
    )
    correctness_rule = (
        "bytes after host->device->host == bytes sent (exact); PCIe link under load at its maximum "
        "generation and width (a downtrained link is FAIL)"
    )
    metrics = (
        Metric("h2d", "GB/s", help="pinned host -> device, 10^9 bytes per s of device time"),
        Metric("d2h", "GB/s", help="device -> pinned host, 10^9 bytes per s of device time"),
    )
    timeout = 300.0

    def _one(self, ctx: CheckContext, device: Device) -> Iterator[Result]:
        p = ctx.params
        nbytes = p.mib * 1024 * 1024
        sent = device.pinned(nbytes)
        sent[:] = np.frombuffer(np.random.default_rng(p.seed).bytes(nbytes), dtype=np.uint8)
        back = device.pinned(nbytes)
        on_device = device.xp.empty(nbytes, dtype=device.xp.uint8)
        h2d = device.timed(lambda: device.upload(on_device, sent), p.repeats, 1, ctx)
        d2h = device.timed(lambda: device.download(on_device, back), p.repeats, 1, ctx)
        device.synchronize()
        info = {**_specs_details(device), "bytes": nbytes}
        yield ctx.compare(
            digest(sent),
            digest(back),
            name=f"{self.name}.roundtrip[{device.label}]",
            rule="sha256 of the bytes back on the host == sha256 of the bytes sent",
            details=info,
        )
        link = _measure_link(device, lambda: device.upload(on_device, sent))
        expected_link = {"generation": link["max_generation"], "width": link["max_width"]}
        observed_link = {"generation": link["current_generation"], "width": link["current_width"]}
        yield ctx.compare(
            expected_link,
            observed_link,
            name=f"{self.name}.link[{device.label}]",
            rule="PCIe link under load: current generation and width == maximum of GPU and slot",
            details={**info, "link": link},
        )
        peak = pcie_peak_gbs(link["current_generation"], link["current_width"])
        reference = None
        if peak:
            source = (
                f"PCIe Gen{link['current_generation']} x{link['current_width']} payload rate per direction"
            )
            reference = Reference(peak, None, None, "GB/s", kind="peak", source=source)
        for metric, durations in (("h2d", h2d), ("d2h", d2h)):
            yield ctx.performance(
                metric,
                [nbytes / d / 1e9 for d in durations],
                peer=device.label,
                reference=reference,
                details={**info, "link": observed_link, "typical": "about 0.8 of the PCIe payload rate"},
            )


def digest(buffer: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(memoryview(np.ascontiguousarray(buffer)).cast("B")).hexdigest()


# peer to peer ----------------------------------------------------------------------------------------


@register
class GpuP2P(Check):
    name = "gpu.p2p"
    category = "performance"
    tags = frozenset({"gpu"})
    groups = (GPU_GROUP,)
    description = (
        "Device-to-device copies between every ordered GPU pair: checksum and GB/s (needs >= 2 GPUs)"
    )
    params = (
        Param("mib", int, 256, "bytes per copy, MiB", 1, 65536, smoke=1),
        Param("repeats", int, 5, "timed copies per pair after warm-up", 5, 10000),
        Param("seed", int, 20261121, "random seed of the payload", 0),
    )
    correctness_rule = "sha256 of the bytes on the destination GPU == sha256 of the source bytes (exact)"
    metrics = (Metric("copy", "GB/s", help="source -> destination GPU, 10^9 bytes per s of device time"),)
    timeout = 600.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        inventory, devices = gpu_devices(ctx)
        if not devices:
            yield no_gpu_result(ctx, inventory)
            return
        if len(devices) < 2:
            declared = declared_gpus(ctx, inventory)
            if declared < 2:
                raise SkipCheck(f"{ctx.target} has {len(devices)} GPU; peer-to-peer copies need at least 2")
            seen = ", ".join(d.label for d in devices)
            yield ctx.result(
                category="inventory",
                status=FAIL,
                reason=(
                    f"{ctx.target} has {declared} GPUs (hosts[].gpus, else NVML's count) but CUDA sees "
                    f"{len(devices)} ({seen}): no pair to copy between"
                ),
                details={
                    "declared": declared,
                    "visible_to_cuda": len(devices),
                    "nvml_count": inventory.count,
                },
            )
            return
        p = ctx.params
        nbytes = p.mib * 1024 * 1024
        payload = np.frombuffer(np.random.default_rng(p.seed).bytes(nbytes), dtype=np.uint8)
        want = digest(payload)
        buffers = {}
        for device in devices:
            with device.activate():
                buffers[device.label] = device.xp.asarray(payload)
        for src in devices:
            for dst in devices:
                if src is dst:
                    continue
                ctx.check_deadline()
                yield from self._pair(ctx, src, dst, buffers, nbytes, want)

    def _pair(
        self, ctx: CheckContext, src: Device, dst: Device, buffers: dict[str, Any], nbytes: int, want: str
    ) -> Iterator[Result]:
        peer = f"{src.label}->{dst.label}"
        access = src.can_access_peer(dst)
        if access:
            src.enable_peer(dst)
        with dst.activate():
            target = dst.xp.zeros(nbytes, dtype=dst.xp.uint8)
        with src.activate():
            durations = src.timed(
                lambda: src.copy_to_peer(dst, target, buffers[src.label], nbytes), ctx.params.repeats, 1, ctx
            )
            src.synchronize()
        with dst.activate():
            got = digest(dst.to_host(target))
        info = {"src": src.label, "dst": dst.label, "bytes": nbytes, "peer_access": access}
        yield ctx.compare(want, got, name=f"{self.name}[{peer}]", details=info)
        yield ctx.performance("copy", [nbytes / d / 1e9 for d in durations], peer=peer, details=info)
