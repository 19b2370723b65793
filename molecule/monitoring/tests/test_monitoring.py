"""The monitoring tier as an operator relies on it: Prometheus only through its gateway, node_exporter
only to the Prometheus host's certificate and, by the host firewall, only from that host, every node
scraped, the alert rules loaded, the certificates' expiry exported, and both daemons back after a
clean exit."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
import urllib.parse

import pytest
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SCENARIO.parent / "_shared"))

from gateway import assert_gateway_refuses_strangers, assert_ui_listens_on_loopback_only, http_code  # noqa: E402
from nodes import address, node  # noqa: E402

PLATFORMS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
SERVER, OTHER = (p["name"] for p in PLATFORMS)
CREDENTIALS = "/etc/clusterforge/monitoring/client/prometheus.credentials"
EXPORTER_TLS = "/etc/clusterforge/monitoring/tls"


def api(path: str, **query: str):
    """GET Prometheus's API from the other node through the gateway, with the generated password."""
    server = node(SERVER)
    credentials = server.file(CREDENTIALS).content_string.strip()
    url = f"https://{address(SERVER)}:9090{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
    answer = node(OTHER).run("curl -sS --fail --max-time 15 -u %s %s", credentials, url)
    assert answer.rc == 0, answer.stderr
    body = json.loads(answer.stdout)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(predicate, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(2)


def test_units_are_the_roles_and_the_distributions_are_masked(host):
    name = host.backend.get_hostname()
    assert host.service("clusterforge-node-exporter").is_running
    assert host.file("/etc/systemd/system/prometheus-node-exporter.service").linked_to == "/dev/null"
    if name == SERVER:
        assert host.service("clusterforge-prometheus").is_running
        assert host.file("/etc/systemd/system/prometheus.service").linked_to == "/dev/null"


def test_node_exporter_listens_on_the_cluster_address_only(host):
    bound = [
        line.split()[3]
        for line in host.run("ss -Hltn").stdout.splitlines()
        if line.split()[3].endswith(":9100")
    ]
    assert bound == [f"{address(host.backend.get_hostname())}:9100"], bound


def test_prometheus_listens_on_loopback_behind_its_gateway():
    assert_ui_listens_on_loopback_only(node(SERVER), "prometheus", 9090)
    credentials = node(SERVER).file(CREDENTIALS).content_string.strip()
    assert_gateway_refuses_strangers(node(OTHER), address(SERVER), 9090, "/api/v1/targets", credentials)


def test_credentials_are_for_the_verification_account_only():
    f = node(SERVER).file(CREDENTIALS)
    assert (f.user, f.group, f.mode) == ("root", "clusterforge-verify", 0o640)
    assert node(SERVER).run("runuser -u clusterforge -- cat %s", CREDENTIALS).rc != 0
    key = node(SERVER).file(f"{EXPORTER_TLS}/host.key")
    assert (key.user, key.group, key.mode) == ("root", "prometheus", 0o640)


@pytest.mark.parametrize(
    ("client", "cert", "answer"),
    [
        (OTHER, None, "refused"),  # no client certificate
        # a cluster certificate, not the Prometheus host's (Debian 12's exporter cannot tell them apart)
        (
            OTHER,
            "/etc/clusterforge/tls/host",
            "200" if os.environ.get("CF_MOLECULE_DISTRO") == "debian12" else "refused",
        ),
        (SERVER, "/etc/clusterforge/tls/host", "200"),  # the Prometheus host's certificate
    ],
)
def test_node_exporter_answers_only_the_prometheus_host(client, cert, answer):
    url = f"https://{address(OTHER)}:9100/metrics"
    args = ["--cert", f"{cert}.crt", "--key", f"{cert}.key"] if cert else []
    code = http_code(node(client), url, *args)
    if answer == "refused":
        assert code == "000", f"node_exporter answered HTTP {code} to {client} with {cert}"
    else:
        assert code == "200"


def opens(client: str, target: str, port: int) -> bool:
    """Whether a TCP connection from node CLIENT to node TARGET's cluster address opens within 3 s."""
    probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)"
    return node(client).run("python3 -c %s %s %s", probe, address(target), str(port)).rc == 0


def test_another_member_cannot_even_open_an_exporter_port():
    """The host firewall lets only the Prometheus host (and the head node, here the same) open the
    exporters' ports: another member holds a certificate of the cluster CA, and on Debian 12
    node_exporter cannot tell it from the Prometheus host's, but its connection is dropped. Every
    other port stays open to the members (the Prometheus gateway here)."""

    def drops() -> int:
        table = node(SERVER).run("nft list table inet clusterforge").stdout
        (line,) = [line for line in table.splitlines() if "an exporter, not from its clients" in line]
        return int(line.split("packets ")[1].split()[0])

    before = drops()
    assert not opens(OTHER, SERVER, 9100), "another member opened the Prometheus host's node_exporter port"
    assert drops() > before, "the firewall's exporter rule did not count the dropped connection"
    assert opens(SERVER, OTHER, 9100), "the Prometheus host cannot open a member's node_exporter port"
    assert opens(OTHER, SERVER, 9090), "a member cannot reach the Prometheus gateway"


def test_every_node_is_scraped_with_health_up():
    wanted = {("node", SERVER), ("node", OTHER), ("prometheus", SERVER)}

    def healthy():
        targets = api("/api/v1/targets", state="active")["activeTargets"]
        up = {(t["labels"]["job"], t["labels"]["node"]) for t in targets if t["health"] == "up"}
        return wanted <= up and up

    up = wait_for(healthy)
    assert up and wanted <= up, up


def test_every_node_exports_its_certificates_expiry():
    def nodes():
        result = api("/api/v1/query", query="clusterforge_certificate_not_after_seconds - time()")["result"]
        return {r["metric"]["node"] for r in result if float(r["value"][1]) > 86400} >= {SERVER, OTHER}

    assert wait_for(nodes)


def test_the_alert_rules_are_loaded_and_quiet():
    rules = api("/api/v1/rules", type="alert")["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert {"TargetDown", "DiskAlmostFull", "CertificateExpiring"} <= names
    assert api("/api/v1/alerts")["alerts"] == []


def test_a_stopped_exporter_fires_target_down_and_clears():
    other = node(OTHER)
    assert other.run("systemctl stop clusterforge-node-exporter").rc == 0
    try:

        def firing():
            alerts = api("/api/v1/alerts")["alerts"]
            return any(a["labels"]["alertname"] == "TargetDown" and a["state"] == "firing" for a in alerts)

        assert wait_for(firing, 90), "TargetDown did not fire for a stopped exporter"
    finally:
        assert other.run("systemctl start clusterforge-node-exporter").rc == 0
    assert wait_for(lambda: api("/api/v1/alerts")["alerts"] == [], 90), "TargetDown did not clear"


@pytest.mark.parametrize("unit", ["clusterforge-node-exporter", "clusterforge-prometheus"])
def test_a_daemon_that_exits_cleanly_comes_back(unit):
    server = node(SERVER)
    before = server.run("systemctl show -p MainPID --value %s", unit).stdout.strip()
    assert before not in ("", "0")
    # SIGTERM: both exit with status 0, which Restart=on-failure would leave down.
    assert server.run("kill -TERM %s", before).rc == 0

    def back():
        pid = server.run("systemctl show -p MainPID --value %s", unit).stdout.strip()
        return pid not in ("", "0", before) and server.service(unit).is_running

    assert wait_for(back, 60), f"{unit} did not come back after a clean exit"
