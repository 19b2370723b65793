"""playbooks/drain_probe/give_up.yml: how upgrade.yml and scale.yml stop a failed roll or drain, from
their block's rescue (the same import, on localhost)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from localplay import ROOT, run_local_playbook

PLAY = """
- hosts: head
  gather_facts: false
  tasks:
    - name: Roll this host
      block:
        - name: Upgrade the worker
{failing}
      rescue:
        - name: Stop the upgrade
          ansible.builtin.import_tasks: {give_up}
          vars:
            drain_probe_what: the upgrade of {{{{ inventory_hostname }}}}
            drain_probe_left: The hosts before it are upgraded. A rerun goes on from here.
            drain_probe_name: upgrade
            drain_probe_out: /var/tmp/clusterforge-upgrade-probe.json
            drain_probe_proved: "{{{{ proved }}}}"
"""
# A command whose error ends with the line that says why, after lines that do not.
COMMAND = """          ansible.builtin.command:
            argv:
              - sh
              - -c
              - 'echo step one; printf "Traceback:\\n  line 1\\nERROR: no such version\\n\\n" >&2; exit 3'
          changed_when: false"""
# A module's failure without stderr (the pip module puts pip's whole output in msg).
MESSAGE = """          ansible.builtin.fail:
            msg: "pip said:\\nCollecting x\\nERROR: No matching distribution found for x==9.9"
"""

# A module that never ran (its interpreter is missing on the node): the why is in module_stderr.
NO_PYTHON = """          ansible.builtin.ping:
          vars:
            ansible_python_interpreter: /nonexistent/python3
"""


def give_up(tmp_path: Path, failing: str, proved: bool) -> str:
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(failing=failing, give_up=ROOT / "playbooks/drain_probe/give_up.yml"))
    inventory = tmp_path / "hosts.yml"
    node = f"{{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}"
    inventory.write_text(f"head:\n  hosts:\n    n1: {node}\n")
    status, output = run_local_playbook(play, {"proved": proved}, inventory=str(inventory))
    assert status == 2, output
    stopped = re.findall(r'fatal: \[n1\]: FAILED! => \{"changed": false, "msg": "(.*)"\}', output)
    assert stopped, output
    return stopped[-1]


@pytest.mark.parametrize(
    ("failing", "why"),
    [
        (COMMAND, "ERROR: no such version"),
        (MESSAGE, "ERROR: No matching distribution found for x==9.9"),
        (NO_PYTHON, "/nonexistent/python3: not found"),
    ],
)
def test_a_failed_roll_names_the_host_the_task_and_the_last_line_of_its_error(tmp_path, failing, why):
    message = give_up(tmp_path, failing, proved=True)
    failed_at = r'the upgrade of n1 failed at \\"Upgrade the worker\\": [^"]*'
    assert re.match(failed_at + re.escape(why) + r"\. ", message), message
    assert "Traceback" not in message and "step one" not in message and "Collecting" not in message
    assert "The hosts before it are upgraded. A rerun goes on from here." in message
    assert message.endswith(
        "The proof was released: its verdict will be in /var/tmp/clusterforge-upgrade-probe.json on n1"
        " (journalctl -u clusterforge-upgrade-probe)."
    )


def test_without_a_proof_no_verdict_is_promised(tmp_path):
    message = give_up(tmp_path, COMMAND, proved=False)
    assert "ERROR: no such version" in message and "proof" not in message and "verdict" not in message
