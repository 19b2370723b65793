"""The GPU boundary: NVML through nvidia-ml-py, CuPy and Numba, all imported lazily on first use.

Everything the GPU checks do on a device goes through :class:`Device`; :class:`CudaBackend` is the
real implementation, the unit tests put a numpy stand-in at the same seam (``checks.gpu.BACKEND``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from compute_jobs.gpu.datasheet import SYSFS_PCI, scan_pci
from compute_jobs.model import CheckError

if TYPE_CHECKING:
    from compute_jobs.context import CheckContext

# --- what the GPU boundary returns ----------------------------------------------------------------


@dataclass
class GpuInfo:
    index: int
    name: str | None
    memory_mib: int | None
    uuid: str | None = None
    pci_address: str | None = None


@dataclass
class Inventory:
    """GPUs as NVML sees them, and the NVIDIA GPU functions on the PCI bus (sysfs)."""

    source: str | None
    driver_version: str | None
    cuda_version: str | None
    gpus: list[GpuInfo]
    pci: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.gpus) if self.source else 0


class Device:
    """One GPU as the checks use it: an array module (CuPy) plus the few operations CuPy lacks.

    :class:`CudaBackend` returns :class:`CupyDevice`; the unit tests return a numpy stand-in.
    """

    index: int
    label: str
    name: str | None
    pci_address: str | None
    xp: Any

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def timed(self, fn: Callable[[], None], repeats: int, warmup: int, ctx: CheckContext) -> list[float]:
        """Seconds per call of ``fn`` measured on the device (CUDA events), after ``warmup`` calls."""
        raise NotImplementedError

    def to_host(self, array: Any) -> np.ndarray:
        raise NotImplementedError

    def matmul_bf16(self, a_bits: Any, b_bits: Any, out: Any) -> None:
        """out (float32) = A B for bf16 inputs given as uint16 bit patterns, FP32 accumulation."""
        raise NotImplementedError

    def triad(self, a: Any, b: Any, c: Any, scalar: float) -> None:
        """a = b + scalar * c with a Numba CUDA kernel."""
        raise NotImplementedError

    def pinned(self, nbytes: int) -> np.ndarray:
        """A page-locked host buffer of ``nbytes`` (uint8)."""
        raise NotImplementedError

    def upload(self, device_array: Any, host: np.ndarray) -> None:
        raise NotImplementedError

    def download(self, device_array: Any, host: np.ndarray) -> None:
        raise NotImplementedError

    def link(self) -> dict[str, int | None]:
        """PCIe link now: current_generation, current_width, max_generation, max_width."""
        raise NotImplementedError

    def can_access_peer(self, other: Device) -> bool:
        raise NotImplementedError

    def copy_to_peer(self, other: Device, dst: Any, src: Any, nbytes: int) -> None:
        raise NotImplementedError

    def enable_peer(self, other: Device) -> None:
        """Map ``other``'s memory for direct access (only called when can_access_peer is true)."""


class CudaBackend:
    """The real boundary: NVML through nvidia-ml-py, CuPy and Numba, imported on first use."""

    def __init__(self, sysfs_root: str = SYSFS_PCI) -> None:
        self.sysfs_root = sysfs_root

    def inventory(self) -> Inventory:
        pci = scan_pci(self.sysfs_root)
        try:
            return nvml_inventory(pci)
        except Exception as exc:  # pynvml missing, no driver, NVML error: report, fall back to sysfs
            return Inventory(None, None, None, [], pci, [f"NVML: {type(exc).__name__}: {exc}"])

    def devices(self) -> list[Device]:
        try:
            import cupy
        except Exception as exc:
            raise CheckError(
                f"cupy does not import ({type(exc).__name__}: {exc}); the cuda role installs the GPU stack "
                "into the node virtual environment"
            ) from exc
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            raise CheckError(f"CUDA runtime cannot enumerate GPUs: {type(exc).__name__}: {exc}") from exc
        return [CupyDevice(cupy, index) for index in range(count)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pci_address(bus_id: str | None) -> str | None:
    """NVML '00000000:17:00.0' or CUDA '0000:17:00.0' -> sysfs '0000:17:00.0'."""
    return bus_id.strip().lower()[-12:] if bus_id else None


def nvml_inventory(pci: list[dict[str, Any]]) -> Inventory:
    import pynvml

    pynvml.nvmlInit()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_mib=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    pci_address=_pci_address(_text(pynvml.nvmlDeviceGetPciInfo(handle).busId)),
                )
            )
    finally:
        pynvml.nvmlShutdown()
    return Inventory("nvml", driver, f"{cuda // 1000}.{(cuda % 1000) // 10}", gpus, pci)


class CupyDevice(Device):
    def __init__(self, cupy: Any, index: int) -> None:
        self.cupy = cupy
        self.xp = cupy
        self.index = index
        self.label = f"gpu{index}"
        runtime = cupy.cuda.runtime
        self.name = _text(runtime.getDeviceProperties(index)["name"])
        self.pci_address = _pci_address(runtime.deviceGetPCIBusId(index))

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        return self.cupy.cuda.Device(self.index)

    def synchronize(self) -> None:
        self.cupy.cuda.Device(self.index).synchronize()

    def timed(self, fn: Callable[[], None], repeats: int, warmup: int, ctx: CheckContext) -> list[float]:
        for _ in range(warmup):
            ctx.check_deadline()
            fn()
        self.synchronize()
        durations = []
        for _ in range(repeats):
            ctx.check_deadline()
            start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            durations.append(self.cupy.cuda.get_elapsed_time(start, end) / 1000.0)
        return durations

    def to_host(self, array: Any) -> np.ndarray:
        return self.cupy.asnumpy(array)

    def matmul_bf16(self, a_bits: Any, b_bits: Any, out: Any) -> None:
        from cupy_backends.cuda.libs import cublas

        n = out.shape[0]
        one = np.ones(1, dtype=np.float32)
        zero = np.zeros(1, dtype=np.float32)
        handle = self.cupy.cuda.device.get_cublas_handle()
        cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
        # cuBLAS is column-major: row-major C = A B is column-major C^T = B^T A^T, so B goes first.
        cublas.gemmEx(
            handle,
            cublas.CUBLAS_OP_N,
            cublas.CUBLAS_OP_N,
            n,
            n,
            n,
            one.ctypes.data,
            b_bits.data.ptr,
            CUDA_R_16BF,
            n,
            a_bits.data.ptr,
            CUDA_R_16BF,
            n,
            zero.ctypes.data,
            out.data.ptr,
            CUDA_R_32F,
            n,
            CUBLAS_COMPUTE_32F,
            CUBLAS_GEMM_DEFAULT_TENSOR_OP,
        )

    def triad(self, a: Any, b: Any, c: Any, scalar: float) -> None:
        from numba import cuda

        kernel = _triad_kernel()
        threads = 256
        blocks = (a.size + threads - 1) // threads
        with cuda.gpus[self.index]:
            kernel[blocks, threads](a, b, c, scalar)

    def pinned(self, nbytes: int) -> np.ndarray:
        memory = self.cupy.cuda.alloc_pinned_memory(nbytes)
        return np.frombuffer(memory, dtype=np.uint8, count=nbytes)

    def upload(self, device_array: Any, host: np.ndarray) -> None:
        device_array.set(host)

    def download(self, device_array: Any, host: np.ndarray) -> None:
        device_array.get(out=host)

    def link(self) -> dict[str, int | None]:
        import pynvml

        pynvml.nvmlInit()
        try:
            bus_id = _text(self.cupy.cuda.runtime.deviceGetPCIBusId(self.index))
            handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode())
            return {
                "current_generation": int(pynvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)),
                "current_width": int(pynvml.nvmlDeviceGetCurrPcieLinkWidth(handle)),
                "max_generation": int(pynvml.nvmlDeviceGetMaxPcieLinkGeneration(handle)),
                "max_width": int(pynvml.nvmlDeviceGetMaxPcieLinkWidth(handle)),
            }
        finally:
            pynvml.nvmlShutdown()

    def can_access_peer(self, other: Device) -> bool:
        return bool(self.cupy.cuda.runtime.deviceCanAccessPeer(self.index, other.index))

    def copy_to_peer(self, other: Device, dst: Any, src: Any, nbytes: int) -> None:
        self.cupy.cuda.runtime.memcpyPeer(dst.data.ptr, other.index, src.data.ptr, self.index, nbytes)

    def enable_peer(self, other: Device) -> None:
        with self.activate():
            try:
                self.cupy.cuda.runtime.deviceEnablePeerAccess(other.index)
            except self.cupy.cuda.runtime.CUDARuntimeError as exc:
                if "AlreadyEnabled" not in str(exc):
                    raise


# cuBLAS / CUDA enum values (cublas_api.h, library_types.h).
CUDA_R_32F = 0
CUDA_R_16BF = 14
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99

_TRIAD_KERNEL: Any = None


def _triad_kernel() -> Any:
    """Compile the Numba CUDA triad kernel once per process."""
    global _TRIAD_KERNEL
    if _TRIAD_KERNEL is None:
        from numba import cuda

        @cuda.jit
        def triad(a: Any, b: Any, c: Any, s: float) -> None:
            i = cuda.grid(1)
            if i < a.shape[0]:
                a[i] = b[i] + s * c[i]

        _TRIAD_KERNEL = triad
    return _TRIAD_KERNEL
