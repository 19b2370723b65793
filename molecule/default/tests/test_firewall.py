"""The host firewall (roles/firewall): a member reaches any listening port of another member, a
stranger (this test process, on the podman network's gateway: not a member, not allowed) reaches
SSH and nothing else."""

import contextlib
import pathlib
import socket

import pytest
import testinfra
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
NODES = [p["name"] for p in yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]]
PORT = 18765  # a listener the test starts on every address of the first node


@pytest.fixture(scope="module")
def nodes():
    return [testinfra.get_host(f"podman://{name}") for name in NODES]


def address(host) -> str:
    return host.interface.default().addresses[0]


def connects(host_or_none, ip: str, port: int) -> bool:
    """Whether a TCP connection to ip:port opens within 3 s, from a node or from this process."""
    if host_or_none is None:
        try:
            with socket.create_connection((ip, port), timeout=3):
                return True
        except OSError:
            return False
    probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)"
    return host_or_none.run("python3 -c %s %s %s", probe, ip, str(port)).rc == 0


@pytest.fixture(scope="module")
def listener(nodes):
    head = nodes[0]
    started = head.run(
        "systemd-run --unit cf-firewall-probe --collect python3 -m http.server --bind 0.0.0.0 %s", str(PORT)
    )
    assert started.rc == 0, started.stderr
    with contextlib.suppress(Exception):
        for _ in range(50):
            if head.socket(f"tcp://0.0.0.0:{PORT}").is_listening:
                break
            head.run("sleep 0.2")
    yield address(head)
    head.run("systemctl stop cf-firewall-probe")


def test_every_node_loads_its_table_with_a_drop_policy(nodes):
    members = sorted(address(n) for n in nodes)
    for node in nodes:
        unit = node.service("clusterforge-firewall")
        assert unit.is_enabled and unit.is_running  # a oneshot that remains active once loaded
        table = node.run("nft list table inet clusterforge")
        assert table.rc == 0, table.stderr
        assert "policy drop;" in table.stdout
        # The set merges neighbouring addresses into ranges: ask nft whether each one is in it.
        for member in members:
            found = node.run(f"nft get element inet clusterforge cluster_v4 '{{ {member} }}'")
            assert found.rc == 0, (node.backend.get_hostname(), member, found.stderr)
        stranger = node.run("nft get element inet clusterforge cluster_v4 '{ 192.0.2.1 }'")
        assert stranger.rc != 0, "an address outside the cluster is in the set"


def test_a_member_gets_through_and_a_stranger_reaches_ssh_only(nodes, listener):
    head_ip = listener
    assert nodes[0].socket(f"tcp://0.0.0.0:{PORT}").is_listening
    for member in nodes[1:]:
        assert connects(member, head_ip, PORT), member.backend.get_hostname()
    assert connects(None, head_ip, 22), "SSH is open to any source"
    assert not connects(None, head_ip, PORT), "a stranger reached a port that is not public"
    dropped = nodes[0].run("nft list table inet clusterforge").stdout
    counter = [line for line in dropped.splitlines() if "not from the cluster" in line]
    assert counter and "packets 0 " not in counter[0], counter
