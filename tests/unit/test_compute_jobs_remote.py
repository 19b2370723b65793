"""The suite reaches the nodes as the service account: commands for the nodes, mpirun and the storage
permission probe go through ``sudo -n -u <service account>`` when the suite runs as another account
(the verification account), and run as they are otherwise."""

import os
import pwd
import stat

import pytest

from compute_jobs import remote
from compute_jobs.checks import mpi as mpi_checks
from compute_jobs.checks import storage as storage_checks
from compute_jobs.model import CheckError

ME = pwd.getpwuid(os.getuid()).pw_name

# Records its arguments, then runs what follows "--" as this account (what sudo -u does, minus the
# account change).
FAKE_SUDO = """#!/bin/sh
echo "$*" >> "$SUDO_LOG"
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""


@pytest.fixture
def fake_sudo(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sudo = bin_dir / "sudo"
    sudo.write_text(FAKE_SUDO)
    sudo.chmod(sudo.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "sudo.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SUDO_LOG", str(log))
    monkeypatch.setenv(remote.ACCOUNT_ENV, "cf-service-account")
    return log


def test_commands_run_as_they_are_without_a_service_account(monkeypatch):
    monkeypatch.delenv(remote.ACCOUNT_ENV, raising=False)
    assert remote.service_account() == ""
    assert remote.on_host(None, ["id", "-un"]) == ["id", "-un"]
    monkeypatch.setenv(remote.ACCOUNT_ENV, ME)  # the suite already runs as the service account
    assert remote.on_host(None, ["id", "-un"]) == ["id", "-un"]


def test_commands_go_through_sudo_to_the_service_account(monkeypatch):
    monkeypatch.setenv(remote.ACCOUNT_ENV, "cf-service-account")
    wrapped = ["sudo", "-n", "-u", "cf-service-account", "--", "id", "-un"]
    assert remote.on_host(None, ["id", "-un"]) == wrapped
    argv = remote.on_host("another-host.invalid", ["sh", "-c", "echo a  b"])
    assert argv[:5] == ["sudo", "-n", "-u", "cf-service-account", "--"]
    assert argv[5:] == [*remote.SSH, "another-host.invalid", "sh -c 'echo a  b'"]


def test_run_on_runs_through_sudo_and_names_the_command_when_it_fails(fake_sudo):
    assert remote.run_on(None, ["true"], 10, "probe") >= 0
    assert fake_sudo.read_text().splitlines() == ["-n -u cf-service-account -- true"]
    with pytest.raises(CheckError, match="sudo -n -u cf-service-account -- false"):
        remote.run_on(None, ["false"], 10, "probe")


def test_mpirun_starts_as_the_service_account_from_tmp(fake_sudo):
    """The launch runs from /tmp: the suite's own directory is not the service account's to enter
    (and Open MPI starts the ranks on the other hosts in the launcher's directory)."""
    run = mpi_checks.run_process(["sh", "-c", "pwd"], 10)
    assert run.returncode == 0 and run.stdout.strip() == "/tmp"
    assert run.argv == ["sh", "-c", "pwd"]  # reports name the command, not the sudo wrapper
    assert fake_sudo.read_text().splitlines() == ["-n -u cf-service-account -- sh -c pwd"]


def test_a_hung_mpirun_is_killed_by_the_service_account_too(fake_sudo):
    """sudo passes SIGTERM on but not SIGKILL: after the grace period the service account kills the
    processes of the group it owns (here the TERM-ignoring shell), then the group goes."""
    mpi_checks.TERM_GRACE, grace = 0.5, mpi_checks.TERM_GRACE
    try:
        with pytest.raises(CheckError, match="was killed"):
            mpi_checks.run_process(["sh", "-c", "trap '' TERM; sleep 30"], 0.5)
    finally:
        mpi_checks.TERM_GRACE = grace
    calls = fake_sudo.read_text().splitlines()
    assert len(calls) == 2 and calls[1].startswith("-n -u cf-service-account -- kill -KILL -- -"), calls


def test_the_permission_probe_runs_as_the_service_account(fake_sudo, tmp_path):
    assert storage_checks.this_account() == "cf-service-account"
    assert storage_checks.try_create(str(tmp_path / "probe")) == "written"
    assert not (tmp_path / "probe").exists()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        expected = "written" if os.getuid() == 0 else "refused"  # root ignores the mode
        assert storage_checks.try_create(str(locked / "probe")) == expected
    finally:
        locked.chmod(0o700)
    assert storage_checks.try_create(str(tmp_path / "missing" / "probe")).startswith("error: ")
    assert fake_sudo.read_text().count("-n -u cf-service-account -- ") == 3


def test_the_check_directory_is_writable_by_the_data_group(tmp_path):
    directory = tmp_path / "data" / ".clusterforge-check"
    storage_checks.make_check_dir(str(directory))
    assert stat.S_IMODE(directory.stat().st_mode) & 0o2070 == 0o2070
    storage_checks.make_check_dir(str(directory))  # present: left as it is


def test_the_service_account_makes_the_check_directory_for_the_suite(fake_sudo, tmp_path):
    directory = tmp_path / "data" / ".clusterforge-check"
    storage_checks.make_check_dir(str(directory))
    assert directory.is_dir()
    assert stat.S_IMODE(directory.stat().st_mode) & 0o070 == 0o070  # umask 002 as that account
    assert fake_sudo.read_text().count("-n -u cf-service-account -- sh -c") == 1
    storage_checks.make_check_dir(str(directory))  # present: nothing to do
    assert fake_sudo.read_text().count("-n -u cf-service-account -- sh -c") == 1
