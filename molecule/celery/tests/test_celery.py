"""The Celery tier as users and the verification suite rely on it: units, refusals without the
generated credentials or without TLS (RabbitMQ carries the messages here, Redis keeps the results),
the narrow sudo rule, and the celery checks end to end."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import pytest
import testinfra
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
PLATFORMS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
BROKER = PLATFORMS[0]["name"]
WORKER = PLATFORMS[1]["name"]
SECRETS = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "secrets" / "celery"
USER = "clusterforge"
# Runs the checks and reads the client configuration; USER, the service account, reads none.
VERIFY = "clusterforge-verify"
PYTHON = "/opt/clusterforge/venv/bin/python"
CONFIG = "/etc/clusterforge/celery/celery.json"
CONCURRENCY = 2
CA = "/etc/clusterforge/tls/ca.crt"
# redis-cli over TLS with the cluster CA (the broker has no plain-TCP port)
CLI = "redis-cli --tls --cacert " + CA + " -h %s -p 6379"
AMQPS_PORT = 5671
VHOST = "clusterforge"
sys.path.insert(0, str(SCENARIO.parent / "_shared"))
from services import assert_comes_back_after_a_clean_exit, assert_restart_always, restarts  # noqa: E402


@pytest.fixture(scope="module")
def broker():
    return testinfra.get_host(f"podman://{BROKER}")


@pytest.fixture(scope="module")
def worker():
    return testinfra.get_host(f"podman://{WORKER}")


def address(host) -> str:
    return host.interface.default().addresses[0]


def secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


def test_units_are_active_and_enabled(broker, worker):
    for node, units in (
        (broker, ["clusterforge-redis", "rabbitmq-server", "celery-flower"]),
        (worker, ["celery-worker"]),
    ):
        for unit in units:
            service = node.service(unit)
            assert service.is_running and service.is_enabled, f"{unit} on {node.backend.get_hostname()}"
            assert_restart_always(node, unit)
    distro = broker.run("systemctl is-enabled redis-server.service")
    assert distro.stdout.strip() == "masked"


def test_secrets_are_generated_private_and_distinct():
    values = [secret(n) for n in ("redis_password", "rabbitmq_password", "flower_password")]
    assert len(set(values)) == 3 and all(len(v) == 32 and v.isalnum() for v in values)
    for name in ("redis_password", "rabbitmq_password", "flower_password"):
        assert (SECRETS / name).stat().st_mode & 0o777 == 0o600
    assert SECRETS.stat().st_mode & 0o777 == 0o700


def test_redis_listens_on_the_cluster_address_and_loopback_only(broker):
    sockets = {s for s in broker.socket.get_listening_sockets() if s.endswith(":6379")}
    assert sockets == {f"tcp://{address(broker)}:6379", "tcp://127.0.0.1:6379"}, sockets


# A raw RESP client: argv host, command, and "tls" (a session verified against the cluster CA for
# the address dialled) or "plain"; prints the first answer ("" when the broker sent nothing).
RESP = (
    "import socket, ssl, sys\n"
    "s = socket.create_connection((sys.argv[1], 6379), timeout=5)\n"
    "if sys.argv[3] == 'tls':\n"
    "    s = ssl.create_default_context(cafile='" + CA + "').wrap_socket(s, server_hostname=sys.argv[1])\n"
    "s.sendall(sys.argv[2].encode() + b'\\r\\n')\n"
    "try:\n"
    "    print(s.recv(200).decode('latin-1').strip())\n"
    "except ConnectionResetError:\n"
    "    print('')\n"
)


def test_broker_serves_tls_only_with_a_certificate_of_the_cluster_ca(broker, worker):
    """No plain-text Redis answer on the cluster address: the password never crosses in clear text.
    The certificate verifies against the cluster CA for the broker's address."""
    host = address(broker)
    plain = worker.run("python3 -c %s %s %s plain", RESP, host, "PING")
    assert plain.rc == 0 and plain.stdout.strip()[:1] not in ("+", "-", "$"), plain.stdout
    assert worker.run("python3 -c %s %s %s tls", RESP, host, "PING").stdout.startswith("-NOAUTH")
    settings = json.loads(broker.file(CONFIG).content_string)
    assert settings["result_backend"].startswith("rediss://") and settings["tls_ca_file"] == CA


# An AMQP client in the service venv: argv address, user, "tls" (the cluster CA must verify the broker
# for the address dialled) or "plain"; the password on stdin. Prints "OK" or the exception's class.
AMQP_LOGIN = (
    "import ssl, sys, amqp\n"
    "host, port = sys.argv[1].rsplit(':', 1)\n"
    "tls = {'ca_certs': '" + CA + "', 'cert_reqs': ssl.CERT_REQUIRED, 'server_hostname': host}\n"
    "c = amqp.Connection(sys.argv[1], userid=sys.argv[2], password=sys.stdin.read(),\n"
    "    virtual_host='" + VHOST + "', connect_timeout=10, ssl=tls if sys.argv[3] == 'tls' else False)\n"
    "try:\n"
    "    c.connect()\n"
    "    print('OK')\n"
    "    c.close()\n"
    "except Exception as exc:\n"
    "    print(type(exc).__name__)\n"
)


def amqp_login(node, target: str, user: str, password: str, mode: str) -> str:
    return node.run(
        "printf '%%s' %s | timeout 30 %s -c %s %s %s %s", password, PYTHON, AMQP_LOGIN, target, user, mode
    ).stdout.strip()


def test_rabbitmq_serves_amqp_over_tls_only_on_the_cluster_address(broker):
    host = address(broker)
    listening = broker.socket.get_listening_sockets()
    amqp_sockets = {s for s in listening if s.rsplit(":", 1)[1] in ("5671", "5672")}
    assert amqp_sockets == {f"tcp://{host}:{AMQPS_PORT}"}, amqp_sockets
    # epmd and the Erlang distribution port (rabbitmqctl) on loopback only
    for port in ("4369", "25672"):
        assert {s for s in listening if s.endswith(":" + port)} <= {f"tcp://127.0.0.1:{port}"}, port
    settings = json.loads(broker.file(CONFIG).content_string)
    assert settings["broker_url"].startswith("amqps://")
    assert settings["broker_url"].endswith(f"@{host}:{AMQPS_PORT}/{VHOST}")
    declared = settings["broker"]
    assert (declared["type"], declared["port"], declared["tls"]) == ("rabbitmq", AMQPS_PORT, True)


def test_rabbitmq_refuses_plain_text_and_wrong_passwords(broker, worker):
    """From the worker: AMQP in plain text gets no AMQP answer (the PLAIN login would cross readable),
    a wrong password and the removed guest account are refused inside TLS, the right one logs in."""
    target = f"{address(broker)}:{AMQPS_PORT}"
    password = secret("rabbitmq_password")
    assert amqp_login(worker, target, "celery", password, "plain") != "OK"
    assert amqp_login(worker, target, "celery", "not-the-password", "tls") == "AccessRefused"
    assert amqp_login(worker, target, "guest", "guest", "tls") == "AccessRefused"
    assert amqp_login(worker, target, "celery", password, "tls") == "OK"
    # the broker's certificate does not verify against a CA that did not issue it (a throwaway one;
    # the system bundle would not do: every node trusts the cluster CA there)
    other_ca = "/tmp/cf-other-ca.crt"
    made = worker.run(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        "-subj /CN=other -keyout /tmp/cf-other-ca.key -out %s",
        other_ca,
    )
    assert made.rc == 0, made.stderr
    mismatch = worker.run(
        "printf x | timeout 30 %s -c %s %s celery tls",
        PYTHON,
        AMQP_LOGIN.replace(CA, other_ca),
        target,
    ).stdout.strip()
    assert mismatch in ("SSLCertVerificationError", "SSLError"), mismatch


def test_rabbitmq_comes_back_after_a_clean_exit(broker):
    """`rabbitmqctl stop` ends the broker with a clean exit: Restart=always (the role's drop-in)
    starts it again, and the workers' password logs in."""
    before = restarts(broker, "rabbitmq-server")
    assert broker.run("rabbitmqctl stop").rc == 0
    assert_comes_back_after_a_clean_exit(broker, "rabbitmq-server", before)
    target = f"{address(broker)}:{AMQPS_PORT}"
    deadline = time.monotonic() + 60
    while (answer := amqp_login(broker, target, "celery", secret("rabbitmq_password"), "tls")) != "OK":
        assert time.monotonic() < deadline, answer
        time.sleep(2)


def test_broker_refuses_clients_without_the_password(broker, worker):
    host = address(broker)
    # redis-cli on the broker host, through the cluster address
    anonymous = broker.run(CLI + " ping", host)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    wrong = broker.run(CLI + " --no-auth-warning -a %s ping", host, "not-the-password")
    assert "WRONGPASS" in wrong.stdout + wrong.stderr and "PONG" not in wrong.stdout
    right = broker.run(CLI + " --no-auth-warning -a %s ping", host, secret("redis_password"))
    assert right.stdout.strip() == "PONG"
    # a raw RESP client on the worker host, over the cluster network and TLS
    assert worker.run("python3 -c %s %s %s tls", RESP, host, "PING").stdout.startswith("-NOAUTH")
    assert worker.run("python3 -c %s %s %s tls", RESP, host, "AUTH not-the-password").stdout.startswith(
        "-WRONGPASS"
    )
    auth = worker.run("python3 -c %s %s %s tls", RESP, host, "AUTH " + secret("redis_password"))
    assert auth.stdout.strip() == "+OK"


def test_the_clients_account_has_no_admin_or_dangerous_command(broker):
    """The password opens an account without @admin and @dangerous: it cannot stop, reconfigure,
    empty or list the broker, and still does what Celery needs."""
    host, password = address(broker), secret("redis_password")

    def cli(*command: str) -> str:
        done = broker.run(
            CLI + " --no-auth-warning -a %s " + " ".join(["%s"] * len(command)),
            host,
            password,
            *command,
        )
        return (done.stdout + done.stderr).strip()

    for command in (
        ("FLUSHALL",),
        ("CONFIG", "SET", "requirepass", "x"),
        ("SHUTDOWN",),
        ("KEYS", "*"),
        ("ACL", "LIST"),
        ("MONITOR",),
    ):
        assert "NOPERM" in cli(*command), command
    assert cli("SET", "cf-acl-probe", "1") == "OK"
    assert cli("GET", "cf-acl-probe") == "1"
    assert cli("DEL", "cf-acl-probe") == "1"
    assert cli("PUBLISH", "cf-acl-probe", "x") == "0"
    conf = broker.file("/etc/clusterforge/celery-redis/redis.conf")
    assert password not in conf.content_string


def test_redis_comes_back_after_a_clean_exit(broker):
    """Redis answers SIGTERM with a clean exit (status 0): Restart=always starts it again and it
    answers the password. (Clients may not SHUTDOWN it: the test above.)"""
    host, password = address(broker), secret("redis_password")
    before = restarts(broker, "clusterforge-redis")
    pid = broker.run("systemctl show -p MainPID --value clusterforge-redis").stdout.strip()
    assert pid.isdigit() and pid != "0"
    assert broker.run("kill -TERM %s", pid).rc == 0
    assert_comes_back_after_a_clean_exit(broker, "clusterforge-redis", before)
    ping = broker.run(CLI + " --no-auth-warning -a %s ping", host, password)
    assert ping.stdout.strip() == "PONG"


def test_flower_is_reached_over_https_only_and_requires_basic_auth(broker, worker):
    host = address(broker)
    sockets = {s for s in broker.socket.get_listening_sockets() if s.endswith(":5555")}
    assert sockets == {"tcp://127.0.0.1:5555", f"tcp://{host}:5555"}, sockets
    flower = broker.run("ss -Hltnp 'sport = :5555'").stdout
    assert "nginx" in next(line for line in flower.splitlines() if host in line), flower
    # plain HTTP to the port is refused by the gateway; nothing reaches Flower
    plain = worker.run("curl -s -o /dev/null -w '%%{http_code}' http://%s:5555/api/workers", host)
    assert plain.stdout == "400"
    url = f"https://{host}:5555/api/workers?refresh=true"
    code = "curl -s --cacert /etc/clusterforge/tls/ca.crt -o /dev/null -w '%%{http_code}' %s"
    assert worker.run(code, url).stdout == "401"
    assert (
        worker.run(
            "curl -s --cacert /etc/clusterforge/tls/ca.crt -o /dev/null -w '%%{http_code}' -u admin:wrong %s",
            url,
        ).stdout
        == "401"
    )
    # The worker reconnects to the brokers on its own after they restart (the tests before this one
    # stop Redis and RabbitMQ): Flower lists it again once it does.
    deadline = time.monotonic() + 90
    while True:
        good = worker.run(
            "curl -s --cacert /etc/clusterforge/tls/ca.crt -u %s %s",
            "admin:" + secret("flower_password"),
            url,
        )
        listed = good.rc == 0 and f"celery@{WORKER}" in json.loads(good.stdout or "{}")
        if listed or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert listed, good.stdout


def test_client_configuration_is_readable_by_the_verification_account_only(broker, worker):
    for node in (broker, worker):
        conf = node.file(CONFIG)
        assert (conf.user, conf.group, conf.mode) == ("root", "celery", 0o640)
        assert node.run("runuser -u %s -- cat %s", VERIFY, CONFIG).rc == 0
        assert node.run("runuser -u %s -- cat %s", USER, CONFIG).rc != 0
        assert node.run("runuser -u nobody -- cat %s", CONFIG).rc != 0
    settings = json.loads(broker.file(CONFIG).content_string)
    assert settings["result_backend"].endswith(f"@{address(broker)}:6379/1")
    assert settings["visibility_timeout"] == 300


def test_sudo_rule_allows_only_the_broker_restart(broker):
    listing = broker.run("runuser -u %s -- sudo -n -l", USER)
    assert listing.rc == 0
    allowed = [line.strip() for line in listing.stdout.splitlines() if "NOPASSWD" in line]
    assert allowed == ["(root) NOPASSWD: /usr/bin/systemctl restart rabbitmq-server.service"]
    for command in ("stop rabbitmq-server.service", "restart clusterforge-redis.service"):
        assert broker.run("runuser -u %s -- sudo -n /usr/bin/systemctl %s", USER, command).rc != 0


def test_worker_consumes_its_own_and_the_shared_queue(worker):
    unit = worker.file("/etc/systemd/system/celery-worker.service").content_string
    assert f"--queues=worker.{WORKER},clusterforge" in unit
    assert f"--concurrency={CONCURRENCY}" in unit


def test_celery_checks_pass_from_the_head_node(broker, worker):
    cluster = {
        "schema_version": 1,
        "cluster_name": "molecule-celery",
        "inventory_hash": "sha256:" + "0" * 64,
        "run_id": "molecule-celery",
        "hosts": [
            {
                "name": BROKER,
                "address": address(broker),
                "groups": ["head", "celery_broker"],
                "cores": 2,
                "memory_mb": 256,
            },
            {
                "name": WORKER,
                "address": address(worker),
                "groups": ["workers", "celery_workers"],
                "cores": 2,
                "memory_mb": 256,
            },
        ],
        "engines": {"celery": {"config": CONFIG, "workers": {WORKER: CONCURRENCY}}},
        "params": {"celery.performance": {"round_trips": 20, "group_size": 50}},
    }
    broker.run("printf '%%s' %s > /tmp/cluster.json && chmod 0644 /tmp/cluster.json", json.dumps(cluster))
    result = broker.run(
        "cd /tmp && timeout 300 runuser -u %s -- env CLUSTERFORGE_SERVICE_ACCOUNT=%s %s -m compute_jobs run "
        "--cluster /tmp/cluster.json --only celery --scope cluster --json /tmp/celery-results.jsonl",
        VERIFY,
        USER,
        PYTHON,
    )
    lines = broker.run("cat /tmp/celery-results.jsonl").stdout.splitlines()
    results = [r for r in map(json.loads, lines) if r.get("type") == "result"]
    failed = {r["name"]: (r["status"], r["reason"]) for r in results if r["status"] != "PASS"}
    assert result.rc == 0 and not failed, (failed, result.stdout[-3000:], result.stderr[-2000:])
    checks = {r["check"] for r in results}
    assert checks == {
        "celery.workers",
        "celery.canvas",
        "celery.placement",
        "celery.performance",
        "celery.resilience",
    }
    # the broker restart of celery.resilience left the units running
    assert broker.service("rabbitmq-server").is_running and worker.service("celery-worker").is_running
