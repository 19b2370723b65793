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
    fp64: float  # TFLOP/s, FP64 tensor core where the GPU has one (what DGEMM uses)
    fp32: float  # TFLOP/s, FP32 without TF32
    bf16: float  # TFLOP/s, BF16 tensor core, dense
    hbm: float  # GB/s
    source: str


# First match wins: the specific names (NVL, PCIe) come before the general ones.
DATASHEET: tuple[GpuSpec, ...] = (
    GpuSpec("H200 NVL", r"H200 NVL", 60.0, 60.0, 835.0, 4800.0, "NVIDIA H200 datasheet (H200 NVL)"),
    GpuSpec("H200 SXM", r"H200", 67.0, 67.0, 989.0, 4800.0, "NVIDIA H200 datasheet (H200 SXM)"),
    GpuSpec("H100 NVL", r"H100 NVL", 60.0, 60.0, 835.0, 3900.0, "NVIDIA H100 datasheet (H100 NVL)"),
    GpuSpec("H100 PCIe", r"H100 PCIe", 51.0, 51.0, 756.0, 2000.0, "NVIDIA H100 datasheet (H100 PCIe)"),
    GpuSpec("H100 SXM", r"H100", 67.0, 67.0, 989.0, 3350.0, "NVIDIA H100 datasheet (H100 SXM)"),
    GpuSpec(
        "A100 PCIe 80GB", r"A100 80GB PCIe", 19.5, 19.5, 312.0, 1935.0, "NVIDIA A100 datasheet (80GB PCIe)"
    ),
    GpuSpec(
        "A100 PCIe 40GB", r"A100-PCIE-40GB", 19.5, 19.5, 312.0, 1555.0, "NVIDIA A100 datasheet (40GB PCIe)"
    ),
    GpuSpec(
        "A100 SXM 80GB", r"A100-SXM4-80GB", 19.5, 19.5, 312.0, 2039.0, "NVIDIA A100 datasheet (80GB SXM)"
    ),
    GpuSpec(
        "A100 SXM 40GB", r"A100-SXM4-40GB", 19.5, 19.5, 312.0, 1555.0, "NVIDIA A100 datasheet (40GB SXM)"
    ),
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
