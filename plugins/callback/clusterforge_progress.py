# Copyright: clusterforge maintainers
# Apache-2.0
"""Live lines of the verification tier: one per check result as it finishes, and the check still running.

The verify role runs the suite asynchronously and polls its progress file (``--progress``) with a
retried task whose output is ``<progress lines>`` then ``@@job`` then the async job's status. At
every poll this callback prints, per host, the results not printed yet::

    verify cf-lab-2  node.stream.triad        PASS  11.2 GB/s (0.93 x baseline)

and, when no result arrived for a while, the check still running with its deadline::

    verify cf-lab-2  ... running net.pairs (deadline 10:31:07Z)
"""

from __future__ import annotations

import json
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: clusterforge_progress
type: aggregate
short_description: Live per-check lines of the clusterforge verification tier
description:
  - Prints each check result as the verification suite reports it, while the play waits.
requirements:
  - enabled in callbacks_enabled (ansible.cfg)
"""

MARKER = "@@job"
QUIET_S = 20.0  # print the running check after this long without a result


def progress_events(stdout: str) -> list[dict[str, Any]]:
    """The progress records before the job marker (lines that are not JSON records are ignored)."""
    events = []
    for line in stdout.split(MARKER, 1)[0].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            events.append(record)
    return events


def format_result(host: str, record: dict[str, Any]) -> str:
    line = f"verify {host:<14} {record.get('check', '?'):<34} {record.get('status', '?'):<5}"
    figure = record.get("figure") or ""
    reason = record.get("reason") or ""
    return " ".join(part for part in (line, figure, reason) if part).rstrip()


class Follower:
    """What was already printed for each host, and when its last result came."""

    def __init__(self) -> None:
        self.printed: dict[str, int] = {}
        self.last_news: dict[str, float] = {}
        self.announced: dict[str, str] = {}

    def lines(self, host: str, events: list[dict[str, Any]], now: float) -> list[str]:
        done = self.printed.get(host, 0)
        if len(events) < done:  # a new run wrote a new file
            done = 0
        out = [format_result(host, e) for e in events[done:] if e.get("event") == "result"]
        self.printed[host] = len(events)
        if out:
            self.last_news[host] = now
            return out
        self.last_news.setdefault(host, now)
        starts = [e for e in events if e.get("event") == "start"]
        if starts and now - self.last_news[host] >= QUIET_S:
            running = starts[-1]
            key = f"{running.get('check')}@{running.get('target')}"
            if self.announced.get(host) != key:
                self.announced[host] = key
                check, deadline = running.get("check"), running.get("deadline")
                return [f"verify {host:<14} ... running {check} (deadline {deadline})"]
        return []


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "clusterforge_progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.follower = Follower()

    def _follow(self, result: Any) -> None:
        stdout = result._result.get("stdout")
        if not isinstance(stdout, str) or MARKER not in stdout:
            return
        host = result._host.get_name()
        for line in self.follower.lines(host, progress_events(stdout), time.monotonic()):
            self._display.display(line)

    def v2_runner_retry(self, result: Any) -> None:
        self._follow(result)

    def v2_runner_on_ok(self, result: Any) -> None:
        self._follow(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._follow(result)
