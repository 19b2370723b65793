"""Facts about the node from /proc, /sys and cgroups (v2, with v1 fallbacks); roots are parameters
so unit tests can point them at fake trees."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import tempfile
from typing import Any

SIMD_FLAGS = ("sse2", "avx", "avx2", "fma", "avx512f", "neon", "asimd", "sve")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def cpu_info(proc: str = "/proc", sys_root: str = "/sys") -> dict[str, Any]:
    """CPU model, SIMD flags of interest, current and maximum clock (MHz) where known."""
    text = _read(os.path.join(proc, "cpuinfo")) or ""
    model = None
    flags: set[str] = set()
    mhz: list[float] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key in ("model name", "hardware", "cpu model") and model is None and value:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key == "cpu mhz":
            with contextlib.suppress(ValueError):
                mhz.append(float(value))
    max_khz = _read(os.path.join(sys_root, "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"))
    max_mhz = None
    if max_khz and max_khz.strip().isdigit():
        max_mhz = int(max_khz.strip()) / 1000.0
    return {
        "model": model or platform.processor() or platform.machine() or "unknown",
        "machine": platform.machine(),
        "simd": sorted(f for f in flags if f in SIMD_FLAGS),
        "mhz": max(mhz) if mhz else None,
        "max_mhz": max_mhz,
    }


def cgroup_cpu_quota(cgroup: str = "/sys/fs/cgroup") -> float | None:
    """CPU quota in cores from cgroup v2 ``cpu.max`` (or v1 cfs files); None when unlimited."""
    v2 = _read(os.path.join(cgroup, "cpu.max"))
    if v2:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                return int(parts[0]) / int(parts[1])
            except (ValueError, ZeroDivisionError):
                return None
        return None
    quota = _read(os.path.join(cgroup, "cpu", "cpu.cfs_quota_us"))
    period = _read(os.path.join(cgroup, "cpu", "cpu.cfs_period_us"))
    try:
        if quota and period and int(quota) > 0:
            return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def cpu_cores(cgroup: str = "/sys/fs/cgroup") -> dict[str, Any]:
    """Usable cores: the affinity mask, limited by a cgroup quota when one is set."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup)
    effective: float = float(affinity)
    if quota is not None:
        effective = min(effective, quota)
    return {"affinity": affinity, "cgroup_quota": quota, "effective": effective, "online": os.cpu_count()}


def cgroup_memory_limit(cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Memory limit in bytes from cgroup v2 ``memory.max`` (or v1); None when unlimited."""
    for rel in ("memory.max", "memory/memory.limit_in_bytes"):
        text = _read(os.path.join(cgroup, rel))
        if text is None:
            continue
        text = text.strip()
        if text == "max" or not text.isdigit():
            return None
        value = int(text)
        return None if value >= 1 << 60 else value  # v1 reports "unlimited" as a huge number
    return None


def memory_info(proc: str = "/proc", cgroup: str = "/sys/fs/cgroup") -> dict[str, Any]:
    """MemTotal, the cgroup limit, and the effective figure (the lower one), all in MiB."""
    total_kb = None
    for line in (_read(os.path.join(proc, "meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                total_kb = int(parts[1])
            break
    mem_total = total_kb / 1024.0 if total_kb is not None else None
    limit = cgroup_memory_limit(cgroup)
    limit_mb = limit / (1024.0 * 1024.0) if limit is not None else None
    candidates = [v for v in (mem_total, limit_mb) if v is not None]
    return {
        "mem_total_mb": mem_total,
        "cgroup_limit_mb": limit_mb,
        "effective_mb": min(candidates) if candidates else None,
    }


def disks(paths: list[str] | None = None) -> dict[str, dict[str, float]]:
    out = {}
    for path in paths or ["/", tempfile.gettempdir()]:
        try:
            st = os.statvfs(path)
        except OSError as exc:
            out[path] = {"error": str(exc)}  # type: ignore[dict-item]
            continue
        out[path] = {
            "total_mb": st.f_blocks * st.f_frsize / 1e6,
            "free_mb": st.f_bavail * st.f_frsize / 1e6,
        }
    return out


def os_release(path: str = "/etc/os-release") -> dict[str, str]:
    info = {}
    for line in (_read(path) or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ID", "VERSION_ID", "PRETTY_NAME", "VERSION_CODENAME"):
            info[key.lower()] = value.strip().strip('"')
    info.setdefault("kernel", platform.release())
    return info


def flops_per_cycle(simd: list[str] | set[str]) -> tuple[int, str]:
    """Double-precision FLOP per cycle per core from the widest SIMD unit, and the stated assumption."""
    flags = set(simd)
    if "avx512f" in flags:
        return 32, "avx512f: 2 x 512-bit FMA units assumed = 32 DP FLOP/cycle (16 on parts with one FMA unit)"
    if "avx2" in flags and "fma" in flags:
        return 16, "avx2+fma: 2 x 256-bit FMA units assumed = 16 DP FLOP/cycle"
    if "avx" in flags:
        return 8, "avx without fma: 256-bit add + mul = 8 DP FLOP/cycle"
    if "asimd" in flags or "neon" in flags:
        return 8, "asimd: 2 x 128-bit FMA pipes assumed = 8 DP FLOP/cycle"
    if "sse2" in flags:
        return 4, "sse2: 128-bit add + mul = 4 DP FLOP/cycle"
    return 2, "no SIMD flags found: 1 scalar FMA per cycle assumed = 2 DP FLOP/cycle"


def peak_gflops(cores: float, cpu: dict[str, Any]) -> tuple[float | None, dict[str, Any]]:
    """Theoretical DP peak = cores x clock (GHz) x FLOP/cycle; None when the clock is unknown."""
    per_cycle, assumption = flops_per_cycle(cpu.get("simd", []))
    mhz = cpu.get("max_mhz") or cpu.get("mhz")
    basis = {
        "cores": cores,
        "clock_ghz": None if mhz is None else mhz / 1000.0,
        "clock_source": "cpuinfo_max_freq" if cpu.get("max_mhz") else "/proc/cpuinfo cpu MHz",
        "flops_per_cycle": per_cycle,
        "assumption": assumption,
    }
    if not mhz or not math.isfinite(mhz):
        return None, basis
    return cores * (mhz / 1000.0) * per_cycle, basis
