"""gpu.* checks without a GPU: numpy stands in for CuPy at the BACKEND boundary, so the judging code is
the code that runs on a GPU; the no-GPU paths use the real backend against fake sysfs trees."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from checkrun import run_checks
from pathload import load

from compute_jobs.checks import gpu, load_all
from compute_jobs.compare import perturb
from compute_jobs.gpu import backend as gpu_backend
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Result, registry

load_all()

GPU_CHECKS = ["gpu.inventory", "gpu.gemm", "gpu.stream", "gpu.transfer", "gpu.p2p"]
H100 = "NVIDIA H100 80GB HBM3"
FULL_LINK = {"current_generation": 5, "current_width": 16, "max_generation": 5, "max_width": 16}
REPO = Path(__file__).resolve().parents[2]


class NumpyDevice(gpu.Device):
    """A GPU whose memory is host memory and whose kernels are numpy's."""

    def __init__(self, index: int, name: str = H100, link: dict[str, int] | None = None) -> None:
        self.index = index
        self.label = f"gpu{index}"
        self.name = name
        self.pci_address = f"0000:{index + 0x17:02x}:00.0"
        self.xp = np
        self.link_state = dict(link or FULL_LINK)

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        pass

    def timed(self, fn: Callable[[], None], repeats: int, warmup: int, ctx: Any) -> list[float]:
        for _ in range(warmup):
            fn()
        durations = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            durations.append(max(time.perf_counter() - start, 1e-7))
        return durations

    def to_host(self, array: Any) -> np.ndarray:
        return np.array(array)

    def matmul_bf16(self, a_bits: Any, b_bits: Any, out: Any) -> None:
        np.matmul(gpu.from_bf16_bits(np, a_bits), gpu.from_bf16_bits(np, b_bits), out=out)

    def triad(self, a: Any, b: Any, c: Any, scalar: float) -> None:
        np.multiply(c, scalar, out=a)
        np.add(a, b, out=a)

    def pinned(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, dtype=np.uint8)

    def upload(self, device_array: Any, host: np.ndarray) -> None:
        device_array[:] = host

    def download(self, device_array: Any, host: np.ndarray) -> None:
        host[:] = device_array

    def link(self) -> dict[str, int | None]:
        return dict(self.link_state)

    def can_access_peer(self, other: gpu.Device) -> bool:
        return True

    def copy_to_peer(self, other: gpu.Device, dst: Any, src: Any, nbytes: int) -> None:
        dst[:nbytes] = src[:nbytes]


class FakeBackend:
    def __init__(self, devices: list[gpu.Device], driver: str = "580.95.05", cuda: str = "13.0") -> None:
        self._devices = devices
        self.driver, self.cuda = driver, cuda

    def inventory(self) -> gpu.Inventory:
        gpus = [gpu.GpuInfo(d.index, d.name, 81559, f"GPU-{d.index}", d.pci_address) for d in self._devices]
        pci = [{"address": d.pci_address, "class": "0x030200"} for d in self._devices]
        return gpu.Inventory("nvml", self.driver, self.cuda, gpus, pci)

    def devices(self) -> list[gpu.Device]:
        return list(self._devices)


def gpu_host(groups: tuple[str, ...] = ("head", "gpu_nodes"), **values: Any) -> list[dict[str, Any]]:
    host = {"name": "a", "address": "127.0.0.1", "groups": list(groups), "cores": 1, "memory_mb": 16}
    host.update(values)
    return [host]


def run(cluster: Any, names: list[str], **config: Any) -> dict[str, Result]:
    return run_checks(cluster, names, **config)


@pytest.fixture
def one_h100(monkeypatch: pytest.MonkeyPatch) -> NumpyDevice:
    device = NumpyDevice(0)
    monkeypatch.setattr(gpu, "BACKEND", FakeBackend([device]))
    return device


def _sysfs(root: Path, devices: dict[str, dict[str, str]]) -> str:
    for address, files in devices.items():
        for name, text in files.items():
            path = root / address / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")
    return str(root)


NVIDIA_GPU = {
    "vendor": "0x10de",
    "device": "0x2330",
    "class": "0x030200",
    "current_link_speed": "32.0 GT/s PCIe",
    "max_link_speed": "32.0 GT/s PCIe",
    "current_link_width": "16",
    "max_link_width": "16",
}
NVIDIA_AUDIO = {"vendor": "0x10de", "device": "0x22ba", "class": "0x040300"}
INTEL_NIC = {"vendor": "0x8086", "device": "0x1572", "class": "0x020000"}


# --- where the checks apply -------------------------------------------------------------------------


def test_gpu_checks_are_registered_with_the_gpu_tag():
    for name in GPU_CHECKS:
        cls = registry.get(name)
        assert cls.tags == frozenset({"gpu"}) and cls.groups == ("gpu_nodes",) and cls.scope == "node"
    assert "compute_jobs.checks.gpu" not in registry.import_errors


def test_gpu_checks_skip_hosts_outside_gpu_nodes(cj_cluster, one_h100):
    results = run(cj_cluster(gpu_host(groups=("head", "opencl_nodes"))), GPU_CHECKS)
    assert {r.status for r in results.values()} == {SKIP}
    assert all(r.reason == "a is not in group gpu_nodes" for r in results.values())


def test_gpu_node_without_any_gpu_fails_every_check(cj_cluster, tmp_path, monkeypatch):
    """The real backend on a host like the lab's: no NVIDIA function on the PCI bus, no driver."""
    root = _sysfs(tmp_path / "pci", {"0000:00:1f.0": INTEL_NIC})
    monkeypatch.setattr(gpu, "BACKEND", gpu.CudaBackend(sysfs_root=root))
    results = run(cj_cluster(gpu_host(gpus=1)), GPU_CHECKS)
    assert set(results) == set(GPU_CHECKS)
    for result in results.values():
        assert result.status == FAIL, (result.name, result.status, result.reason)
        assert result.category == "inventory"
        assert "a is in group gpu_nodes but no NVIDIA GPU was found" in result.reason


def test_gpus_on_the_bus_without_a_driver_fail_and_name_the_functions(cj_cluster, tmp_path, monkeypatch):
    root = _sysfs(tmp_path / "pci", {"0000:17:00.0": NVIDIA_GPU, "0000:17:00.1": NVIDIA_AUDIO})
    backend = gpu.CudaBackend(sysfs_root=root)
    no_nvml = lambda pci: (_ for _ in ()).throw(OSError("no libnvidia-ml"))  # noqa: E731
    monkeypatch.setattr(gpu_backend, "nvml_inventory", no_nvml)
    monkeypatch.setattr(gpu, "BACKEND", backend)
    result = run(cj_cluster(gpu_host()), ["gpu.inventory"])["gpu.inventory"]
    assert result.status == FAIL
    assert "0000:17:00.0" in result.reason and "0000:17:00.1" not in result.reason
    assert "no libnvidia-ml" in result.reason


def test_scan_pci_keeps_only_nvidia_gpus_and_reads_the_link(tmp_path):
    root = _sysfs(
        tmp_path,
        {
            "0000:17:00.0": NVIDIA_GPU,
            "0000:17:00.1": NVIDIA_AUDIO,
            "0000:00:1f.0": INTEL_NIC,
            "0000:65:00.0": {**NVIDIA_GPU, "class": "0x030000", "current_link_speed": "16.0 GT/s PCIe"},
        },
    )
    found = gpu.scan_pci(root)
    assert [f["address"] for f in found] == ["0000:17:00.0", "0000:65:00.0"]
    assert found[0]["current_link_generation"] == 5 and found[0]["max_link_width"] == 16
    assert found[1]["current_link_generation"] == 4 and found[1]["max_link_generation"] == 5


def test_role_detection_module_agrees_with_the_check_on_the_pci_scan(tmp_path):
    """roles/cuda records what it detects with the same rule (vendor 0x10de, class 0x0300/0x0302)."""
    path = REPO / "roles/cuda/library/cuda_gpu_facts.py"
    module = load("cuda_gpu_facts", path)
    root = _sysfs(
        tmp_path, {"0000:17:00.0": NVIDIA_GPU, "0000:17:00.1": NVIDIA_AUDIO, "0000:00:1f.0": INTEL_NIC}
    )
    found = module.scan_pci(root)
    assert [f["address"] for f in found] == [g["address"] for g in gpu.scan_pci(root)] == ["0000:17:00.0"]
    assert found[0]["max_link_generation"] == 5 and found[0]["device_id"] == "0x2330"


# --- gpu.inventory ----------------------------------------------------------------------------------


def test_inventory_passes_when_everything_declared_matches(cj_cluster, one_h100):
    engines = {"gpu": {"driver_version": "580.95.05", "cuda_version": "13.0", "memory_mib": 81559}}
    cluster = cj_cluster(gpu_host(gpus=1, gpu_models=[H100]), engines=engines)
    result = run(cluster, ["gpu.inventory"])["gpu.inventory"]
    assert result.status == PASS, result.reason
    assert result.observed == {
        "count": 1,
        "models": [H100],
        "memory_mib": [81559],
        "driver_version": "580.95.05",
        "cuda_version": "13.0",
    }


@pytest.mark.parametrize(
    ("host", "engine", "problem"),
    [
        ({"gpus": 2}, {}, "count: 1 GPUs, inventory declares 2"),
        ({"gpu_models": ["NVIDIA A100-SXM4-80GB"]}, {}, "models: ['NVIDIA H100 80GB HBM3']"),
        ({}, {"driver_version": "575.57.08"}, "driver_version: 580.95.05, inventory declares 575.57.08"),
        ({}, {"cuda_version": "12.9"}, "cuda_version: 13.0, inventory declares 12.9"),
        ({}, {"hosts": {"a": {"memory_mib": 143771}}}, "memory_mib: [81559] per GPU"),
    ],
)
def test_inventory_fails_on_each_declared_difference(cj_cluster, one_h100, host, engine, problem):
    result = run(cj_cluster(gpu_host(**host), engines={"gpu": engine}), ["gpu.inventory"])["gpu.inventory"]
    assert result.status == FAIL and problem in result.reason


def test_inventory_wrong_answer_control_fails(cj_cluster, one_h100):
    result = run(cj_cluster(gpu_host(gpus=1)), ["gpu.inventory"], inject="wrong-answer")["gpu.inventory"]
    assert result.status == FAIL and result.control == "wrong-answer"
    assert "unexpected field" in result.reason


# --- gpu.gemm ---------------------------------------------------------------------------------------


def test_gemm_passes_on_every_dtype_and_reports_the_ratio_to_the_datasheet(cj_cluster, one_h100):
    results = run(cj_cluster(gpu_host(gpus=1)), ["gpu.gemm"])
    for dtype, peak in (("fp64", 67.0), ("fp32", 67.0), ("bf16", 989.0)):
        residual = results[f"gpu.gemm.{dtype}.residual[gpu0]"]
        assert residual.status == PASS and residual.error < 16, (dtype, residual.reason)
        repeat = results[f"gpu.gemm.{dtype}.repeat[gpu0]"]
        assert repeat.status == PASS and repeat.observed == 0
        perf = results[f"gpu.gemm.{dtype}[gpu0]"]
        assert perf.status == PASS and perf.unit == "TFLOP/s" and len(perf.samples) >= 5
        assert perf.reference["value"] == peak and perf.reference["kind"] == "peak"
        assert perf.ratio == pytest.approx(perf.value / peak)
    assert results["gpu.gemm.placement"].status == PASS


def test_gemm_residual_catches_a_slightly_wrong_product(cj_cluster, one_h100, monkeypatch):
    def off_by_a_little(a_bits: Any, b_bits: Any, out: Any) -> None:
        NumpyDevice.matmul_bf16(one_h100, a_bits, b_bits, out)
        out *= 1.0 + 1e-2  # 1 %: the residual allows 16 sqrt(N) eps |A||B| (1.3e-5 relative at N = 48)

    monkeypatch.setattr(one_h100, "matmul_bf16", off_by_a_little)
    results = run(cj_cluster(gpu_host()), ["gpu.gemm"])
    assert results["gpu.gemm.bf16.residual[gpu0]"].status == FAIL
    assert results["gpu.gemm.bf16.residual[gpu0]"].error > 16
    assert results["gpu.gemm.fp64.residual[gpu0]"].status == PASS


@pytest.mark.parametrize("n", [48, 8192, 65536])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm_residual_fails_wrong_answers_at_every_matrix_order(n, dtype):
    # Seen on an H100 at N = 8192: the normwise HPL form let the wrong-answer control (every element
    # |x| + 1 off) pass in FP32 and BF16 with an error of 0.12. The componentwise form must fail it,
    # and a product off by 1 % or transposed, at every allowed matrix order.
    rng = np.random.default_rng(7)
    k = 64
    a = rng.random((k, n))
    b = rng.random((n, k))
    reference = a @ b
    bound = np.abs(a) @ np.abs(b)
    eps = float(np.finfo(dtype).eps)
    for wrong in (perturb(reference), reference * 1.01, a @ b[::-1]):
        assert gpu.residual(wrong, reference, bound, n, eps) > 16
    # A rounding error of a few units in the last place per term, as a real GEMM makes, passes.
    near = reference * (1 + 8 * eps * rng.standard_normal(reference.shape))
    assert gpu.residual(near, reference, bound, n, eps) < 16


def test_gemm_catches_products_that_change_between_repeats(cj_cluster, one_h100, monkeypatch):
    calls = {"n": 0}

    def drifting(a_bits: Any, b_bits: Any, out: Any) -> None:
        NumpyDevice.matmul_bf16(one_h100, a_bits, b_bits, out)
        calls["n"] += 1
        if calls["n"] > 3:
            out[0, 0] = np.nextafter(out[0, 0], np.float32(np.inf))

    monkeypatch.setattr(one_h100, "matmul_bf16", drifting)
    results = run(cj_cluster(gpu_host()), ["gpu.gemm"])
    repeat = results["gpu.gemm.bf16.repeat[gpu0]"]
    assert repeat.status == FAIL and repeat.observed == 1
    assert results["gpu.gemm.bf16.residual[gpu0]"].status == PASS  # one ulp: only bitwise equality sees it


def test_gemm_controls_fail_correctness_and_placement(cj_cluster, one_h100):
    wrong = run(cj_cluster(gpu_host()), ["gpu.gemm"], inject="wrong-answer")
    correctness = [r for r in wrong.values() if r.category == "correctness"]
    assert len(correctness) == 6 and all(
        r.status == FAIL and r.control == "wrong-answer" for r in correctness
    )
    missing = run(cj_cluster(gpu_host()), ["gpu.gemm"], inject="missing-worker")["gpu.gemm.placement"]
    assert missing.status == FAIL and missing.missing == ["gpu0"]


def test_gemm_placement_fails_when_cuda_sees_fewer_gpus_than_declared(cj_cluster, one_h100):
    result = run(cj_cluster(gpu_host(gpus=2)), ["gpu.gemm"])["gpu.gemm.placement"]
    assert result.status == FAIL and result.missing == ["gpu1"]


def test_gemm_rejects_unknown_dtypes(cj_cluster, one_h100):
    result = run(cj_cluster(gpu_host(), params={"gpu.gemm": {"dtypes": "fp64,fp8"}}), ["gpu.gemm"])[
        "gpu.gemm"
    ]
    assert result.status == ERROR and "fp8" in result.reason


def test_bf16_conversion_rounds_to_nearest_even():
    values = np.array([1.0, 1.00390625, 1.01171875, 0.333333343], dtype=np.float32)
    bits = gpu.to_bf16_bits(np, values)
    back = gpu.from_bf16_bits(np, bits)
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0); 1 + 3 * 2^-8
    # is halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6.
    assert back.tolist() == [1.0, 1.0, 1.015625, 0.333984375]
    assert np.array_equal(gpu.to_bf16_bits(np, back), bits)


# --- gpu.stream -------------------------------------------------------------------------------------


def test_stream_passes_and_reports_the_ratio_to_hbm(cj_cluster, one_h100):
    results = run(cj_cluster(gpu_host()), ["gpu.stream"])
    assert results["gpu.stream[gpu0]"].status == PASS and results["gpu.stream[gpu0]"].error < 1e-13
    triad = results["gpu.stream.triad[gpu0]"]
    assert triad.status == PASS and triad.reference["value"] == 3350.0 and triad.ratio > 0


def test_stream_catches_one_wrong_element_and_the_control(cj_cluster, one_h100, monkeypatch):
    def one_bad(a: Any, b: Any, c: Any, s: float) -> None:
        NumpyDevice.triad(one_h100, a, b, c, s)
        a[-1] += 1.0

    wrong = run(cj_cluster(gpu_host()), ["gpu.stream"], inject="wrong-answer")["gpu.stream[gpu0]"]
    assert wrong.status == FAIL and wrong.control == "wrong-answer"
    monkeypatch.setattr(one_h100, "triad", one_bad)
    result = run(cj_cluster(gpu_host()), ["gpu.stream"])["gpu.stream[gpu0]"]
    assert result.status == FAIL and result.error > 1e-13


# --- gpu.transfer -----------------------------------------------------------------------------------


def test_transfer_passes_on_a_full_link(cj_cluster, one_h100):
    results = run(cj_cluster(gpu_host()), ["gpu.transfer"])
    assert results["gpu.transfer.roundtrip[gpu0]"].status == PASS
    link = results["gpu.transfer.link[gpu0]"]
    assert link.status == PASS and link.observed == {"generation": 5, "width": 16}
    for metric in ("h2d", "d2h"):
        perf = results[f"gpu.transfer.{metric}[gpu0]"]
        assert perf.status == PASS and perf.reference["value"] == pytest.approx(63.008)


@pytest.mark.parametrize(
    "link",
    [
        {**FULL_LINK, "current_width": 8},
        {**FULL_LINK, "current_generation": 4},
    ],
)
def test_transfer_fails_on_a_downtrained_link(cj_cluster, monkeypatch, link):
    monkeypatch.setattr(gpu, "BACKEND", FakeBackend([NumpyDevice(0, link=link)]))
    result = run(cj_cluster(gpu_host()), ["gpu.transfer"])["gpu.transfer.link[gpu0]"]
    assert result.status == FAIL and result.expected == {"generation": 5, "width": 16}


def test_transfer_catches_a_corrupted_copy_and_the_control(cj_cluster, one_h100, monkeypatch):
    def corrupting(device_array: Any, host: np.ndarray) -> None:
        host[:] = device_array
        host[7] ^= 0x10

    wrong = run(cj_cluster(gpu_host()), ["gpu.transfer"], inject="wrong-answer")
    assert wrong["gpu.transfer.roundtrip[gpu0]"].status == FAIL
    assert wrong["gpu.transfer.link[gpu0]"].status == FAIL
    monkeypatch.setattr(one_h100, "download", corrupting)
    result = run(cj_cluster(gpu_host()), ["gpu.transfer"])["gpu.transfer.roundtrip[gpu0]"]
    assert result.status == FAIL and result.observed != result.expected


# --- gpu.p2p ----------------------------------------------------------------------------------------


def test_p2p_skips_a_single_gpu_with_the_reason(cj_cluster, one_h100):
    result = run(cj_cluster(gpu_host()), ["gpu.p2p"])["gpu.p2p"]
    assert result.status == SKIP and "has 1 GPU" in result.reason


def test_p2p_fails_where_the_inventory_declares_more_gpus_than_cuda_sees(cj_cluster, one_h100):
    result = run(cj_cluster(gpu_host(gpus=2)), ["gpu.p2p"])["gpu.p2p"]
    assert result.status == FAIL and "has 2 GPUs" in result.reason and "CUDA sees 1 (gpu0)" in result.reason


def test_p2p_copies_between_every_ordered_pair(cj_cluster, monkeypatch):
    devices = [NumpyDevice(0), NumpyDevice(1)]
    monkeypatch.setattr(gpu, "BACKEND", FakeBackend(devices))
    results = run(cj_cluster(gpu_host()), ["gpu.p2p"])
    for pair in ("gpu0->gpu1", "gpu1->gpu0"):
        assert results[f"gpu.p2p[{pair}]"].status == PASS
        assert results[f"gpu.p2p.copy[{pair}]"].status == PASS

    def lossy(other: Any, dst: Any, src: Any, nbytes: int) -> None:
        dst[: nbytes - 1] = src[: nbytes - 1]

    monkeypatch.setattr(devices[1], "copy_to_peer", lossy)
    results = run(cj_cluster(gpu_host()), ["gpu.p2p"])
    assert results["gpu.p2p[gpu0->gpu1]"].status == PASS
    assert results["gpu.p2p[gpu1->gpu0]"].status == FAIL


# --- reference figures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model", "fp64", "bf16", "hbm"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 67.0, 989.0, 3350.0),
        ("NVIDIA H100 PCIe", "H100 PCIe", 51.0, 756.0, 2000.0),
        ("NVIDIA H100 NVL", "H100 NVL", 60.0, 835.0, 3900.0),
        ("NVIDIA H200", "H200 SXM", 67.0, 989.0, 4800.0),
        ("NVIDIA H200 NVL", "H200 NVL", 60.0, 835.0, 4800.0),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB", 19.5, 312.0, 2039.0),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB", 19.5, 312.0, 1935.0),
    ],
)
def test_datasheet_selects_the_model(name, model, fp64, bf16, hbm):
    spec = gpu.datasheet(name)
    assert (spec.model, spec.fp64, spec.bf16, spec.hbm) == (model, fp64, bf16, hbm)


def test_unknown_models_have_no_peak_and_pcie_rates():
    assert gpu.datasheet("NVIDIA GeForce RTX 4090") is None and gpu.datasheet(None) is None
    assert gpu.pcie_peak_gbs(5, 16) == pytest.approx(63.008)
    assert gpu.pcie_peak_gbs(4, 16) == pytest.approx(31.504)
    assert gpu.pcie_peak_gbs(None, 16) is None
    assert gpu.link_generation("16.0 GT/s PCIe") == 4 and gpu.link_generation("Unknown") is None
