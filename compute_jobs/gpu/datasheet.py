"""NVIDIA GPUs on paper and on the PCI bus: datasheet peaks per model and the sysfs PCI scan.

The one table of GPU models the checks judge against is :data:`DATASHEET` below (first match wins).
Standard library only: the cuda role's detection and the checks share the same reading of sysfs.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Any

NVIDIA_VENDOR = "0x10de"
# PCI classes of GPUs: VGA-compatible (0x0300) and 3D (0x0302) controllers; NVIDIA's audio and
# USB functions and NVSwitches have other classes.
GPU_CLASSES = ("0x0300", "0x0302")
SYSFS_PCI = "/sys/bus/pci/devices"
GEMM_DTYPES = ("fp64", "fp32", "bf16")

# --- datasheet figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet peaks of one GPU model (dense, no sparsity), and the NVML names that select it."""

    model: str
    pattern: str
    fp64: (
        float | None
    )  # TFLOP/s, FP64 tensor core where the GPU has one (what DGEMM uses); None: not on the datasheet
    fp32: float  # TFLOP/s, FP32 without TF32
    bf16: float | None  # TFLOP/s, BF16 tensor core, dense; None: no BF16 (compute capability < 8.0)
    hbm: float  # GB/s, device memory (HBM, or GDDR6 on T4, A10G, L4, L40S)
    source: str
    compute_capability: tuple[int, int] = (0, 0)  # CUDA compute capability of the model


# Oldest CUDA compute capability with a tensor-core GEMM of each precision; FP64 and FP32 run on all.
GEMM_MIN_COMPUTE_CAPABILITY: dict[str, tuple[int, int]] = {"bf16": (8, 0)}


# First match wins: the specific names (NVL, PCIe) come before the general ones.
HOPPER, AMPERE = (9, 0), (8, 0)
DATASHEET: tuple[GpuSpec, ...] = (
    GpuSpec("H200 NVL", r"H200 NVL", 60.0, 60.0, 835.0, 4800.0, "NVIDIA H200 datasheet (H200 NVL)", HOPPER),
    GpuSpec("H200 SXM", r"H200", 67.0, 67.0, 989.0, 4800.0, "NVIDIA H200 datasheet (H200 SXM)", HOPPER),
    GpuSpec("H100 NVL", r"H100 NVL", 60.0, 60.0, 835.0, 3900.0, "NVIDIA H100 datasheet (H100 NVL)", HOPPER),
    GpuSpec(
        "H100 PCIe", r"H100 PCIe", 51.0, 51.0, 756.0, 2000.0, "NVIDIA H100 datasheet (H100 PCIe)", HOPPER
    ),
    GpuSpec("H100 SXM", r"H100", 67.0, 67.0, 989.0, 3350.0, "NVIDIA H100 datasheet (H100 SXM)", HOPPER),
    GpuSpec(
        "A100 PCIe 80GB",
        r"A100 80GB PCIe",
        19.5,
        19.5,
        312.0,
        1935.0,
        "NVIDIA A100 datasheet (80GB PCIe)",
        AMPERE,
    ),
    GpuSpec(
        "A100 PCIe 40GB",
        r"A100-PCIE-40GB",
        19.5,
        19.5,
        312.0,
        1555.0,
        "NVIDIA A100 datasheet (40GB PCIe)",
        AMPERE,
    ),
    GpuSpec(
        "A100 SXM 80GB",
        r"A100-SXM4-80GB",
        19.5,
        19.5,
        312.0,
        2039.0,
        "NVIDIA A100 datasheet (80GB SXM)",
        AMPERE,
    ),
    GpuSpec(
        "A100 SXM 40GB",
        r"A100-SXM4-40GB",
        19.5,
        19.5,
        312.0,
        1555.0,
        "NVIDIA A100 datasheet (40GB SXM)",
        AMPERE,
    ),
    # Ada and Ampere GA10x cards (AWS g6e, g6, g5) and Turing (g4dn): FP64 is not on their datasheets.
    GpuSpec("L40S", r"L40S", None, 91.6, 362.05, 864.0, "NVIDIA L40S datasheet", (8, 9)),
    GpuSpec(
        "L4", r"\bL4\b", None, 30.3, 121.0, 300.0, "NVIDIA L4 datasheet (BF16 242 with sparsity)", (8, 9)
    ),
    GpuSpec(
        "A10G", r"A10G", None, 31.2, 125.0, 600.0, "NVIDIA A10 datasheet (A10G: AWS's A10 variant)", (8, 6)
    ),
    GpuSpec("T4", r"\bT4\b", None, 8.1, None, 320.0, "NVIDIA T4 datasheet (no BF16)", (7, 5)),
)


def gemm_unsupported(spec: GpuSpec | None, dtype: str) -> str | None:
    """Why a GEMM of DTYPE cannot run on the model of SPEC (its compute capability), or None."""
    needed = GEMM_MIN_COMPUTE_CAPABILITY.get(dtype)
    if spec is None or needed is None or spec.compute_capability >= needed:
        return None
    have = ".".join(map(str, spec.compute_capability))
    return (
        f"{dtype.upper()} GEMM needs CUDA compute capability {needed[0]}.{needed[1]} or newer; "
        f"{spec.model} has {have} ({spec.source})"
    )


# PCIe payload rate per lane and direction in GB/s, after line encoding (8b/10b, 128b/130b, FLIT).
PCIE_LANE_GBS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}
PCIE_GENERATIONS = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}


def datasheet(model: str | None) -> GpuSpec | None:
    """The datasheet entry for an NVML model name ("NVIDIA H100 80GB HBM3" -> H100 SXM), or None."""
    if not model:
        return None
    for spec in DATASHEET:
        if re.search(spec.pattern, model, re.IGNORECASE):
            return spec
    return None


def pcie_peak_gbs(generation: int | None, width: int | None) -> float | None:
    """Theoretical payload bandwidth per direction of a PCIe link, GB/s."""
    if not generation or not width or generation not in PCIE_LANE_GBS:
        return None
    return PCIE_LANE_GBS[generation] * width


def link_generation(speed: str | None) -> int | None:
    """sysfs '32.0 GT/s PCIe' -> 5."""
    if not speed:
        return None
    match = re.match(r"\s*([0-9.]+)\s*GT/s", speed)
    return PCIE_GENERATIONS.get(f"{float(match.group(1)):.1f}") if match else None


# --- the PCI bus (sysfs) ---------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def scan_pci(root: str = SYSFS_PCI) -> list[dict[str, Any]]:
    """NVIDIA GPU functions under /sys/bus/pci/devices with their PCIe link (current and maximum)."""
    found = []
    for path in sorted(glob.glob(os.path.join(root, "*"))):
        if (_read(os.path.join(path, "vendor")) or "").lower() != NVIDIA_VENDOR:
            continue
        klass = (_read(os.path.join(path, "class")) or "").lower()
        if not klass.startswith(GPU_CLASSES):
            continue
        entry: dict[str, Any] = {"address": os.path.basename(path).lower(), "class": klass}
        for key in ("current_link_speed", "max_link_speed"):
            entry[key.replace("speed", "generation")] = link_generation(_read(os.path.join(path, key)))
        for key in ("current_link_width", "max_link_width"):
            raw = _read(os.path.join(path, key))
            entry[key] = int(raw) if raw and raw.isdigit() else None
        found.append(entry)
    return found
