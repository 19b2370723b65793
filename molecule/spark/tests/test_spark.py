"""The Spark tier as users and the verification suite rely on it: services, authentication, restarts."""

from __future__ import annotations

import json
import pathlib
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
HEAD = PLATFORMS[0]["name"]
WORKER = PLATFORMS[1]["name"]
WORKER_VARS = MOLECULE["provisioner"]["inventory"]["group_vars"]["spark_workers"]
VENV = "/opt/clusterforge/venv"
PYTHON = f"{VENV}/bin/python"
# The account that submits applications: the verification account, in the client group; the service
# account (SERVICE) reads no client credential.
USER, CLIENTS, SERVICE = "clusterforge-verify", "clusterforge-clients", "clusterforge"
CLIENT_CONF = "/etc/clusterforge/spark/client"
sys.path.insert(0, str(SCENARIO.parent / "_shared"))
from gateway import assert_gateway_refuses_strangers, assert_ui_listens_on_loopback_only  # noqa: E402
from services import assert_comes_back_after_a_clean_exit, assert_restart_always, restarts  # noqa: E402


def webui_credentials() -> str:
    """user:password of the web UI gateway, as the head node's client configuration holds it."""
    return (
        testinfra.get_host(f"podman://{HEAD}").file(f"{CLIENT_CONF}/webui.credentials").content_string.strip()
    )


def put(host, path: str, content: str, mode: str = "0644") -> None:
    """Write a file on the node (testinfra quotes the argument, printf writes it verbatim)."""
    written = host.run("printf '%%s' %s > %s && chmod %s %s", content, path, mode, path)
    assert written.rc == 0, written.stderr


def address_of(host, name: str) -> str:
    return host.run("getent ahostsv4 %s", name).stdout.split()[0]


def is_head(host) -> bool:
    return host.backend.get_hostname() == HEAD


def master_state(host) -> dict:
    body = host.run(
        "curl -sS --fail --max-time 10 -u %s https://%s:8080/json/",
        webui_credentials(),
        address_of(host, HEAD),
    )
    assert body.rc == 0, body.stderr
    return json.loads(body.stdout)


def alive_workers(host) -> list[dict]:
    return [w for w in master_state(host)["workers"] if w["state"] == "ALIVE"]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (AssertionError, ValueError, KeyError):
            pass
        time.sleep(2)
    raise AssertionError(f"{what} within {timeout:.0f} s")


APPLICATION = """
    import json, os, subprocess, sys
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.appName(sys.argv[1]).getOrCreate()
    sc = spark.sparkContext
    ui = sc.uiWebUrl
    port = ui.rsplit(":", 1)[1]
    ss = subprocess.run(["ss", "-Hltn", "sport = :" + port], capture_output=True, text=True).stdout
    total = spark.range(1, 10**6 + 1, 1, 4).selectExpr("sum(id * id)").first()[0]
    words = sc.parallelize(["a"] * 3 + ["b"] * 5, 4).map(lambda w: (w, 1)).reduceByKey(lambda x, y: x + y)
    import pyspark.pandas as ps
    frame = ps.DataFrame({"k": [1, 2, 1, 2, 3], "v": [10, 20, 30, 40, 50]})
    grouped = frame.groupby("k")["v"].sum().to_pandas().sort_index().to_dict()
    print("RESULT " + json.dumps({"total": total, "words": dict(words.collect()),
                                  "grouped": {str(k): int(v) for k, v in grouped.items()},
                                  "ui": ui, "ui_listeners": [line.split()[3] for line in ss.splitlines()]}),
          flush=True)
    spark.stop()
    """


def run_application(host, name: str, conf_dir: str, timeout: int):
    put(host, "/tmp/cf_app.py", textwrap.dedent(APPLICATION))
    return host.run(
        "cd /tmp && timeout %s runuser -u %s -- env SPARK_CONF_DIR=%s PYSPARK_PYTHON=%s %s /tmp/cf_app.py %s",
        str(timeout),
        USER,
        conf_dir,
        PYTHON,
        PYTHON,
        name,
    )


def test_units_are_active_enabled_and_always_restart(host):
    unit = "spark-master" if is_head(host) else "spark-worker"
    service = host.service(unit)
    assert service.is_running and service.is_enabled
    props = host.run("systemctl show -p User -p ExecStart %s", unit).stdout
    assert "User=spark" in props
    assert_restart_always(host, unit)
    assert_restart_always(host, "nginx")
    assert "site-packages/pyspark/bin/spark-class" in props


def test_daemons_run_as_their_own_system_account(host):
    account = host.user("spark")
    assert account.exists and account.uid < 1000 and account.shell == "/usr/sbin/nologin"
    unit = "spark-master" if is_head(host) else "spark-worker"
    pid = host.run("systemctl show -p MainPID --value %s", unit).stdout.strip()
    assert pid.isdigit() and pid != "0"
    assert host.run("ps -o user= -p %s", pid).stdout.strip() == "spark"
    assert "org.apache.spark.deploy" in host.file(f"/proc/{pid}/cmdline").content_string


def test_every_listening_socket_of_spark_is_on_the_cluster_address_or_loopback(host):
    me = address_of(host, host.backend.get_hostname())
    ui = 8080 if is_head(host) else 8081
    uid = host.user("spark").uid
    lines = host.run("ss -Hltne").stdout.splitlines()
    local = [line.split()[3] for line in lines if f"uid:{uid} " in line]
    assert local, "spark listens on nothing"
    for address in local:
        ip, port = address.rsplit(":", 1)
        # The web UI alone is on loopback (behind the gateway); RPC on the cluster address.
        assert ip.strip("[]").removeprefix("::ffff:") == ("127.0.0.1" if int(port) == ui else me), local
    ports = {int(a.rsplit(":", 1)[1]) for a in local}
    assert ports >= ({7077, 8080} if is_head(host) else {7078, 8081})


def test_web_ui_is_reached_only_through_the_authenticating_https_gateway(host):
    """From the other node: anonymous 401, wrong password 401, credentials 200 (TLS from the
    cluster CA), plain HTTP refused; the UI itself listens on 127.0.0.1 only."""
    other = testinfra.get_host(f"podman://{WORKER if is_head(host) else HEAD}")
    me = address_of(host, host.backend.get_hostname())
    port = 8080 if is_head(host) else 8081
    assert_ui_listens_on_loopback_only(host, "spark", port)
    assert_gateway_refuses_strangers(other, me, port, "/json/" if is_head(host) else "/", webui_credentials())
    assert host.run("runuser -u nobody -- cat %s/webui.credentials", CLIENT_CONF).rc != 0


def test_secret_is_readable_by_its_service_and_the_client_group_only(host):
    if is_head(host):
        conf = host.file(f"{CLIENT_CONF}/spark-defaults.conf")
        assert conf.group == CLIENTS and conf.mode == 0o640
        assert host.run("runuser -u %s -- cat %s/spark-defaults.conf", SERVICE, CLIENT_CONF).rc != 0
        assert "spark.authenticate.secret" in conf.content_string
        assert host.run("runuser -u nobody -- cat %s/spark-defaults.conf", CLIENT_CONF).rc != 0
    service = host.file("/etc/clusterforge/spark/service/spark-defaults.conf")
    assert service.group == "spark" and service.mode == 0o640
    text = service.content_string
    assert "spark.authenticate                    true" in text
    assert "spark.network.crypto.enabled          true" in text


@pytest.mark.on_host(HEAD, reason="asked from the head node")
def test_master_lists_the_worker_alive_with_the_inventory_resources(host):
    _wait(lambda: len(alive_workers(host)) == 1, 60, "one ALIVE worker")
    (worker,) = alive_workers(host)
    assert worker["host"] == address_of(host, WORKER)
    assert worker["cores"] == WORKER_VARS["spark_worker_cores"]
    assert worker["memory"] == WORKER_VARS["spark_worker_memory_mb"]


@pytest.mark.on_host(HEAD, reason="applications are submitted from the head node")
def test_authenticated_application_computes_known_answers(host):
    result = run_application(host, "cf-molecule-authenticated", CLIENT_CONF, 240)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.rc == 0 and lines, result.stderr[-3000:]
    answer = json.loads(lines[-1].removeprefix("RESULT "))
    # The application UI (plain HTTP, no authentication) listens on loopback only, and says so.
    ui, listeners = answer.pop("ui"), answer.pop("ui_listeners")
    assert ui.startswith("http://127.0.0.1:"), ui
    port = ui.rsplit(":", 1)[1]
    # Java lists an IPv4 listener as IPv4-mapped IPv6 ([::ffff:127.0.0.1]:4040)
    local = [
        a.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:") + ":" + a.rsplit(":", 1)[1] for a in listeners
    ]
    assert local == ["127.0.0.1:" + port], listeners
    assert answer == {
        "total": 333333833333500000,
        "words": {"a": 3, "b": 5},
        "grouped": {"1": 40, "2": 60, "3": 50},
    }
    apps = master_state(host)
    names = [a["name"] for a in apps["completedapps"] + apps["activeapps"]]
    assert "cf-molecule-authenticated" in names


HOLDER = """
    import os, sys, time
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.appName(sys.argv[1]).getOrCreate()
    spark.sparkContext.parallelize(range(4), 2).count()
    # Holds its executors, as an open notebook's SparkSession does, until told to stop.
    deadline = time.monotonic() + 300
    while not os.path.exists("/tmp/cf-holder.stop") and time.monotonic() < deadline:
        time.sleep(0.5)
    spark.stop()
    """


@pytest.mark.on_host(HEAD, reason="applications are submitted from the head node")
def test_a_second_application_computes_while_the_first_holds_its_share(host):
    """The master grants an application spark_app_default_cores of the worker's cores (1 of 2 here):
    while one application holds its executors (an open notebook's session), a second one gets the
    other core and computes its known answers. With Spark's default (every core to the first) the
    second would wait until the first ends, past this test's timeout."""
    share = MOLECULE["provisioner"]["inventory"]["group_vars"]["all"]["spark_app_default_cores"]
    assert 0 < share < WORKER_VARS["spark_worker_cores"]
    assert (
        f"spark.deploy.defaultCores             {share}"
        in host.file("/etc/clusterforge/spark/service/spark-defaults.conf").content_string
    )
    host.run("rm -f /tmp/cf-holder.stop /tmp/cf-holder.out")
    put(host, "/tmp/cf_holder.py", textwrap.dedent(HOLDER))
    started = host.run(
        "cd /tmp && (runuser -u %s -- env SPARK_CONF_DIR=%s PYSPARK_PYTHON=%s timeout 300 %s "
        "/tmp/cf_holder.py cf-molecule-holder > /tmp/cf-holder.out 2>&1 &)",
        USER,
        CLIENT_CONF,
        PYTHON,
        PYTHON,
    )
    assert started.rc == 0, started.stderr

    def holder() -> dict | None:
        return next((a for a in master_state(host)["activeapps"] if a["name"] == "cf-molecule-holder"), None)

    try:
        _wait(lambda: (holder() or {}).get("cores") == share, 120, f"the holder running on {share} core(s)")
        result = run_application(host, "cf-molecule-beside", CLIENT_CONF, 150)
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        assert result.rc == 0 and lines, result.stderr[-3000:]
        assert json.loads(lines[-1].removeprefix("RESULT "))["total"] == 333333833333500000
        assert (holder() or {}).get("state") == "RUNNING", "the holder ended before the second application"
        beside = [a for a in master_state(host)["completedapps"] if a["name"] == "cf-molecule-beside"]
        assert beside and beside[-1]["cores"] == share, beside
    finally:
        host.run("touch /tmp/cf-holder.stop")
    _wait(lambda: holder() is None, 60, "the holder ended")


REFUSAL_PROBE = r"""
cd /tmp
for n in nosecret wrongsecret; do
  timeout 120 runuser -u {user} -- env SPARK_CONF_DIR=/tmp/cf-$n PYSPARK_PYTHON={python} \
    {python} /tmp/cf_app.py cf-$n > /tmp/cf-$n.out 2>&1 &
  echo $! > /tmp/cf-$n.pid
done
for i in $(seq 120); do
  grep -q 'Failed to connect to master' /tmp/cf-nosecret.out \
    && grep -q 'Failed to connect to master' /tmp/cf-wrongsecret.out && break
  sleep 1
done
for n in nosecret wrongsecret; do kill "$(cat /tmp/cf-$n.pid)" 2>/dev/null; done
wait
"""


@pytest.mark.on_host(HEAD, reason="applications are submitted from the head node")
def test_applications_without_the_secret_or_with_a_wrong_one_are_refused(host):
    """Two drivers start at once: one with authentication off, one with a wrong secret. Both must be
    refused by the master (and never registered); the authenticated run above is the control."""
    for name, edit in (
        ("nosecret", "/^spark.authenticate/d; /^spark.network.crypto/d"),
        ("wrongsecret", "s/^\\(spark.authenticate.secret\\s\\+\\).*/\\1not-the-cluster-secret/"),
    ):
        conf = f"/tmp/cf-{name}"
        prepared = host.run(
            "rm -rf %s && cp -r %s %s && sed -i %s %s/spark-defaults.conf && chown -R %s %s",
            conf,
            CLIENT_CONF,
            conf,
            edit,
            conf,
            USER,
            conf,
        )
        assert prepared.rc == 0, prepared.stderr
    wrong = host.file("/tmp/cf-wrongsecret/spark-defaults.conf").content_string
    assert "not-the-cluster-secret" in wrong
    assert "spark.authenticate" not in host.file("/tmp/cf-nosecret/spark-defaults.conf").content_string
    put(host, "/tmp/cf_app.py", textwrap.dedent(APPLICATION))
    since = host.run("date %s", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    put(host, "/tmp/cf_refusal.sh", REFUSAL_PROBE.format(user=USER, python=PYTHON))
    host.run("bash /tmp/cf_refusal.sh")
    for name in ("nosecret", "wrongsecret"):
        out = host.file(f"/tmp/cf-{name}.out").content_string
        assert "Failed to connect to master" in out, f"{name}: {out[-3000:]}"
        assert "RESULT " not in out, f"{name} computed without the cluster secret"
    apps = master_state(host)
    names = {a["name"] for a in apps["completedapps"] + apps["activeapps"]}
    assert not names & {"cf-nosecret", "cf-wrongsecret"}, names
    log = host.run("journalctl -u spark-master --since %s --no-pager", since).stdout
    assert "Expected SaslMessage" in log, "the master did not log the unauthenticated client"


RPC_PROBE = r"""
import socket, struct, sys
# One Spark RPC request (frame length, type 3 = RpcRequest, request id, body size, body) that carries
# no authentication. Prints the answer's kind (4 response, 5 failure) and text, or CLOSED.
body = b"\x00clusterforge-unauthenticated"
message = struct.pack(">bqi", 3, 1, len(body)) + body
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
sock.sendall(struct.pack(">q", 8 + len(message)) + message)
data = b""
while len(data) < 9:
    chunk = sock.recv(65536)
    if not chunk:
        break
    data += chunk
kind = "CLOSED" if len(data) < 9 else {4: "RESPONSE", 5: "FAILURE"}.get(data[8], data[8])
print(kind, data[9:].decode("latin-1"))
"""


@pytest.mark.on_host(HEAD, reason="probed from the head node")
def test_rpc_request_without_authentication_is_refused_by_master_and_worker(host):
    """The worker's RPC port (where a master launches executors) and the master's refuse a request
    that carries no authentication: the answer is Spark's authentication failure, not a response.
    Without spark.authenticate the same request reaches the RPC dispatcher and fails otherwise."""
    put(host, "/tmp/cf_rpc.py", RPC_PROBE)
    for name, port in ((WORKER, 7078), (HEAD, 7077)):
        answer = host.run("python3 /tmp/cf_rpc.py %s %s", address_of(host, name), str(port))
        assert answer.rc == 0, answer.stderr
        assert answer.stdout.startswith("FAILURE") and "Expected SaslMessage" in answer.stdout, (
            name,
            port,
            answer.stdout[:2000],
        )


def _podman(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.on_host(HEAD, reason="driven from the head node")
def test_worker_registers_again_after_the_master_restarts(host):
    assert host.run("systemctl restart spark-master").rc == 0
    _wait(lambda: len(alive_workers(host)) == 1, 120, "the worker ALIVE on the restarted master")


@pytest.mark.on_host(HEAD, reason="driven from the head node")
def test_a_worker_that_exits_cleanly_comes_back_and_registers_again(host):
    """SIGTERM to the worker JVM ends it with 143, a clean stop (SuccessExitStatus): Restart=always
    starts it again and the master lists it ALIVE."""
    worker = testinfra.get_host(f"podman://{WORKER}")
    before = restarts(worker, "spark-worker")
    assert worker.run("systemctl kill -s TERM spark-worker").rc == 0
    assert_comes_back_after_a_clean_exit(worker, "spark-worker", before, timeout=120)
    _wait(lambda: len(alive_workers(host)) == 1, 120, "the worker ALIVE again")


@pytest.mark.on_host(HEAD, reason="driven from the head node")
def test_a_crashed_worker_is_restarted_by_systemd_and_registers_again(host):
    """SIGKILL the worker JVM: Restart=on-failure brings it back, and the master lists it ALIVE again
    (next to its old registration, now DEAD, which counting by state leaves out). Lab nodes keep their
    address across `podman restart`; molecule's do not, so a node restart is exercised on the lab."""

    def main_pid() -> str:
        return _podman(
            "exec", WORKER, "systemctl", "show", "-p", "MainPID", "--value", "spark-worker"
        ).stdout.strip()

    before = main_pid()
    assert before.isdigit() and before != "0"
    assert _podman("exec", WORKER, "kill", "-9", before).returncode == 0

    def restarted() -> bool:
        active = _podman("exec", WORKER, "systemctl", "is-active", "spark-worker").stdout.strip() == "active"
        return active and main_pid() not in ("0", before)

    _wait(restarted, 90, "spark-worker active again with a new JVM")
    _wait(lambda: len(alive_workers(host)) == 1, 120, "the restarted worker ALIVE on the master")
