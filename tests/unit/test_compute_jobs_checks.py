"""Built-in checks with tiny parameters: they pass on a sane node, and fail when the answer is wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from compute_jobs import sysinfo
from compute_jobs.checks import load_all, node
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Registry, Result, registry
from compute_jobs.runner import RunConfig, Runner
from compute_jobs.versions import distribution_version, library_versions

load_all()

NODE_CHECKS = ["node.inventory", "node.blas", "node.stream", "node.disk"]


def smoke(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    return {cls.name: cls.smoke_params() for cls in registry if names is None or cls.name in names}


def run(cluster: Any, names: list[str], **config: Any) -> dict[str, Result]:
    local = Registry()
    for name in names:
        local.register(registry.get(name))
    outcome = Runner(local).run(RunConfig(cluster=cluster, target="a", overrides=smoke(names), **config))
    return {r.name: r for r in outcome.results}


def test_builtin_checks_are_registered_and_load_cleanly():
    assert {"node.inventory", "node.blas", "node.stream", "node.disk", "net.pairs"} <= {
        c.name for c in registry
    }
    assert registry.import_errors == {}


def test_node_checks_pass_with_tiny_parameters(cj_cluster, cj_validator):
    results = run(cj_cluster(), NODE_CHECKS)
    expected = {
        "node.inventory": "inventory",
        "node.blas": "correctness",
        "node.blas.dgemm": "performance",
        "node.stream": "correctness",
        "node.stream.triad": "performance",
        "node.disk": "correctness",
        "node.disk.write": "performance",
        "node.disk.read": "performance",
    }
    assert {name: r.category for name, r in results.items()} == expected
    validator = cj_validator("result.schema.json")
    for name, result in results.items():
        assert result.status == PASS, (name, result.reason)
        validator.validate(result.to_dict())
        if result.category == "performance":
            assert len(result.samples) >= 5
            assert result.value == result.median > 0
            assert result.p5 <= result.median <= result.p95
    assert results["node.blas"].error < 16 and results["node.blas"].tolerance == 16
    assert results["node.stream"].error < 1e-13
    assert results["node.disk"].tolerance is None and len(results["node.disk"].observed) == 64
    assert "page cache" in results["node.disk.read"].details["page_cache"]
    dgemm = results["node.blas.dgemm"]
    assert dgemm.details["blas"]["name"]
    if dgemm.reference is not None:
        assert dgemm.reference["kind"] == "peak" and dgemm.ratio == pytest.approx(
            dgemm.value / dgemm.reference["value"]
        )
        assert "DP FLOP/cycle" in dgemm.details["peak_basis"]["assumption"]


@pytest.mark.parametrize("name", ["node.blas", "node.stream", "node.disk"])
def test_wrong_answer_control_fails_each_correctness_check(cj_cluster, name):
    results = run(cj_cluster(), [name], inject="wrong-answer")
    correctness = results[name]
    assert correctness.status == FAIL and correctness.control == "wrong-answer"
    assert "not < tolerance" in correctness.reason or "differs" in correctness.reason
    assert all(r.status == PASS for r in results.values() if r.category == "performance")


def test_dgemm_residual_catches_a_wrong_product(cj_cluster, monkeypatch):
    def off_by_a_little(a, b, out):
        np.matmul(a, b, out=out)
        out *= 1.0 + 1e-9  # far below what a GFLOP/s figure would show

    monkeypatch.setattr(node, "dgemm", off_by_a_little)
    result = run(cj_cluster(), ["node.blas"])["node.blas"]
    assert result.status == FAIL and result.error > 16


def test_stream_check_catches_one_wrong_element(cj_cluster, monkeypatch):
    def triad_with_one_bad_element(a, b, c, s):
        np.multiply(c, s, out=a)
        np.add(a, b, out=a)
        a[-1] += 1.0

    monkeypatch.setattr(node, "stream_triad", triad_with_one_bad_element)
    result = run(cj_cluster(), ["node.stream"])["node.stream"]
    assert result.status == FAIL and result.error > 1e-13


def test_disk_check_catches_a_flipped_byte(cj_cluster, monkeypatch):
    real = node._read_file

    def read_then_flip(path, buffer, block):
        seconds = real(path, buffer, block)
        buffer[12345] ^= 0x01
        return seconds

    monkeypatch.setattr(node, "_read_file", read_then_flip)
    result = run(cj_cluster(), ["node.disk"])["node.disk"]
    assert result.status == FAIL and result.observed != result.expected


def test_disk_check_errors_without_space(cj_cluster, tmp_path):
    results = run(cj_cluster(params={"node.disk": {"dir": str(tmp_path / "absent")}}), ["node.disk"])
    assert results["node.disk"].status == ERROR and "absent" in results["node.disk"].reason


def _host(**values: Any) -> list[dict[str, Any]]:
    host = {"name": "a", "address": "127.0.0.1", "groups": ["head"], "cores": 1, "memory_mb": 16}
    host.update(values)
    return [host]


def test_inventory_fails_below_declared_cores_and_memory(cj_cluster):
    result = run(cj_cluster(_host(cores=4096, memory_mb=64 * 1024 * 1024)), ["node.inventory"])[
        "node.inventory"
    ]
    assert result.status == FAIL
    assert "cores:" in result.reason and "< 4096 declared" in result.reason
    assert "memory:" in result.reason and "MiB declared" in result.reason
    assert result.expected["cores"] == 4096 and result.observed["cores"] >= 1


def test_inventory_fails_on_pinned_library_drift(cj_cluster):
    numpy_version = distribution_version("numpy")
    same = run(cj_cluster(pinned_libraries={"numpy": numpy_version}), ["node.inventory"])["node.inventory"]
    assert same.status == PASS and same.observed["libraries"] == {"numpy": numpy_version}
    pins = {"numpy": "0.0.1", "clusterforge-no-such-lib": "1.0"}
    drift = run(cj_cluster(pinned_libraries=pins), ["node.inventory"])["node.inventory"]
    assert drift.status == FAIL
    assert f"drift: numpy {numpy_version} installed, 0.0.1 pinned" in drift.reason
    assert "drift: clusterforge-no-such-lib not installed installed, 1.0 pinned" in drift.reason


def test_versions_come_from_metadata():
    versions = library_versions()
    assert versions["numpy"] == np.__version__ and versions["python"].count(".") == 2


# --- node facts from fake /proc, /sys and cgroup trees ------------------------------------------

CPUINFO_X86 = """processor\t: 0
model name\t: AMD EPYC 7B13
cpu MHz\t\t: 2450.000
flags\t\t: fpu sse sse2 avx avx2 fma avx512f bmi2
processor\t: 1
model name\t: AMD EPYC 7B13
cpu MHz\t\t: 2600.500
flags\t\t: fpu sse sse2 avx avx2 fma avx512f bmi2
"""

CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 crc32 atomics
CPU part\t: 0xd0c
"""


def _tree(tmp_path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def test_cpu_info_reads_model_flags_and_clock(tmp_path):
    proc = _tree(tmp_path / "proc", {"cpuinfo": CPUINFO_X86})
    sys_root = _tree(tmp_path / "sys", {"devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq": "3500000\n"})
    info = sysinfo.cpu_info(proc, sys_root)
    assert info["model"] == "AMD EPYC 7B13"
    assert info["simd"] == ["avx", "avx2", "avx512f", "fma", "sse2"]
    assert info["mhz"] == 2600.5 and info["max_mhz"] == 3500.0
    peak, basis = sysinfo.peak_gflops(2, info)
    assert peak == pytest.approx(2 * 3.5 * 32) and basis["clock_source"] == "cpuinfo_max_freq"
    arm = sysinfo.cpu_info(_tree(tmp_path / "arm", {"cpuinfo": CPUINFO_ARM}), str(tmp_path / "nosys"))
    assert arm["simd"] == ["asimd"] and arm["mhz"] is None
    assert sysinfo.peak_gflops(4, arm)[0] is None


@pytest.mark.parametrize(
    ("flags", "per_cycle"),
    [
        ({"avx512f", "avx2", "fma"}, 32),
        ({"avx2", "fma"}, 16),
        ({"avx"}, 8),
        ({"asimd"}, 8),
        ({"sse2"}, 4),
        (set(), 2),
    ],
)
def test_flops_per_cycle_from_simd_width(flags, per_cycle):
    value, assumption = sysinfo.flops_per_cycle(flags)
    assert value == per_cycle and f"{per_cycle} DP FLOP/cycle" in assumption


def test_cgroup_limits_v2_and_v1(tmp_path):
    v2 = _tree(tmp_path / "v2", {"cpu.max": "150000 100000\n", "memory.max": str(512 * 1024 * 1024)})
    assert sysinfo.cgroup_cpu_quota(v2) == 1.5
    assert sysinfo.cgroup_memory_limit(v2) == 512 * 1024 * 1024
    assert sysinfo.cpu_cores(v2)["effective"] <= 1.5
    unlimited = _tree(tmp_path / "u", {"cpu.max": "max 100000\n", "memory.max": "max\n"})
    assert sysinfo.cgroup_cpu_quota(unlimited) is None and sysinfo.cgroup_memory_limit(unlimited) is None
    v1 = _tree(
        tmp_path / "v1",
        {
            "cpu/cpu.cfs_quota_us": "200000",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": "9223372036854771712",
        },
    )
    assert sysinfo.cgroup_cpu_quota(v1) == 2.0 and sysinfo.cgroup_memory_limit(v1) is None
    proc = _tree(tmp_path / "proc", {"meminfo": "MemTotal:        2048000 kB\nMemFree: 1 kB\n"})
    memory = sysinfo.memory_info(proc, v2)
    assert memory["mem_total_mb"] == 2000.0 and memory["effective_mb"] == 512.0


# --- every registered check honours the controls ------------------------------------------------

CONTROLLED = {"correctness": "wrong-answer", "placement": "missing-worker", "security": "open-door"}


@pytest.fixture
def generic_cluster(cj_cluster, cj_netservers) -> Callable[[], Any]:
    """Three hosts; b and c run netservers, so net checks can run for real."""
    servers = cj_netservers(2)
    hosts = [{"name": "a", "address": "127.0.0.1", "groups": ["head"], "cores": 1, "memory_mb": 16}] + [
        {
            "name": n,
            "address": "127.0.0.1",
            "groups": ["workers"],
            "cores": 1,
            "memory_mb": 16,
            "net_port": s.port,
        }
        for n, s in zip(["b", "c"], servers, strict=True)
    ]
    return lambda: cj_cluster(hosts)


@pytest.mark.parametrize("name", sorted(cls.name for cls in registry))
def test_every_registered_check_honours_the_controls(name, generic_cluster, cj_validator):
    """Checks that can run here (no engine needed) run for real with their smoke parameters. Those
    that need an engine, a group or a door this cluster lacks must SKIP and say which (never FAIL or
    ERROR for want of it); their controls are covered by the framework-level tests with fakes."""
    validator = cj_validator("result.schema.json")
    cluster = generic_cluster()
    normal = run(cluster, [name])
    for result in normal.values():
        validator.validate(result.to_dict())
    if all(r.status == SKIP for r in normal.values()):
        check = registry.get(name)
        if check.engine:
            wanted = f"declares no engines.{check.engine}"
        elif check.groups:
            wanted = f"is not in group {' or '.join(sorted(check.groups))}"
        else:
            wanted = "declares no "
        assert all(wanted in r.reason for r in normal.values()), (wanted, normal)
        return
    judged = {n: r for n, r in normal.items() if r.category in CONTROLLED and r.status == PASS}
    if not judged:
        assert not any(r.category in CONTROLLED for r in normal.values()), normal
        return
    for control in sorted(set(CONTROLLED.values())):
        injected = run(cluster, [name], inject=control)
        for result_name, before in judged.items():
            after = injected[result_name]
            validator.validate(after.to_dict())
            if CONTROLLED[before.category] == control:
                assert after.status == FAIL, (result_name, control, after.reason)
                assert after.control == control
            else:
                assert after.status == PASS, (result_name, control, after.reason)
