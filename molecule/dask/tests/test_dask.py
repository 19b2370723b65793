"""The Dask tier as users and the verification suite rely on it: services, TLS, refusals, restarts."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import testinfra
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
MOLECULE = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
PLATFORMS = MOLECULE["platforms"]
PROVISIONER = MOLECULE["provisioner"]["inventory"]
HEAD = PLATFORMS[0]["name"]
WORKER = PLATFORMS[1]["name"]
VENV = "/opt/clusterforge/venv"
PYTHON = f"{VENV}/bin/python"
USER = "clusterforge"
# Runs the checks and reads the client credentials (group CLIENTS); USER, the service account, reads none.
VERIFY, CLIENTS = "clusterforge-verify", "clusterforge-clients"
CONFIG = "/etc/clusterforge/dask"
WORKER_PROCESSES = 2
THREADS = 1
MEMORY = 512 * 1024 * 1024
sys.path.insert(0, str(SCENARIO.parent / "_shared"))
from gateway import assert_gateway_refuses_strangers, assert_ui_listens_on_loopback_only  # noqa: E402
from playbook import lab_strategy, run_playbook  # noqa: E402
from services import assert_comes_back_after_a_clean_exit, assert_restart_always, restarts  # noqa: E402


def put(host, path: str, content: str, mode: str = "0644") -> None:
    """Write a file on the node (testinfra quotes the argument, printf writes it verbatim)."""
    written = host.run("printf '%%s' %s > %s && chmod %s %s", content, path, mode, path)
    assert written.rc == 0, written.stderr


def address_of(host, name: str) -> str:
    return host.run("getent ahostsv4 %s", name).stdout.split()[0]


def run_python(host, code: str, user: str = VERIFY, timeout: int = 90, config: bool = True):
    """Run a Python snippet with the venv as ``user`` (with the client configuration loaded)."""
    put(host, "/tmp/cf_probe.py", textwrap.dedent(code))
    env = f"DASK_CONFIG={CONFIG}/client" if config else "DASK_CONFIG=/nonexistent"
    return host.run(
        "cd /tmp && timeout %s runuser -u %s -- env %s %s /tmp/cf_probe.py", str(timeout), user, env, PYTHON
    )


CLUSTER_STATE = """
    import json
    from distributed import Client
    with Client(timeout=20) as client:
        client.wait_for_workers(%d, timeout=60)
        info = client.scheduler_info()["workers"]
        total = client.submit(sum, range(1001)).result()
        workers = sorted([w["nthreads"], w["memory_limit"], w["host"]] for w in info.values())
        print(json.dumps({"workers": workers, "total": total}))
    """


def cluster_state(host) -> dict:
    result = run_python(host, CLUSTER_STATE % WORKER_PROCESSES)
    assert result.rc == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def is_head(host) -> bool:
    return host.backend.get_hostname() == HEAD


def units(host) -> list[str]:
    if is_head(host):
        return ["dask-scheduler"]
    return [f"dask-worker@{i}" for i in range(WORKER_PROCESSES)]


def test_units_are_active_enabled_and_always_restart(host):
    for unit in units(host):
        service = host.service(unit)
        assert service.is_running and service.is_enabled, unit
        assert "User=dask" in host.run("systemctl show -p User %s", unit).stdout
        assert_restart_always(host, unit)


def test_services_run_under_their_own_system_account(host):
    account = host.user("dask")
    assert account.exists and account.uid < 1000 and account.shell == "/usr/sbin/nologin"
    for unit in units(host):
        pid = host.run("systemctl show -p MainPID --value %s", unit).stdout.strip()
        assert pid.isdigit() and pid != "0", unit
        assert host.run("ps -o user= -p %s", pid).stdout.strip() == "dask"
        assert "bin/dask" in host.file(f"/proc/{pid}/cmdline").content_string
        # workers carry the pipeline group (its work directory is 3770); the account itself does not
        groups = host.run("ps -o supgrp= -p %s", pid).stdout.strip().split(",")
        assert ("clusterforge-pipeline" in groups) is not is_head(host), (unit, groups)
    assert "clusterforge-pipeline" not in host.user("dask").groups


def test_every_listening_socket_of_dask_is_on_the_cluster_address(host):
    me = address_of(host, host.backend.get_hostname())
    uid = host.user("dask").uid
    lines = host.run("ss -Hltne").stdout.splitlines()
    sockets = [line for line in lines if f"uid:{uid} " in line]
    assert sockets, "dask listens on nothing"
    local = [line.split()[3] for line in sockets]
    for address in local:
        ip, port = address.rsplit(":", 1)
        # On loopback: the scheduler dashboard (behind the gateway) and each worker's plain HTTP
        # server (/health, /metrics, on a random port); the rest on the cluster address.
        if is_head(host):
            expected = "127.0.0.1" if int(port) == 8787 else me
        else:
            expected = me if int(port) in (8800, 8801, 8900, 8901) else "127.0.0.1"
        assert ip.strip("[]").removeprefix("::ffff:") == expected, local
    ports = {int(a.rsplit(":", 1)[1]) for a in local}
    if is_head(host):
        assert {8786, 8787} <= ports
    else:
        assert {8800, 8801, 8900, 8901} <= ports


def test_service_account_key_is_accepted_from_the_cluster_addresses_only(host):
    keys = host.file(f"/home/{USER}/.ssh/authorized_keys").content_string.strip().splitlines()
    assert len(keys) == 1 and keys[0].startswith('from="'), keys
    allowed = set(keys[0].split('"')[1].split(","))
    assert allowed == {address_of(host, HEAD), address_of(host, WORKER), "127.0.0.1", "::1"}, allowed


@pytest.mark.on_host(HEAD, reason="run once, from the controller")
def test_a_lost_controller_copy_of_the_secrets_stops_the_run_before_any_change(host, tmp_path):
    """A controller without this cluster's secrets (lost or another controller's directory) must not
    generate new ones over the live cluster: the common tier fails first, saying how to restore."""
    inventory = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
    beside = pathlib.Path(sys.executable).with_name("ansible-playbook")
    playbook = shutil.which("ansible-playbook") or str(beside)
    lost = tmp_path / "lost-secrets"
    done = subprocess.run(
        [
            playbook,
            "-i",
            str(inventory),
            "playbooks/common.yml",
            "--tags",
            "common_guard",
            "-e",
            f"cluster_secrets_dir={lost}",
        ],
        cwd=SCENARIO.parents[1],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0, done.stdout[-3000:]
    # ansible-core prints a failed task's message on stderr.
    output = done.stdout + done.stderr
    assert "cluster_rotate_secrets=true" in output, output[-3000:]
    assert "scripts/secrets import" in output
    assert not any(lost.rglob("*")), "secrets were generated"


def test_private_keys_are_readable_by_their_service_only(host):
    if is_head(host):
        key = host.file(f"{CONFIG}/tls/client.key")
        assert key.group == CLIENTS and key.mode == 0o640
        assert host.run("runuser -u %s -- cat %s/tls/client.key", USER, CONFIG).rc != 0
        scheduler_key = host.file(f"{CONFIG}/tls/scheduler.key")
        assert scheduler_key.group == "dask" and scheduler_key.mode == 0o640
    else:
        key = host.file(f"{CONFIG}/tls/worker.key")
        assert key.group == "dask" and key.mode == 0o640
    assert host.run("grep -rl 'PRIVATE KEY' /etc/clusterforge/dask/tls/ca.crt").rc != 0


@pytest.mark.on_host(HEAD, reason="clients connect from the head node")
def test_client_with_certificate_sees_the_inventory_and_computes(host):
    state = cluster_state(host)
    worker = address_of(host, WORKER)
    assert state["workers"] == [[THREADS, MEMORY, worker]] * WORKER_PROCESSES
    assert state["total"] == 500500


@pytest.mark.on_host(HEAD, reason="asked of the scheduler from the client host")
def test_scheduler_and_workers_run_with_the_inventorys_monitoring_intervals(host):
    wanted = PROVISIONER["group_vars"]["all"]
    code = """
        import json
        import dask
        from distributed import Client
        KEYS = ("distributed.admin.tick.interval", "distributed.admin.system-monitor.interval",
                "distributed.worker.profile.interval")
        def intervals(dask_scheduler=None):
            return [dask.config.get(key) for key in KEYS]
        with Client(timeout=20) as client:
            client.wait_for_workers(WORKERS, timeout=60)
            print(json.dumps({"scheduler": client.run_on_scheduler(intervals),
                              "workers": sorted(client.run(intervals).values())}))
    """.replace("WORKERS", str(WORKER_PROCESSES))
    result = run_python(host, code)
    assert result.rc == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    tick, system, profile = (
        wanted["dask_tick_interval"],
        wanted["dask_system_monitor_interval"],
        wanted["dask_worker_profile_interval"],
    )
    assert seen["scheduler"][:2] == [tick, system]
    assert seen["workers"] == [[tick, system, profile]] * WORKER_PROCESSES


@pytest.mark.on_host(HEAD, reason="clients connect from the head node")
def test_plain_tcp_client_is_refused(host):
    me = address_of(host, HEAD)
    code = f"""
        from distributed import Client
        try:
            Client("tcp://{me}:8786", timeout=5)
        except Exception as exc:
            print("REFUSED", type(exc).__name__)
        else:
            print("CONNECTED")
        """
    result = run_python(host, code, config=False)
    assert "REFUSED" in result.stdout and "CONNECTED" not in result.stdout, result.stdout + result.stderr


TLS_PROBE = """
    import socket, ssl, sys
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations("{ca}")
    if len(sys.argv) > 3:
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    sock = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5))
    # Long enough for a loaded host: a verdict comes from the listener, never from a timeout.
    sock.settimeout(30)
    try:
        data = sock.recv(1)
        # A Dask listener writes its handshake first: data means it accepted the session.
        print("CLOSED" if data == b"" else "ACCEPTED")
    except socket.timeout:
        print("SILENT")  # neither refused nor greeted: no verdict
    except (ssl.SSLError, ConnectionError) as exc:
        print("REFUSED", exc)
    """


def intruder_certificate() -> tuple[str, str]:
    """A self-signed client certificate from a CA the cluster does not know (made on the controller)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, private


@pytest.mark.on_host(HEAD, reason="clients connect from the head node")
def test_tls_client_without_a_cluster_certificate_is_refused(host):
    """Mutual TLS on every Dask door (the scheduler, each worker and each nanny): the listener drops
    a TLS client that shows no certificate, or one from another CA; the same probe with the service
    account's certificate keeps its session (the control)."""
    put(host, "/tmp/cf_tls.py", textwrap.dedent(TLS_PROBE.format(ca=f"{CONFIG}/tls/ca.crt")))
    cert, key = intruder_certificate()
    put(host, "/tmp/other.crt", cert)
    put(host, "/tmp/other.key", key)
    head, worker = address_of(host, HEAD), address_of(host, WORKER)
    doors = [(head, 8786)] + [(worker, port) for port in (8800, 8801, 8900, 8901)]
    for address, port in doors:
        probe = f"runuser -u {VERIFY} -- {PYTHON} /tmp/cf_tls.py {address} {port}"
        none = host.run(probe)
        other = host.run(f"{probe} /tmp/other.crt /tmp/other.key")
        own = host.run(f"{probe} {CONFIG}/tls/client.crt {CONFIG}/tls/client.key")
        assert own.stdout.startswith("ACCEPTED"), (address, port, own.stdout + own.stderr)
        for refused in (none, other):
            assert refused.rc != 0 or refused.stdout.startswith(("REFUSED", "CLOSED")), (
                address,
                port,
                refused.stdout + refused.stderr,
            )


@pytest.mark.on_host(HEAD, reason="the dashboard runs on the scheduler")
def test_dashboard_is_reached_only_through_the_authenticating_https_gateway(host):
    """From the worker: anonymous 401, wrong password 401, the client's credentials 200 (TLS from
    the cluster CA), plain HTTP refused; the dashboard itself listens on 127.0.0.1 only."""
    credentials = host.file(f"{CONFIG}/client/dashboard.credentials")
    assert credentials.group == CLIENTS and credentials.mode == 0o640
    assert host.run("runuser -u nobody -- cat %s/client/dashboard.credentials", CONFIG).rc != 0
    assert_ui_listens_on_loopback_only(host, "dask", 8787)
    worker = testinfra.get_host(f"podman://{WORKER}")
    secret = credentials.content_string.strip()
    assert_gateway_refuses_strangers(worker, address_of(host, HEAD), 8787, "/status", secret)


@pytest.mark.on_host(HEAD, reason="the client configuration lives on the head node")
def test_client_configuration_is_readable_by_the_client_group_only_where_it_matters(host):
    conf = yaml.safe_load(host.file(f"{CONFIG}/client/dask-client.yaml").content_string)
    assert conf["scheduler-address"].startswith("tls://")
    assert conf["distributed"]["comm"]["require-encryption"] is True
    assert host.run("runuser -u nobody -- cat %s/tls/client.key", CONFIG).rc != 0
    part = json.loads(host.file("/etc/ansible/facts.d/clusterforge_engine_dask.fact").content_string)
    assert part["endpoint"] == conf["scheduler-address"]


def _podman(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=180, check=False)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(2)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def assert_every_worker_back_and_computing(host) -> None:
    """After the scheduler came back: within 2 minutes every worker process is registered again
    and computes. (The old worker processes may still register and then close while their units
    restart them: a client can lose its scheduler connection in that window.)"""
    deadline = time.monotonic() + 120
    while True:
        result = run_python(host, CLUSTER_STATE % WORKER_PROCESSES)
        if result.rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert result.rc == 0, result.stderr[-2000:]
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(state["workers"]) == WORKER_PROCESSES and state["total"] == 500500


@pytest.mark.on_host(HEAD, reason="driven from the head node")
def test_workers_come_back_after_the_scheduler_restarts(host):
    """Workers close themselves when their scheduler goes away; systemd must start them again."""
    assert host.run("systemctl restart dask-scheduler").rc == 0
    _wait(lambda: host.service("dask-scheduler").is_running, 30, "dask-scheduler active again")
    _wait(lambda: host.run("ss -Hltn 'sport = :8786'").stdout.strip() != "", 30, "the scheduler listening")
    assert_every_worker_back_and_computing(host)


@pytest.mark.on_host(HEAD, reason="driven from the head node")
def test_scheduler_comes_back_after_a_clean_client_shutdown(host):
    """Client.shutdown() ends the scheduler with status 0: Restart=always starts it again, and
    the workers register anew."""
    before = restarts(host, "dask-scheduler")
    # The client may report the closing connection; what counts is what systemd does next.
    run_python(host, "from distributed import Client\nClient(timeout=30).shutdown()\n")
    assert_comes_back_after_a_clean_exit(host, "dask-scheduler", before)
    assert_every_worker_back_and_computing(host)


@pytest.mark.on_host(HEAD, reason="driven from the head node")
def test_a_crashed_worker_unit_is_restarted_by_systemd(host):
    """SIGKILL the main process of one worker unit (the CLI that holds the nanny): Restart=on-failure
    brings the unit back and both worker processes are registered again. (Lab nodes keep their
    address across `podman restart`; molecule's do not, so a node restart is exercised on the lab.)"""
    unit = "dask-worker@1"

    def main_pid() -> str:
        return _podman("exec", WORKER, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()

    before = main_pid()
    assert before.isdigit() and before != "0"
    killed = _podman("exec", WORKER, "kill", "-9", before)
    assert killed.returncode == 0, killed.stderr

    def restarted() -> bool:
        state = _podman("exec", WORKER, "systemctl", "is-active", unit).stdout.strip()
        return state == "active" and main_pid() not in ("0", before)

    _wait(restarted, 90, f"{unit} active again with a new main process")
    assert_every_worker_back_and_computing(host)


@pytest.mark.on_host(HEAD, reason="run once, from the controller")
def test_a_certificate_inside_the_renewal_window_is_reissued_and_served(host):
    """A node certificate that expires in 2 days (inside dask_tls_renew_days) is reissued by the next
    converge, installed, and the restarted scheduler presents the new one; the cluster computes."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    secrets = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / "dask"
    path = secrets / "nodes" / f"{HEAD}.crt"
    old = x509.load_pem_x509_certificate(path.read_bytes())
    ca = x509.load_pem_x509_certificate((secrets / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((secrets / "ca.key").read_bytes(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    expiring = builder.sign(ca_key, hashes.SHA256())
    path.write_bytes(expiring.public_bytes(serialization.Encoding.PEM))
    # The node runs the expiring certificate first, as a cluster would after two years.
    put(host, f"{CONFIG}/tls/scheduler.crt", expiring.public_bytes(serialization.Encoding.PEM).decode())
    assert host.run("systemctl restart dask-scheduler").rc == 0

    ephemeral = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    try:
        rc, output = run_playbook(
            "playbooks/dask.yml",
            ephemeral / "inventory",
            ephemeral / "renewal",
            {},
            ("--limit", HEAD),
            env=lab_strategy(),
            timeout=600,
        )
    finally:
        assert_every_worker_back_and_computing(host)
    assert rc == 0, output[-3000:]
    renewed = x509.load_pem_x509_certificate(path.read_bytes())
    assert renewed.serial_number != expiring.serial_number
    assert renewed.not_valid_after_utc > now + datetime.timedelta(days=30)
    installed = x509.load_pem_x509_certificate(host.file(f"{CONFIG}/tls/scheduler.crt").content)
    assert installed.serial_number == renewed.serial_number

    address = address_of(host, HEAD)

    def served_serial() -> int | None:
        shown = host.run(
            "echo | timeout 10 openssl s_client -connect %s:8786 2>/dev/null | openssl x509 -noout -serial",
            address,
        )
        return (
            int(shown.stdout.strip().split("=", 1)[1], 16) if shown.rc == 0 and "=" in shown.stdout else None
        )

    _wait(
        lambda: served_serial() == renewed.serial_number, 60, "the scheduler serving the reissued certificate"
    )
    assert_every_worker_back_and_computing(host)
