"""Controller-side helpers for scripts/lab and scripts/bench.

    labtool.py inventory --out FILE --prefix P --nodes N --address-base A.B.C ... [--group G=SPEC ...]
    labtool.py address --inventory FILE NODE
    labtool.py strategy
    labtool.py molecule-steps SCENARIO
    labtool.py molecule-state SCENARIO
    labtool.py run --inventory FILE --label LABEL [--skip-tags T] [--summary FILE] PLAYBOOK
    labtool.py cpu-figure --summary FILE [--tier TIER]
    labtool.py host-cpu
    labtool.py idle-cpu --seconds S NODE...
    labtool.py judge --report DIR [--expected-skips FILE] [--control]

`judge` reads a verification run's results.jsonl and cluster.json and fails unless the run is what
a lab must show: no FAIL or ERROR, every SKIP one the lab's inventory explains (lab/expected-skips.yml:
a capability it does not declare), and at least one PASS for every engine in cluster.json. With
`--control` it demands instead that the run's negative control held.

`run` drives ansible-playbook through ansible-runner's event stream and prints one line per play
(tier, play, hosts, tasks, ok/changed/failed, elapsed), a line for any task that runs long (so a
hang shows as the task still running), the verification tier's own output verbatim, every failure
in full, and a per-tier table at the end. The whole log goes to a file. Each play and tier also
gets the host's CPU seconds while it ran (all processes of the machine: on the lab, the controller
and every node container): a run whose CPU seconds divided by the host's cores come close to its
wall time was bound by the cores, not by waiting, and no reordering can make it much faster.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import importlib.metadata
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "controller.lock"
# The bin directory of the environment this runs in (.venv/bin): where ansible-playbook is.
VENV_BIN = pathlib.Path(sys.executable).parent
# Tiers whose output the operator reads as it comes (the verification table, per-check lines).
VERBATIM_TIERS = {"verify"}
# A task still running after this many seconds gets a line, and again at each multiple.
SLOW_TASK_S = 30
# The header Ansible's default callback prints before a task's or handler's first result.
HEADER = re.compile(r"^(TASK|RUNNING HANDLER) \[.*\] \**$")
TIER_KEYS = ("plays", "tasks", "changed", "failed", "s", "cpu_s")


def host_cpu_s(stat: pathlib.Path = pathlib.Path("/proc/stat")) -> float | None:
    """CPU seconds the whole machine has spent busy since boot (user, nice, system, irq, softirq,
    steal: the first line of /proc/stat without idle and iowait; guest time is inside user), or
    None where there is no /proc/stat."""
    try:
        first = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_delta(start: float | None, end: float | None) -> float:
    return 0.0 if start is None or end is None else max(0.0, end - start)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


# --- inventory -------------------------------------------------------------------------------


def node_names(prefix: str, nodes: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(1, nodes + 1)]


def members(spec: str, names: list[str]) -> list[str]:
    """Hosts of a group from its spec: head (node 1), workers (2..N, or node 1 alone), all, none."""
    if spec == "head":
        return names[:1]
    if spec == "workers":
        return names[1:] or names[:1]
    if spec == "all":
        return list(names)
    if spec == "none":
        return []
    raise ValueError(f"unknown group spec '{spec}': use head, workers, all or none")


def build_inventory(args: argparse.Namespace) -> dict[str, Any]:
    names = node_names(args.prefix, args.nodes)
    hosts = {}
    for i, name in enumerate(names, start=1):
        address = f"{args.address_base}.{10 + i}"
        hosts[name] = {
            "ansible_host": address,
            "cluster_address": address,
            "node_cores": args.cores,
            "node_memory_mb": args.head_memory_mb if i == 1 and args.head_memory_mb else args.memory_mb,
        }
    children: dict[str, Any] = {}
    for item in args.group:
        group, _, spec = item.partition("=")
        children[group] = {"hosts": {h: None for h in members(spec, names)}}
    return {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": args.key,
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={args.known_hosts} -o StrictHostKeyChecking=yes"
                ),
                "lab_distro": args.distro,
                # The host's address on the lab network (the podman network's gateway): the
                # firewall lets it in, so that a browser on the host reaches the web UIs.
                "lab_host_address": f"{args.address_base}.1",
            },
            "hosts": hosts,
            "children": children,
        }
    }


def cmd_inventory(args: argparse.Namespace) -> None:
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"---\n# Generated by scripts/lab up ({args.distro}, {args.nodes} nodes)."
        " Do not edit: rerun scripts/lab up.\n"
    )
    body = yaml.safe_dump(build_inventory(args), default_flow_style=False, sort_keys=False, width=1000)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(header + body.replace(": null\n", ":\n"))
    tmp.replace(out)


def cmd_address(args: argparse.Namespace) -> None:
    try:
        data = yaml.safe_load(pathlib.Path(args.inventory).read_text())
    except FileNotFoundError:
        fail("no lab inventory: run scripts/lab up first")
    host = ((data or {}).get("all", {}).get("hosts") or {}).get(args.node)
    if not host:
        fail(f"no node named {args.node} in the lab (see scripts/lab status)")
    print(host["ansible_host"])


# --- strategy (mitogen) ----------------------------------------------------------------------


def pinned(name: str, lock_text: str) -> str | None:
    match = re.search(rf"^{re.escape(name)}==(\S+)\s*$", lock_text, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else None


def strategy_problem(mitogen: str | None, core: str, lock_text: str) -> str | None:
    """Why the installed mitogen cannot drive the installed ansible-core, or None when the pair is
    the one the lock pins (mitogen reaches deep into ansible-core's internals: an untested pair
    fails mid-run in ways that look like cluster faults)."""
    want_mitogen, want_core = pinned("mitogen", lock_text), pinned("ansible-core", lock_text)
    if mitogen is None:
        return "mitogen is not installed in the controller environment (run scripts/bootstrap)"
    if mitogen != want_mitogen or core.split(".")[:2] != (want_core or "").split(".")[:2]:
        return (
            f"mitogen {mitogen} with ansible-core {core} is not the tested pair "
            f"(mitogen {want_mitogen} with ansible-core {want_core}, requirements/controller.lock)"
        )
    return None


def cmd_strategy(_: argparse.Namespace) -> None:
    from ansible.release import __version__ as core

    try:
        mitogen: str | None = importlib.metadata.version("mitogen")
    except importlib.metadata.PackageNotFoundError:
        mitogen = None
    problem = strategy_problem(mitogen, core, LOCK.read_text())
    if problem:
        fail(problem)
    import ansible_mitogen

    print(pathlib.Path(ansible_mitogen.__file__).parent / "plugins" / "strategy")


# --- molecule steps ----------------------------------------------------------------------------

# Actions whose plays run on the scenario's nodes: these take the lab's strategy (mitogen). create
# and destroy are the driver's own plays on localhost (async podman jobs), which keep Ansible's
# linear strategy, and so does verify: its tests' own playbook runs are short, and under mitogen
# the gpu scenario's ten refusal runs side by side took 120 s, the whole scenario 537 s against
# 299 s under linear (both beside another scenario). A prepare playbook that uses the apt module
# before the common tier runs the common role's apt_binding entry point first (mitogen cannot
# respawn the module, see there).
NODE_ACTIONS = {"prepare", "converge", "idempotence", "check", "side_effect"}


def molecule_steps(base: dict[str, Any], scenario: dict[str, Any]) -> list[tuple[str, str]]:
    """(strategy, molecule command) per action of the scenario's test sequence, in order:
    strategy is "node" for the actions that run on the nodes and "linear" for the rest."""
    sequence = (scenario.get("scenario") or {}).get("test_sequence") or (base.get("scenario") or {}).get(
        "test_sequence"
    )
    if not sequence:
        raise ValueError("no scenario.test_sequence in the scenario or in .config/molecule/config.yml")
    steps = []
    for action in sequence:
        # `molecule check` would run its own sequence (destroy, create, ...): the same converge
        # playbook in check mode is the check action without it.
        command = "converge -- --check" if action == "check" else action.replace("_", "-")
        steps.append(("node" if action in NODE_ACTIONS else "linear", command))
    return steps


def molecule_state_dir(scenario: str, project: pathlib.Path = ROOT) -> pathlib.Path:
    """Where molecule keeps SCENARIO's state for the checkout PROJECT (its ephemeral directory: the
    instance list, the inventory, what has been created and converged), which `molecule destroy`
    clears: <ANSIBLE_HOME or ~/.ansible>/tmp/molecule.<checksum of the checkout's name>.<scenario>,
    as the pinned molecule computes it (tests/unit/test_labtool.py asks molecule itself)."""
    from molecule.text import checksum

    home = pathlib.Path(os.environ.get("ANSIBLE_HOME", "~/.ansible")).expanduser()
    return home / "tmp" / f"molecule.{checksum(project.name, 4)}.{scenario.replace('/', '--')}"


def scenario_file(name: str) -> pathlib.Path:
    """The molecule.yml of scenario NAME; a clear error when there is none."""
    path = ROOT / "molecule" / name / "molecule.yml"
    if not path.is_file():
        fail(f"no molecule scenario named {name}")
    return path


def cmd_molecule_state(args: argparse.Namespace) -> None:
    scenario_file(args.scenario)
    print(molecule_state_dir(args.scenario))


def cmd_molecule_steps(args: argparse.Namespace) -> None:
    path = scenario_file(args.scenario)
    base = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text()) or {}
    try:
        steps = molecule_steps(base, yaml.safe_load(path.read_text()) or {})
    except ValueError as exc:
        fail(str(exc))
    for strategy, command in steps:
        print(strategy, command)


# --- run -------------------------------------------------------------------------------------


def tier_of_plays(playbook: pathlib.Path) -> dict[str, str]:
    """Play name -> tier (the stem of the playbook that holds it), following import_playbook."""
    tiers: dict[str, str] = {}
    for entry in yaml.safe_load(playbook.read_text()) or []:
        imported = entry.get("ansible.builtin.import_playbook") or entry.get("import_playbook")
        tier = (entry.get("vars") or {}).get("tier_state_tier")
        if imported and tier:  # the fast re-converge's plays, named after the tier that imports them
            for name in tier_of_plays(playbook.parent / imported):
                tiers[name.replace("{{ tier_state_tier }}", tier)] = playbook.stem
        elif imported:
            tiers.update(tier_of_plays(playbook.parent / imported))
        elif entry.get("name"):
            tiers[entry["name"]] = playbook.stem
    return tiers


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


@dataclass
class Play:
    tier: str
    name: str
    started: float
    cpu_started: float | None = None
    hosts: set[str] = field(default_factory=set)
    tasks: int = 0
    ok: int = 0
    changed: int = 0
    failed: int = 0


@dataclass
class Progress:
    """Folds ansible-runner events into per-play and per-tier lines."""

    tiers: dict[str, str]
    log: Any
    start: float = field(default_factory=time.monotonic)
    cpu_start: float | None = field(default_factory=lambda: host_cpu_s())
    play: Play | None = None
    task: str = ""
    task_started: float = 0.0
    running: set[str] = field(default_factory=set)
    warned_at: int = 0
    per_tier: dict[str, dict[str, float]] = field(default_factory=dict)
    changed_tasks: list[str] = field(default_factory=list)
    converged: dict[str, str] = field(default_factory=dict)  # tier -> why it converged (fast path)
    stats: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, text: str) -> None:
        print(f"[{clock(time.monotonic() - self.start):>6}] {text}", flush=True)

    def end_play(self, cpu_now: float | None) -> None:
        """Close the running play; CPU_NOW is the host's CPU reading at its end (the next play's start)."""
        play = self.play
        if play is None:
            return
        took = time.monotonic() - play.started
        cpu = cpu_delta(play.cpu_started, cpu_now)
        tier = self.per_tier.setdefault(play.tier, dict.fromkeys(TIER_KEYS, 0))
        for key, value in zip(tier, (1, play.tasks, play.changed, play.failed, took, cpu), strict=True):
            tier[key] += value
        self.say(
            f"{play.tier:<13} {play.name[:40]:<40} {len(play.hosts):>2} hosts {play.tasks:>3} tasks "
            f"ok={play.ok:<3} changed={play.changed:<3} failed={play.failed:<2} {took:6.1f} s "
            f"cpu {cpu:6.1f} s"
        )
        self.play = None

    def handle(self, event: dict[str, Any]) -> bool:
        with self.lock:
            self._handle(event)
        return True

    def _handle(self, event: dict[str, Any]) -> None:
        kind, data = event.get("event", ""), event.get("event_data", {})
        stdout = event.get("stdout", "")
        if stdout:
            self.log.write(stdout + "\n")
            self.log.flush()
        if kind == "playbook_on_play_start":
            cpu_now = host_cpu_s()
            self.end_play(cpu_now)
            name = data.get("play", "")
            self.play = Play(self.tiers.get(name, "-"), name, time.monotonic(), cpu_now)
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.task, self.task_started, self.warned_at = data.get("task", ""), time.monotonic(), 0
            self.running = set()
            if self.play:
                self.play.tasks += 1
        elif kind == "runner_on_start":
            self.running.add(data.get("host", ""))
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            self._result(kind, data, stdout)
        elif kind == "playbook_on_stats":
            self.end_play(host_cpu_s())
            self.stats = {k: data.get(k) or {} for k in ("ok", "changed", "failures", "dark", "skipped")}
        # The per-check lines come from the clusterforge_progress callback: runner files what a
        # non-stdout callback displays as "verbose" events of their own.
        live = kind.startswith("runner_") or kind == "verbose"
        if self.play is not None and self.play.tier in VERBATIM_TIERS and live:
            self._verbatim(kind, data, stdout)

    @staticmethod
    def _verbatim(kind: str, data: dict[str, Any], stdout: str) -> None:
        """The verification tier as it comes: its per-check lines (`verify HOST CHECK STATUS ...`,
        printed by the clusterforge_progress callback while the suite runs), results with more than
        a status line (the table), and failures."""
        failed = kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors")
        # A task's first result carries the task's header ("TASK [...] ***"): not a line of its own.
        said = [line for line in stdout.splitlines() if line.strip() and not HEADER.match(line)]
        if failed or (kind == "runner_on_ok" and len(said) > 1):
            print(stdout, flush=True)
        else:
            for line in stdout.splitlines():
                if line.startswith("verify "):
                    print(line, flush=True)

    def _result(self, kind: str, data: dict[str, Any], stdout: str) -> None:
        host = data.get("host", "")
        self.running.discard(host)
        play = self.play
        if play is None:
            return
        play.hosts.add(host)
        res = data.get("res") or {}
        if kind == "runner_on_ok" and res.get("fresh") is False and play.tier not in self.converged:
            # The first host that keeps a tier from being skipped, and why (the tier converges on all).
            self.converged[play.tier] = f"{host}: {res.get('reason', '')}"
            self.say(f"{play.tier:<13} converges ({self.converged[play.tier]})")
        if kind == "runner_on_ok":
            play.ok += 1
            if (data.get("res") or {}).get("changed"):
                play.changed += 1
                self.changed_tasks.append(f"{host}: {data.get('task', '')}")
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            play.failed += 1
            if play.tier not in VERBATIM_TIERS:
                print(f"--- {play.tier} / {play.name} / {data.get('task', '')}\n{stdout}", flush=True)

    def tick(self) -> None:
        """Called every few seconds: names a task that has run long, and on which hosts."""
        with self.lock:
            if not self.running or not self.task:
                return
            ran = int(time.monotonic() - self.task_started)
            mark = ran // SLOW_TASK_S
            if mark >= 1 and mark > self.warned_at:
                self.warned_at = mark
                self.say(f"  still running after {ran} s: {self.task} on {', '.join(sorted(self.running))}")

    def table(self) -> list[str]:
        head = f"{'tier':<14}{'plays':>6}{'tasks':>7}{'changed':>9}{'failed':>8}{'time':>9}{'host CPU':>10}"
        lines = [head]
        for tier, row in self.per_tier.items():
            lines.append(
                f"{tier:<14}{int(row['plays']):>6}{int(row['tasks']):>7}{int(row['changed']):>9}"
                f"{int(row['failed']):>8}{clock(row['s']):>9}{clock(row['cpu_s']):>10}"
            )
        return lines


def cpu_figure(wall_s: float, cpu_s: float, cores: int) -> str:
    """What the cores allowed: CPU seconds / cores is the least wall time this work can take on
    this host, however it is ordered; wall / that floor near 1 means the run was bound by the cores."""
    floor = cpu_s / cores
    ratio = f"{wall_s / floor:.2f}" if floor > 0 else "-"
    return (
        f"host CPU {cpu_s:.0f} s in {wall_s:.0f} s on {cores} cores: at least {floor:.0f} s of work for "
        f"these cores however it is ordered (wall / that floor: {ratio})"
    )


def cmd_run(args: argparse.Namespace) -> None:
    import ansible_runner

    playbook = ROOT / args.playbook
    work = ROOT / ".cache" / "runner" / args.label
    work.mkdir(parents=True, exist_ok=True)
    # ansible-runner keeps the arguments of a run in env/ and applies them to the next run that
    # passes none: a `--no-verify` converge would leave `--skip-tags verify` behind for the next one.
    shutil.rmtree(work / "env", ignore_errors=True)
    log_path = pathlib.Path(args.log) if args.log else work / "ansible.log"
    # ansible-runner splits the command line with shlex: quote each argument (`-e 'x=a b'`).
    cmdline = shlex.join([word for tag in args.skip_tags for word in ("--skip-tags", tag)] + args.extra)
    with log_path.open("w") as log:
        progress = Progress(tier_of_plays(playbook), log)
        progress.say(f"{args.label}: {args.playbook} on {args.inventory} (log: {log_path})")
        thread, runner = ansible_runner.run_async(
            private_data_dir=str(work),
            project_dir=str(ROOT),
            playbook=str(playbook),
            inventory=str(pathlib.Path(args.inventory).resolve()),
            cmdline=cmdline or None,
            quiet=True,
            event_handler=progress.handle,
            # Keep the project's fact cache (ansible.cfg), not one per runner artifact directory.
            fact_cache_type="none",
            rotate_artifacts=2,
            # ansible-runner puts its own callback directory in ANSIBLE_CALLBACK_PLUGINS, which
            # hides ansible.cfg's callback_plugins: name the project's (the verify tier's live lines).
            # ansible-playbook from this interpreter's environment (.venv/bin), also where the
            # caller did not put it on PATH.
            envvars={
                "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "plugins" / "callback"),
                "PATH": os.pathsep.join((str(VENV_BIN), os.environ.get("PATH", os.defpath))),
            },
        )
        while thread.is_alive():
            thread.join(timeout=5)
            progress.tick()
    elapsed = time.monotonic() - progress.start
    cpu = cpu_delta(progress.cpu_start, host_cpu_s())
    for line in progress.table():
        print(f"    {line}")
    changed = sum(progress.stats.get("changed", {}).values())
    failed = sum(progress.stats.get("failures", {}).values()) + sum(progress.stats.get("dark", {}).values())
    summary = {
        "label": args.label,
        "status": runner.status,
        "rc": runner.rc,
        "elapsed_s": round(elapsed, 1),
        "changed": changed,
        "failed": failed,
        "changed_tasks": progress.changed_tasks,
        "converged_tiers": progress.converged,
        "tiers": progress.per_tier,
        "host_cpu_s": round(cpu, 1),
        "cores": os.cpu_count() or 1,
        "log": str(log_path),
    }
    if args.summary:
        pathlib.Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    progress.say(f"{args.label}: {runner.status} in {elapsed:.1f} s, changed={changed} failed={failed}")
    if progress.cpu_start is not None:
        progress.say(f"{args.label}: {cpu_figure(elapsed, cpu, summary['cores'])}")
    if runner.rc != 0:
        fail(f"{args.label} failed (ansible-playbook rc={runner.rc}); full log: {log_path}")


def cmd_host_cpu(_: argparse.Namespace) -> None:
    seconds = host_cpu_s()
    if seconds is None:
        fail("this host has no /proc/stat: its CPU seconds cannot be read")
    print(f"{seconds:.2f}")


# --- idle CPU of the nodes, per systemd unit -----------------------------------------------------

# Run inside a node: a first line with the node's ticks per second, then one line per process,
# "UNIT PID TICKS": its systemd unit (the last component of its cgroup path, cgroup v1's
# name=systemd line or v2's), its pid and the CPU ticks it used (utime + stime).
_PROC_SAMPLE = r"""getconf CLK_TCK
for p in /proc/[0-9]*; do
  u=$(sed -n 's/^[0-9]*:\(name=systemd\)\{0,1\}:.*\/\([^/]*\)$/\2/p' "$p/cgroup" 2>/dev/null | head -n 1)
  t=$(cut -d')' -f2 "$p/stat" 2>/dev/null | awk '{print $12 + $13}')
  [ -n "$t" ] && echo "${u:-other} ${p#/proc/} $t"
done"""


def parse_proc_sample(text: str) -> tuple[int, dict[tuple[str, str], int]]:
    """(ticks per second, {(unit, pid): ticks}) from the output of _PROC_SAMPLE."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise ValueError("no CLK_TCK line")
    ticks: dict[tuple[str, str], int] = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            ticks[(parts[0], parts[1])] = int(parts[2])
    return int(lines[0]), ticks


def proc_sample(node: str) -> tuple[int, dict[tuple[str, str], int]]:
    done = subprocess.run(
        ["podman", "exec", node, "sh", "-c", _PROC_SAMPLE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        problem = done.stderr.strip()[-300:]
        fail(f"cannot read the processes of {node} (podman exec rc={done.returncode}): {problem}")
    try:
        return parse_proc_sample(done.stdout)
    except ValueError:
        fail(f"{node} answered no process table: {done.stdout.strip()[:200]!r}")
        raise


def unit_cpu(
    before: dict[tuple[str, str], int], after: dict[tuple[str, str], int], hz: int
) -> dict[str, float]:
    """CPU seconds per unit between two samples: a process that started in between counts whole,
    one that ended in between is not seen (the figure is a lower bound)."""
    seconds: dict[str, float] = {}
    for key, ticks in after.items():
        used = ticks - before.get(key, 0)
        if used > 0:
            seconds[key[0]] = seconds.get(key[0], 0.0) + used / hz
    return seconds


def cmd_idle_cpu(args: argparse.Namespace) -> None:
    """CPU seconds a minute per systemd unit of each node, over a window with nothing submitted."""
    if args.seconds <= 0:
        fail("--seconds must be > 0")
    first = {node: (time.monotonic(), proc_sample(node)) for node in args.nodes}
    time.sleep(args.seconds)
    second = {node: (time.monotonic(), proc_sample(node)) for node in args.nodes}
    rows = []
    for node in args.nodes:
        (t0, (_, before)), (t1, (hz, after)) = first[node], second[node]
        for unit, used in unit_cpu(before, after, hz).items():
            rows.append((used * 60 / (t1 - t0), node, unit))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(
        f"idle CPU of {len(args.nodes)} node(s) over {args.seconds:.0f} s: "
        f"{total:.1f} CPU seconds a minute ({total / 60:.2f} cores)"
    )
    for per_minute, node, unit in rows[: args.top]:
        print(f"  {per_minute:6.2f} s/min  {node:<14} {unit}")
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps(
                {
                    "window_s": round(args.seconds, 1),
                    "cpu_s_per_min": round(total, 2),
                    "units": [{"node": n, "unit": u, "cpu_s_per_min": round(m, 3)} for m, n, u in rows],
                },
                indent=1,
            )
            + "\n"
        )


def cmd_cpu_figure(args: argparse.Namespace) -> None:
    """The CPU line of one tier of a `run` summary (or of the whole run)."""
    summary = json.loads(pathlib.Path(args.summary).read_text())
    row = summary.get("tiers", {}).get(args.tier) if args.tier else None
    if args.tier and row is None:
        fail(f"{args.summary} has no tier {args.tier}")
    if row:
        wall, cpu = row["s"], row.get("cpu_s", 0.0)
    else:
        wall, cpu = summary["elapsed_s"], summary.get("host_cpu_s", 0.0)
    print(cpu_figure(wall, cpu, int(summary.get("cores") or 1)))


# --- the install bench (scripts/bench) --------------------------------------------------------


def bench_report(
    *,
    floor_s: float,
    floor_cpu_s: float,
    lab_s: float,
    nodes: int,
    converge: dict[str, Any],
    lists: pathlib.Path,
    strategy: str,
    noop: dict[str, Any] | None = None,
    every: dict[str, Any] | None = None,
    date: str = "",
) -> tuple[dict[str, Any], list[str]]:
    """scripts/bench's figures (bench.json) and the lines it prints.

    CONVERGE, NOOP and EVERY are `run` summaries: the first converge, the no-op re-converge and
    the re-converge that runs every task (cluster_fast_converge=false). With EVERY, each tier's
    converge CPU is split into what its tasks cost with nothing to do and the rest (installing,
    first starts).
    """
    converge_s, converge_cpu = converge["elapsed_s"], converge.get("host_cpu_s")
    cores = converge.get("cores") or 1
    result: dict[str, Any] = {
        "date": date,
        "nodes": nodes,
        "floor_s": round(floor_s, 1),
        "lab_up_s": round(lab_s, 1),
        "converge_s": round(converge_s, 1),
        "ratio": round(lab_s / floor_s, 2),
        "converge_ratio": round(converge_s / floor_s, 2),
        "apt_packages": len((lists / "extra.apt").read_text().split()),
        "pip_packages": sum(len(p.read_text().split()) for p in lists.glob("venv-*.txt")),
        "venvs": len((lists / "venvs").read_text().split()),
        "noop_s": (noop or {}).get("elapsed_s"),
        "noop_changed": (noop or {}).get("changed"),
        "strategy": strategy,
        "cores": cores,
        "floor_cpu_s": round(floor_cpu_s, 1),
        "converge_cpu_s": converge_cpu,
        "cpu_ratio": round(converge_cpu / floor_cpu_s, 2) if converge_cpu and floor_cpu_s else None,
    }
    lines = [
        f"install floor (head's {result['apt_packages']} apt + {result['pip_packages']} pip packages, "
        f"{result['venvs']} venvs, one fresh container): {result['floor_s']} s",
        f"scripts/lab up --no-verify, {nodes} fresh nodes: {result['lab_up_s']} s "
        f"(of which the converge {result['converge_s']} s)",
        f"ratio lab up / floor: {result['ratio']} (converge alone: {result['converge_ratio']}; goal <= 1.3)",
    ]
    if result["cpu_ratio"] is not None:
        lines.append(
            f"CPU: the floor's container {result['floor_cpu_s']} s, the host during the converge "
            f"{converge_cpu} s (controller and {nodes} nodes): {result['cpu_ratio']} times the floor's work; "
            f"on {cores} cores the converge cannot take less than {converge_cpu / cores:.0f} s"
        )
    if result["noop_s"] is not None:
        lines.append(
            f"no-op re-converge, {nodes} nodes ({strategy}): {result['noop_s']} s, "
            f"changed={result['noop_changed']}"
        )
    if every is not None:
        tiers = {}
        for tier, first in converge.get("tiers", {}).items():
            again = every.get("tiers", {}).get(tier, {}).get("cpu_s", 0.0)
            if first.get("cpu_s", 0.0) >= 1 or again >= 1:
                tiers[tier] = {
                    "converge_cpu_s": round(first.get("cpu_s", 0.0), 1),
                    "tasks_cpu_s": round(again, 1),
                }
        every_cpu = every.get("host_cpu_s")
        result["every_task"] = {
            "elapsed_s": every["elapsed_s"],
            "changed": every["changed"],
            "host_cpu_s": every_cpu,
            "tiers": tiers,
        }
        share = f", {every_cpu / converge_cpu:.0%} of the converge's" if converge_cpu and every_cpu else ""
        lines.append(
            f"re-converge running every task (nothing to install or start): {every['elapsed_s']} s, "
            f"changed={every['changed']}, host CPU {every_cpu} s{share}"
        )
        lines.append(f"    {'tier':14} {'converge CPU':>13} {'tasks alone':>12} {'the rest':>9}")
        for tier, row in tiers.items():
            rest = row["converge_cpu_s"] - row["tasks_cpu_s"]
            lines.append(
                f"    {tier:14} {row['converge_cpu_s']:11.1f} s {row['tasks_cpu_s']:10.1f} s {rest:7.1f} s"
            )
    return result, lines


def cmd_bench_report(args: argparse.Namespace) -> None:
    def summary(path: str | None) -> dict[str, Any] | None:
        return json.loads(pathlib.Path(path).read_text()) if path and pathlib.Path(path).exists() else None

    converge = summary(args.converge)
    if converge is None:
        fail(f"no summary of the bench lab's converge ({args.converge})")
    result, lines = bench_report(
        floor_s=args.floor_s,
        floor_cpu_s=args.floor_cpu_ms / 1000,
        lab_s=args.lab_s,
        nodes=args.nodes,
        converge=converge,
        lists=pathlib.Path(args.lists),
        strategy=args.strategy,
        noop=summary(args.noop),
        every=summary(args.every_task),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))


# --- judging a verification run --------------------------------------------------------------


def read_run(report: pathlib.Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Results, summary and cluster.json of a report directory (reports/<run-id>)."""
    results, summary = [], {}
    try:
        with (report / "results.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if record.get("type") == "summary":
                    summary = record
                elif record.get("type") == "result":
                    results.append(record)
        cluster = json.loads((report / "cluster.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"{report}: not a verification report ({exc})")
    return results, summary, cluster


def expected_skip(result: dict[str, Any], allowed: list[dict[str, str]]) -> bool:
    return any(
        fnmatch.fnmatchcase(result["name"], entry["check"])
        and entry["reason"] in (result.get("reason") or "")
        for entry in allowed
    )


def judge_run(
    results: list[dict[str, Any]], cluster: dict[str, Any], allowed: list[dict[str, str]]
) -> list[str]:
    """Problems that make a lab run not green; empty when it is."""
    problems = [
        f"{r['status']} {r['name']}@{r['target']}: {r.get('reason') or ''}"
        for r in results
        if r["status"] in ("FAIL", "ERROR")
    ]
    problems += [
        f"unexpected SKIP {r['name']}@{r['target']}: {r.get('reason') or ''}"
        for r in results
        if r["status"] == "SKIP" and not expected_skip(r, allowed)
    ]
    for engine in sorted(cluster.get("engines") or {}):
        own = [r for r in results if engine in (r["category"], *r.get("tags", ()))]
        if any(r["status"] == "PASS" for r in own):
            continue
        # An engine section with nothing to check (an S3 section without a bucket) is fine when
        # its checks SKIP for a reason the lab's inventory explains.
        if not own or not all(r["status"] == "SKIP" and expected_skip(r, allowed) for r in own):
            problems.append(f"engines.{engine} is in cluster.json but none of its checks PASSed")
    if not results:
        problems.append("the run has no results")
    return problems


def cmd_judge(args: argparse.Namespace) -> None:
    report = pathlib.Path(args.report).resolve()
    results, summary, cluster = read_run(report)
    counts = {s: sum(r["status"] == s for r in results) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
    print(f"{report.name}: " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    if args.control:
        control = summary.get("control")
        if not control:
            fail(f"{report.name} ran no negative control")
        print(control["line"])
        if not control["held"] or control["uncontrolled_failures"]:
            fail(
                f"the negative control of {report.name} did not hold: {control['line']}; "
                f"other failures: {', '.join(control['uncontrolled_failures']) or 'none'}"
            )
        return
    allowed = yaml.safe_load(pathlib.Path(args.expected_skips).read_text()) if args.expected_skips else []
    problems = judge_run(results, cluster, allowed or [])
    for problem in problems:
        print(f"  {problem}")
    if problems:
        fail(f"{report.name} is not green: {len(problems)} problem(s) above")
    print(f"{report.name}: green ({len(cluster.get('engines') or {})} engines, every SKIP expected)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("inventory", help="write the lab inventory")
    inv.add_argument("--out", required=True)
    inv.add_argument("--prefix", required=True)
    inv.add_argument("--nodes", type=int, required=True)
    inv.add_argument("--address-base", required=True, help="first three octets, node i gets .(10+i)")
    inv.add_argument("--distro", required=True)
    inv.add_argument("--key", required=True)
    inv.add_argument("--known-hosts", required=True)
    inv.add_argument("--memory-mb", type=int, required=True)
    inv.add_argument("--head-memory-mb", type=int, default=0, help="memory of node 1 (default: --memory-mb)")
    inv.add_argument("--cores", type=int, required=True)
    inv.add_argument("--group", action="append", default=[], help="NAME=head|workers|all|none")
    inv.set_defaults(func=cmd_inventory)
    addr = sub.add_parser("address", help="print a lab node's address from the inventory")
    addr.add_argument("--inventory", required=True)
    addr.add_argument("node")
    addr.set_defaults(func=cmd_address)
    strat = sub.add_parser("strategy", help="check the mitogen/ansible-core pair, print the strategy dir")
    strat.set_defaults(func=cmd_strategy)
    steps = sub.add_parser("molecule-steps", help="print a scenario's test sequence as molecule commands")
    steps.add_argument("scenario")
    steps.set_defaults(func=cmd_molecule_steps)
    state = sub.add_parser("molecule-state", help="print where molecule keeps a scenario's state")
    state.add_argument("scenario")
    state.set_defaults(func=cmd_molecule_state)
    run = sub.add_parser("run", help="run a playbook through ansible-runner with progress lines")
    run.add_argument("--inventory", required=True)
    run.add_argument("--label", required=True)
    run.add_argument("--skip-tags", action="append", default=[])
    run.add_argument("--summary", help="write a JSON summary here")
    run.add_argument("--log", help="full ansible output (default .cache/runner/LABEL/ansible.log)")
    run.add_argument("playbook")
    run.add_argument("extra", nargs="*", help="more ansible-playbook arguments (after --)")
    run.set_defaults(func=cmd_run)
    figure = sub.add_parser("cpu-figure", help="print the host CPU figure of a run summary (or of one tier)")
    figure.add_argument("--summary", required=True)
    figure.add_argument("--tier", help="one tier of the run, e.g. verify")
    figure.set_defaults(func=cmd_cpu_figure)
    host_cpu = sub.add_parser("host-cpu", help="print the host's busy CPU seconds since boot (bench scripts)")
    host_cpu.set_defaults(func=cmd_host_cpu)
    idle = sub.add_parser("idle-cpu", help="CPU seconds a minute per systemd unit of lab nodes (podman exec)")
    idle.add_argument("--seconds", type=float, default=60.0, help="length of the window")
    idle.add_argument("--top", type=int, default=25, help="units listed, the busiest first")
    idle.add_argument("--json", help="write every unit's figure here")
    idle.add_argument("nodes", nargs="+")
    idle.set_defaults(func=cmd_idle_cpu)
    bench = sub.add_parser("bench-report", help="scripts/bench's figures from its measurements")
    bench.add_argument("--floor-s", type=float, required=True)
    bench.add_argument("--floor-cpu-ms", type=int, required=True)
    bench.add_argument("--lab-s", type=float, required=True)
    bench.add_argument("--nodes", type=int, required=True)
    bench.add_argument("--converge", required=True, help="run summary of the converge")
    bench.add_argument("--lists", required=True, help="directory of the head node's package lists")
    bench.add_argument("--strategy", required=True)
    bench.add_argument("--noop", help="run summary of the no-op re-converge")
    bench.add_argument("--every-task", help="run summary of the re-converge that runs every task")
    bench.add_argument("--out", required=True, help="write bench.json here")
    bench.set_defaults(func=cmd_bench_report)
    judge = sub.add_parser("judge", help="fail unless a verification run is green (or its control held)")
    judge.add_argument("--report", required=True, help="report directory, e.g. reports/latest")
    judge.add_argument("--expected-skips", help="YAML list of {check: GLOB, reason: TEXT, why: TEXT}")
    judge.add_argument("--control", action="store_true", help="demand that the run's negative control held")
    judge.set_defaults(func=cmd_judge)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    # Output piped into `head` and the like: end quietly when the reader goes, as other tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
