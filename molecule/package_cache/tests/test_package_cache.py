"""The package cache as an operator relies on it: the Python cache only through its gateway, with the
generated password and the cluster CA; the other node's apt and root's pip fetch through the cache,
which keeps what it fetched; a cache a node cannot reach stops it with a message naming the cache
and its switch; turning the Python cache off removes every trace of it, and on again brings it
back. (package_cache.pip, the verification check, runs in the lab step of scripts/test.)"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys

import pytest
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SCENARIO.parent / "_shared"))

from gateway import assert_gateway_refuses_strangers, http_code  # noqa: E402
from nodes import address, node  # noqa: E402
from playbook import lab_strategy, run_playbook  # noqa: E402

PLATFORMS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
SERVER, CLIENT = (p["name"] for p in PLATFORMS)
CREDENTIALS = "/etc/clusterforge/package_cache/pip.credentials"
FACT = "/etc/ansible/facts.d/clusterforge_engine_package_cache.fact"
PIP_PORT, PROXY_PORT, APT_PORT = 3143, 3144, 3142
VENV_PIP = "/opt/clusterforge/venv/bin/pip"
# A small pure-Python wheel that no tier installs: what the cache holds of it, this test fetched.
PROBE = "six-1.17.0-py2.py3-none-any.whl"


def ephemeral() -> pathlib.Path:
    directory = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if directory is None:
        pytest.skip("runs under molecule verify, against the converged nodes")
    return pathlib.Path(directory)


def converge(workdir: pathlib.Path, extra: dict, *args: str) -> tuple[int, str]:
    """playbooks/package_cache.yml as an operator runs it against the scenario's inventory."""
    inventory = ephemeral() / "inventory"
    return run_playbook("playbooks/package_cache.yml", inventory, workdir, extra, args, env=lab_strategy())


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP of an ansible-playbook run: host -> {ok, changed, failed, ...}."""
    hosts = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line.strip())
        if match:
            hosts[match[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match[2])}
    return hosts


def listeners(host, port: int) -> list[str]:
    """Local addresses of the TCP sockets listening on PORT."""
    lines = host.run("ss -Hltn").stdout.splitlines()
    return [line.split()[3].rsplit(":", 1)[0] for line in lines if line.split()[3].endswith(f":{port}")]


def test_the_python_cache_refuses_strangers_and_its_proxy_listens_on_loopback_only():
    server = node(SERVER)
    credentials = server.file(CREDENTIALS)
    assert credentials.mode == 0o640 and credentials.user == "root", (credentials.mode, credentials.user)
    assert_gateway_refuses_strangers(
        node(CLIENT), address(SERVER), PIP_PORT, "/simple/six/", credentials.content_string.strip()
    )
    assert listeners(server, PROXY_PORT) == ["127.0.0.1"], listeners(server, PROXY_PORT)
    assert listeners(server, PIP_PORT) == [address(SERVER)], listeners(server, PIP_PORT)


def test_the_apt_cache_admits_the_cluster_s_addresses_only_and_guards_its_maintenance_actions():
    """apt-cacher-ng speaks plain HTTP (apt checks the packages' signatures; roles/package_cache
    says why): its doors are the addresses it binds, libwrap's list of the cluster's addresses and
    the generated password of its maintenance actions. The other node, taken off the list, is
    refused; back on it, admitted."""
    client, server = node(CLIENT), node(SERVER)
    assert sorted(listeners(server, APT_PORT)) == sorted([address(SERVER), "127.0.0.1"])
    page = f"http://{address(SERVER)}:{APT_PORT}/acng-report.html"
    action = f"{page}?doCount=Count+Data"
    conf = "/etc/apt-cacher-ng/zz-clusterforge.conf"
    assert server.file(conf).mode == 0o640 and server.file(conf).group == "apt-cacher-ng"
    admin = server.run("sed -n 's/^AdminAuth: //p' %s", conf).stdout.strip()
    assert admin.startswith("clusterforge:") and len(admin) > len("clusterforge:") + 16
    assert http_code(client, action) == "401", "a maintenance action without the password"
    assert http_code(client, action, "-u", "clusterforge:wrong-password") == "401"
    assert http_code(client, action, "-u", admin) == "200"
    line = server.run("grep '^apt-cacher-ng:' /etc/hosts.allow").stdout.strip()
    assert address(CLIENT) in line.split()[1:], line
    escaped = address(CLIENT).replace(".", "\\.")
    assert server.run("cp -p /etc/hosts.allow /tmp/hosts.allow.molecule").rc == 0
    try:
        dropped = server.run("sed -i %s /etc/hosts.allow", f"/^apt-cacher-ng:/s/ {escaped}\\( \\|$\\)/\\1/")
        line = server.run("grep '^apt-cacher-ng:' /etc/hosts.allow").stdout.strip()
        assert dropped.rc == 0 and address(CLIENT) not in line.split(), line
        assert http_code(client, page) == "000", "an address off the list was served"
    finally:
        assert server.run("cp -p /tmp/hosts.allow.molecule /etc/hosts.allow").rc == 0
    assert http_code(client, page) == "200", "the cluster's address back on the list is refused"


def test_apt_on_the_other_node_fetches_through_the_cache_which_keeps_the_package():
    client, server = node(CLIENT), node(SERVER)
    conf = client.file("/etc/apt/apt.conf.d/01clusterforge-package-cache").content_string
    assert f"http://{address(SERVER)}:{APT_PORT}" in conf, conf
    fetched = client.run("apt-get update -qq && cd /tmp && apt-get download -q hello")
    assert fetched.rc == 0, fetched.stderr
    kept = server.run("find /var/cache/apt-cacher-ng -name 'hello_*.deb' -size +1k")
    assert kept.stdout.strip(), "apt-cacher-ng kept no copy of the package the other node fetched"


def test_root_pip_on_the_other_node_fetches_through_the_cache_which_keeps_the_file():
    client, server = node(CLIENT), node(SERVER)
    conf = client.file("/etc/pip.conf")
    assert (conf.mode, conf.user) == (0o600, "root")
    assert f"index-url = https://{SERVER}:{PIP_PORT}/simple/" in conf.content_string
    assert client.file("/root/.netrc").mode == 0o600
    client.run("rm -rf /tmp/pip-probe")
    fetched = client.run(f"{VENV_PIP} download --no-deps --no-cache-dir -d /tmp/pip-probe six==1.17.0")
    assert fetched.rc == 0, fetched.stdout + fetched.stderr
    assert client.file(f"/tmp/pip-probe/{PROBE}").exists
    kept = server.run(f"grep -rlF --binary-files=text '{PROBE}' /var/cache/clusterforge-pip/files")
    assert kept.stdout.strip(), "the cache kept no copy of the file the other node's pip fetched"
    # The users' own pip does not read root's configuration, let alone its password.
    assert client.run("runuser -u nobody -- cat /etc/pip.conf").rc != 0


def block(port: int | None) -> None:
    """On the cache host, reject the other node's connections to PORT (None: admit them again), in
    a table of the test's own beside the host firewall's."""
    server = node(SERVER)
    server.run("nft delete table inet clusterforge-test")
    if port is not None:
        table = "inet clusterforge-test"
        added = server.run(
            f"nft add table {table} && nft add chain {table} incoming "
            "'{ type filter hook input priority 0; }' && "
            f"nft add rule {table} incoming ip saddr %s tcp dport %s reject with tcp reset",
            address(CLIENT),
            str(port),
        )
        assert added.rc == 0, added.stderr


def test_a_cache_the_node_cannot_reach_stops_it_naming_the_cache_and_its_switch(tmp_path):
    # The nodes' side of the tier (every node checks the cache, the cache host too: it still answers).
    client_side = ("--skip-tags", "package_cache_server")
    try:
        block(APT_PORT)
        rc, output = converge(tmp_path / "apt", {}, *client_side)
        assert rc != 0 and recap(output)[CLIENT]["failed"] == 1, output[-3000:]
        assert recap(output)[SERVER]["failed"] == 0, output[-3000:]
        assert f"(apt-cacher-ng on {SERVER}, role package_cache) does not answer from {CLIENT}" in output
        assert "set package_cache_enabled: false" in output
        block(PIP_PORT)
        rc, output = converge(tmp_path / "pip", {}, *client_side)
        assert rc != 0 and recap(output)[CLIENT]["failed"] == 1, output[-3000:]
        assert f"the Python package cache https://{SERVER}:{PIP_PORT}/ (nginx on {SERVER}" in output
        assert f"does not answer from {CLIENT} within" in output
        assert f"start it (systemctl start nginx on {SERVER})" in output
        assert "set package_cache_pip_enabled: false" in output
    finally:
        block(None)


def test_the_python_cache_turned_off_and_on_again_converges(tmp_path):
    server, client = node(SERVER), node(CLIENT)
    rc, output = converge(tmp_path / "off", {"package_cache_pip_enabled": False})
    assert rc == 0, output[-3000:]
    assert listeners(server, PIP_PORT) == [] and listeners(server, PROXY_PORT) == []
    assert not server.file(FACT).exists and not server.file(CREDENTIALS).exists
    assert "index-url" not in client.file("/etc/pip.conf").content_string
    assert SERVER not in client.file("/root/.netrc").content_string
    # The apt side stays.
    assert client.file("/etc/apt/apt.conf.d/01clusterforge-package-cache").exists

    rc, output = converge(tmp_path / "on", {})
    assert rc == 0, output[-3000:]
    credentials = server.file(CREDENTIALS).content_string.strip()
    url = f"https://{address(SERVER)}:{PIP_PORT}/simple/six/"
    assert http_code(client, url, "-u", credentials) == "200"
    assert f"index-url = https://{SERVER}:{PIP_PORT}/simple/" in client.file("/etc/pip.conf").content_string
    assert json.loads(server.file(FACT).content_string)["index_url"] == f"https://{SERVER}:{PIP_PORT}/simple/"
