"""The GPUs of the cloud GPU presets have datasheet entries, and gpu.gemm gates precisions on them.

Every preset of roles/cloud_aws (g4dn T4, g5 A10G, g6 L4, g6e L40S, p5 H100) must find its GPU in
compute_jobs/gpu/datasheet.py under the name NVML gives it, and a GEMM precision the GPU's compute
capability lacks (BF16 before 8.0: the T4) is SKIP with that reason, never ERROR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from checkrun import run_checks
from test_checks_gpu import FakeBackend, NumpyDevice, gpu_host

from compute_jobs.checks import gpu
from compute_jobs.gpu.datasheet import datasheet, gemm_unsupported

REPO = Path(__file__).resolve().parents[2]
# NVML's name of each preset's GPU, as nvidia-smi prints it on those instances.
NVML_NAMES = {
    "T4": "Tesla T4",
    "A10G": "NVIDIA A10G",
    "L4": "NVIDIA L4",
    "L40S": "NVIDIA L40S",
    "H100": "NVIDIA H100 80GB HBM3",
}


def presets() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "roles" / "cloud_aws" / "vars" / "main.yml").read_text(encoding="utf-8"))
    return data["__cloud_aws_gpu_presets"]


def test_every_preset_gpu_has_a_datasheet_entry() -> None:
    for name, preset in presets().items():
        model = preset["gpu_model"]
        assert model in NVML_NAMES, f"preset {name}: add the NVML name of {model} here and a datasheet entry"
        spec = datasheet(NVML_NAMES[model])
        assert spec is not None and spec.model.split()[0] == model, (name, spec)


@pytest.mark.parametrize(
    ("name", "model", "fp32", "bf16", "memory", "capability"),
    [
        ("Tesla T4", "T4", 8.1, None, 320.0, (7, 5)),
        ("NVIDIA A10G", "A10G", 31.2, 125.0, 600.0, (8, 6)),
        ("NVIDIA L4", "L4", 30.3, 121.0, 300.0, (8, 9)),
        ("NVIDIA L40S", "L40S", 91.6, 362.05, 864.0, (8, 9)),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB", 19.5, 312.0, 2039.0, (8, 0)),
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 67.0, 989.0, 3350.0, (9, 0)),
    ],
)
def test_datasheet_entries(
    name: str, model: str, fp32: float, bf16: float | None, memory: float, capability
) -> None:
    spec = datasheet(name)
    assert (spec.model, spec.fp32, spec.bf16, spec.hbm, spec.compute_capability) == (
        model,
        fp32,
        bf16,
        memory,
        capability,
    )
    assert (gemm_unsupported(spec, "bf16") is None) == (capability >= (8, 0))
    assert gemm_unsupported(spec, "fp32") is None and gemm_unsupported(spec, "fp64") is None


def _gemm(cj_cluster: Any, monkeypatch: pytest.MonkeyPatch, model: str, dtypes: str) -> dict[str, Any]:
    monkeypatch.setattr(gpu, "BACKEND", FakeBackend([NumpyDevice(0, name=model)]))
    overrides = {"gpu.gemm": {**gpu.GpuGemm.smoke_params(), "dtypes": dtypes}}
    return run_checks(cj_cluster(gpu_host(gpus=1)), ["gpu.gemm"], overrides=overrides)


def test_bf16_on_a_t4_is_skip_with_the_capability_reason(
    cj_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _gemm(cj_cluster, monkeypatch, "Tesla T4", "fp64,fp32,bf16")
    skipped = results["gpu.gemm.bf16[gpu0]"]
    assert skipped.status == "SKIP"
    assert "BF16 GEMM needs CUDA compute capability 8.0 or newer; T4 has 7.5" in skipped.reason
    assert not [name for name in results if name.startswith("gpu.gemm.bf16.")], "no BF16 product was run"
    assert {r.status for r in results.values()} == {"PASS", "SKIP"}, {n: r.status for n, r in results.items()}
    assert results["gpu.gemm.fp32[gpu0]"].reference["value"] == 8.1
    assert results["gpu.gemm.fp64[gpu0]"].reference is None, "no FP64 figure on the T4 datasheet"
    assert results["gpu.gemm.placement"].status == "PASS"


def test_bf16_runs_on_an_l4(cj_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    results = _gemm(cj_cluster, monkeypatch, "NVIDIA L4", "bf16")
    assert results["gpu.gemm.bf16.residual[gpu0]"].status == "PASS"
    assert results["gpu.gemm.bf16[gpu0]"].reference["value"] == 121.0
