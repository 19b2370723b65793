"""The fast re-converge: clusterforge_converge_state decides when a tier may be skipped.

The module is run as Ansible runs it (its arguments in a JSON file); the action plugin through a
real ansible-playbook on localhost, with the state and the watched files in a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pathload import load

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "plugins/modules/clusterforge_converge_state.py"
sys.path.insert(0, str(ROOT / "plugins/filter"))
from converge_hosts import clusterforge_compare_hosts, clusterforge_converge_hosts  # noqa: E402
from localplay import run_local_playbook  # noqa: E402

# The node's state includes its IPv4 addresses: on a host where containers' networks come and go
# (the molecule scenarios beside these tests), each run sees a network namespace of its own.
ISOLATED = ["unshare", "--net"] if os.geteuid() == 0 and shutil.which("unshare") else []


def module(tmp_path: Path, check_mode: bool = False, **args: Any) -> dict[str, Any]:
    """Run the module with ARGS (state and paths under TMP_PATH unless given); its JSON answer."""
    args.setdefault("state_dir", str(tmp_path / "state"))
    args.setdefault("paths", [str(tmp_path / "etc")])
    args.setdefault("units", [])
    args.setdefault("inputs", "digest-1")
    args.setdefault("tier", "dask")
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    done = subprocess.run(
        [*ISOLATED, sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True
    )
    answer = json.loads(done.stdout)
    assert not answer.get("failed"), answer
    return answer


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    (tmp_path / "etc/dask").mkdir(parents=True)
    (tmp_path / "etc/dask/scheduler.yaml").write_text("a: 1\n")
    return tmp_path / "etc"


def test_a_tier_is_fresh_only_after_it_recorded_the_same_inputs(tmp_path, etc):
    first = module(tmp_path, mode="check")
    assert (first["fresh"], first["reason"]) == (False, "no converge recorded on this node")
    record = module(tmp_path, mode="record")
    assert record["changed"] is False  # bookkeeping, never a change
    assert oct((tmp_path / "state/dask.json").stat().st_mode & 0o777) == "0o600"
    assert module(tmp_path, mode="check")["fresh"] is True
    other = module(tmp_path, mode="check", inputs="digest-2")
    assert other["fresh"] is False and "inputs changed" in other["reason"]
    # Another tier on the same unchanged node has not converged yet.
    assert module(tmp_path, mode="check", tier="spark")["fresh"] is False


def test_only_a_changed_or_vanished_recorded_secret_makes_a_tier_stale(tmp_path, etc):
    module(tmp_path, mode="record", secrets={"ca/ca.crt": "d1"})
    assert module(tmp_path, mode="check", secrets={"ca/ca.crt": "d1", "mpmanager/authkey": "d2"})["fresh"]
    for now in ({"ca/ca.crt": "d3"}, {"mpmanager/authkey": "d2"}):
        stale = module(tmp_path, mode="check", secrets=now)
        assert (stale["fresh"], stale["reason"]) == (
            False,
            "a secret it converged with changed or vanished (ca/ca.crt)",
        )


def test_a_changed_file_makes_every_tier_converge_again(tmp_path, etc):
    module(tmp_path, mode="record")
    module(tmp_path, mode="record", tier="spark")
    config = etc / "dask/scheduler.yaml"
    config.write_text("a: 2 # edited by hand\n")
    os.utime(config, ns=(1, 1))
    drift = module(tmp_path, mode="check", tier="spark")
    assert drift["fresh"] is False
    assert drift["drifted"] == [f"{config}: changed"]
    # Every marker went: the dask tier converges too, though the spark tier noticed.
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["node.json"]
    assert module(tmp_path, mode="check")["fresh"] is False
    module(tmp_path, mode="record")  # the dask tier converged and recorded the repaired node
    assert module(tmp_path, mode="check")["fresh"] is True
    assert module(tmp_path, mode="check", tier="spark")["fresh"] is False


def test_check_mode_reports_drift_and_keeps_the_markers(tmp_path, etc):
    module(tmp_path, mode="record")
    (etc / "dask/new.yaml").write_text("b: 1\n")
    answer = module(tmp_path, check_mode=True, mode="check")
    assert answer["fresh"] is False and answer["drifted"] == [f"{etc / 'dask/new.yaml'}: new"]
    assert (tmp_path / "state/dask.json").exists()
    module(tmp_path, check_mode=True, mode="record")  # check mode records nothing either
    recorded = json.loads((tmp_path / "state/node.json").read_text())["state"]
    assert str(etc / "dask/new.yaml") not in recorded


def test_a_snapshot_reads_the_node_once_for_every_tier(tmp_path, etc):
    first = module(tmp_path, mode="snapshot")
    assert (first["recorded"], first["markers"], first["drifted"]) == (False, {}, [])
    module(tmp_path, mode="record")
    module(tmp_path, mode="record", tier="spark", inputs="digest-2", secrets={"ca/ca.crt": "d1"})
    snapshot = module(tmp_path, mode="snapshot")
    assert (snapshot["recorded"], snapshot["drifted"]) == (True, [])
    assert {tier: m["inputs"] for tier, m in snapshot["markers"].items()} == {
        "dask": "digest-1",
        "spark": "digest-2",
    }
    assert snapshot["markers"]["spark"]["secrets"] == {"ca/ca.crt": "d1"}
    config = etc / "dask/scheduler.yaml"
    config.write_text("a: 3 # edited by hand\n")
    os.utime(config, ns=(1, 1))
    seen = module(tmp_path, check_mode=True, mode="snapshot")
    assert (seen["drifted"], seen["markers"]) == ([f"{config}: changed"], {})
    assert (tmp_path / "state/dask.json").exists()  # check mode drops nothing
    module(tmp_path, mode="snapshot")  # every tier converges here in this run
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["node.json"]


def test_a_removed_distribution_of_a_venv_is_drift(tmp_path, etc):
    site = tmp_path / "venv/lib/python3.13/site-packages"
    (site / "dask-2026.8.0.dist-info").mkdir(parents=True)
    (site / "distributed-2026.8.0.dist-info").mkdir()
    venvs = [str(tmp_path / "venv/lib/python3*/site-packages")]
    module(tmp_path, mode="record", venvs=venvs)
    assert module(tmp_path, mode="check", venvs=venvs)["fresh"] is True
    (site / "distributed-2026.8.0.dist-info").rmdir()
    answer = module(tmp_path, mode="check", venvs=venvs)
    assert answer["fresh"] is False and answer["drifted"] == [f"venv {site}: changed"]


def test_an_old_marker_and_ignored_entries(tmp_path, etc):
    module(tmp_path, mode="record")
    assert module(tmp_path, mode="check", max_age=3600)["fresh"] is True
    marker = tmp_path / "state/dask.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "at": 0}))
    old = module(tmp_path, mode="check", max_age=3600)
    assert old["fresh"] is False and "more than 3600 s old" in old["reason"]
    module(tmp_path, mode="record", ignore=[str(etc / "verify-*")])
    (etc / "verify-net.service").write_text("[Unit]\n")
    assert module(tmp_path, mode="check", ignore=[str(etc / "verify-*")])["fresh"] is True
    assert module(tmp_path, mode="check")["drifted"] == [f"{etc / 'verify-net.service'}: new"]


def test_the_tier_plays_match_no_host_unless_the_tier_converges():
    assert clusterforge_converge_hosts("dask_workers", "dask", {"all": ["a"]}) == []
    groups = {"all": ["a"], "cf_converge_dask": ["a"]}
    assert clusterforge_converge_hosts("dask_workers", "dask", groups) == "dask_workers"
    assert clusterforge_converge_hosts("spark_workers", "spark", groups) == []


def test_a_tier_the_snapshot_found_unchanged_everywhere_needs_no_comparison():
    groups = {"all": ["a", "b", "c"], "head": ["a"], "workers": ["b", "c"], "ungrouped": []}
    fresh = {"fresh_tiers": ["dask", "spark"]}
    hostvars = {"a": {"__cf_tier_snapshot": fresh}, "b": {"__cf_tier_snapshot": fresh}, "c": {}}
    # Every host of the pattern (an absent optional group matches nothing, as in Ansible) found it fresh.
    assert clusterforge_compare_hosts("head:workers:!c:luigi", "dask", groups, hostvars) == []
    assert clusterforge_compare_hosts("all:&head", "spark", groups, hostvars) == []
    # A host without a snapshot, a tier it did not find fresh, a pattern not resolved here: compare.
    assert clusterforge_compare_hosts("all", "dask", groups, hostvars) == "all"
    assert clusterforge_compare_hosts("head", "celery", groups, hostvars) == "head"
    assert clusterforge_compare_hosts("work*", "dask", groups, hostvars) == "work*"
    assert clusterforge_compare_hosts([], "dask", groups, hostvars) == []
    # A tier converged earlier in this run (it may have changed a secret this one read): compare.
    converged = {**groups, "cf_converge_common": ["b"]}
    assert clusterforge_compare_hosts("head", "dask", converged, hostvars) == "head"


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Snapshot
      clusterforge_converge_state:
        mode: snapshot
        paths: ["{{ etc }}"]
        units: []
        state_dir: "{{ state }}"
      register: __cf_tier_snapshot
      when: lookup('env', 'CF_TEST_ACTION') in ['snapshot', 'converge']
    - name: Keep the snapshot
      ansible.builtin.copy:
        content: "{{ __cf_tier_snapshot | to_json }}"
        dest: "{{ out | dirname }}/snapshot.json"
        mode: "0600"
      when: lookup('env', 'CF_TEST_ACTION') == 'snapshot'
    # The node (as a tier converging in between does), a secret, the inventory (an edit meanwhile).
    - name: Change what LATE names after the snapshot
      ansible.builtin.copy:
        content: "{{ late[what].content }}"
        dest: "{{ late[what].dest }}"
        mode: "0600"
      vars:
        what: "{{ lookup('env', 'CF_TEST_LATE') }}"
        late:
          node: {dest: "{{ etc }}/dask/late.yaml", content: "late\\n"}
          secret: {dest: "{{ cluster_secrets_dir }}/broker_password", content: "late\\n"}
          inventory: {dest: "{{ inventory_dir }}/group_vars/all.yml", content: "dask_worker_nthreads: 9\\n"}
      when: what in late
    - name: Record (after the snapshot, as a site run's tier that converged)
      clusterforge_converge_state:
        tier: dask
        mode: record
        paths: ["{{ etc }}"]
        units: []
        state_dir: "{{ state }}"
        snapshot: "{{ __cf_tier_snapshot }}"
      when: lookup('env', 'CF_TEST_ACTION') in ['record', 'converge']
    - name: Check
      clusterforge_converge_state:
        tier: dask
        mode: check
        paths: ["{{ etc }}"]
        units: []
        state_dir: "{{ state }}"
        snapshot: "{{ __cf_tier_snapshot | default(omit) }}"
      register: answer
      when: lookup('env', 'CF_TEST_ACTION') in ['check', 'snapshot']
    - name: Keep the answer
      ansible.builtin.copy:
        content: "{{ answer | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      when: lookup('env', 'CF_TEST_ACTION') in ['check', 'snapshot']
"""


def playbook(tmp_path: Path, action: str, *args: str, late: str = "") -> dict[str, Any]:
    """Run the action plugin once on localhost (ACTION record, check, snapshot: the check judged
    from a snapshot, or converge: a snapshot, then the record a tier that converged makes; LATE:
    node, secret or inventory, changed after the snapshot); the check's answer."""
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    inventory = tmp_path / "inventory/hosts.yml"
    if not inventory.exists():
        inventory.parent.mkdir(exist_ok=True)
        hosts = {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
        inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    out = tmp_path / "answer.json"
    out.unlink(missing_ok=True)
    extra = {"etc": str(tmp_path / "etc"), "state": str(tmp_path / "state"), "out": str(out)}
    extra["cluster_secrets_dir"] = str(tmp_path / "secrets")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"}
    env["CF_TEST_ACTION"] = action  # not an extra var: those are inputs
    env["CF_TEST_LATE"] = late
    command = [
        *ISOLATED,
        str(ROOT / ".venv/bin/ansible-playbook"),
        "-i",
        str(inventory),
        str(tmp_path / "play.yml"),
    ]
    done = subprocess.run(
        [*command, "-e", json.dumps(extra), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return json.loads(out.read_text()) if action in ("check", "snapshot") else {}


def test_the_action_digests_extra_vars_secrets_and_the_inventory(tmp_path, etc):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/broker_password").write_text("one\n")
    playbook(tmp_path, "record")
    assert playbook(tmp_path, "check")["fresh"] is True
    # How to converge is not an input; tags that pick tasks never take the fast path.
    assert playbook(tmp_path, "check", "-e", "cluster_fast_converge=true")["fresh"] is True
    off = playbook(tmp_path, "check", "-e", "cluster_fast_converge=false")
    assert (off["fresh"], off["reason"]) == (False, "cluster_fast_converge is off")
    # molecule's own skip tags (its idempotence run adds one) pick no tier task.
    skips = "molecule-notest,notest,molecule-idempotence-notest"
    molecule = playbook(tmp_path, "check", "--skip-tags", skips)
    assert molecule["fresh"] is True
    tagged = playbook(tmp_path, "check", "--tags", "all,dask_configure")
    assert tagged["fresh"] is False and "selects tags" in tagged["reason"]
    # What to converge is: an extra var, a secret the tier converged with, the inventory. A secret
    # that appeared since (a later tier's key, another host's certificate) is not.
    assert "inputs changed" in playbook(tmp_path, "check", "-e", "dask_worker_nthreads=4")["reason"]
    (tmp_path / "secrets/tls").mkdir()
    (tmp_path / "secrets/tls/cf-lab-9.key").write_text("later\n")
    assert playbook(tmp_path, "check")["fresh"] is True
    (tmp_path / "secrets/broker_password").write_text("two\n")
    changed = playbook(tmp_path, "check")
    assert (changed["fresh"], changed["reason"]) == (
        False,
        "a secret it converged with changed or vanished (broker_password)",
    )
    playbook(tmp_path, "record")
    (tmp_path / "secrets/tls/cf-lab-9.key").unlink()
    assert "(tls/cf-lab-9.key)" in playbook(tmp_path, "check")["reason"]
    playbook(tmp_path, "record")
    (tmp_path / "inventory/group_vars").mkdir()
    (tmp_path / "inventory/group_vars/all.yml").write_text("dask_worker_nthreads: 2\n")
    assert "inputs changed" in playbook(tmp_path, "check")["reason"]
    # Of the inventory, what the tier reads counts, and a check names it.
    playbook(tmp_path, "record")
    (tmp_path / "inventory/group_vars/all.yml").write_text(
        "dask_worker_nthreads: 2\nspark_app_default_cores: 2\n"
    )
    assert playbook(tmp_path, "check")["fresh"] is True
    (tmp_path / "inventory/group_vars/all.yml").write_text(
        "dask_worker_nthreads: 3\nspark_app_default_cores: 2\n"
    )
    assert playbook(tmp_path, "check")["reason"] == "its inputs changed (variables: dask_worker_nthreads)"
    named = playbook(tmp_path, "check", "-e", "dask_scheduler_port=8787")["reason"]
    assert named == "its inputs changed (variables: dask_scheduler_port, dask_worker_nthreads)"


def test_a_check_names_the_parts_of_the_inputs_that_changed():
    now = time.time()
    parts = {
        "files": {"roles/a.yml": "1", "site.yml": "1"},
        "variables": {"x": "1"},
        "hosts": {"groups": "1"},
    }
    marker = {"inputs": "a", "secrets": {}, "at": now, "parts": parts}

    def reason(**changes: dict[str, str]) -> str:
        return ACTION.judge("dask", True, [], marker, "b", {}, 100, now, {**parts, **changes})[1]

    assert reason(files={"roles/a.yml": "2", "site.yml": "1"}) == "its inputs changed (files: roles/a.yml)"
    assert reason(files={"site.yml": "1"}, variables={"x": "1", "y": "1"}) == (
        "its inputs changed (files: roles/a.yml; variables: y)"
    )
    assert reason(variables=dict.fromkeys("vwxyz", "1")) == "its inputs changed (variables: v, w, y, ...)"
    assert reason(hosts={"groups": "2"}) == "its inputs changed (hosts: groups)"
    # A marker recorded before parts were: the general reason.
    old = {"inputs": "a", "secrets": {}, "at": now}
    assert ACTION.judge("dask", True, [], old, "b", {}, 100, now, parts) == (
        False,
        "its inputs changed (project files, inventory or extra vars)",
    )


def test_a_site_run_judges_each_tier_from_one_snapshot_of_the_node(tmp_path, etc):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/broker_password").write_text("one\n")
    playbook(tmp_path, "record")
    # The node is read once, at the snapshot: what changes on it later in the run is what the tiers
    # converging in between change, and they record it. A check that reads the node sees the change.
    assert playbook(tmp_path, "snapshot", late="node")["fresh"] is True
    assert "the node changed" in playbook(tmp_path, "check")["reason"]
    playbook(tmp_path, "record")
    # Secrets (and inputs) are compared when the tier's turn comes, as without a snapshot.
    assert json.loads((tmp_path / "snapshot.json").read_text())["fresh_tiers"] == ["dask"]
    secret = playbook(tmp_path, "snapshot", late="secret")
    assert (secret["fresh"], secret["reason"]) == (
        False,
        "a secret it converged with changed or vanished (broker_password)",
    )
    # A node that drifted before the snapshot: every tier converges.
    playbook(tmp_path, "record")
    (etc / "dask/scheduler.yaml").write_text("a: 4 # edited by hand\n")
    os.utime(etc / "dask/scheduler.yaml", ns=(1, 1))
    drifted = playbook(tmp_path, "snapshot")
    assert drifted["fresh"] is False and drifted["drifted"] == [f"{etc / 'dask/scheduler.yaml'}: changed"]


def test_a_converge_records_the_inputs_its_run_started_with(tmp_path, etc):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "inventory/group_vars").mkdir(parents=True)
    (tmp_path / "inventory/group_vars/all.yml").write_text("dask_worker_nthreads: 2\n")
    playbook(tmp_path, "converge")
    assert playbook(tmp_path, "check")["fresh"] is True
    # Edited while a run went on (after its snapshot): that run converged from the values it had
    # read, so the next run converges the tier again.
    playbook(tmp_path, "converge", late="inventory")
    assert (tmp_path / "inventory/group_vars/all.yml").read_text() == "dask_worker_nthreads: 9\n"
    assert (
        playbook(tmp_path, "check")["reason"] == "its inputs changed (project files, inventory or extra vars)"
    )
    playbook(tmp_path, "converge")
    assert playbook(tmp_path, "check")["fresh"] is True


def test_the_action_rejects_a_switch_that_is_not_a_boolean(tmp_path, etc):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    with pytest.raises(AssertionError, match="cluster_fast_converge must be true or false"):
        playbook(tmp_path, "check", "-e", "cluster_fast_converge=sometimes")


def load_action() -> Any:
    loaded = load(
        "clusterforge_converge_state_action", ROOT / "plugins/action/clusterforge_converge_state.py"
    )
    loaded.load_extra_vars = lambda loader: {}
    return loaded


ACTION = load_action()
TIER_PLAY = """
- ansible.builtin.import_playbook: tier_state/check.yml
  vars: {{tier_state_tier: {tier}}}
- name: The {tier} tier
  hosts: all
  roles:
{roles}
"""


def write(root: Path, files: dict[str, str]) -> None:
    """Each of FILES (a path under ROOT: its text), with the folders it needs."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def project(root: Path) -> Path:
    """A project of two tiers: front applies role web (which includes role tls and deploys the
    notebooks), back applies role db; both read the plugins, site.yml and the tier_state plays."""
    files = {
        "ansible.cfg": "[defaults]\n",
        "site.yml": "- ansible.builtin.import_playbook: playbooks/front.yml\n",
        "plugins/filter/f.py": "x = 1\n",
        "playbooks/tier_state/check.yml": "[]\n",
        "playbooks/front.yml": TIER_PLAY.format(tier="front", roles="    - role: web"),
        "playbooks/back.yml": TIER_PLAY.format(tier="back", roles="    - db"),
        "roles/web/tasks/main.yml": "- ansible.builtin.include_role:\n    name: tls\n",
        "roles/web/defaults/main.yml": 'web_notebooks: "{{ role_path }}/../../notebooks"\n',
        "roles/web/README.md": "# web\n",
        "roles/web/molecule/default/converge.yml": "[]\n",
        "roles/tls/tasks/main.yml": "- ansible.builtin.debug: {msg: tls}\n",
        "roles/db/tasks/main.yml": "- ansible.builtin.debug: {msg: db}\n",
        "roles/db/meta/main.yml": "dependencies: []\n",
        "notebooks/01.ipynb": "{}\n",
        "compute_jobs/runner.py": "x = 1\n",
    }
    write(root, files)
    return root


def digests(root: Path) -> dict[str, str]:
    return {tier: ACTION.inputs_digest({}, None, tier, root) for tier in ("front", "back")}


def stale_after(root: Path, edits: dict[str, str]) -> set[str]:
    """The tiers whose inputs digest changes when the project's files in EDITS get that text."""
    before = digests(root)
    for name, text in edits.items():
        (root / name).write_text(text)
    after = digests(root)
    return {tier for tier in before if after[tier] != before[tier]}


def test_a_tier_s_inputs_are_its_roles_and_what_they_deploy(tmp_path):
    root = project(tmp_path)
    assert ACTION.tier_roles("front", root) == {"web", "tls"}
    assert ACTION.tier_roles("back", root) == {"db"}
    front = [relative for relative, _ in ACTION.tier_files("front", root)]
    assert front == [
        "ansible.cfg",
        "notebooks/01.ipynb",
        "playbooks/front.yml",
        "playbooks/tier_state/check.yml",
        "plugins/filter/f.py",
        "roles/tls/tasks/main.yml",
        "roles/web/defaults/main.yml",
        "roles/web/tasks/main.yml",
        "site.yml",
    ]
    back = [relative for relative, _ in ACTION.tier_files("back", root)]
    assert "roles/db/meta/main.yml" in back and not [
        f for f in back if f.startswith(("roles/web", "notebooks"))
    ]
    # A role's edit reaches the tiers that apply it, directly or through another role, only.
    tls = {"roles/tls/tasks/main.yml": "- ansible.builtin.debug: {msg: tls 2}\n"}
    assert stale_after(root, tls) == {"front"}
    assert stale_after(root, {"notebooks/02.ipynb": "{}\n"}) == {"front"}
    # Its scenarios and README are no converge's input; the configuration and the plugins are every tier's.
    readme = {"roles/web/molecule/default/converge.yml": "[1]\n", "roles/web/README.md": "# web, again\n"}
    assert stale_after(root, readme) == set()
    assert stale_after(root, {"plugins/filter/f.py": "x = 2\n"}) == {"front", "back"}


FILTERS = """class FilterModule:
    def filters(self):
        return {{{names}}}
"""


def test_a_plugin_is_the_input_of_the_tiers_that_name_it(tmp_path):
    root = project(tmp_path)
    files = {
        "plugins/filter/web_filters.py": FILTERS.format(names='"web_url": str, "web_port": int'),
        "plugins/modules/db_table.py": "x = 1\n",
        "plugins/action/db_table.py": "x = 1\n",
        "plugins/callback/progress.py": "x = 1\n",
        "plugins/inventory/cloud.py": "x = 1\n",
        "roles/tls/tasks/main.yml": "- ansible.builtin.debug: {msg: \"{{ 'a' | web_url }}\"}\n",
        "roles/db/tasks/main.yml": "- db_table: {name: t}\n",
    }
    write(root, files)
    # A filter plugin by the filters it declares (used by a role front applies through web), a
    # module and its action plugin by their name (db's task).
    assert stale_after(root, {"plugins/filter/web_filters.py": FILTERS.format(names='"web_url": repr')}) == {
        "front"
    }
    assert stale_after(root, {"plugins/modules/db_table.py": "x = 2\n"}) == {"back"}
    assert stale_after(root, {"plugins/action/db_table.py": "x = 2\n"}) == {"back"}
    # What a run shows and where its hosts come from are no tier's input (the hosts are, as such).
    assert (
        stale_after(
            root, {"plugins/callback/progress.py": "x = 2\n", "plugins/inventory/cloud.py": "x = 2\n"}
        )
        == set()
    )
    # A filter plugin whose names cannot be read without running it is every tier's input.
    computed = "class FilterModule:\n    def filters(self):\n        return dict(web_url=str)\n"
    assert stale_after(root, {"plugins/filter/web_filters.py": computed}) == {"front", "back"}
    assert stale_after(root, {"plugins/filter/web_filters.py": computed + "# again\n"}) == {"front", "back"}
    # A plugin no tier names (the verification's own) is none's.
    (root / "plugins/modules/verify_unit.py").write_text("x = 1\n")
    assert stale_after(root, {"plugins/modules/verify_unit.py": "x = 2\n"}) == set()


def test_a_tier_takes_the_playbooks_site_yml_runs_before_it_only(tmp_path):
    root = project(tmp_path)
    for name in ("preflight", "cloud_up", "verify", "scale"):
        (root / f"playbooks/{name}.yml").write_text("[]\n")
    # back is not imported by site.yml: it cannot be told what runs before it, so it takes every playbook.
    assert stale_after(root, {"playbooks/scale.yml": "[1]\n"}) == {"back"}
    (root / "site.yml").write_text(
        "".join(
            f"- name: {name}\n  ansible.builtin.import_playbook: playbooks/{name}.yml\n"
            for name in ("preflight", "cloud_up", "front", "back", "verify")
        )
    )
    assert ACTION.playbooks_before("back", root) == {"preflight.yml", "cloud_up.yml", "front.yml"}
    front = [relative for relative, _ in ACTION.tier_files("front", root)]
    assert [f for f in front if f.startswith("playbooks/")] == [
        "playbooks/cloud_up.yml",
        "playbooks/front.yml",
        "playbooks/tier_state/check.yml",
    ]
    # What runs after every tier (the verification), outside site.yml (scale, upgrade) or before the
    # tiers only to check (the preflight, a gate) is no input.
    edits = {f"playbooks/{name}.yml": "[2]\n" for name in ("verify", "scale", "preflight")}
    assert stale_after(root, edits) == set()
    # A folder of playbooks/ is a tier's input only where a playbook it runs names it, directly
    # (tier_state/ from each tier's playbook) or through another such folder.
    (root / "playbooks/drain_probe").mkdir()
    (root / "playbooks/snapshot").mkdir()
    probe = {"playbooks/drain_probe/start.yml": "[]\n", "playbooks/snapshot/take.yml": "[]\n"}
    for name, text in probe.items():
        (root / name).write_text(text)
    (root / "playbooks/scale.yml").write_text("- ansible.builtin.import_playbook: drain_probe/start.yml\n")
    assert stale_after(root, {"playbooks/drain_probe/start.yml": "[3]\n"}) == set()
    assert stale_after(root, {"playbooks/snapshot/take.yml": "[3]\n"}) == set()
    named = {"playbooks/tier_state/check.yml": "- import_playbook: ../snapshot/take.yml\n"}
    assert stale_after(root, named) == {"front", "back"}
    assert stale_after(root, {"playbooks/snapshot/take.yml": "[4]\n"}) == {"front", "back"}
    assert "playbooks/drain_probe/start.yml" not in [rel for rel, _ in ACTION.tier_files("back", root)]
    # What runs before the tiers and may set what they read is every tier's: a changed cloud_up makes
    # both stale.
    assert stale_after(root, {"playbooks/cloud_up.yml": "[2]\n"}) == {"front", "back"}
    # A site.yml that cannot be read as plain imports takes every playbook again.
    (root / "site.yml").write_text('- ansible.builtin.import_playbook: "playbooks/{{ tier }}.yml"\n')
    assert ACTION.playbooks_before("front", root) is None
    assert "playbooks/scale.yml" in [relative for relative, _ in ACTION.tier_files("front", root)]


def test_a_tier_whose_roles_cannot_be_told_takes_every_file(tmp_path):
    root = project(tmp_path)
    every = [relative for relative, _ in ACTION.tier_files(None, root)]
    assert "roles/db/tasks/main.yml" in every and "roles/web/README.md" in every
    (root / "roles/web/tasks/main.yml").write_text(
        '- ansible.builtin.include_role:\n    name: "{{ web_tls_role }}"\n'
    )
    assert ACTION.tier_roles("front", root) is None
    assert [relative for relative, _ in ACTION.tier_files("front", root)] == every
    (root / "roles/web/tasks/main.yml").write_text("- ansible.builtin.include_role:\n    name: elsewhere\n")
    assert ACTION.tier_roles("front", root) is None  # a role outside roles/
    (root / "roles/web/tasks/main.yml").write_text("- name: [unclosed\n")
    assert ACTION.tier_roles("front", root) is None
    assert ACTION.tier_roles("nosuchtier", root) is None
    # A sibling's files reached through role_path count as that role's.
    (root / "roles/web/tasks/main.yml").write_text(
        '- ansible.builtin.include_vars: "{{ role_path }}/../db/vars.yml"\n'
    )
    assert ACTION.tier_roles("front", root) == {"web", "db"}


def test_every_tier_of_the_project_has_roles_that_can_be_told():
    tiers = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml") if "tier_state_tier:" in p.read_text())
    assert len(tiers) >= 12
    roles = {tier: ACTION.tier_roles(tier) for tier in tiers}
    assert None not in roles.values(), roles
    assert {"airflow", "dask", "spark", "luigi", "pipeline", "web_gateway"} <= roles["airflow"]
    assert roles["dask"] == {"dask", "web_gateway"}
    # The tiers that deploy compute_jobs take its files; the others do not.
    takers = {t for t in tiers if any(rel.startswith("compute_jobs/") for rel, _ in ACTION.tier_files(t))}
    assert takers == {"celery", "jupyter", "mpi", "mpmanager"}
    # The plugins: the fast path's own and the hosts filter every tier's, the publishing module the
    # tiers that publish an engine's, the verification's own plugins and the progress callback none's.
    plugins = {
        tier: {rel for rel, _ in ACTION.tier_files(tier) if rel.startswith("plugins/")} for tier in tiers
    }
    for tier in tiers:
        assert {
            "plugins/action/clusterforge_converge_state.py",
            "plugins/filter/converge_hosts.py",
        } <= plugins[tier]
    assert "plugins/modules/clusterforge_engine_fact.py" in plugins["dask"] - plugins["common"]
    unread = {
        "plugins/filter/verify_engines.py",
        "plugins/filter/port_plan.py",
        "plugins/modules/clusterforge_transient_unit.py",
        "plugins/callback/clusterforge_progress.py",
    }
    assert not unread & set().union(*plugins.values())
    # The verification, scaling and upgrade playbooks and the preflight (a gate) are no tier's input;
    # cloud_up, before the tiers, is every tier's.
    for tier in tiers:
        playbooks = {rel for rel, _ in ACTION.tier_files(tier) if rel.startswith("playbooks/")}
        assert "playbooks/cloud_up.yml" in playbooks and f"playbooks/{tier}.yml" in playbooks, tier
        never = {f"playbooks/{name}.yml" for name in ("verify", "scale", "upgrade", "preflight")}
        assert not playbooks & never, tier
    # So the names the port plan reads are no tier's but where the tier's own files name them.
    names = {tier: ACTION.tier_names(tier) for tier in tiers}
    assert "celery_flower_port" in names["celery"] and "celery_flower_port" not in names["dask"]


def inventory(root: Path) -> dict[str, Any]:
    """A YAML inventory beside group_vars (the lab's layout) for the two-tier project: web reads
    web_port, db reads db_size; what the action's task_vars name of it."""
    (root / "roles/web/defaults/main.yml").write_text('web_port: 80\nweb_url: "http://x:{{ web_port }}"\n')
    (root / "roles/db/defaults").mkdir()
    (root / "roles/db/defaults/main.yml").write_text("db_size: 1\n")
    files = {
        "inventory/hosts.yml": "all:\n  hosts:\n    n1: {ansible_host: 10.0.0.1, ansible_user: root}\n"
        "  children:\n    dbs:\n      hosts: {n1: {db_shards: 2}}\n",
        "inventory/group_vars/all/main.yml": (
            'base: 8000\nweb_port: "{{ base + 80 }}"\ndb_size: 5\nnote: hi\n'
        ),
        "inventory/group_vars/dbs.yml": "db_shards_per_host: 1\n",
    }
    write(root, files)
    return {"ansible_inventory_sources": [str(root / "inventory/hosts.yml")]}


def replaced(root: Path, name: str, old: str, new: str) -> dict[str, str]:
    """The edit of NAME (as it is now) that replaces OLD by NEW."""
    text = (root / name).read_text()
    assert old in text, (name, old)
    return {name: text.replace(old, new)}


def stale_with(root: Path, task_vars: dict[str, Any], edits: dict[str, str | None]) -> set[str]:
    """The tiers whose inputs digest changes when the files in EDITS get that text (None: removed)."""

    def now() -> dict[str, str]:
        return {tier: ACTION.inputs_digest(task_vars, None, tier, root) for tier in ("front", "back")}

    before = now()
    for name, text in edits.items():
        if text is None:
            (root / name).unlink()
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    after = now()
    return {tier for tier in before if after[tier] != before[tier]}


def test_an_inventory_variable_is_an_input_of_the_tiers_that_read_it(tmp_path):
    root = project(tmp_path)
    task_vars = inventory(root)
    main = "inventory/group_vars/all/main.yml"
    # Read by the db role only: the front tier stays fresh.
    assert stale_with(root, task_vars, replaced(root, main, "db_size: 5", "db_size: 6")) == {"back"}
    # Read by no tier: none converges again.
    assert stale_with(root, task_vars, replaced(root, main, "note: hi", "note: bye")) == set()
    # A variable the value of a read one names (base in web_port's template) is read too.
    assert stale_with(root, task_vars, replaced(root, main, "base: 8000", "base: 9000")) == {"front"}
    # Host variables: Ansible's own (the connection) are every tier's, a role's only its tier's;
    # db_shards_per_host is a name of its own, not db_shards.
    hosts = "inventory/hosts.yml"
    assert stale_with(root, task_vars, replaced(root, hosts, "root", "admin")) == {
        "front",
        "back",
    }
    (root / "roles/db/tasks/main.yml").write_text("- ansible.builtin.debug: {msg: '{{ db_shards }}'}\n")
    assert stale_with(root, task_vars, replaced(root, hosts, "db_shards: 2", "db_shards: 3")) == {"back"}
    assert stale_with(root, task_vars, {"inventory/group_vars/dbs.yml": "db_shards_per_host: 2\n"}) == set()
    # A read variable that vanishes, or appears in a new file, is a change of that tier's inputs.
    assert stale_with(root, task_vars, replaced(root, main, "db_size: 6\n", "")) == {"back"}
    assert stale_with(root, task_vars, {"inventory/host_vars/n1.yml": "db_size: 7\n"}) == {"back"}
    # The extra vars are filtered alike.
    plain = {tier: ACTION.inputs_digest(task_vars, None, tier, root) for tier in ("front", "back")}
    ACTION.load_extra_vars = lambda loader: {"web_port": 81, "unrelated": 1}
    try:
        extra = {tier: ACTION.inputs_digest(task_vars, None, tier, root) for tier in ("front", "back")}
    finally:
        ACTION.load_extra_vars = lambda loader: {}
    assert extra["back"] == plain["back"] and extra["front"] != plain["front"]


def test_what_cannot_be_read_as_variables_is_every_tier_s_input(tmp_path):
    root = project(tmp_path)
    task_vars = inventory(root)
    vault = "$ANSIBLE_VAULT;1.1;AES256\n6162\n"
    assert stale_with(root, task_vars, {"inventory/group_vars/all/vault.yml": vault}) == {"front", "back"}
    assert stale_with(root, task_vars, {"inventory/group_vars/all/vault.yml": vault + "6364\n"}) == {
        "front",
        "back",
    }
    tagged = "db_password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n"
    assert stale_with(root, task_vars, {"inventory/group_vars/all/vault.yml": tagged}) == {"front", "back"}
    assert stale_with(root, task_vars, {"inventory/group_vars/all/vault.yml": None}) == {"front", "back"}
    # An inventory that is not a YAML inventory (INI, an inventory plugin's configuration): whole.
    (root / "inventory/hosts.ini").write_text("[dbs]\nn1 db_size=1\n")
    ini = {"ansible_inventory_sources": [str(root / "inventory/hosts.ini")]}
    assert stale_with(root, ini, {"inventory/hosts.ini": "[dbs]\nn1 note=2\n"}) == {"front", "back"}
    plugin = {"ansible_inventory_sources": [str(root / "inventory")]}
    (root / "inventory/ec2.yml").write_text("plugin: clusterforge_ec2\nregions: [a]\n")
    assert stale_with(root, plugin, {"inventory/ec2.yml": "plugin: clusterforge_ec2\nregions: [b]\n"}) == {
        "front",
        "back",
    }
    # An inventory directory's group_vars are read as variables.
    main = "inventory/group_vars/all/main.yml"
    assert stale_with(root, plugin, replaced(root, main, "db_size: 5", "db_size: 6")) == {"back"}


def test_a_tier_that_reaches_variables_by_computed_names_takes_every_variable(tmp_path):
    root = project(tmp_path)
    task_vars = inventory(root)
    main = "inventory/group_vars/all/main.yml"
    (root / "roles/tls/tasks/main.yml").write_text(
        "- ansible.builtin.debug:\n    msg: \"{{ lookup('ansible.builtin.vars', 'db_' ~ 'size') }}\"\n"
    )
    assert ACTION.tier_names("front", root) is None
    assert stale_with(root, task_vars, replaced(root, main, "note: hi", "note: bye")) == {"front"}
    (root / "roles/tls/tasks/main.yml").write_text(
        "- ansible.builtin.debug: {msg: \"{{ vars['db_size'] }}\"}\n"
    )
    assert ACTION.tier_names("front", root) is None
    # hostvars[...] names its variables; it is no computed name.
    (root / "roles/tls/tasks/main.yml").write_text(
        "- ansible.builtin.debug: {msg: \"{{ hostvars['n1'].db_size }}\"}\n"
    )
    assert ACTION.tier_names("front", root) is not None
    assert stale_with(root, task_vars, replaced(root, main, "db_size: 5", "db_size: 6")) == {"front", "back"}


def test_every_tier_of_the_project_reads_its_variables_by_name():
    """The fast path skips a tier an inventory edit does not concern only where the tier's files
    name what they read; a file that computes a variable's name would make every edit every tier's."""
    tiers = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml") if "tier_state_tier:" in p.read_text())
    names = {tier: ACTION.tier_names(tier) for tier in tiers}
    assert None not in names.values(), [tier for tier, found in names.items() if found is None]
    assert "spark_app_default_cores" in names["spark"] and "spark_app_default_cores" not in names["dask"]


def test_one_action_reads_the_project_and_the_inventory_once_for_every_tier(tmp_path, monkeypatch):
    """A snapshot digests every tier's inputs on each host (twelve tiers): within one action the
    project's directories are walked and the inventory's files parsed once, not once per tier,
    and a later action reads them afresh."""
    root = project(tmp_path)
    task_vars = inventory(root)
    walked: list[str] = []
    real_walk = ACTION.os.walk

    def walk(top: Any, *args: Any, **kwargs: Any) -> Any:
        walked.append(str(top))
        return real_walk(top, *args, **kwargs)

    monkeypatch.setattr(ACTION.os, "walk", walk)

    def every_tier() -> dict[str, str]:
        return {tier: ACTION.inputs_digest(task_vars, None, tier, root) for tier in (None, "front", "back")}

    separately = every_tier()
    assert len(walked) > len(set(walked))  # each digest on its own walks the project again
    walked.clear()
    with ACTION.one_reading():
        together = every_tier()
        assert together == separately
        assert sorted(walked) == sorted(set(walked)), walked
        main = "inventory/group_vars/all/main.yml"
        (root / main).write_text((root / main).read_text().replace("db_size: 5", "db_size: 6"))
        assert every_tier() == together  # read once: what the action started with
    assert every_tier()["back"] != together["back"]
    assert every_tier()["front"] == together["front"]


def test_a_run_with_a_role_part_s_tag_and_no_cached_facts_reads_the_facts(tmp_path):
    # Ansible skips a tier-tagged play's implicit fact gathering under --tags dask_configure; the
    # comparison play at the top of every tier gathers them where none are cached (on the lab,
    # before: playbooks/dask.yml --tags dask_configure failed on 'memtotal_mb').
    play = tmp_path / "play.yml"
    play.write_text(
        f"- ansible.builtin.import_playbook: {ROOT}/playbooks/tier_state/check.yml\n"
        "  vars: {tier_state_tier: tagtest, tier_state_hosts: localhost}\n"
        "- hosts: localhost\n"
        "  tags: [tagtest]\n"
        "  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"memory {{ ansible_facts['memtotal_mb'] }} MB\"\n"
        "      tags: [tagtest_part]\n"
    )
    rc, output = run_local_playbook(
        play,
        {"ansible_become": False, "ansible_python_interpreter": sys.executable},
        args=("--tags", "tagtest_part"),
        environment={"ANSIBLE_CACHE_PLUGIN": "memory"},
    )
    assert rc == 0, output
    assert re.search(r'"msg": "memory [0-9]+ MB"', output)


def test_what_the_roles_write_on_a_node_does_not_depend_on_where_the_project_is():
    """A node's files must come out the same from any checkout of the project (a colleague's clone,
    a moved directory): a controller path in a template changes the file, and its unit restarts."""
    controller_paths = re.compile(r"\b(role_path|playbook_dir|inventory_dir|ansible_config_file)\b")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted(ROOT.glob("roles/*/templates/**/*"))
        if path.is_file()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if controller_paths.search(line)
    ]
    assert found == []


def test_a_gate_only_checks_on_the_controller():
    """A gate (GATES: a playbook before the tiers that is no tier's input) may stop a run, never
    change what a tier does: its plays run on the controller and its tasks only assert or fail."""
    assert ACTION.GATES
    for name in sorted(ACTION.GATES):
        plays = yaml.safe_load((ROOT / "playbooks" / name).read_text())
        for play in plays:
            assert play["hosts"] == "localhost", (name, play["hosts"])
            assert set(play) <= {"name", "hosts", "gather_facts", "tags", "tasks"}, (name, sorted(play))
            modules = {key for task in play["tasks"] for key in task} - {"name", "vars", "when", "tags"}
            assert modules <= {"ansible.builtin.assert", "ansible.builtin.fail"}, (name, modules)
