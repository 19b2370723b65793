"""security.listeners: /proc/net/tcp decoding, exposure rules, and the open-door control on the
real kernel (the door is a socket of the test process; conftest narrows the scan to those).
security.certificates: real TLS servers on loopback with certificates of throwaway CAs."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from checkrun import run_checks

from compute_jobs.checks import load_all, security
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Registry, Result, registry
from compute_jobs.runner import RunConfig, Runner

load_all()

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1
   2: 0A00D50A:1A0B 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 103 1
   3: 00000000:2253 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 104 1
   4: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 105 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 0 0 0 0 0 201 1
   1: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 0 0 0 0 0 202 1
   2: 0000000000000000FFFF00000A00D50A:1A0C 00000000000000000000000000000000:0000 0A 0 0 0 0 0 203 1
"""


def test_addresses_decode_from_host_order_words():
    assert security.decode_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert security.decode_address("0A00D50A:1A0B") == ("10.213.0.10", 6667)
    assert security.decode_address("00000000000000000000000001000000:0277") == ("::1", 631)
    assert security.decode_address("0000000000000000FFFF00000A00D50A:1A0C") == ("::ffff:10.213.0.10", 6668)
    with pytest.raises(ValueError):
        security.decode_address("0100:0016")


def test_only_listening_sockets_are_read_and_judged_by_where_they_bind():
    listeners = security.parse_proc_net(TCP) + security.parse_proc_net(TCP6)
    assert [(x.endpoint(), x.inode) for x in listeners] == [
        ("127.0.0.1:8080", "101"),
        ("0.0.0.0:22", "102"),
        ("10.213.0.10:6667", "103"),
        ("0.0.0.0:8787", "104"),
        ("[::1]:631", "201"),
        ("[::]:8081", "202"),
        ("[::ffff:10.213.0.10]:6668", "203"),
    ]
    where = {x.endpoint(): security.exposure(x, "10.213.0.10") for x in listeners}
    assert where == {
        "127.0.0.1:8080": "loopback",
        "0.0.0.0:22": "every address",
        "10.213.0.10:6667": "cluster",
        "0.0.0.0:8787": "every address",
        "[::1]:631": "loopback",
        "[::]:8081": "every address",
        "[::ffff:10.213.0.10]:6668": "cluster",
    }
    assert security.exposure(listeners[2], "10.213.0.11") == "other interface"


def test_allowlist_is_checked():
    assert security.parse_ports(" 22, 2222 ,") == {22, 2222}
    for bad in ("ssh", "0", "70000"):
        with pytest.raises(Exception, match="is not a TCP port"):
            security.parse_ports(bad)


def run(cluster: Any, **config: Any) -> Result:
    local = Registry()
    local.register(registry.get("security.listeners"))
    outcome = Runner(local).run(RunConfig(cluster=cluster, target="a", **config))
    (result,) = outcome.results
    return result


def test_loopback_and_cluster_listeners_pass_and_the_open_door_control_fails(cj_cluster, cj_validator):
    validator = cj_validator("result.schema.json")
    with socket.socket() as service:
        service.bind(("127.0.0.1", 0))
        service.listen(1)
        normal = run(cj_cluster())
        injected = run(cj_cluster(), inject="open-door")
    validator.validate(normal.to_dict())
    validator.validate(injected.to_dict())
    assert normal.status == PASS and normal.category == "security", normal.reason
    assert normal.details["listeners"].get("loopback", 0) >= 1
    assert injected.status == FAIL and injected.control == "open-door"
    assert "(every address;" in injected.reason and f"[{__import__('os').getpid()}]" in injected.reason


def test_a_real_listener_on_every_address_fails_unless_its_port_is_allowed(cj_cluster):
    with socket.socket() as door:
        door.bind(("0.0.0.0", 0))
        door.listen(1)
        port = door.getsockname()[1]
        caught = run(cj_cluster())
        allowed = run(cj_cluster(), overrides={"security.listeners": {"allow_ports": f"22,{port}"}})
    assert caught.status == FAIL and f"0.0.0.0:{port} (every address;" in caught.reason
    assert caught.observed == [x for x in caught.observed if f":{port} " in x]
    assert allowed.status == PASS, allowed.reason


def test_an_airflow_log_server_port_on_every_address_is_no_exception(cj_cluster):
    """Every role binds its services to the cluster address (Airflow's worker log server too, in a
    unit of its own): a listener on every address FAILs whatever its port, log server or not."""
    with socket.socket() as door:
        door.bind(("0.0.0.0", 0))
        door.listen(1)
        port = door.getsockname()[1]
        airflow = {"log_server_port": port, "expected_workers": ["a"]}
        result = run(cj_cluster(engines={"airflow": airflow}))
    assert result.status == FAIL and f"0.0.0.0:{port} (every address;" in result.reason


# --- security.certificates: real TLS servers on loopback, certificates from a throwaway CA --------


def _issue(tmp_path, days: int, name: str) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 valid ``days``; (ca.crt, server.crt, server.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / f"{name}-ca.crt", tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return tuple(str(p) for p in paths)


@pytest.fixture
def loopback() -> Iterator[contextlib.ExitStack]:
    """Closes the loopback servers a test starts."""
    with contextlib.ExitStack() as stack:
        yield stack


def _server_context(tmp_path, name: str) -> ssl.SSLContext:
    """A TLS server context with a certificate for 127.0.0.1 from a CA of its own, valid 400 days."""
    _ca_file, cert, key = _issue(tmp_path, 400, name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _tls_answer(context: ssl.SSLContext, greeting: bytes = b"") -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            if greeting:
                tls.sendall(greeting)
            tls.recv(1)

    return answer


@pytest.fixture
def tls_server(tmp_path, loopback):
    """Factory: a TLS server on 127.0.0.1 presenting a certificate valid ``days``; (port, ca_file)."""

    def start(days: int, name: str = "door") -> tuple[int, str]:
        ca_file, cert, key = _issue(tmp_path, days, name)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        address = security.serve_tcp(_tls_answer(context), loopback)
        return int(address.rsplit(":", 1)[1]), ca_file

    return start


def run_certificates(cluster: Any, **config: Any) -> dict[str, Result]:
    return run_checks(cluster, ["security.certificates"], **config)


def test_every_declared_tls_door_verifies_and_outlives_the_renewal_window(cj_cluster, tls_server, tmp_path):
    hub_port, hub_ca = tls_server(400, "hub")
    dask_port, dask_ca = tls_server(800, "dask")
    gateway_port, gateway_ca = tls_server(10, "gateway")  # inside the 30-day window: renewal missed
    engines = {
        "dask": {"endpoint": f"tls://127.0.0.1:{dask_port}", "ca_file": dask_ca, "dashboard": ""},
        "spark": {"master_webui": f"https://127.0.0.1:{gateway_port}"},
        "jupyter": {"url": f"https://127.0.0.1:{hub_port}", "ca_file": hub_ca, "credentials_file": "x"},
        "celery": {"flower_url": "http://127.0.0.1:5555"},  # plain HTTP is not a door of this check
    }
    cluster = cj_cluster(engines=engines)
    results = run_certificates(cluster, overrides={"security.certificates": {"gateway_ca_file": gateway_ca}})
    assert set(results) == {
        "security.certificates[dask-scheduler]",
        "security.certificates[spark-master-ui]",
        "security.certificates[jupyterhub]",
    }
    assert results["security.certificates[dask-scheduler]"].status == PASS, results[
        "security.certificates[dask-scheduler]"
    ].reason
    assert results["security.certificates[jupyterhub]"].status == PASS
    short = results["security.certificates[spark-master-ui]"]
    assert short.status == FAIL and "inside the renewal window" in short.reason


def test_a_certificate_from_another_ca_fails_and_the_control_fails_every_door(
    cj_cluster, tls_server, monkeypatch
):
    port, _ = tls_server(400, "hub")
    _, stranger_ca = tls_server(400, "stranger")
    cluster = cj_cluster(
        engines={
            "jupyter": {"url": f"https://127.0.0.1:{port}", "ca_file": stranger_ca, "credentials_file": "x"}
        }
    )
    result = run_certificates(cluster)["security.certificates[jupyterhub]"]
    assert result.status == FAIL and "does not verify" in result.reason

    port, ca_file = tls_server(400, "dask")
    cluster = cj_cluster(engines={"dask": {"endpoint": f"tls://127.0.0.1:{port}", "ca_file": ca_file}})
    assert run_certificates(cluster)["security.certificates[dask-scheduler]"].status == PASS
    # The nodes' system trust store holds the cluster CA (the common role adds it): the control
    # must not lean on it.
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    controlled = run_certificates(cluster, inject="open-door")["security.certificates[dask-scheduler]"]
    assert controlled.status == FAIL and controlled.control == "open-door", controlled.reason
    assert "does not verify" in controlled.reason


def test_the_luigi_scheduler_over_https_is_a_door_of_the_cluster_ca(cj_cluster, tls_server):
    port, cluster_ca = tls_server(400, "luigi")
    _, stranger_ca = tls_server(400, "stranger")
    cluster = cj_cluster(engines={"luigi": {"endpoint": f"https://u:pw@127.0.0.1:{port}"}})
    name = "security.certificates[luigi-scheduler]"
    trusted = run_certificates(cluster, overrides={"security.certificates": {"gateway_ca_file": cluster_ca}})
    assert trusted[name].status == PASS, trusted[name].reason
    foreign = run_certificates(cluster, overrides={"security.certificates": {"gateway_ca_file": stranger_ca}})
    assert foreign[name].status == FAIL and "does not verify" in foreign[name].reason
    plain = cj_cluster(engines={"luigi": {"endpoint": f"http://127.0.0.1:{port}"}})
    assert name not in run_certificates(plain), "a plain-HTTP scheduler is no TLS door"


def test_a_door_that_does_not_answer_fails_and_no_door_at_all_is_skipped(cj_cluster):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    cluster = cj_cluster(
        engines={"dask": {"endpoint": f"tls://127.0.0.1:{port}", "ca_file": "/etc/hostname"}}
    )
    result = run_certificates(cluster)["security.certificates[dask-scheduler]"]
    assert result.status in (FAIL, "ERROR") and result.reason
    nothing = run_certificates(cj_cluster(engines={"celery": {"flower_url": "http://x:5555"}}))
    assert [r.status for r in nothing.values()] == [SKIP]
    assert "declares no TLS door" in next(iter(nothing.values())).reason


# --- security.anonymous: real loopback servers that refuse strangers, and ones that do not --------


class _Http(http.server.BaseHTTPRequestHandler):
    status = 401

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def doors(tmp_path, loopback):
    """Factory of loopback doors: http (answering ``status``), redis (``reply``), tls (``client_cert``)."""
    names = itertools.count()

    def http_door(status: int, tls: ssl.SSLContext | None = None) -> str:
        handler = type("Handler", (_Http,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        loopback.callback(server.server_close)
        loopback.callback(server.shutdown)
        return f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"

    def redis_door(reply: bytes) -> str:
        return security.serve_tcp(lambda conn: (conn.recv(64), conn.sendall(reply)), loopback)

    def tls_door(client_cert: bool) -> str:
        ca_file, cert, key = _issue(tmp_path, 400, f"tls{next(names)}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(ca_file)
        return security.serve_tcp(_tls_answer(context, b"handshake: welcome"), loopback)

    return {"http": http_door, "redis": redis_door, "tls": tls_door}


def _celery_config(tmp_path, address: str, tls: bool = False, broker_type: str = "redis") -> str:
    host, port = address.split(":")
    path = tmp_path / "celery.json"
    broker = {"type": broker_type, "address": host, "port": int(port), "tls": tls}
    path.write_text(
        json.dumps({"broker_url": "rediss://:pw@x/0" if tls else "redis://:pw@x/0", "broker": broker})
    )
    return str(path)


# Connection.Start of a broker offering PLAIN; Connection.Close 403 ACCESS_REFUSED; Connection.Tune.
AMQP_START = security.amqp_method(
    10, 10, b"\x00\x09" + bytes(4) + b"\x00\x00\x00\x05PLAIN\x00\x00\x00\x05en_US"
)
AMQP_REFUSED = security.amqp_method(10, 50, (403).to_bytes(2, "big") + b"\x0dACCESS_REFUSED" + bytes(4))
AMQP_TUNE = security.amqp_method(10, 30, b"\x07\xff\x00\x02\x00\x00\x00\x3c")


def _amqp_broker(context: ssl.SSLContext | None, verdict: bytes) -> Callable[[socket.socket], None]:
    """A RabbitMQ stand-in: over TLS (``context``) or plain TCP, it greets the AMQP header with
    Connection.Start and answers the login with ``verdict`` (b"" hangs up)."""

    def answer(conn: socket.socket) -> None:
        session = context.wrap_socket(conn, server_side=True) if context else conn
        with session:
            if session.recv(8) != security.AMQP_HEADER:
                return
            session.sendall(AMQP_START)
            session.recv(4096)
            if verdict:
                session.sendall(verdict)

    return answer


@pytest.mark.parametrize(
    ("verdict", "status", "observed"),
    [
        (
            AMQP_REFUSED,
            PASS,
            "refused (no plain-text session; over TLS a wrong password ended the connection: 403)",
        ),
        (b"", PASS, "refused (no plain-text session; over TLS a wrong password ended the connection)"),
        (AMQP_TUNE, FAIL, "accepted a wrong password (answered method (10, 30)) over TLS"),
    ],
)
def test_a_tls_rabbitmq_must_ignore_plain_text_and_refuse_a_wrong_password_inside_tls(
    cj_cluster, tmp_path, loopback, verdict, status, observed
):
    context = _server_context(tmp_path, "rabbitmq")
    door = security.serve_tcp(_amqp_broker(context, verdict), loopback)
    engines = {"celery": {"config": _celery_config(tmp_path, door, tls=True, broker_type="rabbitmq")}}
    result = run_checks(cj_cluster(engines=engines), ["security.anonymous"])[
        "security.anonymous[rabbitmq-broker]"
    ]
    assert (result.status, result.observed) == (status, observed)
    assert result.details["kind"] == "amqps"


def test_a_tls_rabbitmq_that_speaks_amqp_in_plain_text_fails_and_a_plain_one_is_judged_by_its_login(
    cj_cluster, tmp_path, loopback
):
    plain = security.serve_tcp(_amqp_broker(None, AMQP_REFUSED), loopback)
    said_tls = {"celery": {"config": _celery_config(tmp_path, plain, tls=True, broker_type="rabbitmq")}}
    result = run_checks(cj_cluster(engines=said_tls), ["security.anonymous"])[
        "security.anonymous[rabbitmq-broker]"
    ]
    assert result.status == FAIL and result.observed.startswith("answered AMQP over plain TCP (no TLS"), (
        result.observed
    )
    # celery_rabbitmq_tls: false: the login itself must still be refused
    plain_config = {"celery": {"config": _celery_config(tmp_path, plain, broker_type="rabbitmq")}}
    refused = run_checks(cj_cluster(engines=plain_config), ["security.anonymous"])[
        "security.anonymous[rabbitmq-broker]"
    ]
    assert (refused.status, refused.details["kind"]) == (PASS, "amqp"), refused.observed
    accepting = security.serve_tcp(_amqp_broker(None, AMQP_TUNE), loopback)
    open_config = {"celery": {"config": _celery_config(tmp_path, accepting, broker_type="rabbitmq")}}
    opened = run_checks(cj_cluster(engines=open_config), ["security.anonymous"])[
        "security.anonymous[rabbitmq-broker]"
    ]
    assert opened.status == FAIL and "accepted a wrong password" in opened.observed
    # the negative control knocks at the check's own open broker of each kind: FAIL
    for config in (said_tls, plain_config):
        controlled = run_checks(cj_cluster(engines=config), ["security.anonymous"], inject="open-door")
        knocked = controlled["security.anonymous[rabbitmq-broker]"]
        assert knocked.status == FAIL and knocked.control == "open-door", (knocked.status, knocked.observed)


def _tls_redis(context: ssl.SSLContext, reply: bytes) -> Callable[[socket.socket], None]:
    """A Redis that serves TLS only: a client that does not start a TLS session gets nothing; inside
    one, the first command gets ``reply``."""

    def answer(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(64)
            tls.sendall(reply)

    return answer


@pytest.mark.parametrize(
    ("reply", "status", "observed"),
    [
        (b"-NOAUTH Authentication required.\r\n", PASS, "refused (no plain-text session; over TLS -NOAUTH)"),
        (b"+PONG\r\n", FAIL, "answered '+PONG' over TLS without a password"),
    ],
)
def test_a_tls_redis_must_ignore_plain_text_and_want_the_password_inside_tls(
    cj_cluster, tmp_path, loopback, reply, status, observed
):
    context = _server_context(tmp_path, "redis")
    door = security.serve_tcp(_tls_redis(context, reply), loopback)
    engines = {"celery": {"config": _celery_config(tmp_path, door, tls=True)}}
    result = run_checks(cj_cluster(engines=engines), ["security.anonymous"])[
        "security.anonymous[redis-broker]"
    ]
    assert (result.status, result.observed) == (status, observed)
    assert result.details["kind"] == "rediss"


def test_a_tls_redis_that_answers_plain_text_fails(cj_cluster, doors, tmp_path):
    """The broker's configuration says TLS but the port speaks Redis in clear text: the password
    would cross the network readable."""
    engines = {
        "celery": {
            "config": _celery_config(
                tmp_path, doors["redis"](b"-NOAUTH Authentication required.\r\n"), tls=True
            )
        }
    }
    result = run_checks(cj_cluster(engines=engines), ["security.anonymous"])[
        "security.anonymous[redis-broker]"
    ]
    assert result.status == FAIL
    assert result.observed == "answered '-NOAUTH Authentication required.' over plain TCP (no TLS)"
    controlled = run_checks(cj_cluster(engines=engines), ["security.anonymous"], inject="open-door")
    knocked = controlled["security.anonymous[redis-broker]"]
    assert knocked.status == FAIL and knocked.control == "open-door", (knocked.status, knocked.observed)


def test_every_door_refuses_a_stranger_and_an_open_one_is_named(cj_cluster, doors, tmp_path):
    engines = {
        "dask": {"endpoint": f"tls://{doors['tls'](True)}", "dashboard": doors["http"](401)},
        "spark": {"master_webui": doors["http"](401)},
        "celery": {
            "flower_url": doors["http"](200),
            "config": _celery_config(tmp_path, doors["redis"](b"-NOAUTH Authentication required.\r\n")),
        },
        "airflow": {"endpoint": doors["http"](403)},
        "luigi": {"endpoint": "http://luigi:s3cret@" + doors["http"](401).removeprefix("http://")},
        "jupyter": {"url": doors["http"](403), "ca_file": "x", "credentials_file": "x"},
    }
    results = run_checks(cj_cluster(engines=engines), ["security.anonymous"])
    statuses = {name.removeprefix("security.anonymous"): r.status for name, r in results.items()}
    assert statuses == {
        "[dask-scheduler]": PASS,
        "[dask-dashboard]": PASS,
        "[spark-master-ui]": PASS,
        "[flower]": FAIL,
        "[airflow-api]": PASS,
        "[luigi-scheduler]": PASS,
        "[jupyterhub-api]": PASS,
        "[redis-broker]": PASS,
    }
    flower = results["security.anonymous[flower]"]
    assert "answered HTTP 200 without credentials" in flower.reason and flower.details["door"].endswith(
        "/api/workers"
    )
    assert "s3cret" not in results["security.anonymous[luigi-scheduler]"].details["door"]
    assert results["security.anonymous[redis-broker]"].observed == "refused (-NOAUTH)"


def _log_server_cluster(cj_cluster, **airflow: Any) -> Any:
    """A head node ``a`` and a worker ``b`` running an Airflow Celery worker; ``airflow``: engines.airflow."""
    hosts = [
        {"name": name, "address": "127.0.0.1", "groups": groups, "cores": 1, "memory_mb": 16}
        for name, groups in (("a", ["head"]), ("b", ["workers"]))
    ]
    return cj_cluster(hosts, engines={"airflow": {"expected_workers": ["b"], **airflow}})


@pytest.mark.parametrize(("status", "verdict"), [(403, PASS), (401, PASS), (200, FAIL), (404, FAIL)])
def test_each_airflow_workers_log_server_is_a_door_that_must_refuse(cj_cluster, doors, status, verdict):
    """The log server of every expected worker (its cluster address, log_server_port) is knocked at:
    Airflow answers a request without a signed token with 403."""
    door = doors["http"](status)
    port = int(door.rsplit(":", 1)[1])
    results = run_checks(_log_server_cluster(cj_cluster, log_server_port=port), ["security.anonymous"])
    assert set(results) == {"security.anonymous[airflow-log-server@b]"}
    knocked = results["security.anonymous[airflow-log-server@b]"]
    assert knocked.status == verdict, knocked.observed
    assert knocked.details["door"] == f"http://127.0.0.1:{port}/log/clusterforge-probe.log"
    # without a log server port (the LocalExecutor) there is no such door
    none = run_checks(_log_server_cluster(cj_cluster), ["security.anonymous"])
    assert [r.status for r in none.values()] == [SKIP]


def test_a_log_server_over_tls_is_knocked_with_https_and_must_speak_it(cj_cluster, doors, tmp_path):
    """With log_server_tls the door is https://: a 403 inside TLS PASSes; a log server that answers
    plain HTTP where TLS is declared cannot be knocked at (ERROR, never PASS)."""
    name = "security.anonymous[airflow-log-server@b]"
    for door, status in (
        (doors["http"](403, _server_context(tmp_path, "logs")), PASS),
        (doors["http"](403), ERROR),
    ):
        port = int(door.rsplit(":", 1)[1])
        cluster = _log_server_cluster(cj_cluster, log_server_port=port, log_server_tls=True)
        knocked = run_checks(cluster, ["security.anonymous"])[name]
        assert knocked.status == status, (door, knocked.status, knocked.observed)
        assert knocked.details["door"].startswith("https://127.0.0.1:")


def test_each_log_server_over_tls_is_a_certificate_door_of_the_cluster_ca(cj_cluster, tls_server):
    port, cluster_ca = tls_server(400, "logs")
    _, stranger_ca = tls_server(400, "stranger")
    name = "security.certificates[airflow-log-server@b]"
    cluster = _log_server_cluster(cj_cluster, log_server_port=port, log_server_tls=True)
    trusted = run_certificates(cluster, overrides={"security.certificates": {"gateway_ca_file": cluster_ca}})
    assert trusted[name].status == PASS, trusted[name].reason
    foreign = run_certificates(cluster, overrides={"security.certificates": {"gateway_ca_file": stranger_ca}})
    assert foreign[name].status == FAIL and "does not verify" in foreign[name].reason
    assert name not in run_certificates(_log_server_cluster(cj_cluster, log_server_port=port)), (
        "a plain-HTTP log server is no TLS door"
    )


def test_a_tls_door_without_client_certificates_and_an_open_redis_fail(cj_cluster, doors, tmp_path):
    engines = {
        "dask": {"endpoint": f"tls://{doors['tls'](False)}"},
        "celery": {"config": _celery_config(tmp_path, doors["redis"](b"+PONG\r\n"))},
    }
    results = run_checks(cj_cluster(engines=engines), ["security.anonymous"])
    assert results["security.anonymous[dask-scheduler]"].status == FAIL
    assert "without a certificate" in results["security.anonymous[dask-scheduler]"].reason
    assert results["security.anonymous[redis-broker]"].status == FAIL
    assert "'+PONG' without a password" in results["security.anonymous[redis-broker]"].reason


def test_every_certificate_exporter_is_a_door_and_one_without_client_certificates_fails(cj_cluster, doors):
    jobs = {
        "node": {"auth": "certificate", "targets": {"a": doors["tls"](True), "b": doors["tls"](False)}},
        "postgresql": {"auth": "certificate", "targets": {"a": doors["tls"](True)}},
        # Reached through the Dask dashboard's gateway, a door of the dask section: not knocked twice.
        "dask": {"auth": "password", "targets": {"a": "10.255.255.1:8787"}},
    }
    results = run_checks(cj_cluster(engines={"monitoring": {"jobs": jobs}}), ["security.anonymous"])
    statuses = {name.removeprefix("security.anonymous"): r.status for name, r in results.items()}
    assert statuses == {"[node-exporter@a]": PASS, "[node-exporter@b]": FAIL, "[postgresql-exporter@a]": PASS}
    assert "without a certificate" in results["security.anonymous[node-exporter@b]"].reason


def _closed_port() -> str:
    """127.0.0.1:PORT where nothing listens (a connection is refused, as a dropping firewall's is
    never answered)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_an_exporter_whose_firewall_keeps_this_node_out_must_not_even_open(cj_cluster, doors):
    """This node (a, here at 127.0.0.2) is not one of the exporters' clients: an exporter port that
    lets its connection in FAILs even though the exporter then demands a certificate; one whose
    connection fails PASSes; where this node is a client, the TLS door is knocked as always."""
    open_tls = doors["tls"](True)
    jobs = {
        "node": {
            "auth": "certificate",
            "targets": {"a": open_tls, "b": _closed_port()},
            "clients": {"a": ["10.9.9.9"], "b": ["10.9.9.9", "10.9.9.8"]},
        },
        "postgresql": {"auth": "certificate", "targets": {"a": open_tls}, "clients": {"a": ["127.0.0.2"]}},
    }
    engines = {"monitoring": {"jobs": jobs}}
    node_a = [{"name": "a", "address": "127.0.0.2", "groups": ["head"], "cores": 1, "memory_mb": 16}]
    results = run_checks(cj_cluster(node_a, engines=engines), ["security.anonymous"])
    let_in = results["security.anonymous[node-exporter@a]"]
    assert let_in.status == FAIL, let_in.observed
    assert let_in.observed == "opened a connection from 127.0.0.2, which is not one of its clients (10.9.9.9)"
    kept_out = results["security.anonymous[node-exporter@b]"]
    assert kept_out.status == PASS, kept_out.observed
    assert kept_out.observed.startswith("refused (the host firewall let nothing from 127.0.0.2 through: ")
    assert kept_out.observed.endswith("; only 10.9.9.9, 10.9.9.8 may open it)")
    assert kept_out.details["clients"] == ["10.9.9.9", "10.9.9.8"]
    client = results["security.anonymous[postgresql-exporter@a]"]
    assert client.status == PASS and "without a client certificate" in client.observed, client.observed
    # This node's own exporter (a at 127.0.0.1 by default) is reached over loopback, which no host
    # firewall filters: knocked as always.
    own = {"node": {"auth": "certificate", "targets": {"a": open_tls}, "clients": {"a": ["10.9.9.9"]}}}
    mine = run_checks(cj_cluster(engines={"monitoring": {"jobs": own}}), ["security.anonymous"])
    result = mine["security.anonymous[node-exporter@a]"]
    assert result.status == PASS and "without a client certificate" in result.observed, result.observed
    # The negative control knocks at the check's own open door: it opens, FAIL.
    controlled = run_checks(cj_cluster(node_a, engines=engines), ["security.anonymous"], inject="open-door")
    knocked = controlled["security.anonymous[node-exporter@b]"]
    assert knocked.status == FAIL and knocked.control == "open-door", (knocked.status, knocked.observed)


@pytest.mark.parametrize(
    ("answer", "status", "observed"),
    [
        (lambda conn: (conn.sendall(b"\x00\x01dask-handshake"), conn.recv(1)), FAIL, "answered 16 bytes"),
        (lambda conn: conn.close(), PASS, "refused (closed before it spoke)"),
    ],
)
def test_a_plain_tcp_scheduler_fails_unless_it_hangs_up(cj_cluster, loopback, answer, status, observed):
    """dask_tls_enabled: false declares tcp://: a scheduler that greets a stranger is an open door."""
    engines = {"dask": {"endpoint": f"tcp://{security.serve_tcp(answer, loopback)}"}}
    result = run_checks(cj_cluster(engines=engines), ["security.anonymous"])[
        "security.anonymous[dask-scheduler]"
    ]
    assert result.status == status and result.observed.startswith(observed), (result.status, result.observed)
    assert result.details["kind"] == "tcp"
    controlled = run_checks(cj_cluster(engines=engines), ["security.anonymous"], inject="open-door")
    knocked = controlled["security.anonymous[dask-scheduler]"]
    assert knocked.status == FAIL and knocked.control == "open-door", (knocked.status, knocked.observed)


def test_the_open_door_control_fails_every_door_and_nothing_declared_is_skipped(cj_cluster, doors, tmp_path):
    engines = {
        "dask": {"endpoint": f"tls://{doors['tls'](True)}"},
        "spark": {"master_webui": doors["http"](401)},
        "celery": {
            "config": _celery_config(tmp_path, doors["redis"](b"-NOAUTH Authentication required.\r\n"))
        },
    }
    results = run_checks(cj_cluster(engines=engines), ["security.anonymous"], inject="open-door")
    assert set(results) == {
        "security.anonymous[dask-scheduler]",
        "security.anonymous[spark-master-ui]",
        "security.anonymous[redis-broker]",
    }
    for result in results.values():
        assert result.status == FAIL and result.control == "open-door", (result.name, result.reason)
        assert "negative control" in result.details["knocked"]
    nothing = run_checks(cj_cluster(engines={"mpi": {"hostfile": "/x"}}), ["security.anonymous"])
    (only,) = nothing.values()
    assert only.status == SKIP and "declares no engine door" in only.reason


def test_a_managers_cluster_asks_for_the_key_and_refuses_a_wrong_answer(cj_cluster, loopback):
    from compute_jobs.services import mpmanager

    server = mpmanager.make_server(("127.0.0.1", 0), b"k" * 32)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    engines = {"mpmanager": {"address": f"127.0.0.1:{server.address[1]}"}}
    result = run_checks(cj_cluster(engines=engines), ["security.anonymous"])["security.anonymous[mpmanager]"]
    assert result.status == PASS, result.observed
    assert result.observed == "refused (the authkey challenge rejected a wrong answer)"
    greeter = security.serve_tcp(
        lambda conn: (conn.sendall(b"\x00\x00\x00\x05hello"), conn.recv(1)), loopback
    )
    opened = run_checks(cj_cluster(engines={"mpmanager": {"address": greeter}}), ["security.anonymous"])
    assert opened["security.anonymous[mpmanager]"].status == FAIL
    controlled = run_checks(cj_cluster(engines=engines), ["security.anonymous"], inject="open-door")
    assert controlled["security.anonymous[mpmanager]"].status == FAIL
