"""security.listeners: /proc/net/tcp decoding, exposure rules, and the open-door control on the
real kernel (the door is a socket of the test process; conftest narrows the scan to those)."""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Any

import pytest

from compute_jobs.checks import load_all, security
from compute_jobs.model import FAIL, PASS, Registry, Result, registry
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


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 403

    def do_GET(self):
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "passes"), [(403, True), (401, True), (200, False), (404, False)])
def test_a_declared_port_on_every_address_must_refuse_an_anonymous_request(cj_cluster, status, passes):
    handler = type("Handler", (_Answer,), {"status": status})
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        airflow = {"log_server_port": port, "expected_workers": ["a"]}
        result = run(cj_cluster(engines={"airflow": airflow}))
        elsewhere = run(cj_cluster(engines={"airflow": {**airflow, "expected_workers": ["b"]}}))
    finally:
        server.shutdown()
        server.server_close()
    declared = result.details["declared"][str(port)]
    assert "Airflow's worker log server" in declared["why"]
    if passes:
        assert result.status == PASS, result.reason
        assert declared["anonymous"] == f"refused (HTTP {status})"
    else:
        assert result.status == FAIL
        assert f"0.0.0.0:{port} (every address; Airflow's worker log server" in result.reason
        assert f"answered HTTP {status} without credentials" in result.reason
    # Not an Airflow worker: the same listener is an open door whatever it answers.
    assert elsewhere.status == FAIL and elsewhere.details["declared"] == {}
