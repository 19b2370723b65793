"""The live lines of the verification tier: the callback that follows the suite's progress file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pathload import load

ROOT = Path(__file__).resolve().parents[2]
progress = load("cf_progress", ROOT / "plugins/callback/clusterforge_progress.py")


def poll_output(events: list[dict[str, Any]], job: str = '{"started": 1}') -> str:
    return "\n".join(json.dumps(e) for e in events) + "\n@@job\n" + job


START = {"event": "start", "check": "net.pairs", "target": "n2", "deadline": "10:31:07Z"}
RESULT = {
    "event": "result",
    "check": "node.stream.triad",
    "target": "n2",
    "status": "PASS",
    "figure": "11 GB/s",
}


def test_each_result_is_printed_once_as_it_arrives():
    follower = progress.Follower()
    first = [{**START, "check": "node.stream"}, RESULT]
    lines = follower.lines("n2", progress.progress_events(poll_output(first)), now=0.0)
    assert (
        len(lines) == 1 and "node.stream.triad" in lines[0] and "PASS" in lines[0] and "11 GB/s" in lines[0]
    )
    assert follower.lines("n2", progress.progress_events(poll_output(first)), now=1.0) == []
    more = [*first, {**RESULT, "check": "node.disk", "status": "FAIL", "figure": "", "reason": "disk full"}]
    (line,) = follower.lines("n2", progress.progress_events(poll_output(more)), now=2.0)
    assert "node.disk" in line and "FAIL" in line and "disk full" in line


def test_a_check_without_news_shows_as_the_one_still_running_with_its_deadline():
    follower = progress.Follower()
    events = progress.progress_events(poll_output([RESULT, START]))
    assert len(follower.lines("n2", events, now=0.0)) == 1
    assert follower.lines("n2", events, now=progress.QUIET_S - 1) == []
    (line,) = follower.lines("n2", events, now=progress.QUIET_S + 1)
    assert "running net.pairs (deadline 10:31:07Z)" in line
    assert follower.lines("n2", events, now=progress.QUIET_S + 30) == []  # said once per check


def test_hosts_are_followed_apart_and_the_job_part_is_not_progress():
    follower = progress.Follower()
    out = poll_output([RESULT], job=json.dumps({"event": "result", "check": "x"}))
    assert len(progress.progress_events(out)) == 1
    assert len(follower.lines("n2", progress.progress_events(out), now=0.0)) == 1
    assert len(follower.lines("n3", progress.progress_events(out), now=0.0)) == 1


def unit_snippet(name: str, show: str) -> dict[str, Any]:
    """What the snippet `name` of the verify role prints for `systemctl show` output `show`."""
    import subprocess

    import yaml

    code = yaml.safe_load((ROOT / "roles/verify/vars/main.yml").read_text())[name]
    done = subprocess.run([sys.executable, "-c", code, show], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_follow_task_reduces_the_unit_to_started_or_done():
    def state(show: str) -> dict[str, Any]:
        return unit_snippet("__verify_job_state", show)

    assert state("LoadState=loaded\nSubState=running\n") == {"started": 1}
    assert state("LoadState=loaded\nSubState=start\n") == {"started": 1}
    # RemainAfterExit: an ended suite's unit stays loaded, exited (status 0) or failed (status 1).
    assert state("LoadState=loaded\nSubState=exited\n") == {"done": 1}
    assert state("LoadState=loaded\nSubState=failed\n") == {"done": 1}
    assert state("LoadState=not-found\nSubState=dead\n") == {"done": 1}
    # systemctl timed out on a busy node and printed nothing: not an end, the next poll asks again.
    assert state("") == {"started": 1}


def test_the_collect_task_names_a_run_that_did_not_end():
    def outcome(show: str) -> dict[str, Any]:
        return unit_snippet("__verify_job_outcome", show)

    loaded = "LoadState=loaded\n"
    assert outcome(loaded + "Result=success\nExecMainStatus=0\n") == {"ok": True}
    # Exit status 1: a check did not pass; the report says which, the run itself ended.
    assert outcome(loaded + "Result=exit-code\nExecMainStatus=1\n") == {"ok": True}
    late = outcome(loaded + "Result=timeout\nExecMainStatus=0\n")
    assert not late["ok"] and "past its limit" in late["why"]
    crashed = outcome(loaded + "Result=signal\nExecMainStatus=9\n")
    assert not crashed["ok"] and "Result=signal, exit status 9" in crashed["why"]
    assert not outcome(loaded + "Result=exit-code\nExecMainStatus=2\n")["ok"]
    gone = outcome("LoadState=not-found\nResult=success\nExecMainStatus=0\n")
    assert not gone["ok"] and "not-found" in gone["why"]
    # A suite that still runs reads Result=success, ExecMainStatus=0 as well: not an end.
    running = outcome(loaded + "SubState=running\nResult=success\nExecMainStatus=0\n")
    assert not running["ok"] and "still running" in running["why"]
    assert outcome(loaded + "SubState=exited\nResult=success\nExecMainStatus=0\n") == {"ok": True}
    assert outcome(loaded + "SubState=failed\nResult=exit-code\nExecMainStatus=1\n") == {"ok": True}
    # The suite's own bug (exit 70) is not a failed check (exit 1).
    broken = outcome(loaded + "SubState=failed\nResult=exit-code\nExecMainStatus=70\n")
    assert not broken["ok"] and "exit status 70" in broken["why"]
    # No answer from systemctl: the collect task asks again.
    assert outcome("") == {"unread": True}
