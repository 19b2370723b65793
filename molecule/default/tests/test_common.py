"""The common tier as a user relies on it: names, SSH trust, CA trust, the node venv."""

import base64
import os
import pathlib
import textwrap

import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
PLATFORMS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
NODES = [p["name"] for p in PLATFORMS]
# The Debian release each node's image is of (debian13 unless CF_MOLECULE_DISTRO says otherwise).
RELEASES = {
    p["name"]: p["image"]
    .removeprefix("localhost/clusterforge-node:")
    .replace("${CF_MOLECULE_DISTRO:-debian13}", os.environ.get("CF_MOLECULE_DISTRO", "debian13"))
    for p in PLATFORMS
}
DEFAULTS = yaml.safe_load((ROOT / "roles/common/defaults/main.yml").read_text())
CA_DIR = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "test-ca"
USER = "clusterforge"
VERIFY, CLIENTS = "clusterforge-verify", "clusterforge-clients"
VENV = "/opt/clusterforge/venv"


def put(host, path, content: bytes) -> None:
    """Write a file on the node; base64 keeps the content clear of shell quoting."""
    result = host.run("echo %s | base64 -d > %s", base64.b64encode(content).decode(), path)
    assert result.rc == 0, result.stderr


def test_hosts_file_lists_every_member_on_the_cluster_network(host):
    hosts = host.file("/etc/hosts").content_string
    assert "127.0.1.1" not in hosts
    for node in NODES:
        addr = host.run("getent ahostsv4 %s", node)
        assert addr.rc == 0, f"{node} does not resolve"
        assert not addr.stdout.startswith("127."), addr.stdout
    me = host.backend.get_hostname()
    own = host.run("getent ahostsv4 %s", me).stdout.split()[0]
    assert own in host.interface.default().addresses


def test_service_account_reaches_every_member_over_ssh(host):
    for node in NODES:
        result = host.run("runuser -u %s -- ssh -o BatchMode=yes -o ConnectTimeout=5 %s hostname", USER, node)
        assert result.rc == 0, f"{host.backend.get_hostname()} -> {node}: {result.stderr}"
        assert result.stdout.strip() == node


def test_service_account_key_is_private(host):
    key = host.file(f"/home/{USER}/.ssh/id_ed25519")
    assert key.user == USER
    assert key.mode == 0o600


def test_verification_account_reaches_other_nodes_only_as_the_service_account(host):
    """The verification account reads the client credentials (client group) and has no SSH key of
    its own: ssh as itself is refused, the same ssh run as the service account through its one sudo
    rule works. The service account, whose key every node trusts, is not in the client group."""
    verify = host.user(VERIFY)
    assert CLIENTS in verify.groups and "sudo" not in verify.groups
    assert CLIENTS not in host.user(USER).groups
    assert not host.file(f"{verify.home}/.ssh/id_ed25519").exists
    other = next(node for node in NODES if node != host.backend.get_hostname())
    ssh = "ssh -o BatchMode=yes -o ConnectTimeout=5 %s hostname"
    assert host.run("runuser -u %s -- " + ssh, VERIFY, other).rc != 0
    through = host.run("runuser -u %s -- sudo -n -u %s -- " + ssh, VERIFY, USER, other)
    assert through.rc == 0 and through.stdout.strip() == other, through.stderr
    # The rule is for the service account only: not root.
    assert host.run("runuser -u %s -- sudo -n true", VERIFY).rc != 0
    rule = host.file("/etc/sudoers.d/clusterforge-verify")
    assert (rule.user, rule.mode) == ("root", 0o440)


def test_venv_imports_the_pinned_scientific_stack(host):
    pins = dict(p.split("==") for p in DEFAULTS["common_venv_packages"])
    result = host.run(
        "%s/bin/python -c %s",
        VENV,
        "import numpy, scipy; print(numpy.__version__, scipy.__version__, int(numpy.arange(1000).sum()))",
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == [pins["numpy"], pins["scipy"], str(1000 * 999 // 2)]


def test_the_course_toolbox_is_pinned_and_numba_compiles(host):
    """Joblib, Numba (which compiles a loop to machine code here), line_profiler, greenlet and gevent
    at their pins; gevent's greenlets wait together."""
    pins = dict(p.split("==") for p in DEFAULTS["common_toolbox_packages"])
    names = ("joblib", "numba", "llvmlite", "line_profiler", "greenlet", "gevent")
    code = (
        "import importlib.metadata as m, numba, joblib, line_profiler, gevent, time\n"
        "f = numba.njit(lambda n: sum([i * i for i in range(1, n + 1)]))\n"
        "t = time.monotonic(); gevent.joinall([gevent.spawn(gevent.sleep, 0.5) for _ in range(20)])\n"
        f"print(*(m.version(n) for n in {names!r}), f(1000), time.monotonic() - t < 5)"
    )
    result = host.run("%s/bin/python -c %s", VENV, code)
    assert result.rc == 0, result.stderr
    expected = [*(pins[n] for n in names), str(333833500), "True"]
    assert result.stdout.split() == expected


def test_pythran_builds_an_extension_module_with_the_nodes_compiler(host):
    """Pythran at its pin turns a typed Python function into a C++ extension with the node's g++,
    and the compiled function gives the interpreter's answer."""
    pins = dict(p.split("==") for p in DEFAULTS["common_toolbox_packages"])
    source = "#pythran export squares(int64)\ndef squares(n):\n    return sum(i * i for i in range(n + 1))\n"
    assert host.run("rm -rf /tmp/pythran-test && mkdir -p /tmp/pythran-test/build").rc == 0
    put(host, "/tmp/pythran-test/cf_squares.py", source.encode())
    build = host.run(
        "cd /tmp/pythran-test && %s/bin/pythran -O2 cf_squares.py -o build/cf_squares.so && "
        "cd build && %s/bin/python -c %s",
        VENV,
        VENV,
        "import importlib.metadata as m, cf_squares; print(m.version('pythran'), cf_squares.squares(1000))",
    )
    assert build.rc == 0, build.stderr
    assert build.stdout.split() == [pins["pythran"], str(333833500)]
    assert host.file("/tmp/pythran-test/build/cf_squares.so").exists


def test_extra_ca_certificate_is_trusted(host):
    """A TLS server with a certificate from the test CA is accepted by curl, and refused when
    curl is given a bundle without that CA (so the first result is not an accident)."""
    host.run("install -d -m 0700 /root/tls")
    for name in ("server.crt", "server.key"):
        put(host, f"/root/tls/{name}", (CA_DIR / name).read_bytes())
    server = textwrap.dedent(
        """
        import http.server, ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain('/root/tls/server.crt', '/root/tls/server.key')
        srv = http.server.HTTPServer(('127.0.0.1', 8443), http.server.SimpleHTTPRequestHandler)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        srv.timeout = 10
        srv.handle_request(); srv.handle_request()
        """
    )
    put(host, "/root/tls/server.py", server.encode())
    # A transient unit outlives this exec session, unlike a shell background job.
    host.run(
        "systemctl reset-failed cf-tls-test 2>/dev/null; systemd-run --unit cf-tls-test --collect "
        "-p RuntimeMaxSec=30 python3 /root/tls/server.py"
    )
    host.run("for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break; sleep 0.1; done")
    trusted = host.run("curl -sS -o /dev/null -w '%{http_code}' https://localhost:8443/")
    assert trusted.rc == 0, trusted.stderr
    assert trusted.stdout == "200"
    untrusted = host.run(
        "curl -sS -o /dev/null --capath /nonexistent --cacert /etc/ssl/certs/ISRG_Root_X1.pem https://localhost:8443/"
    )
    assert untrusted.rc == 60, untrusted.stderr  # 60: peer certificate cannot be authenticated


def test_time_sync_is_configured(host):
    conf = host.file("/etc/systemd/timesyncd.conf.d/clusterforge.conf")
    assert conf.exists
    assert "NTP=" + " ".join(DEFAULTS["common_ntp_servers"]) in conf.content_string
    assert host.service("systemd-timesyncd").is_enabled


def test_each_node_runs_the_release_of_its_image(host):
    """The worker is a Debian 12 node beside a Debian 13 head: every test above held on both."""
    me = host.backend.get_hostname()
    assert host.system_info.distribution == "debian"
    assert f"debian{host.system_info.release.split('.')[0]}" == RELEASES[me]
    version = host.run("%s/bin/python -c %s", VENV, "import sys; print(*sys.version_info[:2])")
    assert version.rc == 0, version.stderr
    assert version.stdout.split() == {"debian12": ["3", "11"], "debian13": ["3", "13"]}[RELEASES[me]]
