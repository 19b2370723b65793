"""Bad input to the entry points fails clearly, with a non-zero exit, before any change."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml
from pathload import load

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAB = ROOT / "scripts" / "lab"
PODMAN = shutil.which("podman")


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def lab_containers(name: str) -> list[str]:
    out = run([PODMAN, "ps", "-aq", "--filter", f"label=io.clusterforge.lab={name}"])
    return out.stdout.split()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes must be a whole number from 1 to 16 (got '0')"),
        (["--nodes", "three"], "--nodes must be a whole number"),
        (["--distro", "debian11"], "unknown distro 'debian11': choose debian13 or debian12"),
        (["--bogus"], "unknown option for up: --bogus"),
    ],
)
def test_lab_up_rejects_bad_arguments_before_any_change(args, message):
    env = {"CF_LAB_NAME": "argcheck", "CONTAINERS_CONF": str(ROOT / "lab/containers.conf")}
    result = run([str(LAB), "up", "--no-converge", *args], env=env)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (ROOT / ".lab/inventories/argcheck").exists()
    if PODMAN:
        assert lab_containers("argcheck") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seconds", "0"], "--seconds must be a whole number of seconds > 0, got '0'"),
        (["--seconds", "a minute"], "--seconds must be a whole number"),
        (["--top"], "unknown option for idle: --top"),
    ],
)
def test_lab_idle_rejects_bad_arguments(args, message):
    result = run([str(LAB), "idle", *args], env={"CF_LAB_NAME": "argcheck"})
    assert result.returncode != 0
    assert message in result.stderr


def test_lab_idle_without_nodes_says_to_start_the_lab():
    if not PODMAN:
        pytest.skip("needs podman")
    result = run([str(LAB), "idle", "--seconds", "1"], env={"CF_LAB_NAME": "idlenone"})
    assert result.returncode != 0
    assert "no running node of lab 'idlenone': run scripts/lab up first" in result.stderr


def test_lab_refuses_to_run_unprivileged():
    if os.geteuid() != 0:
        result = run([str(LAB), "up", "--no-converge"])
    else:
        result = run(["runuser", "-u", "nobody", "--", "bash", str(LAB), "up", "--no-converge"])
    assert result.returncode != 0
    assert "run scripts/lab as root" in result.stderr


def test_lab_rejects_a_bad_lab_name():
    result = run([str(LAB), "status"], env={"CF_LAB_NAME": "Bad_Name"})
    assert result.returncode != 0
    assert "CF_LAB_NAME must be" in result.stderr


def test_bootstrap_without_a_suitable_python_says_how_to_get_one(tmp_path):
    only_old = tmp_path / "bin"
    only_old.mkdir()
    for tool in ("bash", "env", "sha256sum", "cut", "cat", "grep", "id", "dpkg-query", "dirname", "sort"):
        found = shutil.which(tool)
        if found:
            (only_old / tool).symlink_to(found)
    result = run(
        [str(ROOT / "scripts/bootstrap")],
        env={"PATH": str(only_old), "CF_VENV": str(tmp_path / "venv"), "PYTHON": ""},
    )
    assert result.returncode == 2, result.stderr
    assert "no Python >= 3.12 found" in result.stderr
    assert "PYTHON=/path/to/python3.12 scripts/bootstrap" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_bootstrap_rejects_an_old_python_given_explicitly(tmp_path):
    old = "/usr/bin/python3"
    if not pathlib.Path(old).exists():
        pytest.skip("no system python3 at /usr/bin/python3 to stand in for an old interpreter")
    version = run([old, "-c", "import sys; print(sys.version_info >= (3, 12))"]).stdout.strip()
    if version == "True":
        pytest.skip("/usr/bin/python3 is already >= 3.12 on this host")
    result = run([str(ROOT / "scripts/bootstrap")], env={"CF_VENV": str(tmp_path / "venv"), "PYTHON": old})
    assert result.returncode != 0
    assert f"$PYTHON={old} is not a working Python >= 3.12" in result.stderr


@pytest.mark.parametrize(
    ("extra_vars", "variable"),
    [
        ("common_service_uid=abc", "common_service_uid"),
        ('{"common_manage_hostname": "perhaps"}', "common_manage_hostname"),
        ('{"common_venv_packages": {"numpy": "2.2.6"}}', "common_venv_packages"),
    ],
)
def test_wrong_input_type_fails_before_any_change(tmp_path, extra_vars, variable):
    """Runs in --check mode against this machine over a local connection, so that even a
    broken validation could not change anything here."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    probe:\n      ansible_connection: local\n      cluster_address: 127.0.0.1\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
        "  children:\n    head:\n      hosts:\n        probe:\n    workers:\n      hosts:\n        probe:\n"
        "  vars:\n    cluster_name: probe\n"
        f"    cluster_secrets_dir: {tmp_path}/secrets\n"
    )
    result = run(
        [
            str(ROOT / ".venv/bin/ansible-playbook"),
            "-i",
            str(inventory),
            "playbooks/common.yml",
            "--check",
            "-e",
            extra_vars,
        ],
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"},
    )
    assert result.returncode != 0
    assert "Validating arguments against arg spec" in result.stdout
    assert variable in result.stdout
    assert "changed=0" in result.stdout
    assert not (tmp_path / "secrets").exists()


def test_missing_required_group_is_named(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    probe:\n      ansible_connection: local\n      cluster_address: 127.0.0.1\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
        "  children:\n    head:\n      hosts:\n        probe:\n"
        "  vars:\n    cluster_name: probe\n"
        f"    cluster_secrets_dir: {tmp_path}/secrets\n"
    )
    result = run(
        [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inventory), "playbooks/common.yml", "--check"],
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"},
    )
    assert result.returncode != 0
    assert "inventory group 'workers' is missing or empty" in result.stdout
    assert not (tmp_path / "secrets").exists()


def test_an_unreachable_package_cache_is_named_with_its_off_switch(tmp_path):
    """The nodes' check of the cache, against a port nothing listens on; --check, local connection."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    probe:\n      ansible_connection: local\n      cluster_address: 127.0.0.1\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
        "    cachehost:\n      cluster_address: 127.0.0.1\n"
        "  children:\n    head:\n      hosts:\n        cachehost:\n"
        "  vars:\n    package_cache_enabled: true\n    package_cache_port: 9\n"
        "    package_cache_check_timeout: 2\n"
        f"    cluster_secrets_dir: {tmp_path}/secrets\n"
    )
    result = run(
        [
            str(ROOT / ".venv/bin/ansible-playbook"),
            *("-i", str(inventory), "playbooks/package_cache.yml", "--check", "--limit", "probe"),
        ],
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"},
    )
    assert result.returncode != 0
    assert "the package cache http://127.0.0.1:9/ (apt-cacher-ng on cachehost" in result.stdout
    assert "set package_cache_enabled: false" in result.stdout
    assert "changed=0" in result.stdout
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize(("changed", "ok"), [(0, True), (2, False)])
@pytest.mark.parametrize(
    ("label", "call"), [("noop", "noop_figure 3"), ("check", "changed_figure check 'check run, 3 nodes'")]
)
def test_lab_up_prints_the_noop_and_check_figures_and_fails_on_changes(changed, ok, label, call):
    summary = ROOT / ".lab" / f"{label}-noopcheck.json"
    summary.parent.mkdir(exist_ok=True)
    tasks = [f"cf-noopcheck-1: Task {i}" for i in range(changed)]
    summary.write_text(json.dumps({"elapsed_s": 12.5, "changed": changed, "changed_tasks": tasks}))
    try:
        script = f"source {LAB}; ensure_venv; ANSIBLE_STRATEGY=mitogen_linear; {call}"
        result = run(["bash", "-c", script], env={"CF_LAB_NAME": "noopcheck"})
    finally:
        summary.unlink()
    assert (
        f"3 nodes{', mitogen_linear)' if label == 'noop' else ''}: 12.5 s, changed={changed}" in result.stderr
    )
    assert (result.returncode == 0) is ok
    if not ok:
        assert "cf-noopcheck-1: Task 1" in result.stderr
        assert f"the {label} run changed 2 things" in result.stderr


@pytest.mark.parametrize(
    ("converged", "ok"),
    [
        ({}, True),
        ({"common": "cf-noopcheck-1: cluster_fast_converge is off"}, True),
        ({"dask": "cf-noopcheck-2: the node changed since the last converge (/etc/x: changed, ...)"}, False),
    ],
)
def test_the_noop_fails_when_a_tier_converges_again(converged, ok):
    """Right after a converge, the fast path must find every tier unchanged (unless it is off)."""
    summary = ROOT / ".lab" / "noop-noopfast.json"
    summary.parent.mkdir(exist_ok=True)
    summary.write_text(
        json.dumps({"elapsed_s": 9.5, "changed": 0, "changed_tasks": [], "converged_tiers": converged})
    )
    try:
        script = f"source {LAB}; ensure_venv; ANSIBLE_STRATEGY=mitogen_linear; noop_figure 3"
        result = run(["bash", "-c", script], env={"CF_LAB_NAME": "noopfast"})
    finally:
        summary.unlink()
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert "converged tiers again: dask (cf-noopcheck-2: the node changed" in result.stderr


SCALE_INVENTORY = (
    "all:\n  hosts:\n    n1:\n      cluster_address: 10.9.9.1\n    n2:\n      cluster_address: 10.9.9.2\n"
    "    n3:\n      cluster_address: 10.9.9.3\n"
    "  children:\n    head:\n      hosts:\n        n1:\n"
    "    workers:\n      hosts:\n        n2:\n        n3:\n"
    "    dask_scheduler:\n      hosts:\n        n1:\n"
    "    dask_workers:\n      children:\n        workers:\n"
)


@pytest.mark.parametrize(
    ("remove", "extra", "message"),
    [
        ("", [], "it is empty"),
        ("n4", [], "not in the inventory: n4"),
        ("n3,n1", [], "these run a single service of the cluster"),
        ("n2,n3", [], "it would leave these groups without hosts: workers, dask_workers"),
        ("n3", ["-e", "scale_spark_drain_timeout=soon"], "scale_spark_drain_timeout must be a whole number"),
    ],
)
def test_scale_refuses_hosts_it_cannot_drain_before_any_change(tmp_path, remove, extra, message):
    """playbooks/scale.yml stops in its first play (localhost) when scale_remove is not a list of
    worker-only hosts of the inventory; no node is contacted (the hosts here do not exist)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(SCALE_INVENTORY)
    result = run(
        [
            str(ROOT / ".venv/bin/ansible-playbook"),
            "-i",
            str(inventory),
            "playbooks/scale.yml",
            "-e",
            f"scale_remove={remove}",
            *extra,
        ],
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"},
    )
    assert result.returncode != 0
    assert "scale_remove must name hosts of this inventory" in result.stdout
    assert message in result.stdout
    assert "n2 " not in result.stdout.split("PLAY RECAP")[-1], "a node was contacted"


def test_a_node_created_again_loses_its_cached_facts_and_only_its_own():
    """The jsonfile fact cache names its files <prefix>_<host>: a recreated node's old SSH host key
    must not come back from it into the other nodes' known hosts."""
    facts = ROOT / ".cache" / "facts"
    facts.mkdir(parents=True, exist_ok=True)
    names = ["s1_cf-forget-1", "cf-forget-1", "s1_cf-forget-11", "s1_cf-forget-2"]
    for name in names:
        (facts / name).write_text("{}")
    try:
        result = run(["bash", "-c", f"source {LAB}; forget_facts cf-forget-1"])
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in facts.glob("*cf-forget-*")) == ["s1_cf-forget-11", "s1_cf-forget-2"]
    finally:
        for name in names:
            (facts / name).unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("upgrade_idle_timeout=soon", "got 'soon'"),
        ("upgrade_idle_timeout=0", "got '0'"),
        ("upgrade_prove=maybe", "got 'maybe'"),
    ],
)
def test_upgrade_refuses_bad_input_before_any_change(tmp_path, extra, message):
    """playbooks/upgrade.yml stops in its first play (localhost) on bad input; no node is
    contacted (the hosts here do not exist)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(SCALE_INVENTORY)
    playbook = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inventory), "playbooks/upgrade.yml"]
    result = run(
        [*playbook, "-e", extra],
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"},
    )
    assert result.returncode != 0
    assert "upgrade.yml needs exactly one host in group head" in result.stdout
    assert message in result.stdout
    assert "n2 " not in result.stdout.split("PLAY RECAP")[-1], "a node was contacted"


def test_upgrade_without_a_head_node_is_refused(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(SCALE_INVENTORY.replace("    head:\n      hosts:\n        n1:\n", ""))
    result = run(
        [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inventory), "playbooks/upgrade.yml"],
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"},
    )
    assert result.returncode != 0
    assert "found 0" in result.stdout


BENCH = ROOT / "scripts" / "bench"


def test_bench_help_tells_every_option_and_the_every_task_re_converge():
    result = run([str(BENCH), "--help"], env={"CF_LAB_NAME": "argcheck"})
    assert result.returncode == 0, result.stderr
    assert "scripts/bench [--nodes N] [--keep] [--no-noop] [--reuse]" in result.stdout
    assert "runs every task of every tier" in result.stdout
    # The usage ends with the header: no code after it.
    assert "set -euo pipefail" not in result.stdout


BENCH_SPARK = ROOT / "scripts" / "bench-spark"


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        (BENCH, ["--nodes", "0"], "--nodes must be a whole number from 1 to"),
        (BENCH, ["--nodes", "x"], "--nodes must be a whole number from 1 to"),
        (BENCH, ["--bogus"], "unknown option --bogus"),
        (BENCH_SPARK, ["--runs", "0"], "--runs needs a whole number of at least 1 (got '0')"),
        (BENCH_SPARK, ["--runs", "two"], "--runs needs a whole number"),
        (BENCH_SPARK, ["--bogus"], "unknown option --bogus"),
    ],
)
def test_the_benches_reject_bad_arguments(script, args, message):
    result = run([str(script), *args], env={"CF_LAB_NAME": "argcheck"})
    assert result.returncode != 0
    assert message in result.stderr


def fake_podman(tmp_path: pathlib.Path, job_line: str) -> dict[str, str]:
    """A podman that knows one running head node and answers the bench's job with JOB_LINE."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(
        "#!/bin/bash\n"
        'case "$1" in\n'
        '  inspect) [[ "${@: -1}" == cf-benchfake-1 ]] && echo true || exit 125 ;;\n'
        "  cp) ;;\n"
        f'  exec) if [[ "$*" == *runuser* ]]; then echo {json.dumps(job_line)}; fi ;;\n'
        "esac\n"
    )
    (bin_dir / "runc").write_text("#!/bin/sh\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_bench_spark_names_the_missing_lab(tmp_path):
    env = fake_podman(tmp_path, "{}") | {"CF_LAB_NAME": "nolab"}
    result = run([str(BENCH_SPARK), "--runs", "1"], env=env)
    assert result.returncode != 0
    assert "no running lab head node cf-nolab-1: run scripts/lab up first" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the bench, like the lab, runs as root")
@pytest.mark.parametrize("ok", [True, False])
def test_bench_spark_prints_both_ways_and_fails_on_a_wrong_answer(tmp_path, ok):
    line = json.dumps({"wall_s": 1.0, "ok": ok, "hosts": ["w1", "w2"]})
    figure = ROOT / ".lab/bench-spark-benchfake.json"
    figure.unlink(missing_ok=True)
    try:
        env = fake_podman(tmp_path, line) | {"CF_LAB_NAME": "benchfake"}
        result = run([str(BENCH_SPARK), "--runs", "2"], env=env)
        assert result.stdout.count("TieredStopAtLevel=4") == 2
        assert result.stdout.count("TieredStopAtLevel=1") == 2
        if ok:
            assert result.returncode == 0, result.stderr
            assert "C1 only / tiered: wall" in result.stdout
            assert set(json.loads(figure.read_text())) >= {"tiered", "c1_only", "wall_ratio", "cpu_ratio"}
        else:
            assert result.returncode != 0
            assert "a run computed a wrong answer" in result.stderr
            assert not figure.exists()
    finally:
        figure.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("inspect", "reason"),
    [
        ("true abc 4294967296", None),
        ("false abc 4294967296", "not running"),
        ("", "not running"),
        ("true def 4294967296", "built from image def, this run starts nodes from abc"),
        ("true abc 1073741824", "memory 1073741824 bytes, this run asks for 4294967296"),
    ],
)
def test_lab_says_why_a_node_is_recreated(tmp_path, inspect, reason):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    podman = bin_dir / "podman"
    podman.write_text(f'#!/bin/bash\ncase "$1" in\n  inspect) echo "{inspect}" ;;\n  exec) exit 0 ;;\nesac\n')
    podman.chmod(0o755)
    script = (
        "source scripts/lab; "
        'if node_healthy cf-why-2 abc debian13; then echo rc=0; else echo "rc=1 ${NODE_UNFIT}"; fi'
    )
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CF_LAB_NAME": "why", "CF_LAB_MEMORY_MB": "4096"}
    result = run(["bash", "-c", script], env=env)
    if reason is None:
        assert result.stdout.strip() == "rc=0", result.stderr
    else:
        assert result.stdout.startswith("rc=1 "), result.stderr
        assert reason in result.stdout


def test_lab_keeps_the_head_nodes_package_cache_in_a_volume_of_its_own(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    podman = bin_dir / "podman"
    calls = tmp_path / "calls"
    podman.write_text(f'#!/bin/bash\n[[ "$1" == run ]] && echo "$*" >>{calls}\nexit 0\n')
    podman.chmod(0o755)
    script = "source scripts/lab; start_node 1 debian13 abc; start_node 2 debian13 abc"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CF_LAB_NAME": "vol"}
    result = run(["bash", "-c", script], env=env)
    assert result.returncode == 0, result.stderr
    head, worker = calls.read_text().splitlines()
    volume = "-v clusterforge-apt-cache-vol-debian13:/var/cache/clusterforge-apt"
    assert volume in head
    assert "-v clusterforge-pip-proxy-vol-debian13:/var/cache/clusterforge-pip" in head
    # The lab's package cache keeps its Debian and Python packages there.
    lab_vars = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/package_cache.yml").read_text())
    assert lab_vars["package_cache_dir"] == "/var/cache/clusterforge-apt"
    assert lab_vars["package_cache_pip_dir"] == "/var/cache/clusterforge-pip"
    assert "clusterforge-apt" not in worker and "clusterforge-pip-proxy" not in worker
    # Both keep the shared pip cache.
    assert "-v clusterforge-pip-cache-debian13:/root/.cache/pip" in head
    assert "-v clusterforge-pip-cache-debian13:/root/.cache/pip" in worker


@pytest.mark.parametrize(
    ("rm_fails", "ok"),
    [(0, True), (1, True), (3, True), (99, False)],
)
def test_scenario_teardown_survives_podmans_stop_race(tmp_path, rm_fails, ok):
    # A podman whose `rm -f` fails the first RM_FAILS times (the race: the container stopped by
    # itself between the stop signal and the kill, and stays "stopped" until its exit is cleaned
    # up, which took more than one retry in CI) and removes the instances after that.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gone, tries, calls = tmp_path / "gone", tmp_path / "tries", tmp_path / "calls"
    (bin_dir / "podman").write_text(
        "#!/bin/bash\n"
        f'echo "$*" >>{calls}\n'
        'case "$1" in\n'
        f"  ps) [[ -e {gone} ]] || printf 'aaa\\nbbb\\n' ;;\n"
        f"  rm) n=$(($(cat {tries} 2>/dev/null || echo 0) + 1)); echo $n >{tries}\n"
        f"      if ((n <= {rm_fails})); then echo 'container state improper: stopped' >&2; exit 125; fi\n"
        f"      touch {gone} ;;\n"
        f"  container) [[ ! -e {gone} ]] ;;\n"
        "  network) exit 1 ;;\n"
        "esac\n"
    )
    (bin_dir / "podman").chmod(0o755)
    (bin_dir / "sleep").write_text(f'#!/bin/bash\necho "sleep $*" >>{calls}\n')
    (bin_dir / "sleep").chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    function = subprocess.run(
        ["sed", "-n", "/^scenario_down() {/,/^}/p", str(ROOT / "scripts/test")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    script = f"source scripts/lib.sh\n{function}\nscenario_down celery {state} && echo DOWN"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = run(["bash", "-c", script], env=env)
    if ok:
        assert result.stdout.strip() == "DOWN", result.stderr
        assert not state.exists()
    else:
        assert "DOWN" not in result.stdout
        assert "scenario celery: podman could not remove aaa bbb: container state improper" in result.stderr
        assert state.exists()
    # Every retry waits longer than the one before, then cleans up the exits of what is left.
    log = calls.read_text().splitlines()
    retries = min(rm_fails, 4)
    assert [line for line in log if line.startswith("sleep")] == [f"sleep {n}" for n in range(1, retries + 1)]
    assert log.count("container cleanup aaa bbb") == retries
    assert result.stderr.count("note: scenario celery: podman rm: container state improper") == retries


@pytest.mark.parametrize(
    ("stop_rc", "running", "ok"),
    [(0, "true", True), (125, "false", True), (125, "true", False)],
)
def test_a_layer_containers_stop_counts_the_stop_podman_lost_the_race_on(tmp_path, stop_rc, running, ok):
    # podman stop failing ("container state improper: stopped") on a container that did stop.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(
        f'#!/bin/bash\ncase "$1" in\n  stop) exit {stop_rc} ;;\n  container) echo {running} ;;\nesac\n'
    )
    (bin_dir / "podman").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = run(["bash", "-c", "source scripts/lib.sh; stop_container cf-layer-x && echo STOPPED"], env=env)
    assert ("STOPPED" in result.stdout) == ok


def test_a_test_run_ends_with_its_verdict():
    """scripts/test's last line names the steps that FAILed (the summary above it ends with the total)."""
    results = [
        "PASS  ruff (0 s)",
        "FAIL  lab: every tier, verification, negative control (859 s)",
        "FAIL  unit tests (3 s)",
    ]
    script = 'source scripts/lib.sh; verdict "$@"'
    failed = subprocess.run(
        ["bash", "-c", script, "verdict", *results], cwd=ROOT, capture_output=True, text=True
    )
    assert failed.stdout == "FAILED: lab: every tier, verification, negative control; unit tests\n"
    passed = subprocess.run(
        ["bash", "-c", script, "verdict", *results[:1]], cwd=ROOT, capture_output=True, text=True
    )
    assert passed.stdout == "PASSED: every step (1)\n"
    assert 'verdict "${results[@]}"\nexit "${failed}"' in (ROOT / "scripts/test").read_text()


@pytest.mark.parametrize(
    ("args", "path", "message"),
    [
        (["--bogus"], None, "gpu-validate: unknown argument --bogus"),
        (["--wheels"], None, "gpu-validate: --wheels needs a value"),
        ([], "/usr/bin:/bin", "nvidia-smi is not here: this runs on a host with an NVIDIA GPU"),
    ],
)
def test_gpu_validate_rejects_bad_input_and_a_host_without_a_gpu(args, path, message, tmp_path):
    env = {"PATH": path} if path else {}
    out = run([str(ROOT / "scripts" / "gpu-validate"), "--out", str(tmp_path / "out"), *args], env=env)
    assert out.returncode == 2, out
    assert message in out.stderr
    assert not (tmp_path / "out").exists()


def test_role_docs_finds_a_default_that_the_argument_spec_documents_otherwise(tmp_path):
    """scripts/role_docs.py --check: a literal default that differs between defaults/main.yml and
    meta/argument_specs.yml is drift (a templated one is Ansible's to evaluate and is not compared)."""
    role_docs = load("role_docs", ROOT / "scripts" / "role_docs.py")
    role = tmp_path / "demo"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    options = {
        "demo_packages": {"type": "list", "elements": "str", "default": ["a==1"], "description": "pins"},
        "demo_dir": {"type": "str", "default": "/opt/demo", "description": "where"},
    }
    (role / "meta/argument_specs.yml").write_text(
        yaml.safe_dump({"argument_specs": {"main": {"options": options}}})
    )
    (role / "defaults/main.yml").write_text(
        yaml.safe_dump({"demo_packages": ["a==1", "b==2"], "demo_dir": "{{ cluster_dir }}/demo"})
    )
    problems = role_docs.problems_of(role, write=True)
    assert problems == [
        "demo: input demo_packages defaults to ['a==1', 'b==2'] in defaults/main.yml but "
        "meta/argument_specs.yml says ['a==1']"
    ]
    options["demo_packages"]["default"] = ["a==1", "b==2"]
    (role / "meta/argument_specs.yml").write_text(
        yaml.safe_dump({"argument_specs": {"main": {"options": options}}})
    )
    assert role_docs.problems_of(role, write=True) == []
