"""The fast re-converge on real nodes: an unchanged tier is skipped, a node edited by hand is not.

The scenario's own converge and idempotence runs set cluster_fast_converge: false (every task
runs); here the operator's way is taken: playbooks/common.yml with the fast path on.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys

import testinfra
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "_shared"))
from playbook import lab_strategy, run_playbook

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
NODES = [p["name"] for p in yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]]
PLAY = "Prepare every cluster node"
KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"


def converge(label: str) -> str:
    ephemeral = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    rc, output = run_playbook(
        "playbooks/common.yml",
        ephemeral / "inventory",
        ephemeral / "fast",
        {"cluster_fast_converge": True},
        env=lab_strategy(),
    )
    assert rc == 0, f"{label}: {output[-3000:]}"
    return output


def recap(output: str) -> dict[str, dict[str, int]]:
    """Per host: ok, changed... of the PLAY RECAP."""
    out = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, flags=re.M):
        out[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return out


def skipped(output: str) -> bool:
    return re.search(rf"PLAY \[{PLAY}\] \*+\nskipping: no hosts matched", output) is not None


def test_an_unchanged_tier_is_skipped_and_a_node_edited_by_hand_converges_again():
    # The scenario's converge and idempotence runs (every task) recorded the tier on every node.
    second = converge("first fast run")
    assert skipped(second), second[-3000:]
    assert all(r["changed"] == 0 for r in recap(second).values())

    edited = testinfra.get_host(f"podman://{NODES[1]}")
    assert edited.run("echo '# edited by hand' >> %s", KNOWN_HOSTS).rc == 0
    third = converge("run after the edit")
    assert not skipped(third), third[-3000:]  # the whole tier, on every node
    assert f"the node changed since the last converge ({KNOWN_HOSTS}: changed" in third
    counts = recap(third)
    assert set(counts) >= set(NODES)
    assert counts[NODES[1]]["changed"] >= 1, third[-3000:]
    assert "# edited by hand" not in edited.file(KNOWN_HOSTS).content_string

    fourth = converge("run after the repair")
    assert skipped(fourth), fourth[-3000:]
