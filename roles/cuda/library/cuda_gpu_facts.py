#!/usr/bin/python
"""Read-only detection of NVIDIA GPUs: PCI functions, device nodes, the loaded driver and NVML."""

from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: cuda_gpu_facts
short_description: Detect NVIDIA GPUs and the driver without changing anything
description:
  - Lists NVIDIA display and 3D controllers (PCI vendor 0x10de, class 0x0300 or 0x0302) under
    /sys/bus/pci/devices with their PCIe link, the /dev/nvidia* device nodes, the version of the
    loaded nvidia kernel module, and what NVML reports (through libnvidia-ml.so.1, else nvidia-smi).
  - Never changes the host; safe in check mode.
options:
  sysfs_root:
    description: Root of the PCI device tree (tests point it at a fake tree).
    type: path
    default: /sys/bus/pci/devices
  dev_root:
    description: Directory holding the nvidia device nodes.
    type: path
    default: /dev
author: clusterforge maintainers
"""

EXAMPLES = r"""
- name: Detect NVIDIA GPUs
  cuda_gpu_facts:
  register: __cuda_detected
"""

RETURN = r"""
gpu_count:
  description: Number of NVIDIA GPUs on the PCI bus.
  type: int
  returned: always
pci:
  description: One entry per GPU PCI function (address, device id, NUMA node, PCIe link, bound driver).
  type: list
  returned: always
dev_nodes:
  description: The /dev/nvidia* device nodes present.
  type: list
  returned: always
driver_version:
  description: Version of the loaded nvidia kernel module, or null.
  type: str
  returned: always
nvml:
  description: What NVML (or nvidia-smi) reports, with the source used and any error.
  type: dict
  returned: always
"""

NVIDIA_VENDOR = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")
# PCIe transfer rate per lane -> generation.
PCIE_GENERATIONS = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}


def _read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def link_generation(speed):
    """'32.0 GT/s PCIe' -> 5; None when unknown."""
    if not speed:
        return None
    match = re.match(r"\s*([0-9.]+)\s*GT/s", speed)
    if not match:
        return None
    return PCIE_GENERATIONS.get(f"{float(match.group(1)):.1f}")


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def scan_pci(root):
    gpus = []
    for path in sorted(glob.glob(os.path.join(root, "*"))):
        if (_read(os.path.join(path, "vendor")) or "").lower() != NVIDIA_VENDOR:
            continue
        klass = (_read(os.path.join(path, "class")) or "").lower()
        if not klass.startswith(GPU_CLASSES):
            continue
        driver_link = os.path.join(path, "driver")
        bound = os.path.basename(os.readlink(driver_link)) if os.path.islink(driver_link) else None
        max_speed = _read(os.path.join(path, "max_link_speed"))
        gpus.append(
            {
                "address": os.path.basename(path).lower(),
                "device_id": (_read(os.path.join(path, "device")) or "").lower(),
                "class": klass,
                "numa_node": _int_or_none(_read(os.path.join(path, "numa_node"))),
                "max_link_speed": max_speed,
                "max_link_generation": link_generation(max_speed),
                "max_link_width": _int_or_none(_read(os.path.join(path, "max_link_width"))),
                "bound_driver": bound,
            }
        )
    return gpus


def loaded_driver_version():
    version = _read("/sys/module/nvidia/version")
    if version:
        return version
    text = _read("/proc/driver/nvidia/version") or ""
    match = re.search(r"Kernel Module(?: for [^ ]+)?\s+([0-9][0-9.]+)", text)
    return match.group(1) if match else None


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _PciInfo(ctypes.Structure):
    _fields_ = [
        ("busIdLegacy", ctypes.c_char * 16),
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * 32),
    ]


def _pci_address(bus_id):
    """NVML's '00000000:17:00.0' -> sysfs '0000:17:00.0'."""
    return bus_id.strip().lower()[-12:] if bus_id else None


def nvml_query():
    """Driver, CUDA version and GPUs through libnvidia-ml.so.1; raises OSError/RuntimeError."""
    lib = ctypes.CDLL("libnvidia-ml.so.1")

    def call(name, *args):
        code = getattr(lib, name)(*args)
        if code != 0:
            raise RuntimeError(f"{name} returned NVML error {code}")

    call("nvmlInit_v2")
    try:
        buf = ctypes.create_string_buffer(96)
        call("nvmlSystemGetDriverVersion", buf, 96)
        driver = buf.value.decode()
        cuda = ctypes.c_int()
        call("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(cuda))
        count = ctypes.c_uint()
        call("nvmlDeviceGetCount_v2", ctypes.byref(count))
        gpus = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            call("nvmlDeviceGetHandleByIndex_v2", index, ctypes.byref(handle))
            call("nvmlDeviceGetName", handle, buf, 96)
            name = buf.value.decode()
            memory = _Memory()
            call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(memory))
            call("nvmlDeviceGetUUID", handle, buf, 96)
            uuid = buf.value.decode()
            pci = _PciInfo()
            call("nvmlDeviceGetPciInfo_v3", handle, ctypes.byref(pci))
            persistence = ctypes.c_int()
            call("nvmlDeviceGetPersistenceMode", handle, ctypes.byref(persistence))
            gpus.append(
                {
                    "index": index,
                    "name": name,
                    "uuid": uuid,
                    "memory_mib": memory.total // (1024 * 1024),
                    "pci_address": _pci_address(pci.busId.decode()),
                    "persistence_mode": bool(persistence.value),
                }
            )
    finally:
        lib.nvmlShutdown()
    return {
        "source": "nvml",
        "driver_version": driver,
        "cuda_version": f"{cuda.value // 1000}.{(cuda.value % 1000) // 10}",
        "gpus": gpus,
    }


def smi_query(smi):
    fields = "index,name,uuid,memory.total,pci.bus_id,persistence_mode,driver_version"
    out = subprocess.run(
        [smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    gpus, driver = [], None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 7:
            continue
        driver = parts[6]
        gpus.append(
            {
                "index": int(parts[0]),
                "name": parts[1],
                "uuid": parts[2],
                "memory_mib": int(float(parts[3])),
                "pci_address": _pci_address(parts[4]),
                "persistence_mode": parts[5].lower() == "enabled",
            }
        )
    header = subprocess.run([smi], capture_output=True, text=True, timeout=60, check=False).stdout
    match = re.search(r"CUDA Version:\s*([0-9]+\.[0-9]+)", header)
    return {
        "source": "nvidia-smi",
        "driver_version": driver,
        "cuda_version": match.group(1) if match else None,
        "gpus": gpus,
    }


def query_driver():
    errors = []
    try:
        return nvml_query(), errors
    except (OSError, RuntimeError, AttributeError) as exc:
        errors.append(f"NVML: {exc}")
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            return smi_query(smi), errors
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            errors.append(f"nvidia-smi: {exc}")
    else:
        errors.append("nvidia-smi: not installed")
    return {"source": None, "driver_version": None, "cuda_version": None, "gpus": []}, errors


def main():
    module = AnsibleModule(
        argument_spec={
            "sysfs_root": {"type": "path", "default": "/sys/bus/pci/devices"},
            "dev_root": {"type": "path", "default": "/dev"},
        },
        supports_check_mode=True,
    )
    pci = scan_pci(module.params["sysfs_root"])
    dev_nodes = sorted(glob.glob(os.path.join(module.params["dev_root"], "nvidia*")))
    nvml, errors = query_driver()
    nvml["errors"] = errors
    module.exit_json(
        changed=False,
        gpu_count=len(pci),
        pci=pci,
        dev_nodes=dev_nodes,
        driver_version=loaded_driver_version(),
        nvml=nvml,
    )


if __name__ == "__main__":
    main()
