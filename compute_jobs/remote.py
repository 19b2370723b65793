"""Run a command on a cluster host as this account: here when the host is this machine, else over
SSH (the service account trusts its own key on every node: the common role sets that up)."""

from __future__ import annotations

import shlex
import socket
import subprocess
import time

from compute_jobs.model import CheckError

SSH = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def on_host(host: str | None, command: list[str]) -> list[str]:
    """``command`` as run for ``host``: unchanged for this machine (or no host), else through ssh.

    ssh joins the words after the host name into one line for the remote shell, so the command goes
    as one quoted line: an argument with spaces or shell characters arrives as it was given."""
    if host and host not in (socket.gethostname(), socket.getfqdn()):
        return [*SSH, str(host), shlex.join(command)]
    return list(command)


def run_on(host: str | None, command: list[str], timeout: float, what: str, hint: str = "") -> float:
    """Run ``command`` for ``host``; return the seconds it took. CheckError, naming ``what`` and the
    command (and ``hint``, what to do about it), when it cannot run or exits non-zero."""
    if not command:
        raise CheckError(f"{what}: no command" + (f" ({hint})" if hint else ""))
    full = on_host(host, command)
    start = time.monotonic()
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckError(f"{what} `{' '.join(full)}` failed: {exc}") from exc
    if done.returncode != 0:
        raise CheckError(
            f"{what} `{' '.join(full)}` exited {done.returncode}: {done.stderr.strip()[-300:]}"
            + (f"; {hint}" if hint else "")
        )
    return time.monotonic() - start
