"""The shared storage tier as its users rely on it: the same files on every node, homes that keep
their owners, mounts that only the mount keys open, and mounts that come back after a restart."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
PLATFORMS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
SERVER, CLIENT = (p["name"] for p in PLATFORMS)
DEFAULTS = yaml.safe_load((ROOT / "roles/shared_storage/defaults/main.yml").read_text())
DATA = DEFAULTS["shared_storage_data_dir"]
HOMES = DEFAULTS["shared_storage_home_dir"]
EXPORT = DEFAULTS["shared_storage_export_root"]
SERVICE = "clusterforge"
USER = "cfuser1"
KEYS = "/etc/clusterforge/storage/keys"
sys.path.insert(0, str(SCENARIO.parent / "_shared"))
from nodes import address as address_of  # noqa: E402
from nodes import node  # noqa: E402


def mount_unit(path: str) -> str:
    """The systemd mount unit of PATH (systemd-escape --path --suffix=mount)."""
    return path[1:].replace("-", "\\x2d").replace("/", "-") + ".mount"


def as_user(host, user: str, command: str, *args: str):
    return host.run(f"cd / && timeout 60 runuser -u {user} -- " + command, *args)


def podman(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / "lab/containers.conf"))
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def test_every_shared_path_is_mounted(host):
    name = host.backend.get_hostname()
    paths = [DATA, HOMES] if name == SERVER else [DATA, f"{HOMES}/{SERVICE}", f"{HOMES}/{USER}"]
    for path in paths:
        mount = host.mount_point(path)
        assert mount.exists, f"{path} is not mounted on {name}"
        if name == CLIENT:
            assert mount.filesystem == "fuse.sshfs", f"{path} on {name}: {mount.filesystem}"
        else:
            # The server binds its export: findmnt names a bind mount's source as DEVICE[DIR].
            source = host.run("findmnt -n -o SOURCE --mountpoint %s", path).stdout.strip()
            expected = {DATA: f"{EXPORT}/data", HOMES: f"{EXPORT}/home"}[path]
            assert source.endswith(f"[{expected}]"), f"{path} on {name} comes from {source}, not {expected}"
        unit = mount_unit(path)
        assert host.service(unit).is_enabled, f"{unit} is not enabled on {name}"


def test_a_file_written_on_one_node_is_read_on_the_other():
    for writer, reader in [(SERVER, CLIENT), (CLIENT, SERVER)]:
        payload = f"{writer} {uuid.uuid4()}\n" * 1000
        path = f"{DATA}/molecule-{writer}.txt"
        written = as_user(node(writer), SERVICE, "sh -c %s", f"cat > {path} <<'EOF'\n{payload}EOF")
        assert written.rc == 0, written.stderr
        read = node(reader).run("sha256sum %s", path)
        assert read.rc == 0, read.stderr
        assert read.stdout.split()[0] == hashlib.sha256(payload.encode()).hexdigest()


# The client holds the file open (as an MPI-IO rank does) while the server rewrites it: with sshfs's
# default caches the client kept reading its own stale bytes and size (78 of 180 cross-node reads
# on the lab); shared_storage_sshfs_coherent mounts without them.
HOLD_OPEN = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
os.pread(fd, 4096, 0)
open(sys.argv[2], "w").close()
while os.path.exists(sys.argv[2]):
    time.sleep(0.1)
sys.stdout.write(os.pread(fd, 4096, 0).decode())
"""


def test_a_client_holding_a_file_open_reads_what_the_server_rewrote():
    client, server = node(CLIENT), node(SERVER)
    path, flag = f"{DATA}/molecule-coherence.txt", f"/tmp/molecule-coherence-{uuid.uuid4().hex}"
    source = f"{EXPORT}/data/molecule-coherence.txt"
    assert server.run("printf %s > %s", "old contents, longer than the new ones", source).rc == 0
    server.run("chmod 0644 %s", source)
    reader = subprocess.Popen(
        ["podman", "exec", CLIENT, "timeout", "150", "python3", "-c", HOLD_OPEN, path, flag],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, CONTAINERS_CONF=str(ROOT / "lab/containers.conf")),
    )
    for _ in range(600):
        if client.file(flag).exists:
            break
        time.sleep(0.1)
    else:
        reader.kill()
        pytest.fail("the client never held the file open (no flag after 60 s): nothing was tested")
    assert server.run("printf %s > %s", "new", source).rc == 0
    client.run("rm -f %s", flag)
    out, _ = reader.communicate(timeout=180)
    assert out == "new", f"the client read {out!r} after the server rewrote the file to 'new'"


def sftp_sessions_in_homes(server) -> list[str]:
    """The server's sftp sessions whose cwd is under the homes mount (sshd starts each in its
    account's home): each keeps a plain umount of that mount busy."""
    listing = podman(
        "exec",
        "--privileged",  # another account's /proc/PID/cwd needs ptrace rights
        SERVER,
        "sh",
        "-c",
        "for p in $(pgrep -f internal-sftp); do echo $p $(readlink /proc/$p/cwd); done",
    )
    return [line for line in listing.stdout.splitlines() if f" {HOMES}/" in line]


def test_a_changed_server_unit_restarts_while_clients_use_the_homes():
    """A re-converge that changes the server's mount unit restarts it. The client's sftp sessions
    sit in the homes (their cwd), so a plain umount fails with "target is busy" and the storage
    tier with it; the unit detaches lazily, and the client goes on reading and writing."""
    server, client = node(SERVER), node(CLIENT)
    assert client.mount_point(f"{HOMES}/{USER}").exists
    busy = sftp_sessions_in_homes(server)
    assert busy, "no sftp session of the client sits in a home: the restart would prove nothing"
    unit = mount_unit(HOMES)
    restarted = server.run("systemctl restart %s", unit)
    assert restarted.rc == 0, server.run("journalctl -u %s -n 5 --no-pager", unit).stdout
    assert server.mount_point(HOMES).exists
    token = uuid.uuid4().hex
    wrote = as_user(client, USER, "sh -c %s", f"echo {token} > {HOMES}/{USER}/molecule-restart.txt")
    assert wrote.rc == 0, wrote.stderr
    assert server.file(f"{HOMES}/{USER}/molecule-restart.txt").content_string.strip() == token
    assert server.run("rm -f %s", f"{HOMES}/{USER}/molecule-restart.txt").rc == 0


def sshfs_daemons(host, path: str) -> set[str]:
    """PIDs of the sshfs processes that mount PATH (the bracket keeps pgrep's shell out)."""
    found = host.run("pgrep -f %s", f"[m]ount.fuse.sshfs [^ ]* {path} ")
    return set(found.stdout.split())


def test_a_changed_client_unit_restarts_while_a_user_works_in_their_home():
    """A re-converge that changes a client's mount unit restarts it. A user's process sits in the
    home (a login shell, a notebook server: its cwd); the restart must still go through, a new sshfs
    must serve the home, and the user's writes must reach the server through it."""
    client, server = node(CLIENT), node(SERVER)
    home, holder = f"{HOMES}/{USER}", "molecule-home-holder"
    unit = mount_unit(home)
    # Its cwd is read from what it wrote: /proc/PID/cwd needs ptrace, which the nodes' exec lacks.
    started = client.run(
        "systemd-run --unit=%s --uid=%s --working-directory=%s sh -c %s",
        holder,
        USER,
        home,
        "pwd -P > /tmp/molecule-holder.cwd && exec sleep 600",
    )
    assert started.rc == 0, started.stderr
    try:
        for _ in range(20):
            cwd = client.run("cat /tmp/molecule-holder.cwd").stdout.strip()
            if cwd:
                break
            time.sleep(0.5)
        assert cwd == home, (
            f"the holder does not sit in the home (cwd {cwd!r}): the restart would prove nothing"
        )
        assert client.run("systemctl is-active %s", holder).stdout.strip() == "active"
        before = sshfs_daemons(client, home)
        assert before, f"no sshfs process serves {home}"
        restarted = client.run("systemctl restart %s", unit)
        assert restarted.rc == 0, client.run("journalctl -u %s -n 5 --no-pager", unit).stdout
        assert client.mount_point(home).exists
        after = sshfs_daemons(client, home)
        assert after and not after & before, (
            f"the mount was not replaced: sshfs {before} before, {after} after"
        )
        token = uuid.uuid4().hex
        wrote = as_user(client, USER, "sh -c %s", f"echo {token} > {home}/molecule-client-restart.txt")
        assert wrote.rc == 0, wrote.stderr
        assert server.file(f"{home}/molecule-client-restart.txt").content_string.strip() == token
    finally:
        client.run("systemctl stop %s; rm -f /tmp/molecule-holder.cwd", holder)
        server.run("rm -f %s", f"{home}/molecule-client-restart.txt")


def test_homes_keep_their_owners_and_refuse_other_accounts():
    client, server = node(CLIENT), node(SERVER)
    assert as_user(client, USER, "sh -c %s", f"echo mine > {HOMES}/{USER}/own.txt").rc == 0
    # Owned by the user on the server's disk, not by the account of some shared session.
    assert server.file(f"{EXPORT}/home/{USER}/own.txt").user == USER
    refused = as_user(client, SERVICE, "touch %s", f"{HOMES}/{USER}/intruder.txt")
    assert refused.rc != 0 and "Permission denied" in refused.stderr
    assert not server.file(f"{EXPORT}/home/{USER}/intruder.txt").exists
    assert as_user(client, USER, "touch %s", f"{HOMES}/{SERVICE}/intruder.txt").rc != 0
    # Root on the client is no way around it either: the session runs as the home's owner.
    assert client.file(f"{HOMES}/{USER}").mode == 0o700


def test_sftp_without_the_mount_key_is_refused():
    client, address = node(CLIENT), address_of(SERVER)
    options = (
        "-o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes"
        " -o UserKnownHostsFile=/etc/ssh/ssh_known_hosts"
    )
    assert client.run("rm -f /tmp/other && ssh-keygen -q -t ed25519 -N '' -f /tmp/other").rc == 0
    for identity in ("/tmp/other", "/nonexistent"):
        result = client.run(f"echo ls | sftp {options} -i {identity} -b - {SERVICE}@{address}")
        assert result.rc != 0
        assert "Permission denied" in result.stderr
    # The mount key itself opens sftp, and nothing else: no shell command runs with it.
    key = f"{KEYS}/{SERVICE}"
    assert client.run(f"echo 'ls {DATA}' | sftp {options} -i {key} -b - {SERVICE}@{address}").rc == 0
    shell = client.run(f"ssh {options} -i {key} {SERVICE}@{address} id -un")
    assert SERVICE not in shell.stdout
    assert "sftp connections only" in shell.stdout + shell.stderr


def test_the_server_publishes_the_storage_section():
    server = node(SERVER)
    part = json.loads(server.file("/etc/ansible/facts.d/clusterforge_engine_storage.fact").content_string)
    assert part["backend"] == "sshfs" and part["server"] == SERVER
    assert part["data_dir"] == DATA and part["accounts"] == [SERVICE, USER]
    assert server.file(f"{EXPORT}/data").mode == 0o2775


def test_the_server_accepts_mount_keys_only_from_the_cluster_network():
    entries = node(SERVER).file(f"/home/{SERVICE}/.ssh/authorized_keys").content_string
    storage = [line for line in entries.splitlines() if "storage mount" in line]
    assert len(storage) == 1
    options = storage[0].split(" ssh-ed25519 ")[0]
    assert options.startswith("restrict,from=")
    assert 'command="internal-sftp' in options


def test_mounts_come_back_after_the_client_restarts():
    assert podman("restart", CLIENT).returncode == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = podman("exec", CLIENT, "systemctl", "is-system-running").stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(2)
    assert state == "running", podman("exec", CLIENT, "systemctl", "--failed", "--no-legend").stdout
    mounted = podman("exec", CLIENT, "findmnt", "-n", "-t", "fuse.sshfs", "-o", "TARGET").stdout.split()
    assert sorted(mounted) == sorted([DATA, f"{HOMES}/{SERVICE}", f"{HOMES}/{USER}"])
    read = podman("exec", CLIENT, "cat", f"{DATA}/molecule-{SERVER}.txt")
    assert read.returncode == 0 and read.stdout.startswith(SERVER)


def test_a_missing_mount_is_not_papered_over():
    """With the share unmounted the path is an empty local directory: nothing of the share shows."""
    client = node(CLIENT)
    assert client.run("systemctl stop %s", mount_unit(DATA)).rc == 0
    try:
        assert not client.mount_point(DATA).exists
        assert not client.file(f"{DATA}/molecule-{SERVER}.txt").exists
    finally:
        assert client.run("systemctl start %s", mount_unit(DATA)).rc == 0
    assert client.mount_point(DATA).exists
