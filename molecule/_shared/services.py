"""testinfra helpers for the rule "a daemon comes back after any exit, a clean one included"."""

from __future__ import annotations

import time


def restarts(host, unit: str) -> int:
    """How often systemd restarted ``unit`` by itself (NRestarts)."""
    return int(host.run("systemctl show -p NRestarts --value %s", unit).stdout.strip() or 0)


def assert_restart_always(host, unit: str) -> None:
    """The unit restarts after any exit, with a start limit."""
    props = host.run("systemctl show -p Restart -p StartLimitBurst -p StartLimitIntervalUSec %s", unit).stdout
    assert "Restart=always" in props, props
    assert "StartLimitBurst=20" in props and "StartLimitIntervalUSec=10min" in props, props


def assert_comes_back_after_a_clean_exit(host, unit: str, before: int, timeout: float = 90) -> None:
    """After ``unit`` ended with a clean exit (``before`` = NRestarts until then), systemd started
    it again by itself: NRestarts went up, the last exit counted as success, the unit is active."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if restarts(host, unit) > before and host.service(unit).is_running:
            break
        time.sleep(2)
    props = host.run("systemctl show -p NRestarts -p Result -p ActiveState %s", unit).stdout
    assert restarts(host, unit) > before and "ActiveState=active" in props, f"{unit} stayed down: {props}"
    assert "Result=success" in props, f"{unit} did not end with a clean exit: {props}"
