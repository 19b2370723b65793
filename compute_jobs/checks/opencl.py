"""OpenCL checks through pyopencl: the platforms and devices against the inventory, then an exact
integer vector add, a SAXPY within a stated tolerance and the vector-add bandwidth on every device.

Node scope; they apply to hosts in ``opencl_nodes`` and ``gpu_nodes`` (where the opencl role runs).
In the lab and in CI the device is PoCL's CPU device; on GPU nodes NVIDIA's ICD adds one per GPU.
pyopencl is imported lazily through :data:`BACKEND`, which the unit tests replace at that boundary.

``engines.opencl`` in cluster.json (optional)::

    {"platforms": ["Portable Computing Language"],
     "hosts": {"gpu-1": {"platforms": ["Portable Computing Language", "NVIDIA CUDA"]}}}

Without it, the expected platforms are PoCL everywhere plus "NVIDIA CUDA" on hosts in gpu_nodes.
The expected device count is ``hosts[].opencl_devices`` (0: at least one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compute_jobs.context import CheckContext
from compute_jobs.model import FAIL, Check, CheckError, Metric, Param, Result, register

OPENCL_GROUPS = ("opencl_nodes", "gpu_nodes")
GPU_GROUP = "gpu_nodes"
POCL_PLATFORM = "Portable Computing Language"
NVIDIA_PLATFORM = "NVIDIA CUDA"
SHORT_NAMES = {POCL_PLATFORM: "pocl", NVIDIA_PLATFORM: "nvidia"}

KERNELS = """
__kernel void vecadd(__global const int *a, __global const int *b, __global int *c) {
    size_t i = get_global_id(0);
    c[i] = a[i] + b[i];
}
__kernel void saxpy(const float alpha, __global const float *x, __global float *y) {
    size_t i = get_global_id(0);
    y[i] = alpha * x[i] + y[i];
}
"""


@dataclass
class DeviceInfo:
    platform: str
    name: str
    type: str
    version: str = ""
    compute_units: int | None = None
    global_mem_mib: int | None = None


@dataclass
class Platforms:
    """What the ICD loader offers: platform names and their devices; ``error`` when it offers none."""

    names: list[str]
    devices: list[DeviceInfo]
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class ClDevice:
    """One OpenCL device as the checks use it. :class:`PyOpenCLBackend` returns :class:`PyOpenCLDevice`;
    the unit tests return a numpy stand-in."""

    label: str
    info: DeviceInfo

    def vecadd(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """c = a + b (int32) on the device."""
        raise NotImplementedError

    def saxpy(self, alpha: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """alpha x + y (float32) on the device."""
        raise NotImplementedError

    def vecadd_seconds(self, n: int, repeats: int, warmup: int, ctx: CheckContext) -> list[float]:
        """Kernel time of the int32 vector add on device-resident buffers, from profiling events."""
        raise NotImplementedError


class PyOpenCLBackend:
    def _cl(self) -> Any:
        try:
            import pyopencl
        except Exception as exc:
            raise CheckError(
                f"pyopencl does not import ({type(exc).__name__}: {exc}); the opencl role installs it into "
                "the node virtual environment"
            ) from exc
        return pyopencl

    def platforms(self) -> Platforms:
        cl = self._cl()
        try:
            found = cl.get_platforms()
        except cl.Error as exc:  # no ICD registered: the loader reports PLATFORM_NOT_FOUND_KHR
            return Platforms([], [], error=f"{type(exc).__name__}: {exc}")
        names, devices = [], []
        for platform in found:
            names.append(platform.name.strip())
            try:
                platform_devices = platform.get_devices()
            except cl.Error:
                platform_devices = []
            for device in platform_devices:
                devices.append(
                    DeviceInfo(
                        platform=platform.name.strip(),
                        name=device.name.strip(),
                        type=cl.device_type.to_string(device.type),
                        version=device.version.strip(),
                        compute_units=int(device.max_compute_units),
                        global_mem_mib=int(device.global_mem_size) // (1024 * 1024),
                    )
                )
        return Platforms(names, devices, details={"icd_loader": cl.get_cl_header_version()})

    def devices(self) -> list[ClDevice]:
        cl = self._cl()
        try:
            found = cl.get_platforms()
        except cl.Error:
            return []
        result: list[ClDevice] = []
        for p_index, platform in enumerate(found):
            short = SHORT_NAMES.get(platform.name.strip(), f"cl{p_index}-")
            try:
                platform_devices = platform.get_devices()
            except cl.Error:
                continue
            for d_index, device in enumerate(platform_devices):
                result.append(PyOpenCLDevice(cl, platform, device, f"{short}{d_index}"))
        return result


class PyOpenCLDevice(ClDevice):
    def __init__(self, cl: Any, platform: Any, device: Any, label: str) -> None:
        self.cl = cl
        self.label = label
        self.info = DeviceInfo(
            platform=platform.name.strip(),
            name=device.name.strip(),
            type=cl.device_type.to_string(device.type),
            version=device.version.strip(),
        )
        self.context = cl.Context([device])
        self.queue = cl.CommandQueue(self.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
        self.program = cl.Program(self.context, KERNELS).build()

    def _buffer(self, host: np.ndarray, writable: bool = False) -> Any:
        mf = self.cl.mem_flags
        flags = (mf.READ_WRITE if writable else mf.READ_ONLY) | mf.COPY_HOST_PTR
        return self.cl.Buffer(self.context, flags, hostbuf=host)

    def vecadd(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        c_buf = self.cl.Buffer(self.context, self.cl.mem_flags.WRITE_ONLY, out.nbytes)
        kernel = self.cl.Kernel(self.program, "vecadd")
        kernel(self.queue, (a.size,), None, self._buffer(a), self._buffer(b), c_buf)
        self.cl.enqueue_copy(self.queue, out, c_buf).wait()
        return out

    def saxpy(self, alpha: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.empty_like(y)
        y_buf = self._buffer(y, writable=True)
        kernel = self.cl.Kernel(self.program, "saxpy")
        kernel(self.queue, (x.size,), None, np.float32(alpha), self._buffer(x), y_buf)
        self.cl.enqueue_copy(self.queue, out, y_buf).wait()
        return out

    def vecadd_seconds(self, n: int, repeats: int, warmup: int, ctx: CheckContext) -> list[float]:
        a = np.ones(n, dtype=np.int32)
        a_buf, b_buf = self._buffer(a), self._buffer(a)
        c_buf = self.cl.Buffer(self.context, self.cl.mem_flags.WRITE_ONLY, a.nbytes)
        kernel = self.cl.Kernel(self.program, "vecadd")
        kernel.set_args(a_buf, b_buf, c_buf)
        seconds = []
        for index in range(warmup + repeats):
            ctx.check_deadline()
            event = self.cl.enqueue_nd_range_kernel(self.queue, kernel, (n,), None)
            event.wait()
            if index >= warmup:
                seconds.append((event.profile.end - event.profile.start) * 1e-9)
        return seconds


BACKEND: Any = PyOpenCLBackend()


def expected_platforms(ctx: CheckContext) -> list[str]:
    engine = dict(ctx.cluster.engines.get("opencl", {}))
    per_host = dict((engine.get("hosts") or {}).get(ctx.target, {}))
    declared = per_host.get("platforms", engine.get("platforms"))
    if declared:
        return sorted(str(p) for p in declared)
    in_gpu_group = ctx.host is not None and GPU_GROUP in ctx.host.groups
    return sorted([POCL_PLATFORM] + ([NVIDIA_PLATFORM] if in_gpu_group else []))


def expected_devices(ctx: CheckContext, devices: list[ClDevice]) -> list[str]:
    """The devices that must run the kernels: the enumerated ones, a stand-in for each expected platform
    that enumerates none, and more stand-ins up to the count hosts[].opencl_devices declares (a device
    the loader does not see cannot run, so each stand-in shows as missing)."""
    expected = [d.label for d in devices]
    seen = {d.info.platform for d in devices}
    expected += [f"a device of {name}" for name in expected_platforms(ctx) if name not in seen]
    declared = ctx.host.opencl_devices if ctx.host is not None and ctx.host.opencl_devices else 0
    expected += [f"declared device {i + 1} of {declared}" for i in range(len(expected), declared)]
    return expected


def inventory_problems(expected: dict[str, Any], observed: dict[str, Any]) -> list[str]:
    """Each way ``observed`` differs from ``expected`` (keys only one side has count as differences)."""
    problems = [f"unexpected field {key!r}" for key in sorted(set(observed) - set(expected), key=str)]
    problems += [f"{key} not observed" for key in sorted(set(expected) - set(observed), key=str)]
    if "devices" in expected and "devices" in observed:
        want, got = expected["devices"], observed["devices"]
        if (want == "at least 1" and not (isinstance(got, int) and got >= 1)) or (
            want != "at least 1" and got != want
        ):
            problems.append(f"devices: {got}, inventory declares {want}")
    if "platforms" in expected and "platforms" in observed:
        missing = sorted(set(expected["platforms"]) - set(observed["platforms"]))
        extra = sorted(set(observed["platforms"]) - set(expected["platforms"]))
        if missing:
            problems.append("platforms missing: " + ", ".join(missing))
        if extra:
            problems.append("platforms not in the inventory: " + ", ".join(extra))
    return problems


def no_device_result(ctx: CheckContext, platforms: Platforms) -> Result:
    reason = f"{ctx.target} is an OpenCL node but the ICD loader offers no device"
    if platforms.error:
        reason += f" ({platforms.error}; check /etc/OpenCL/vendors)"
    return ctx.result(
        category="inventory",
        status=FAIL,
        reason=reason,
        details={"platforms": platforms.names},
    )


@register
class OpenCLDevices(Check):
    name = "opencl.devices"
    category = "inventory"
    tags = frozenset({"opencl"})
    groups = OPENCL_GROUPS
    description = "OpenCL platforms and devices (pyopencl) against the inventory"
    correctness_rule = (
        "device count == hosts[].opencl_devices (>= 1 when not declared); platform names == engines.opencl "
        "platforms (default: PoCL, plus NVIDIA CUDA on gpu_nodes)"
    )
    timeout = 60.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        platforms = BACKEND.platforms()
        host = ctx.host
        expected: dict[str, Any] = {
            "devices": host.opencl_devices if host and host.opencl_devices else "at least 1",
            "platforms": expected_platforms(ctx),
        }
        observed = {"devices": len(platforms.devices), "platforms": sorted(platforms.names)}
        problems: list[str] = []

        def mismatches(want: dict[str, Any], got: dict[str, Any]) -> float:
            problems.clear()
            problems.extend(inventory_problems(want, got))
            return float(len(problems))

        result = ctx.compare(
            expected,
            observed,
            error=mismatches,
            details={
                "devices": [d.__dict__ for d in platforms.devices],
                "loader_error": platforms.error,
                **platforms.details,
            },
        )
        if problems:
            result.reason = "; ".join(problems) + f" ({result.reason})"
        yield result


@register
class OpenCLVecadd(Check):
    name = "opencl.vecadd"
    category = "performance"
    tags = frozenset({"opencl"})
    groups = OPENCL_GROUPS
    description = (
        "Exact int32 vector add, SAXPY within tolerance and vector-add bandwidth on every OpenCL device"
    )
    params = (
        Param("n", int, 2**24, "elements per vector", 256, 2**30, smoke=4096),
        Param("repeats", int, 5, "timed vector adds after warm-up", 5, 10000),
        Param("warmup", int, 1, "untimed vector adds", 1, 100),
        Param(
            "alpha",
            float,
            2.5,
            "SAXPY scalar (x in [0, 1) and y in [1, 2) keep the sum clear of cancellation)",
            0.0,
            1e6,
        ),
        Param("seed", int, 20261121, "random seed of the inputs", 0),
    )
    correctness_rule = (
        "int32 a + b == numpy's (exact); SAXPY max |y - ref| / |ref| < 1e-6 against a float64 reference "
        "of the float32 inputs (one float32 rounding, with or without FMA, is below 1.2e-7)"
    )
    metrics = (Metric("vecadd", "GB/s", help="3 x N x 4 bytes per int32 vector add, kernel time"),)
    timeout = 300.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        devices = BACKEND.devices()
        if not devices:
            yield no_device_result(ctx, BACKEND.platforms())
            return
        ran = []
        for device in devices:
            yield from self._one(ctx, device)
            ran.append(device.label)
        yield ctx.compare_sets(
            expected_devices(ctx, devices),
            ran,
            name=f"{self.name}.placement",
            rule=(
                "every device the inventory expects ran the kernels: each one the ICD loader enumerates, "
                "one of each expected platform, as many as hosts[].opencl_devices declares"
            ),
            details={"enumerated": [d.label for d in devices]},
        )

    def _one(self, ctx: CheckContext, device: ClDevice) -> Iterator[Result]:
        p = ctx.params
        rng = np.random.default_rng(p.seed)
        a = rng.integers(-(2**30), 2**30, size=p.n, dtype=np.int32)
        b = rng.integers(-(2**30), 2**30, size=p.n, dtype=np.int32)
        info = {
            "device": device.info.name,
            "platform": device.info.platform,
            "type": device.info.type,
            "n": p.n,
        }
        yield ctx.compare(
            a + b,
            device.vecadd(a, b),
            name=f"{self.name}.int32[{device.label}]",
            rule="int32 a + b on the device == numpy's a + b, element by element (exact)",
            details=info,
        )
        x = rng.uniform(0.0, 1.0, size=p.n).astype(np.float32)
        y = rng.uniform(1.0, 2.0, size=p.n).astype(np.float32)
        reference = np.float64(np.float32(p.alpha)) * x.astype(np.float64) + y.astype(np.float64)

        def max_relative_error(want: np.ndarray, got: np.ndarray) -> float:
            return float(np.max(np.abs(got.astype(np.float64) - want) / np.abs(want)))

        yield ctx.compare(
            reference,
            device.saxpy(p.alpha, x, y),
            tolerance=1e-6,
            error=max_relative_error,
            name=f"{self.name}.saxpy[{device.label}]",
            rule="SAXPY max relative error against a float64 reference < 1e-6",
            details={**info, "alpha": p.alpha},
        )
        seconds = device.vecadd_seconds(p.n, p.repeats, p.warmup, ctx)
        yield ctx.performance(
            "vecadd",
            [3.0 * p.n * 4 / s / 1e9 for s in seconds],
            peer=device.label,
            details={**info, "bytes_counted": 3 * p.n * 4},
        )
