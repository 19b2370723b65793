"""opencl.* checks with numpy standing in for an OpenCL device at the BACKEND boundary (the real
pyopencl path runs on PoCL in the lab and in molecule/gpu)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest
from checkrun import run_checks

from compute_jobs.checks import load_all, opencl
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Result, registry

load_all()

OPENCL_CHECKS = ["opencl.devices", "opencl.vecadd"]
POCL_CPU = opencl.DeviceInfo(opencl.POCL_PLATFORM, "cpu-haswell-AMD EPYC 7B13", "CPU", "OpenCL 3.0 PoCL 6.0")
H100_CL = opencl.DeviceInfo(opencl.NVIDIA_PLATFORM, "NVIDIA H100 80GB HBM3", "GPU", "OpenCL 3.0 CUDA")


class NumpyClDevice(opencl.ClDevice):
    """An OpenCL device that computes with numpy, without fused multiply-add."""

    def __init__(self, label: str, info: opencl.DeviceInfo) -> None:
        self.label = label
        self.info = info

    def vecadd(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def saxpy(self, alpha: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.float32(alpha) * x + y

    def vecadd_seconds(self, n: int, repeats: int, warmup: int, ctx: Any) -> list[float]:
        return [1e-3 * (1 + i / 100) for i in range(repeats)]


class FakeClBackend:
    def __init__(self, devices: list[opencl.ClDevice], error: str | None = None) -> None:
        self._devices = devices
        self.error = error

    def platforms(self) -> opencl.Platforms:
        names = sorted({d.info.platform for d in self._devices})
        return opencl.Platforms(names, [d.info for d in self._devices], error=self.error)

    def devices(self) -> list[opencl.ClDevice]:
        return list(self._devices)


def cl_host(groups: tuple[str, ...] = ("head", "opencl_nodes"), **values: Any) -> list[dict[str, Any]]:
    host = {"name": "a", "address": "127.0.0.1", "groups": list(groups), "cores": 1, "memory_mb": 16}
    host.update(values)
    return [host]


def run(cluster: Any, names: list[str], **config: Any) -> dict[str, Result]:
    return run_checks(cluster, names, **config)


@pytest.fixture
def pocl(monkeypatch: pytest.MonkeyPatch) -> NumpyClDevice:
    device = NumpyClDevice("pocl0", POCL_CPU)
    monkeypatch.setattr(opencl, "BACKEND", FakeClBackend([device]))
    return device


def test_opencl_checks_apply_to_opencl_and_gpu_nodes(cj_cluster, pocl):
    for name in OPENCL_CHECKS:
        cls = registry.get(name)
        assert cls.tags == frozenset({"opencl"}) and set(cls.groups) == {"opencl_nodes", "gpu_nodes"}
    results = run(cj_cluster(cl_host(groups=("head",))), OPENCL_CHECKS)
    assert {r.status for r in results.values()} == {SKIP}
    assert results["opencl.devices"].reason == "a is not in group gpu_nodes or opencl_nodes"


def test_pocl_node_passes_every_check(cj_cluster, cj_validator, pocl):
    results = run(cj_cluster(cl_host(opencl_devices=1)), OPENCL_CHECKS)
    assert set(results) == {
        "opencl.devices",
        "opencl.vecadd.int32[pocl0]",
        "opencl.vecadd.saxpy[pocl0]",
        "opencl.vecadd.vecadd[pocl0]",
        "opencl.vecadd.placement",
    }
    validator = cj_validator("result.schema.json")
    for result in results.values():
        assert result.status == PASS, (result.name, result.reason)
        validator.validate(result.to_dict())
    assert results["opencl.devices"].observed == {"devices": 1, "platforms": [opencl.POCL_PLATFORM]}
    assert results["opencl.vecadd.saxpy[pocl0]"].error < 1.2e-7
    bandwidth = results["opencl.vecadd.vecadd[pocl0]"]
    assert bandwidth.unit == "GB/s" and bandwidth.value == pytest.approx(
        3 * 4096 * 4 / 1.02e-3 / 1e9, rel=0.05
    )


def test_devices_fail_on_a_count_or_platform_difference(cj_cluster, pocl):
    count = run(cj_cluster(cl_host(opencl_devices=2)), ["opencl.devices"])["opencl.devices"]
    assert count.status == FAIL and "devices: 1, inventory declares 2" in count.reason
    gpu_node = run(cj_cluster(cl_host(groups=("head", "gpu_nodes"))), ["opencl.devices"])["opencl.devices"]
    assert gpu_node.status == FAIL and "platforms missing: NVIDIA CUDA" in gpu_node.reason
    declared = {"opencl": {"hosts": {"a": {"platforms": ["Intel(R) OpenCL"]}}}}
    other = run(cj_cluster(cl_host(), engines=declared), ["opencl.devices"])["opencl.devices"]
    assert (
        other.status == FAIL and "platforms not in the inventory: Portable Computing Language" in other.reason
    )


def test_gpu_node_with_pocl_and_nvidia_passes(cj_cluster, monkeypatch):
    devices = [NumpyClDevice("pocl0", POCL_CPU), NumpyClDevice("nvidia0", H100_CL)]
    monkeypatch.setattr(opencl, "BACKEND", FakeClBackend(devices))
    results = run(cj_cluster(cl_host(groups=("head", "gpu_nodes"), opencl_devices=2)), OPENCL_CHECKS)
    assert all(r.status == PASS for r in results.values()), {r.name: r.reason for r in results.values()}
    assert results["opencl.vecadd.placement"].observed_workers == ["nvidia0", "pocl0"]


def test_placement_fails_when_the_loader_sees_fewer_devices_than_the_inventory_expects(cj_cluster, pocl):
    declared = run(cj_cluster(cl_host(opencl_devices=2)), OPENCL_CHECKS)["opencl.vecadd.placement"]
    assert declared.status == FAIL and declared.missing == ["declared device 2 of 2"], declared.reason
    assert declared.observed_workers == ["pocl0"]
    gpu_node = run(cj_cluster(cl_host(groups=("head", "gpu_nodes"))), OPENCL_CHECKS)[
        "opencl.vecadd.placement"
    ]
    assert gpu_node.status == FAIL and gpu_node.missing == [f"a device of {opencl.NVIDIA_PLATFORM}"]
    # What the inventory expects, seen: the same check passes.
    assert run(cj_cluster(cl_host(opencl_devices=1)), OPENCL_CHECKS)["opencl.vecadd.placement"].status == PASS


def test_no_icd_fails_instead_of_skipping(cj_cluster, monkeypatch):
    monkeypatch.setattr(opencl, "BACKEND", FakeClBackend([], error="LogicError: PLATFORM_NOT_FOUND_KHR"))
    results = run(cj_cluster(cl_host()), OPENCL_CHECKS)
    assert results["opencl.devices"].status == FAIL and results["opencl.devices"].observed["devices"] == 0
    assert results["opencl.vecadd"].status == FAIL
    assert (
        "offers no device" in results["opencl.vecadd"].reason
        and "PLATFORM_NOT_FOUND_KHR" in results["opencl.vecadd"].reason
    )


@pytest.mark.skipif(importlib.util.find_spec("pyopencl") is not None, reason="pyopencl is installed here")
def test_missing_pyopencl_is_an_error_that_says_what_to_install(cj_cluster):
    results = run(cj_cluster(cl_host()), OPENCL_CHECKS)
    for result in results.values():
        assert result.status == ERROR and "pyopencl does not import" in result.reason


def test_vecadd_catches_a_wrong_integer_and_a_loose_saxpy(cj_cluster, pocl, monkeypatch):
    def off_by_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        c = a + b
        c[-1] += 1
        return c

    def loose(alpha: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (np.float32(alpha) * x + y) * np.float32(1 + 2e-6)

    monkeypatch.setattr(pocl, "vecadd", off_by_one)
    monkeypatch.setattr(pocl, "saxpy", loose)
    results = run(cj_cluster(cl_host()), ["opencl.vecadd"])
    assert results["opencl.vecadd.int32[pocl0]"].status == FAIL
    saxpy = results["opencl.vecadd.saxpy[pocl0]"]
    assert saxpy.status == FAIL and 1e-6 < saxpy.error < 1e-5


def test_controls_fail_correctness_and_placement(cj_cluster, pocl):
    wrong = run(cj_cluster(cl_host()), OPENCL_CHECKS, inject="wrong-answer")
    correctness = [r for r in wrong.values() if r.category == "correctness"]
    assert {r.name for r in correctness} == {
        "opencl.devices",
        "opencl.vecadd.int32[pocl0]",
        "opencl.vecadd.saxpy[pocl0]",
    }
    assert all(r.status == FAIL and r.control == "wrong-answer" for r in correctness)
    missing = run(cj_cluster(cl_host()), ["opencl.vecadd"], inject="missing-worker")[
        "opencl.vecadd.placement"
    ]
    assert missing.status == FAIL and missing.missing == ["pocl0"]
