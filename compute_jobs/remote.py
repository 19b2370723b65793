"""Run a command on a cluster host as the service account: here when the host is this machine, else
over SSH (the service account trusts its own key on every node: the common role sets that up).

The suite itself runs as the verification account, which reads the engines' client credentials; the
service account, whose passphrase-less key every node trusts, reads none. The suite reaches it through
``sudo -n -u`` (a rule the common role writes), named by ``CLUSTERFORGE_SERVICE_ACCOUNT``; without
that variable, or when the suite already runs as that account, commands run as this account."""

from __future__ import annotations

import os
import pwd
import shlex
import socket
import subprocess
import time

from compute_jobs.model import CheckError

SSH = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
# Environment variable naming the account that runs MPI and the commands on other nodes.
ACCOUNT_ENV = "CLUSTERFORGE_SERVICE_ACCOUNT"


def service_account() -> str:
    """The account commands for the nodes run as ("" for this account)."""
    account = os.environ.get(ACCOUNT_ENV, "").strip()
    try:
        me = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        me = ""
    return "" if account in ("", me) else account


def as_service_account(command: list[str]) -> list[str]:
    """``command`` run as the service account: through ``sudo -n -u`` unless this is that account."""
    account = service_account()
    return ["sudo", "-n", "-u", account, "--", *command] if account else list(command)


def on_host(host: str | None, command: list[str]) -> list[str]:
    """``command`` as run for ``host`` as the service account: here for this machine (or no host),
    else through ssh.

    ssh joins the words after the host name into one line for the remote shell, so the command goes
    as one quoted line: an argument with spaces or shell characters arrives as it was given."""
    if host and host not in (socket.gethostname(), socket.getfqdn()):
        return as_service_account([*SSH, str(host), shlex.join(command)])
    return as_service_account(command)


def output_of(host: str | None, command: list[str], timeout: float, what: str, hint: str = "") -> str:
    """Run ``command`` for ``host``; return what it printed. CheckError, naming ``what`` and the
    command (and ``hint``, what to do about it), when it cannot run or exits non-zero."""
    if not command:
        raise CheckError(f"{what}: no command" + (f" ({hint})" if hint else ""))
    full = on_host(host, command)
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckError(f"{what} `{' '.join(full)}` failed: {exc}") from exc
    if done.returncode != 0:
        raise CheckError(
            f"{what} `{' '.join(full)}` exited {done.returncode}: {done.stderr.strip()[-300:]}"
            + (f"; {hint}" if hint else "")
        )
    return done.stdout


def run_on(host: str | None, command: list[str], timeout: float, what: str, hint: str = "") -> float:
    """Run ``command`` for ``host``; return the seconds it took. CheckError as output_of."""
    start = time.monotonic()
    output_of(host, command, timeout, what, hint)
    return time.monotonic() - start
