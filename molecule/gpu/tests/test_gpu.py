"""The GPU tier without a GPU: OpenCL computes on PoCL, the cuda role detects, validates, configures
NVIDIA's package source, and refuses a GPU-less host or a wrong request before changing anything."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "_shared"))
from playbook import run_playbook

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
CONFIG = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
(NODE,) = (p["name"] for p in CONFIG["platforms"])
EPHEMERAL = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
VENV = "/opt/clusterforge/venv"
OPENCL_DEFAULTS = yaml.safe_load((ROOT / "roles/opencl/defaults/main.yml").read_text())
FACT = "/etc/ansible/facts.d/clusterforge_gpu.fact"
SOURCE = "/etc/apt/sources.list.d/cuda.sources"
PIN = "/etc/apt/preferences.d/clusterforge-cuda.pref"
KEYRING = "/etc/apt/keyrings/cuda-archive-keyring.asc"
# apt-get update of one source only, keeping the package lists of the others.
ONLY_ONE_SOURCE = "-o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 -o APT::Update::Error-Mode=any"
MIRROR = CONFIG["provisioner"]["inventory"]["group_vars"]["gpu_nodes"]["cuda_nvidia_repo_url"]

VECTOR_ADD = textwrap.dedent(
    """
    import numpy as np, pyopencl as cl
    n = 1 << 20
    rng = np.random.default_rng(7)
    a = rng.integers(-2**30, 2**30, n, dtype=np.int32)
    b = rng.integers(-2**30, 2**30, n, dtype=np.int32)
    devices = [d for p in cl.get_platforms() for d in p.get_devices()]
    for device in devices:
        ctx = cl.Context([device])
        queue = cl.CommandQueue(ctx)
        mf = cl.mem_flags
        a_buf = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)
        b_buf = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=b)
        c_buf = cl.Buffer(ctx, mf.WRITE_ONLY, a.nbytes)
        src = "__kernel void add(__global const int *a, __global const int *b, __global int *c)"
        src += "{ size_t i = get_global_id(0); c[i] = a[i] + b[i]; }"
        cl.Program(ctx, src).build().add(queue, (n,), None, a_buf, b_buf, c_buf)
        c = np.empty_like(a)
        cl.enqueue_copy(queue, c, c_buf).wait()
        print(device.platform.name, "|", device.name, "|", int(np.count_nonzero(c != a + b)), "|", n)
    """
)


# --- OpenCL on PoCL, on every node ------------------------------------------------------------------


def test_clinfo_lists_the_pocl_device(host):
    listing = host.check_output("clinfo --list")
    platforms = re.findall(r"^Platform #\d+: (.+)$", listing, re.MULTILINE)
    devices = re.findall(r"^ [`+]-- Device #\d+: (.+)$", listing, re.MULTILINE)
    assert platforms == ["Portable Computing Language"], listing
    assert len(devices) == 1, listing


def test_pyopencl_computes_an_exact_vector_add_in_the_venv(host):
    host.run("install -d -m 0700 /root/gpu-test")
    host.run("echo %s | base64 -d > /root/gpu-test/vadd.py", base64.b64encode(VECTOR_ADD.encode()).decode())
    result = host.run("cd /root/gpu-test && %s/bin/python vadd.py", VENV)
    assert result.rc == 0, result.stderr
    lines = [line.split(" | ") for line in result.stdout.strip().splitlines()]
    assert len(lines) == 1, result.stdout
    platform, device, wrong, total = lines[0]
    assert platform == "Portable Computing Language" and device
    assert (int(wrong), int(total)) == (0, 1 << 20)


def test_pyopencl_is_the_pinned_version(host):
    pins = dict(p.split("==") for p in OPENCL_DEFAULTS["opencl_python_packages"])
    version = host.check_output("%s/bin/python -c 'import pyopencl; print(pyopencl.VERSION_TEXT)'", VENV)
    assert version == pins["pyopencl"]


def test_only_the_pocl_icd_is_registered(host):
    assert host.file("/etc/OpenCL/vendors/pocl.icd").exists
    assert not host.file("/etc/OpenCL/vendors/nvidia.icd").exists


# --- the cuda role on the GPU node ---------------------------------------------------------------


def test_detection_is_recorded_and_agrees_with_the_pci_bus(host):
    fact = json.loads(host.file(FACT).content_string)
    on_bus = host.check_output(
        "for d in /sys/bus/pci/devices/*; do "
        'v=$(cat "$d/vendor"); c=$(cat "$d/class"); '
        'case "$v:$c" in 0x10de:0x0300*|0x10de:0x0302*) echo "${d##*/}";; esac; done'
    ).split()
    assert fact["managed_by"] == "clusterforge role cuda"
    assert fact["gpu_count"] == len(on_bus) == 0
    assert fact["pci"] == [] and fact["gpus"] == []
    assert fact["driver_version"] is None and fact["cuda_version"] is None
    assert fact["driver_source"] == "nvidia" and fact["cuda_major_version"] == 13
    assert host.file(FACT).mode == 0o644


def test_nvidia_source_is_rendered_as_deb822_with_the_pinned_key(host):
    fields = dict(
        line.split(": ", 1) for line in host.file(SOURCE).content_string.splitlines() if ": " in line
    )
    assert fields["Types"] == "deb"
    assert fields["URIs"] == MIRROR
    assert fields["Suites"] == "/"
    assert fields["Architectures"] == "amd64"
    assert fields["Signed-By"] == KEYRING
    want = (EPHEMERAL / "mirror-key.sha256").read_text().strip()
    key = host.file(KEYRING)
    assert key.mode == 0o644 and key.user == "root"
    assert "sha256:" + key.sha256sum == want
    pin = host.file(PIN).content_string
    assert "Pin: version 580.95.05-*" in pin and "Pin-Priority: 1001" in pin
    assert re.search(r"^Package: .*\bnvidia-\*.*\blibcuda\*", pin, re.MULTILINE)
    # apt reads the pin without complaint, fetches the mirror and accepts its signature only
    # through the pinned key (the key is in no keyring apt trusts by default).
    host.run("rm -f /var/lib/apt/lists/_srv_mirror_cuda_InRelease")
    update = host.run(f"apt-get update {ONLY_ONE_SOURCE} -o Dir::Etc::sourcelist=%s", SOURCE)
    assert update.rc == 0 and "file:/srv/mirror/cuda  InRelease" in update.stdout, (
        update.stdout + update.stderr
    )
    assert (
        "Origin: clusterforge molecule mirror"
        in host.file("/var/lib/apt/lists/_srv_mirror_cuda_InRelease").content_string
    )


def test_the_mirror_signature_is_checked_with_the_pinned_key(host):
    """The same mirror with Signed-By pointing at another key is refused by apt."""
    host.run("install -d -m 0755 /root/gpu-test")
    source = "/root/gpu-test/cuda-wrong-key.sources"
    host.run(
        "sed 's#^Signed-By: .*#Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg#' %s > %s",
        SOURCE,
        source,
    )
    try:
        update = host.run(f"apt-get update {ONLY_ONE_SOURCE} -o Dir::Etc::sourcelist=%s", source)
    finally:
        host.run("rm -f %s", source)
    assert update.rc != 0 or "not signed" in update.stderr or "NO_PUBKEY" in update.stderr, update.stderr


def test_nothing_of_the_driver_is_installed(host):
    for package in ("nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-driver", "cuda-drivers"):
        assert not host.package(package).is_installed, package
    assert not host.file("/sys/module/nvidia").exists


# --- the GPU playbook refuses wrong hosts and wrong requests, before any change -------------------

REFUSALS = {
    "no GPU with the defaults": (
        {},
        "is in the GPU group but has no NVIDIA GPU: no PCI function with vendor 0x10de",
    ),
    "wrong type": (
        {"cuda_major_version": "thirteen"},
        "argument 'cuda_major_version' is of type str and we were unable to convert to int",
    ),
    "CuPy for CUDA 12 on a CUDA 13 node": (
        {"@mirror": True, "cuda_python_install": True, "cuda_python_packages": ["cupy-cuda12x==14.2.0"]},
        "these Python packages are built for another CUDA major version than cuda_major_version 13: "
        "cupy-cuda12x==14.2.0",
    ),
    "CUDA 13 on a CUDA 12.9 driver": (
        {"@mirror": True, "cuda_driver_version": "575.57.08"},
        "driver 575.57.08 (nvidia) supports CUDA 12.9 at most, but cuda_major_version is 13",
    ),
    "CUDA 13 on Debian's driver": (
        {"cuda_require_gpu": False},
        "(distro) supports CUDA 12.",
    ),
    "DCGM on the host that runs Flower": (
        {"@mirror": True, "@groups": ["celery_broker"], "cuda_dcgm_enabled": True},
        "DCGM's nv-hostengine and Flower would both listen on 127.0.0.1:5555",
    ),
    "a key that does not match its pinned checksum": (
        {"@mirror": True, "cuda_nvidia_repo_key_checksum": "sha256:" + "0" * 64},
        "did not match",
    ),
}


def _mirror_vars() -> dict:
    """The scenario's gpu_nodes variables, lookups resolved."""
    gpu_vars = dict(CONFIG["provisioner"]["inventory"]["group_vars"]["gpu_nodes"])
    gpu_vars["cuda_nvidia_repo_key_checksum"] = (EPHEMERAL / "mirror-key.sha256").read_text().strip()
    gpu_vars["cuda_nvidia_repo_key_fingerprint"] = (EPHEMERAL / "mirror-key.fpr").read_text().strip()
    return gpu_vars


def _playbook(workdir: pathlib.Path, extra: dict, groups: tuple[str, ...] = ()) -> str:
    """playbooks/gpu.yml (cuda play) against the node in gpu_nodes (and GROUPS) with ``extra``; its
    output."""
    workdir.mkdir(parents=True)
    inventory = {
        "all": {
            "vars": {"ansible_connection": "containers.podman.podman", "cluster_venv_dir": VENV},
            "children": {group: {"hosts": {NODE: {}}} for group in ("gpu_nodes", *groups)},
        }
    }
    (workdir / "hosts.yml").write_text(yaml.safe_dump(inventory))
    rc, output = run_playbook(
        "playbooks/gpu.yml",
        workdir / "hosts.yml",
        workdir,
        extra,
        args=("--tags", "cuda"),
        env={"ANSIBLE_GATHER_SUBSET": "!all,min"},
        timeout=600,
    )
    return f"rc={rc}\n{output}"


def _node_state() -> str:
    """Digest of everything the cuda role writes on the node."""
    files = f"{FACT} {SOURCE} {PIN} {KEYRING}"
    listing = subprocess.run(
        ["podman", "exec", NODE, "sh", "-c", f"sha256sum {files}; ls -l /etc/apt/sources.list.d"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CONTAINERS_CONF": str(ROOT / "lab/containers.conf")},
    )
    return hashlib.sha256(listing.stdout.encode()).hexdigest()


@pytest.fixture(scope="module")
def refusals(tmp_path_factory) -> dict[str, str]:
    """Every refusal case, run side by side (each is a short, mostly waiting, ansible-playbook)."""
    if os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY") is None:
        pytest.skip("runs under molecule verify, against the converged node")
    mirror = _mirror_vars()
    base = tmp_path_factory.mktemp("refusals")
    jobs = {}
    before = _node_state()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(REFUSALS)) as pool:
        for index, (case, (extra, _)) in enumerate(REFUSALS.items()):
            extra = dict(extra)
            groups = tuple(extra.pop("@groups", ()))
            if extra.pop("@mirror", False):
                extra = {**mirror, **extra}
            jobs[case] = pool.submit(_playbook, base / f"case{index}", extra, groups)
        outputs = {case: job.result() for case, job in jobs.items()}
    outputs["@unchanged"] = str(_node_state() == before)
    return outputs


@pytest.mark.parametrize("case", list(REFUSALS))
def test_playbook_refuses_before_any_change(case, refusals):
    output = refusals[case]
    assert not output.startswith("rc=0\n"), output[-3000:]
    assert REFUSALS[case][1] in " ".join(output.split()), output[-3000:]
    recap = re.search(rf"^{re.escape(NODE)}\s+:\s+(.*)$", output, re.MULTILINE)
    assert recap, output[-3000:]
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}
    assert counts["failed"] == 1 and counts["changed"] == 0, counts


def test_refusals_left_the_node_as_it_was(refusals):
    assert refusals["@unchanged"] == "True"
