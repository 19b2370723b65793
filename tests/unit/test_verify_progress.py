"""The live lines of the verification tier: the callback that follows the suite's progress file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "cf_progress", ROOT / "plugins/callback/clusterforge_progress.py"
)
assert spec and spec.loader
progress = importlib.util.module_from_spec(spec)
sys.modules["cf_progress"] = progress
spec.loader.exec_module(progress)


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


def job_state(tmp_path: Path, content: str | None) -> dict[str, Any]:
    """What the follow task prints after @@job for an async status file holding `content`."""
    import subprocess

    import yaml

    code = yaml.safe_load((ROOT / "roles/verify/vars/main.yml").read_text())["__verify_job_state"]
    status = tmp_path / "job"
    if content is not None:
        status.write_text(content)
    done = subprocess.run(
        [sys.executable, "-c", code, str(status)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_the_follow_task_reduces_the_async_status_to_started_or_done(tmp_path):
    """A finished job's result may carry serialized module warnings (`__ansible_type: Event`) that
    the from_json filter refuses: the follow task prints only whether the job still runs."""
    finished = {
        "rc": 0,
        "warnings": [
            {
                "event": {"msg": "remote_tmp was created", "__ansible_type": "Event"},
                "__ansible_type": "WarningSummary",
            }
        ],
    }
    assert job_state(tmp_path, json.dumps(finished)) == {"done": 1}
    assert job_state(tmp_path, '{"started": 1, "finished": 0, "ansible_job_id": "j1"}') == {"started": 1}
    assert job_state(tmp_path, '{"started": 1, "fini') == {"started": 1}
    assert job_state(tmp_path, None) == {"started": 1}
