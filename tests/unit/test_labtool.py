"""scripts/labtool.py: the lab inventory, the mitogen pair check and the runner progress lines."""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml
from pathload import load

ROOT = pathlib.Path(__file__).resolve().parents[2]
labtool = load("labtool", ROOT / "scripts" / "labtool.py")

LOCK = "ansible-core==2.21.5\nmitogen==0.3.54\n"
GROUPS = ["head=head", "workers=workers", "gpu_nodes=none", "mpi_hosts=all", "storage_server=head"]


def write_inventory(tmp_path: pathlib.Path, nodes: int) -> dict:
    out = tmp_path / "hosts.yml"
    args = ["inventory", "--out", str(out), "--prefix", "cf-t", "--nodes", str(nodes)]
    args += ["--address-base", "10.9.8", "--distro", "debian13", "--key", "/k", "--known-hosts", "/kh"]
    args += ["--memory-mb", "2048", "--head-memory-mb", "3072", "--cores", "2"]
    for group in GROUPS:
        args += ["--group", group]
    labtool.main(args)
    return yaml.safe_load(out.read_text())


def test_inventory_declares_addresses_memory_and_groups(tmp_path):
    inventory = write_inventory(tmp_path, 6)["all"]
    assert list(inventory["hosts"]) == [f"cf-t-{i}" for i in range(1, 7)]
    assert inventory["hosts"]["cf-t-6"] == {
        "ansible_host": "10.9.8.16",
        "cluster_address": "10.9.8.16",
        "node_cores": 2,
        "node_memory_mb": 2048,
    }
    assert inventory["hosts"]["cf-t-1"]["node_memory_mb"] == 3072
    groups = inventory["children"]
    assert list(groups["head"]["hosts"]) == ["cf-t-1"]
    assert list(groups["workers"]["hosts"]) == [f"cf-t-{i}" for i in range(2, 7)]
    assert groups["gpu_nodes"]["hosts"] == {}
    assert len(groups["mpi_hosts"]["hosts"]) == 6
    assert list(groups["storage_server"]["hosts"]) == ["cf-t-1"]
    assert "StrictHostKeyChecking=yes" in inventory["vars"]["ansible_ssh_common_args"]


def test_one_node_lab_is_its_own_worker(tmp_path):
    groups = write_inventory(tmp_path, 1)["all"]["children"]
    assert list(groups["workers"]["hosts"]) == ["cf-t-1"]


def test_inventory_is_what_ansible_reads(tmp_path):
    write_inventory(tmp_path, 3)
    out = subprocess.run(
        [str(ROOT / ".venv/bin/ansible-inventory"), "-i", str(tmp_path / "hosts.yml"), "--graph", "workers"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )
    assert out.returncode == 0, out.stderr
    assert "cf-t-2" in out.stdout and "cf-t-3" in out.stdout and "cf-t-1" not in out.stdout


def test_unknown_group_spec_is_refused():
    with pytest.raises(ValueError, match="unknown group spec 'some'"):
        labtool.members("some", ["a"])


def test_address_of_a_node_and_of_no_node(tmp_path, capsys):
    write_inventory(tmp_path, 3)
    labtool.main(["address", "--inventory", str(tmp_path / "hosts.yml"), "cf-t-2"])
    assert capsys.readouterr().out.strip() == "10.9.8.12"
    with pytest.raises(SystemExit):
        labtool.main(["address", "--inventory", str(tmp_path / "hosts.yml"), "cf-t-9"])
    assert "no node named cf-t-9" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mitogen", "core", "problem"),
    [
        ("0.3.54", "2.21.5", None),
        ("0.3.54", "2.21.7", None),
        ("0.3.54", "2.22.0", "mitogen 0.3.54 with ansible-core 2.22.0 is not the tested pair"),
        ("0.3.50", "2.21.5", "mitogen 0.3.50 with ansible-core 2.21.5 is not the tested pair"),
        (None, "2.21.5", "mitogen is not installed"),
    ],
)
def test_mitogen_pair_check(mitogen, core, problem):
    found = labtool.strategy_problem(mitogen, core, LOCK)
    assert found == problem if problem is None else problem in found


def test_a_mismatched_pair_names_the_fallback(tmp_path):
    """The lab's own entry point: an untested pair stops before any run and names the fallback."""
    fake = tmp_path / "bin"
    fake.mkdir()
    message = "error: mitogen 0.3.1 with ansible-core 2.21.5 is not the tested pair"
    (fake / "python").write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    (fake / "python").chmod(0o755)
    script = f"CF_VENV={tmp_path}; source {ROOT}/scripts/lib.sh; use_strategy"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "is not the tested pair" in result.stderr
    assert "set CF_ANSIBLE_STRATEGY=linear" in result.stderr
    fallback = subprocess.run(
        ["bash", "-c", f"CF_ANSIBLE_STRATEGY=linear; {script}; echo $ANSIBLE_STRATEGY"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert fallback.stdout.strip() == "linear"


def test_tiers_follow_site_imports():
    tiers = labtool.tier_of_plays(ROOT / "site.yml")
    assert tiers["Prepare every cluster node"] == "common"
    assert tiers["Dask workers"] == "dask"
    assert "verify" in tiers.values()


def event(kind: str, **data) -> dict:
    return {"event": kind, "event_data": data, "stdout": data.pop("stdout", "")}


def test_progress_counts_per_play_and_names_failures(capsys):
    progress = labtool.Progress({"Dask workers": "dask"}, io.StringIO())
    for e in [
        event("playbook_on_play_start", play="Dask workers"),
        event("playbook_on_task_start", task="Install"),
        event("runner_on_ok", host="a", res={"changed": True}, task="Install"),
        event("runner_on_ok", host="b", res={"changed": False}, task="Install"),
        event("playbook_on_task_start", task="Start"),
        event("runner_on_failed", host="b", task="Start", stdout="fatal: [b]: FAILED! => boom"),
        event("playbook_on_stats", changed={"a": 1}, failures={"b": 1}),
    ]:
        progress.handle(e)
    out = capsys.readouterr().out
    assert "fatal: [b]: FAILED! => boom" in out
    assert "dask" in out and "2 hosts   2 tasks ok=2   changed=1   failed=1 " in out
    assert progress.changed_tasks == ["a: Install"]
    assert progress.per_tier["dask"]["tasks"] == 2


def test_verification_lines_pass_through_as_they_come(capsys):
    progress = labtool.Progress({"Run the checks": "verify"}, io.StringIO())
    progress.handle(event("playbook_on_play_start", play="Run the checks"))
    progress.handle(event("playbook_on_task_start", task="Wait for the suite"))
    line = "verify cf-lab-2  node.stream.triad        PASS  11.2 GB/s"
    retry = f"FAILED - RETRYING: [cf-lab-1]: Wait for the suite (59 retries left).\n{line}"
    progress.handle(event("runner_retry", host="cf-lab-1", stdout=retry))
    progress.handle(event("runner_on_ok", host="cf-lab-1", res={}, stdout="ok: [cf-lab-1]"))
    header = "TASK [verify : Record the run description] *************************************"
    progress.handle(event("runner_on_ok", host="localhost", res={}, stdout=f"\r\n{header}\nok: [localhost]"))
    table = f'{header}\nok: [cf-lab-1] => {{\n    "msg": "PASS 323  FAIL 0"\n}}'
    progress.handle(event("runner_on_ok", host="cf-lab-1", res={}, stdout=table))
    out = capsys.readouterr().out
    assert line in out
    assert "RETRYING" not in out and "ok: [cf-lab-1]\n" not in out
    assert "ok: [localhost]" not in out  # a task's header and one status line: not shown
    assert "PASS 323  FAIL 0" in out  # a result with more to say than its status: shown whole


def test_a_long_task_is_named_with_its_hosts(capsys, monkeypatch):
    progress = labtool.Progress({}, io.StringIO())
    progress.handle(event("playbook_on_play_start", play="p"))
    progress.handle(event("playbook_on_task_start", task="Run the cluster checks"))
    progress.handle(event("runner_on_start", host="cf-lab-1"))
    progress.task_started -= 65
    progress.tick()
    progress.tick()
    out = capsys.readouterr().out
    assert out.count("still running after 65 s: Run the cluster checks on cf-lab-1") == 1
    progress.handle(event("runner_on_ok", host="cf-lab-1", res={}))
    progress.task_started -= 100
    progress.tick()
    assert "still running" not in capsys.readouterr().out


def test_host_cpu_counts_busy_time_without_idle_iowait_or_guest(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 20 30 4000 500 6 7 8 900 90\ncpu0 50 10 15 2000 250 3 3 4 450 45\n")
    assert labtool.host_cpu_s(stat) == pytest.approx(171 / os.sysconf("SC_CLK_TCK"))
    assert labtool.host_cpu_s(tmp_path / "absent") is None
    stat.write_text("intr 1 2 3\n")
    assert labtool.host_cpu_s(stat) is None


def test_each_play_and_tier_gets_the_host_cpu_it_used(capsys, monkeypatch):
    readings = iter([100.0, 110.0, 135.0, 136.5])
    monkeypatch.setattr(labtool, "host_cpu_s", lambda: next(readings))
    progress = labtool.Progress({"Run the checks": "verify", "Dask workers": "dask"}, io.StringIO())
    progress.handle(event("playbook_on_play_start", play="Run the checks"))  # reads 110
    progress.handle(
        event("playbook_on_play_start", play="Dask workers")
    )  # one reading, 135: ends one, starts the next
    progress.handle(event("playbook_on_stats"))  # ends at 136.5
    assert progress.cpu_start == 100.0
    assert progress.per_tier["verify"]["cpu_s"] == pytest.approx(25.0)
    assert progress.per_tier["dask"]["cpu_s"] == pytest.approx(1.5)
    out = capsys.readouterr().out
    assert "cpu   25.0 s" in out and "cpu    1.5 s" in out
    assert progress.table()[1].endswith("0:25")


def test_the_cpu_figure_names_the_floor_the_cores_allow(tmp_path, capsys):
    line = labtool.cpu_figure(600.0, 1000.0, 2)
    assert "host CPU 1000 s in 600 s on 2 cores" in line and "at least 500 s" in line and "1.20" in line
    summary = tmp_path / "converge.json"
    tiers = {"verify": {"plays": 5, "tasks": 9, "changed": 0, "failed": 0, "s": 300.0, "cpu_s": 450.0}}
    summary.write_text(json.dumps({"elapsed_s": 900.0, "host_cpu_s": 1500.0, "cores": 2, "tiers": tiers}))
    labtool.main(["cpu-figure", "--summary", str(summary), "--tier", "verify"])
    assert "at least 225 s" in capsys.readouterr().out
    labtool.main(["cpu-figure", "--summary", str(summary)])
    assert "host CPU 1500 s in 900 s" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        labtool.main(["cpu-figure", "--summary", str(summary), "--tier", "nope"])
    assert "has no tier nope" in capsys.readouterr().err


def test_runner_loads_the_live_line_callback(tmp_path):
    """Through ansible-runner (as `lab up` runs the tiers) the verify tier's per-check lines appear."""
    record = json.dumps({"event": "result", "check": "node.cpu", "target": "localhost", "status": "PASS"})
    playbook = tmp_path / "verify.yml"
    task = {
        "name": "Follow the checks",
        "ansible.builtin.command": f"printf '%s\\n@@job\\n{{}}\\n' '{record}'",
        "changed_when": False,
    }
    play = {"name": "Run the node checks", "hosts": "localhost", "connection": "local", "gather_facts": False}
    playbook.write_text(yaml.safe_dump([{**play, "tasks": [task]}], sort_keys=False))
    venv_path = f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "labtool.py"),
            "run",
            "--inventory",
            "localhost,",
            "--label",
            "unit-callback",
            "--log",
            str(tmp_path / "ansible.log"),
            str(playbook),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": venv_path,
        },
    )
    assert "unable to load" not in (tmp_path / "ansible.log").read_text()
    assert "verify localhost" in result.stdout and "node.cpu" in result.stdout, result.stdout + result.stderr


def labtool_run(tmp_path, label, task, *options, tags=(), extra=(), path=None, log_name="ansible.log"):
    """`labtool.py run` of a one-task play on localhost; its result and the run's log."""
    playbook = tmp_path / f"{label}.yml"
    play = {"name": label, "hosts": "localhost", "connection": "local", "gather_facts": False}
    playbook.write_text(yaml.safe_dump([{**play, "tags": list(tags), "tasks": [task]}], sort_keys=False))
    log = tmp_path / log_name
    argv = [sys.executable, str(ROOT / "scripts" / "labtool.py"), "run", "--inventory", "localhost,"]
    argv += ["--label", label, "--log", str(log), *options, str(playbook)]
    argv += ["--", *extra] if extra else []
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": path or os.environ["PATH"]}
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    return result, log.read_text()


def test_a_run_finds_ansible_playbook_beside_its_interpreter_without_path(tmp_path):
    """`.venv/bin/python scripts/labtool.py run ...` from a shell whose PATH lacks .venv/bin."""
    task = {"name": "Say hello", "ansible.builtin.debug": {"msg": "hello-from-the-venv"}}
    result, log = labtool_run(tmp_path, "unit-path", task, path="/usr/bin:/bin")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello-from-the-venv" in log


def test_a_runs_extra_arguments_keep_their_spaces(tmp_path):
    """`labtool.py run ... -- -e '{"greeting": "hello from the lab"}'`: one argument, not four words."""
    task = {"name": "Say the greeting", "ansible.builtin.debug": {"msg": "[{{ greeting }}]"}}
    extra = ("-e", '{"greeting": "hello from the lab"}')
    result, log = labtool_run(tmp_path, "unit-extra", task, extra=extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[hello from the lab]" in log


def test_a_run_without_arguments_does_not_inherit_the_last_runs_skip_tags(tmp_path):
    """`lab up --no-verify` then `lab up`: the second converge must run the tagged plays again."""
    task = {"name": "Say the tagged word", "ansible.builtin.debug": {"msg": "tagged-play-ran"}}
    path = f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"
    _, skipped = labtool_run(tmp_path, "unit-tags", task, "--skip-tags", "verify", tags=["verify"], path=path)
    _, again = labtool_run(tmp_path, "unit-tags", task, tags=["verify"], path=path, log_name="again.log")
    assert "tagged-play-ran" not in skipped, skipped
    assert "tagged-play-ran" in again, again


# --- judge: is a verification run green, did its control hold ------------------------------------


def result(name, status, target="cf-t-1", category=None, reason="", tags=()):
    return {
        "type": "result",
        "name": name,
        "status": status,
        "target": target,
        "reason": reason,
        "category": category or name.split(".")[0],
        "tags": list(tags),
    }


def write_run(tmp_path, results, engines, control=None):
    report = tmp_path / "run"
    report.mkdir()
    summary = {"type": "summary", "counts": {}}
    if control:
        summary["control"] = control
    lines = [json.dumps(summary)] + [json.dumps(r) for r in results]
    (report / "results.jsonl").write_text("\n".join(lines) + "\n")
    (report / "cluster.json").write_text(json.dumps({"engines": engines}))
    return report


EXPECTED = yaml.safe_load((ROOT / "lab" / "expected-skips.yml").read_text())


def test_the_lab_expected_skips_each_say_why():
    assert EXPECTED and all(set(entry) == {"check", "reason", "why"} for entry in EXPECTED)


def judge(report, *extra):
    args = ["judge", "--report", str(report), *extra]
    try:
        labtool.main(args)
    except SystemExit as exc:
        return exc.code
    return 0


def test_judge_passes_a_green_run_with_explained_skips(tmp_path, capsys):
    runs = [
        result("dask.sum", "PASS"),
        result("mpi.io", "PASS", tags=["mpi", "storage"]),
        result("gpu.inventory", "SKIP", reason="cf-t-1 is not in group gpu_nodes"),
    ]
    report = write_run(tmp_path, runs, {"dask": {}, "storage": {}})
    assert judge(report, "--expected-skips", str(ROOT / "lab" / "expected-skips.yml")) == 0
    assert "green (2 engines" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (result("dask.sum", "FAIL", reason="wrong"), "FAIL dask.sum@cf-t-1: wrong"),
        (result("dask.sum", "ERROR", reason="boom"), "ERROR dask.sum@cf-t-1: boom"),
        (result("mpi.io", "SKIP", reason="no shared data directory"), "unexpected SKIP mpi.io@cf-t-1"),
        (result("gpu.gemm", "SKIP", reason="no CuPy"), "unexpected SKIP gpu.gemm@cf-t-1: no CuPy"),
    ],
)
def test_judge_fails_a_run_with_a_failure_or_an_unexplained_skip(tmp_path, capsys, bad, problem):
    report = write_run(tmp_path, [result("dask.ok", "PASS"), bad], {"dask": {}})
    assert judge(report, "--expected-skips", str(ROOT / "lab" / "expected-skips.yml")) == 1
    assert problem in capsys.readouterr().out


def test_judge_fails_when_a_declared_engine_never_passed(tmp_path, capsys):
    report = write_run(tmp_path, [result("dask.sum", "PASS")], {"dask": {}, "spark": {}})
    assert judge(report) == 1
    assert "engines.spark is in cluster.json but none of its checks PASSed" in capsys.readouterr().out


def test_judge_accepts_an_engine_whose_checks_all_skip_as_expected(tmp_path):
    skip = result("s3.object", "SKIP", reason="no S3 bucket is declared (cloud_s3_bucket is empty)")
    report = write_run(tmp_path, [result("dask.sum", "PASS"), skip], {"dask": {}, "s3": {"bucket": ""}})
    assert judge(report, "--expected-skips", str(ROOT / "lab" / "expected-skips.yml")) == 0
    (tmp_path / "b").mkdir()
    report = write_run(tmp_path / "b", [result("dask.sum", "PASS"), skip], {"dask": {}, "s3": {}})
    assert judge(report) == 1


def test_judge_control_demands_that_the_control_held(tmp_path, capsys):
    held = {
        "held": True,
        "line": "control held: 3 of 3 controlled results FAILed (wrong-answer)",
        "uncontrolled_failures": [],
    }
    assert judge(write_run(tmp_path, [result("dask.sum", "FAIL")], {}, held), "--control") == 0
    assert "control held: 3 of 3" in capsys.readouterr().out
    broken = dict(held, held=False, line="control did NOT hold (wrong-answer): dask.sum@cf-t-1")
    (tmp_path / "b").mkdir()
    assert judge(write_run(tmp_path / "b", [result("dask.sum", "PASS")], {}, broken), "--control") == 1
    (tmp_path / "c").mkdir()
    assert judge(write_run(tmp_path / "c", [result("dask.sum", "PASS")], {}), "--control") == 1
    assert "ran no negative control" in capsys.readouterr().err


SEQUENCE = ["destroy", "create", "prepare", "converge", "idempotence", "verify", "destroy"]
BASE = {"scenario": {"test_sequence": SEQUENCE}}


def test_molecule_steps_run_the_node_plays_under_the_lab_strategy():
    steps = labtool.molecule_steps(BASE, {})
    assert steps == [
        ("linear", "destroy"),
        ("linear", "create"),
        ("node", "prepare"),
        ("node", "converge"),
        ("node", "idempotence"),
        ("linear", "verify"),
        ("linear", "destroy"),
    ]


def test_a_scenario_sequence_replaces_the_base_and_check_runs_without_its_own_sequence():
    scenario = {"scenario": {"test_sequence": ["create", "converge", "check", "side_effect", "destroy"]}}
    steps = labtool.molecule_steps(BASE, scenario)
    # `molecule check` would destroy and create the instances again: the converge playbook in
    # check mode instead, on the converged nodes.
    assert steps == [
        ("linear", "create"),
        ("node", "converge"),
        ("node", "converge -- --check"),
        ("node", "side-effect"),
        ("linear", "destroy"),
    ]


def test_molecule_steps_without_a_sequence_is_an_error():
    with pytest.raises(ValueError, match="test_sequence"):
        labtool.molecule_steps({}, {})


def test_every_scenario_of_the_repository_has_steps():
    for scenario in sorted((ROOT / "molecule").glob("*/molecule.yml")):
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts/labtool.py"), "molecule-steps", scenario.parent.name],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "linear destroy" and lines[-1] == "linear destroy", lines
        assert "node converge" in lines and "linear verify" in lines, lines


def test_the_molecule_state_directory_is_where_molecule_keeps_it(tmp_path):
    """scripts/test clears a scenario's state there instead of running `molecule destroy`: the
    directory must be the one the pinned molecule itself computes for this checkout. Molecule runs
    in a process of its own: importing it sets ANSIBLE_FORCE_COLOR for every later test."""
    asked = (
        "import sys\n"
        "from molecule import config\n"
        "c = config.Config(molecule_file=sys.argv[1], args={}, command_args={'subcommand': 'list'})\n"
        "print(c.scenario.ephemeral_directory)\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp_path / "home"),
        "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        [sys.executable, "-c", asked, str(ROOT / "molecule" / "mpi" / "molecule.yml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [sys.executable, str(ROOT / "scripts/labtool.py"), "molecule-state", "mpi"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert pathlib.Path(done.stdout.strip().splitlines()[-1]) == pathlib.Path(shown.stdout.strip())
    assert pathlib.Path(shown.stdout.strip()).parent == tmp_path / "home" / "tmp"


def test_host_cpu_prints_the_reading_and_fails_without_one(monkeypatch, capsys):
    monkeypatch.setattr(labtool, "host_cpu_s", lambda: 1234.567)
    labtool.main(["host-cpu"])
    assert capsys.readouterr().out == "1234.57\n"
    monkeypatch.setattr(labtool, "host_cpu_s", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        labtool.main(["host-cpu"])
    assert exit_info.value.code == 1
    assert "no /proc/stat" in capsys.readouterr().err


# --- idle-cpu ------------------------------------------------------------------------------------


def test_idle_cpu_sums_each_units_processes_between_two_samples():
    hz, before = labtool.parse_proc_sample(
        "100\ndask-worker@0.service 10 500\nredis.service 11 40\ngone.service 12 9\n"
    )
    _, after = labtool.parse_proc_sample(
        "100\ndask-worker@0.service 10 650\nredis.service 11 40\ndask-worker@0.service 13 25\n"
    )
    # pid 13 started in between: it counts whole; pid 12 ended: unseen; redis used nothing
    assert labtool.unit_cpu(before, after, hz) == {"dask-worker@0.service": pytest.approx(1.75)}
    with pytest.raises(ValueError):
        labtool.parse_proc_sample("sh: getconf: not found\n")


def test_idle_cpu_names_the_unit_from_cgroup_v1_and_v2_lines():
    sed = re.search(r"sed -n '([^']+)'", labtool._PROC_SAMPLE).group(1)
    for text, unit in [
        (
            "45:hugetlb:/\n9:name=systemd:/system.slice/dask-worker@0.service\n0::/libpod_parent/x\n",
            "dask-worker@0.service",
        ),
        ("0::/system.slice/postgresql@17-main.service\n", "postgresql@17-main.service"),
    ]:
        done = subprocess.run(["sed", "-n", sed], input=text, capture_output=True, text=True, check=True)
        assert done.stdout.splitlines()[0] == unit


def test_idle_cpu_reads_this_hosts_own_process_table():
    done = subprocess.run(["sh", "-c", labtool._PROC_SAMPLE], capture_output=True, text=True, check=True)
    hz, ticks = labtool.parse_proc_sample(done.stdout)
    assert hz == os.sysconf("SC_CLK_TCK")
    assert ("other", "1") in ticks or any(pid == "1" for _, pid in ticks)


def test_idle_cpu_prints_cpu_seconds_a_minute_per_unit_busiest_first(tmp_path, monkeypatch, capsys):
    podman = tmp_path / "podman"
    # First call per node: the "before" table; second: "after" (a counter file per node).
    podman.write_text(
        "#!/bin/sh\n"
        'n="$2"; c="$0.$n"; k=$(cat "$c" 2>/dev/null || echo 0); echo $((k + 1)) > "$c"\n'
        'case "$n" in bad) echo "no such container" >&2; exit 125 ;; esac\n'
        'a="airflow-scheduler.service 7"; d="dask-scheduler.service 8"\n'
        'if [ "$k" = 0 ]; then printf "100\\n$a 100\\n$d 100\\n"\n'
        'else printf "100\\n$a 160\\n$d 130\\n"; fi\n'
    )
    podman.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(labtool.time, "sleep", lambda s: None)
    clock = iter([0.0, 0.0, 30.0, 30.0])
    monkeypatch.setattr(labtool.time, "monotonic", lambda: next(clock, 30.0))
    out_json = tmp_path / "idle.json"
    labtool.main(["idle-cpu", "--seconds", "30", "--json", str(out_json), "n1", "n2"])
    lines = capsys.readouterr().out.splitlines()
    # per node: 0.6 s + 0.3 s in 30 s -> 1.2 and 0.6 s a minute; both nodes: 3.6 s a minute
    assert lines[0] == "idle CPU of 2 node(s) over 30 s: 3.6 CPU seconds a minute (0.06 cores)"
    assert [line.split()[0] for line in lines[1:]] == ["1.20", "1.20", "0.60", "0.60"]
    assert "airflow-scheduler.service" in lines[1]
    assert json.loads(out_json.read_text())["cpu_s_per_min"] == 3.6
    with pytest.raises(SystemExit):
        labtool.main(["idle-cpu", "--seconds", "1", "bad"])
    assert (
        "cannot read the processes of bad (podman exec rc=125): no such container" in capsys.readouterr().err
    )


def test_output_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    summary = tmp_path / "run.json"
    summary.write_text(json.dumps({"elapsed_s": 10.0, "host_cpu_s": 15.0, "cores": 2}))
    reader, writer = os.pipe()
    os.close(reader)  # the reader (`head`) is gone before the first line
    with os.fdopen(writer, "w") as out:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "labtool.py"), "cpu-figure", "--summary", str(summary)],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


# --- scripts/bench's report ----------------------------------------------------------------------


def bench_lists(tmp_path: pathlib.Path) -> pathlib.Path:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "extra.apt").write_text("a=1\nb=2\nc=3\n")
    (lists / "venvs").write_text("/opt/v1\n/opt/v2\n")
    (lists / "venv-1.txt").write_text("x==1\ny==2\n")
    (lists / "venv-2.txt").write_text("z==3\n")
    return lists


def run_summary(elapsed: float, cpu: float, tiers: dict[str, float]) -> dict:
    return {
        "elapsed_s": elapsed,
        "host_cpu_s": cpu,
        "cores": 2,
        "changed": 0,
        "tiers": {name: {"s": 1.0, "cpu_s": value} for name, value in tiers.items()},
    }


def test_bench_report_splits_each_tiers_cpu_into_its_tasks_and_the_rest(tmp_path):
    converge = run_summary(400.0, 600.0, {"common": 100.0, "airflow": 150.0, "cloud_up": 0.0})
    every = run_summary(120.0, 150.0, {"common": 30.0, "airflow": 45.5, "cloud_up": 0.2})
    result, lines = labtool.bench_report(
        floor_s=100.0,
        floor_cpu_s=120.0,
        lab_s=410.0,
        nodes=3,
        converge=converge,
        lists=bench_lists(tmp_path),
        strategy="mitogen_linear",
        noop={"elapsed_s": 4.0, "changed": 0},
        every=every,
    )
    assert (result["apt_packages"], result["pip_packages"], result["venvs"]) == (3, 3, 2)
    assert result["ratio"] == 4.1 and result["converge_ratio"] == 4.0 and result["cpu_ratio"] == 5.0
    assert result["every_task"]["tiers"] == {
        "common": {"converge_cpu_s": 100.0, "tasks_cpu_s": 30.0},
        "airflow": {"converge_cpu_s": 150.0, "tasks_cpu_s": 45.5},
    }
    text = "\n".join(lines)
    assert "ratio lab up / floor: 4.1 (converge alone: 4.0; goal <= 1.3)" in text
    assert "on 2 cores the converge cannot take less than 300 s" in text
    every_line = "re-converge running every task (nothing to install or start): 120.0 s, changed=0"
    assert f"{every_line}, host CPU 150.0 s, 25% of the converge's" in text
    airflow = next(line for line in lines if line.split()[:1] == ["airflow"])
    assert airflow.split() == ["airflow", "150.0", "s", "45.5", "s", "104.5", "s"]
    assert not any(line.split()[:1] == ["cloud_up"] for line in lines)


def test_bench_report_without_the_re_converges(tmp_path):
    result, lines = labtool.bench_report(
        floor_s=100.0,
        floor_cpu_s=0.0,
        lab_s=200.0,
        nodes=1,
        converge=run_summary(190.0, 0.0, {}),
        lists=bench_lists(tmp_path),
        strategy="linear",
    )
    assert result["noop_s"] is None and "every_task" not in result and result["cpu_ratio"] is None
    assert len(lines) == 3


def test_bench_report_command_writes_bench_json(tmp_path):
    converge = tmp_path / "converge.json"
    converge.write_text(json.dumps(run_summary(300.0, 450.0, {"common": 90.0})))
    every = tmp_path / "every.json"
    every.write_text(json.dumps(run_summary(100.0, 120.0, {"common": 20.0})))
    out = tmp_path / "bench.json"
    args = ["bench-report", "--floor-s", "150", "--floor-cpu-ms", "150000", "--lab-s", "310", "--nodes", "3"]
    args += ["--converge", str(converge), "--lists", str(bench_lists(tmp_path)), "--strategy", "linear"]
    args += ["--noop", str(tmp_path / "missing.json"), "--every-task", str(every), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "labtool.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["ratio"] == 2.07 and figures["noop_s"] is None
    assert figures["every_task"]["tiers"]["common"] == {"converge_cpu_s": 90.0, "tasks_cpu_s": 20.0}
    assert "common" in result.stdout and "70.0 s" in result.stdout


def test_no_task_backgrounds_itself_with_async():
    """Under the lab's mitogen strategy an `async` task answers `finished: 0`, which ansible-core
    2.21 prints a warning about on every run. Long-running work (the verification suite, the proof
    of scale.yml and upgrade.yml) runs as a transient systemd unit instead."""
    sources = [ROOT / "site.yml", *ROOT.glob("playbooks/**/*.yml"), *ROOT.glob("roles/*/tasks/*.yml")]
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s+async:", line)
    ]
    assert sources and found == []
