"""Security checks: what each node exposes on the network, and the certificates its doors present.

``security.listeners`` runs on every node. Every listening TCP socket must be bound to loopback or
to this node's cluster address (where the engine checks prove that each service refuses anonymous
clients); a socket on every address (``0.0.0.0``, ``::``) or on another interface is an open door,
unless its port is on the allowlist (sshd by default). The sockets come from ``/proc/net/tcp`` and
``/proc/net/tcp6``; the owning process is named where this account may see it.

Negative control: ``--inject open-door`` makes the check open a listener on every address for the
duration of its scan; the result must then FAIL.

``security.certificates`` runs once for the cluster. Every TLS door the engine sections declare (the
Dask scheduler, the web gateways of the Dask dashboard and the Spark master UI, the JupyterHub, the
Python package cache)
must present a certificate that verifies against the CA that issued it, for the address clients
dial, and that stays valid longer than the roles' renewal window (``min_days``): a converge inside
the window reissues it, so a shorter one means the renewal or the restart after it was missed.
Under ``--inject open-door`` each door is verified against a throwaway CA of the check's own,
which signed none of them: every result must FAIL, proving that verification is enforced.

``security.anonymous`` runs on every node, workers included: each door of every engine that
cluster.json declares is tried as a stranger would, with no credential and no client certificate
(the Dask scheduler, the web gateways of the Dask dashboard and the Spark master UI, Flower, the
Airflow API and each Airflow Celery worker's log server, the Luigi scheduler, the JupyterHub API,
the Python package cache's index, and the Redis or RabbitMQ broker named in the Celery client
configuration), and must refuse: HTTP 401/403; from a Redis that serves TLS, no answer to plain
text and ``-NOAUTH`` inside a TLS session (``-NOAUTH`` from a plain-TCP Redis); from a RabbitMQ that
serves TLS, no AMQP answer to plain text and, inside a TLS session, a wrong password ends the
connection; no TLS session without a client certificate. Under ``--inject open-door`` every door
is knocked at a door the check opens itself on loopback, of the same kind, that lets anyone in; each
result must then FAIL.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from compute_jobs.context import CheckContext
from compute_jobs.model import FAIL, PASS, Check, CheckError, Param, Result, register

LISTEN = "0A"
PROC_NET = ("/proc/net/tcp", "/proc/net/tcp6")


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    inode: str

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip

    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


def decode_address(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ("127.0.0.1", 8080); IPv6 addresses are four host-order 32-bit words."""
    hex_ip, _, hex_port = text.partition(":")
    raw = bytes.fromhex(hex_ip)
    if len(raw) not in (4, 16):
        raise ValueError(f"not an address of /proc/net/tcp: {text!r}")
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(packed)), int(hex_port, 16)


def parse_proc_net(text: str) -> list[Listener]:
    """The listening sockets of one /proc/net/tcp{,6} table."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        address, port = decode_address(fields[1])
        found.append(Listener(address, port, fields[9]))
    return found


def read_listeners(paths: tuple[str, ...] = PROC_NET) -> list[Listener]:
    listeners = []
    for path in paths:
        # A kernel without IPv6 has no tcp6 table.
        with contextlib.suppress(FileNotFoundError), open(path, encoding="ascii") as table:
            listeners += parse_proc_net(table.read())
    if not listeners:
        raise CheckError(f"no listening TCP socket in {', '.join(paths)}: is /proc mounted?")
    return listeners


def socket_owners(proc: str = "/proc") -> dict[str, str]:
    """Socket inode -> "command[pid]" for the processes this account may inspect."""
    owners: dict[str, str] = {}
    for pid in filter(str.isdigit, os.listdir(proc)):
        with contextlib.suppress(OSError):
            fds = os.listdir(f"{proc}/{pid}/fd")
            with open(f"{proc}/{pid}/comm", encoding="utf-8", errors="replace") as comm:
                name = comm.read().strip()
            for fd in fds:
                with contextlib.suppress(OSError):
                    target = os.readlink(f"{proc}/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        owners.setdefault(target[8:-1], f"{name}[{pid}]")
    return owners


def exposure(listener: Listener, cluster_address: str) -> str:
    """'loopback', 'cluster' (this node's cluster address), 'every address' or 'other interface'."""
    ip = listener.ip
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "every address"
    if str(ip) == cluster_address:
        return "cluster"
    return "other interface"


def parse_ports(text: str) -> frozenset[int]:
    ports = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise CheckError(f"allow_ports: {item!r} is not a TCP port")
        ports.add(int(item))
    return frozenset(ports)


# The engine boundary of this module: where the listening sockets come from (tests narrow it to the
# test process's own sockets, still read from the kernel).
LISTENERS: Callable[[], list[Listener]] = read_listeners


@contextlib.contextmanager
def open_door() -> Iterator[int]:
    """A listener on every address, for the negative control; its port."""
    door = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        door.bind(("0.0.0.0", 0))
        door.listen(1)
        yield door.getsockname()[1]
    finally:
        door.close()


@register
class SecurityListeners(Check):
    name = "security.listeners"
    category = "security"
    tags = frozenset({"security"})
    description = (
        "Every listening TCP socket of the node is on loopback or on its cluster address; none on every "
        "address or another interface outside the allowlist"
    )
    params = (Param("allow_ports", str, "22", "ports allowed on every address, comma-separated (sshd)"),)
    correctness_rule = (
        "listeners on every address (0.0.0.0, ::) or on an interface other than loopback and the cluster "
        "address, outside allow_ports and not a declared port that refuses an anonymous request == none"
    )
    timeout = 30.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        host = ctx.host
        if host is None:
            raise CheckError(f"{ctx.target} is not in {ctx.cluster.source}")
        allowed = parse_ports(ctx.params.allow_ports)
        with contextlib.ExitStack() as stack:
            control = None
            if ctx.inject == "open-door":
                control = "open-door"
                stack.enter_context(open_door())
            listeners = LISTENERS()
            owners = socket_owners()
        counts: dict[str, int] = {}
        doors = []
        for listener in sorted(set(listeners), key=lambda x: (x.port, x.address)):
            where = exposure(listener, host.address)
            counts[where] = counts.get(where, 0) + 1
            if where not in ("every address", "other interface") or listener.port in allowed:
                continue
            owner = owners.get(listener.inode, "process not visible to this account")
            doors.append(f"{listener.endpoint()} ({where}; {owner})")
        yield ctx.result(
            status=FAIL if doors else PASS,
            reason=f"open doors: {', '.join(doors)}" if doors else "",
            expected=[],
            observed=doors,
            rule=self.correctness_rule,
            control=control,
            details={
                "listeners": counts,
                "cluster_address": host.address,
                "allow_ports": sorted(allowed),
            },
        )


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A door an engine section declares (``engines.<engine>.<key>``, a URL), as both security checks
    see it: its name and the path a stranger asks for (security.anonymous), and its name and the CA
    that must verify it (security.certificates; ``ca_key`` None: the gateways' cluster CA)."""

    engine: str
    key: str
    door: str
    probe_path: str
    certificate: str | None = None
    ca_key: str | None = None
    ca_required: bool = False  # no certificate result when engines.<engine>.<ca_key> is empty


ENDPOINTS = (
    Endpoint("dask", "endpoint", "dask-scheduler", "", "dask-scheduler", "ca_file", ca_required=True),
    Endpoint("dask", "dashboard", "dask-dashboard", "/status", "dask-dashboard"),
    Endpoint("spark", "master_webui", "spark-master-ui", "/json/", "spark-master-ui"),
    Endpoint("celery", "flower_url", "flower", "/api/workers"),
    Endpoint("airflow", "endpoint", "airflow-api", "/api/v2/dags", "airflow-api", "ca_file"),
    Endpoint("luigi", "endpoint", "luigi-scheduler", "/api/task_list", "luigi-scheduler"),
    Endpoint("jupyter", "url", "jupyterhub-api", "/hub/api/users", "jupyterhub", "ca_file"),
    Endpoint("monitoring", "url", "prometheus", "/api/v1/targets", "prometheus", "ca_file"),
    Endpoint("package_cache", "index_url", "pip-cache", "/pip/", "pip-cache", "ca_file"),
)


def declared_endpoints(ctx: CheckContext) -> Iterator[tuple[Endpoint, str]]:
    """Each ENDPOINTS entry whose engine section names a URL, with that URL."""
    for endpoint in ENDPOINTS:
        url = (ctx.cluster.engines.get(endpoint.engine) or {}).get(endpoint.key)
        if isinstance(url, str) and url:
            yield endpoint, url


@dataclass(frozen=True)
class TlsDoor:
    """One TLS endpoint an engine section declares, and the CA file that must verify it."""

    service: str
    host: str
    port: int
    ca_file: str


def tls_doors(ctx: CheckContext, gateway_ca: str) -> list[TlsDoor]:
    """The TLS endpoints of cluster.json (ENDPOINTS with a certificate name): scheme tls:// or
    https:// only (plain ones are not doors of this check)."""
    doors = []
    for endpoint, url in declared_endpoints(ctx):
        if endpoint.certificate is None:
            continue
        if endpoint.ca_key is None:
            ca_file = gateway_ca
        else:
            ca_file = str((ctx.cluster.engines.get(endpoint.engine) or {}).get(endpoint.ca_key) or "")
            if endpoint.ca_required and not ca_file:
                continue
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("tls", "https") or not parsed.hostname:
            continue
        doors.append(TlsDoor(endpoint.certificate, parsed.hostname, parsed.port or 443, ca_file))
    # The Airflow workers' log servers present the workers' certificates from the cluster CA.
    for service, host, port, tls in airflow_log_servers(ctx):
        if tls:
            doors.append(TlsDoor(service, host, port, gateway_ca))
    return doors


def peer_certificate(door: TlsDoor, context: ssl.SSLContext, timeout: float) -> dict:
    """The verified peer certificate of ``door`` (ssl.SSLError when verification fails)."""
    with (
        socket.create_connection((door.host, door.port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=door.host) as tls,
    ):
        return tls.getpeercert() or {}


# The engine boundary of the certificate check: the TLS handshake (tests reach real loopback servers).
PEER_CERTIFICATE: Callable[[TlsDoor, ssl.SSLContext, float], dict] = peer_certificate


@register
class SecurityCertificates(Check):
    name = "security.certificates"
    category = "security"
    tags = frozenset({"security"})
    scope = "cluster"
    description = (
        "Every TLS door cluster.json declares presents a certificate that verifies against its CA for the "
        "address clients dial and stays valid longer than the renewal window"
    )
    params = (
        Param(
            "min_days",
            float,
            30.0,
            "days a certificate must stay valid (the roles' renewal window)",
            0.0,
            3650.0,
        ),
        Param(
            "gateway_ca_file",
            str,
            "/etc/clusterforge/tls/ca.crt",
            "CA of the web gateways' host certificates (the common role's cluster CA)",
        ),
    )
    correctness_rule = (
        "TLS handshake verified against the door's CA with the dialled address as hostname, and "
        "notAfter - now >= min_days"
    )
    timeout = 60.0

    def applies(self, ctx: CheckContext) -> str | None:
        if not tls_doors(ctx, ctx.params.gateway_ca_file):
            return "cluster.json declares no TLS door (tls:// or https://)"
        return None

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        with tempfile.TemporaryDirectory() as scratch:
            yield from self._judge(ctx, scratch)

    def _judge(self, ctx: CheckContext, scratch: str) -> Iterator[Result]:
        doors = tls_doors(ctx, ctx.params.gateway_ca_file)
        control = "open-door" if ctx.inject == "open-door" else None
        # The control verifies every door against a CA of its own that signed nothing else (the
        # system trust store would not do: the common role adds the cluster CA to it).
        stranger_ca = _throwaway_certificate(scratch)[0] if control else ""
        for door in doors:
            name = f"security.certificates[{door.service}]"
            details = {"endpoint": f"{door.host}:{door.port}", "ca_file": door.ca_file}
            try:
                if control:
                    context = ssl.create_default_context(cafile=stranger_ca)
                    details["ca_file"] = "a throwaway CA that signed nothing (negative control)"
                else:
                    context = ssl.create_default_context(cafile=door.ca_file)
            except OSError as exc:
                yield ctx.error(f"cannot read the CA file {door.ca_file}: {exc}", name=name, details=details)
                continue
            try:
                certificate = PEER_CERTIFICATE(door, context, ctx.bounded(15))
            except ssl.SSLCertVerificationError as exc:
                yield ctx.result(
                    name,
                    status=FAIL,
                    reason=f"{door.host}:{door.port} presents a certificate that does not verify: "
                    f"{exc.verify_message}",
                    rule=self.correctness_rule,
                    control=control,
                    details=details,
                )
                continue
            except (OSError, ssl.SSLError) as exc:
                yield ctx.result(
                    name,
                    status=FAIL,
                    reason=f"no verified TLS handshake with {door.host}:{door.port}: {exc}",
                    rule=self.correctness_rule,
                    control=control,
                    details=details,
                )
                continue
            not_after = ssl.cert_time_to_seconds(str(certificate.get("notAfter")))
            days = (not_after - time.time()) / 86400
            details.update(
                {"not_after": certificate.get("notAfter"), "serial": certificate.get("serialNumber")}
            )
            short = days < ctx.params.min_days
            yield ctx.result(
                name,
                status=FAIL if short else PASS,
                reason=(
                    f"expires in {days:.1f} days, inside the renewal window of {ctx.params.min_days:g}: "
                    "reconverge the role that issued it"
                    if short
                    else ""
                ),
                expected=f">= {ctx.params.min_days:g} days valid",
                observed=f"{days:.0f} days valid",
                rule=self.correctness_rule,
                control=control,
                details=details,
            )


# --- anonymous clients ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Door:
    """A network door of an engine and how a stranger knocks: http(s) GET, a TLS session, Redis PING."""

    service: str
    kind: str  # "http", "tls", "tcp", "redis" (plain TCP) or "rediss" (TLS only)
    url: str  # http(s)://host:port/path, or host:port
    # The only cluster addresses the door's host firewall lets open it (empty: every member).
    clients: tuple[str, ...] = ()


def _strip_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _join(base: str, path: str) -> str:
    return _strip_userinfo(base).rstrip("/") + path


def engine_doors(ctx: CheckContext) -> list[Door]:
    """The doors cluster.json declares (ENDPOINTS, and the Redis broker of the Celery client
    configuration), each with the request a stranger would make."""
    doors: list[Door] = []
    for endpoint, url in declared_endpoints(ctx):
        if url.startswith("tls://"):
            doors.append(Door(endpoint.door, "tls", url.removeprefix("tls://")))
        elif url.startswith("tcp://"):
            # A plain-TCP door (e.g. a Dask scheduler with dask_tls_enabled: false) has nothing to
            # refuse a stranger with: it fails unless it hangs up before it speaks.
            doors.append(Door(endpoint.door, "tcp", url.removeprefix("tcp://")))
        elif url.startswith(("http://", "https://")):
            doors.append(Door(endpoint.door, "http", _join(url, endpoint.probe_path)))
    # Exporters that Prometheus reaches with its client certificate (node_exporter on every node,
    # the service exporters): each is a door of its own.
    jobs = (ctx.cluster.engines.get("monitoring") or {}).get("jobs") or {}
    for job, spec in sorted(jobs.items()):
        if isinstance(spec, dict) and spec.get("auth") == "certificate":
            clients = spec.get("clients") or {}
            for node, target in sorted((spec.get("targets") or {}).items()):
                allowed = tuple(str(a) for a in clients.get(node) or ())
                doors.append(Door(f"{job}-exporter@{node}", "tls", str(target), allowed))
    # Each Airflow Celery worker's log server (on the worker's cluster address) serves a task's log
    # only to a request signed with the deployment's JWT secret.
    for service, host, port, tls in airflow_log_servers(ctx):
        netloc = f"[{host}]" if ":" in host else host
        url = f"{'https' if tls else 'http'}://{netloc}:{port}/log/clusterforge-probe.log"
        doors.append(Door(service, "http", url))
    # The Managers cluster's server asks every client for the authkey (HMAC challenge).
    manager = str((ctx.cluster.engines.get("mpmanager") or {}).get("address") or "")
    if manager:
        doors.append(Door("mpmanager", "mpmanager", manager))
    celery = ctx.cluster.engines.get("celery") or {}
    broker = celery_broker(str(celery.get("config") or ""))
    if broker:
        doors.append(broker)
    return doors


def airflow_log_servers(ctx: CheckContext) -> list[tuple[str, str, int, bool]]:
    """(door name, address, port, serves TLS) of each Airflow Celery worker's log server."""
    airflow = ctx.cluster.engines.get("airflow") or {}
    port = int(airflow.get("log_server_port") or 0)
    if not port:
        return []
    tls = bool(airflow.get("log_server_tls"))
    servers = []
    for worker in airflow.get("expected_workers") or []:
        host = ctx.cluster.host(str(worker))
        if host is not None:
            servers.append((f"airflow-log-server@{worker}", host.address, port, tls))
    return servers


def celery_broker(config: str) -> Door | None:
    """The broker named in the Celery client configuration on this node (None when this node has no
    readable configuration): Redis, kind "rediss" where it serves TLS, or RabbitMQ, kind "amqps"
    where it serves TLS."""
    try:
        with open(config, encoding="utf-8") as handle:
            broker = json.load(handle).get("broker") or {}
    except (OSError, ValueError):
        return None
    if broker.get("type") not in ("redis", "rabbitmq") or not broker.get("address") or not broker.get("port"):
        return None
    address = f"{broker['address']}:{int(broker['port'])}"
    if broker["type"] == "rabbitmq":
        return Door("rabbitmq-broker", "amqps" if broker.get("tls") else "amqp", address)
    return Door("redis-broker", "rediss" if broker.get("tls") else "redis", address)


def _host_port(text: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(f"//{text}")
    if not parsed.hostname or not parsed.port:
        raise CheckError(f"not host:port: {text!r}")
    return parsed.hostname, parsed.port


def _unverified_context() -> ssl.SSLContext:
    """A client context that accepts any certificate: the knocks judge refusals, not certificates
    (security.certificates does)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def knock_http(url: str, timeout: float) -> str:
    """GET without credentials; TLS certificates are not judged here (security.certificates does)."""
    context = _unverified_context()
    request = urllib.request.Request(url, headers={"User-Agent": "clusterforge-security-probe"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            return f"answered HTTP {answer.status} without credentials"
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"refused (HTTP {exc.code})"
        return f"answered HTTP {exc.code} without credentials"


def knock_tls(address: str, timeout: float) -> str:
    """A TLS session without a client certificate: the server must end it before it speaks."""
    host, port = _host_port(address)
    context = _unverified_context()
    with socket.create_connection((host, port), timeout=timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.settimeout(timeout)
                data = tls.recv(64)
        except ssl.SSLError as exc:
            return f"refused (no TLS session without a client certificate: {exc.reason or exc})"
        except (ConnectionResetError, BrokenPipeError):
            return "refused (connection reset without a client certificate)"
        except TimeoutError:
            return "did not answer (the session stayed open without a client certificate)"
    if not data:
        return "refused (closed without a client certificate)"
    return f"answered {len(data)} bytes to a client without a certificate"


def knock_from_outside(address: str, timeout: float, here: str, clients: tuple[str, ...]) -> str:
    """From a member that is not one of the door's clients: its host firewall must drop the
    connection before the door can answer anything."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        only = ", ".join(clients)
        return f"refused (the host firewall let nothing from {here} through: {why}; only {only} may open it)"
    return f"opened a connection from {here}, which is not one of its clients ({', '.join(clients)})"


def knock_tcp(address: str, timeout: float) -> str:
    """A plain connection that says nothing: a door without authentication greets it (Dask sends
    its handshake first) or waits for it to speak."""
    host, port = _host_port(address)
    with socket.create_connection((host, port), timeout=timeout) as conn:
        try:
            data = conn.recv(64)
        except ConnectionResetError:
            return "refused (connection reset)"
        except TimeoutError:
            return "did not answer (the connection stayed open without credentials)"
    if not data:
        return "refused (closed before it spoke)"
    return f"answered {len(data)} bytes over plain TCP without credentials"


def _redis_refusal(reply: str) -> str | None:
    if reply.startswith("-NOAUTH") or (reply.startswith("-ERR") and "auth" in reply.lower()):
        return reply.split()[0]
    return None


def knock_redis(address: str, timeout: float) -> str:
    host, port = _host_port(address)
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(b"PING\r\n")
        reply = conn.recv(128).decode("latin-1").strip()
    if refusal := _redis_refusal(reply):
        return f"refused ({refusal})"
    return f"answered {reply[:40]!r} without a password"


def knock_rediss(address: str, timeout: float) -> str:
    """A Redis that serves TLS only: a plain-text PING gets no Redis answer at all (the password
    would cross in clear text), and a PING inside a TLS session without the password gets -NOAUTH."""
    host, port = _host_port(address)
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(b"PING\r\n")
        try:
            plain = conn.recv(128).decode("latin-1").strip()
        except (ConnectionResetError, TimeoutError):
            plain = ""
    if plain[:1] in ("+", "-", "$", ":", "*"):
        return f"answered {plain[:40]!r} over plain TCP (no TLS)"
    context = _unverified_context()
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(b"PING\r\n")
        reply = tls.recv(128).decode("latin-1").strip()
    if refusal := _redis_refusal(reply):
        return f"refused (no plain-text session; over TLS {refusal})"
    return f"answered {reply[:40]!r} over TLS without a password"


def knock_mpmanager(address: str, timeout: float) -> str:
    """A multiprocessing manager must open with its authkey challenge and refuse a wrong answer."""
    host, port = _host_port(address)
    with socket.create_connection((host, port), timeout=timeout) as conn:
        try:
            hello = conn.recv(256)
        except TimeoutError:
            return "did not ask for a key (the connection stayed open without credentials)"
        if not hello[4:].startswith(b"#CHALLENGE#"):
            return f"answered {len(hello)} bytes without asking for the key"
        wrong = b"{sha256}" + bytes(32)
        conn.sendall(len(wrong).to_bytes(4, "big") + wrong)
        try:
            verdict = conn.recv(64)
        except (ConnectionResetError, TimeoutError):
            verdict = b""
    if b"#FAILURE#" in verdict or not verdict:
        return "refused (the authkey challenge rejected a wrong answer)"
    return f"accepted a wrong answer to its challenge ({verdict[4:20]!r})"


# AMQP 0-9-1: the protocol header a client opens with, and the frames of the login.
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_AMQP_FRAME_END = b"\xce"


def amqp_method(class_id: int, method_id: int, arguments: bytes) -> bytes:
    """One method frame on channel 0."""
    payload = class_id.to_bytes(2, "big") + method_id.to_bytes(2, "big") + arguments
    return b"\x01\x00\x00" + len(payload).to_bytes(4, "big") + payload + _AMQP_FRAME_END


def _amqp_method_of(frame: bytes) -> tuple[int, int] | None:
    """(class id, method id) of a method frame, None for anything else."""
    if len(frame) < 11 or frame[0] != 1:
        return None
    return int.from_bytes(frame[7:9], "big"), int.from_bytes(frame[9:11], "big")


def _amqp_wrong_login() -> bytes:
    """Connection.Start-Ok with PLAIN and a made-up user and password."""
    response = b"\x00clusterforge-security-probe\x00not-the-password"
    arguments = bytes(4)  # client properties: an empty table
    arguments += b"\x05PLAIN" + len(response).to_bytes(4, "big") + response + b"\x05en_US"
    return amqp_method(10, 11, arguments)


def _amqp_login(conn: socket.socket) -> str:
    """Open AMQP on ``conn`` and log in with a wrong password: the broker must end the connection
    (Connection.Close, e.g. 403 ACCESS_REFUSED, or a hang-up) instead of going on (Connection.Tune)."""
    conn.sendall(AMQP_HEADER)
    start = conn.recv(4096)
    if _amqp_method_of(start) != (10, 10):
        return f"did not greet with Connection.Start ({start[:16]!r})"
    conn.sendall(_amqp_wrong_login())
    try:
        verdict = conn.recv(4096)
    except (ConnectionResetError, ssl.SSLError, TimeoutError):
        verdict = b""
    method = _amqp_method_of(verdict)
    if not verdict or method == (10, 50):
        code = int.from_bytes(verdict[11:13], "big") if method == (10, 50) else 0
        return f"refused (a wrong password ended the connection{f': {code}' if code else ''})"
    return f"accepted a wrong password (answered method {method})"


def knock_amqp(address: str, timeout: float) -> str:
    host, port = _host_port(address)
    with socket.create_connection((host, port), timeout=timeout) as conn:
        return _amqp_login(conn)


def knock_amqps(address: str, timeout: float) -> str:
    """A RabbitMQ that serves TLS only: the AMQP header in plain text gets no AMQP answer (the
    password would cross in clear text), and a wrong password inside a TLS session ends it."""
    host, port = _host_port(address)
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(AMQP_HEADER)
        try:
            plain = conn.recv(64)
        except (ConnectionResetError, TimeoutError):
            plain = b""
    if plain.startswith(b"AMQP") or _amqp_method_of(plain):
        return f"answered AMQP over plain TCP (no TLS: {plain[:12]!r})"
    context = _unverified_context()
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        answer = _amqp_login(tls)
    if answer.startswith("refused"):
        return answer.replace("refused (", "refused (no plain-text session; over TLS ", 1)
    return answer + " over TLS"


KNOCKS: dict[str, Callable[[str, float], str]] = {
    "http": knock_http,
    "tls": knock_tls,
    "tcp": knock_tcp,
    "redis": knock_redis,
    "rediss": knock_rediss,
    "amqp": knock_amqp,
    "amqps": knock_amqps,
    "mpmanager": knock_mpmanager,
}


class _OpenHttp(http.server.BaseHTTPRequestHandler):
    """Answers anyone: the HTTP door of the negative control."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def serve_tcp(answer: Callable[[socket.socket], None], stack: contextlib.ExitStack) -> str:
    """A TCP server on 127.0.0.1 that calls ``answer`` on each connection (closed by ``stack``); its
    host:port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stack.callback(listener.close)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError, ssl.SSLError):
                answer(conn)

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}"


def _throwaway_certificate(directory: str) -> tuple[str, str]:
    """(certificate, key) files of a one-day self-signed certificate made by the openssl CLI: a CA
    that signed nothing else, for the negative controls."""
    key, cert = os.path.join(directory, "control.key"), os.path.join(directory, "control.crt")
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    argv += ["-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=clusterforge open-door control"]
    made = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if made.returncode != 0:
        raise CheckError(f"open-door control: openssl could not make a certificate: {made.stderr.strip()}")
    return cert, key


def _throwaway_tls_context(directory: str) -> ssl.SSLContext:
    """A server context with a throwaway self-signed certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_throwaway_certificate(directory))
    return context


def open_amqp(conn: socket.socket) -> None:
    """An AMQP broker in plain text that lets any login in: Connection.Start, then Connection.Tune."""
    conn.recv(64)
    conn.sendall(amqp_method(10, 10, b"\x00\x09" + bytes(4) + b"\x00\x00\x00\x05PLAIN\x00\x00\x00\x05en_US"))
    conn.recv(4096)
    conn.sendall(amqp_method(10, 30, b"\x07\xff\x00\x02\x00\x00\x00\x3c"))


@contextlib.contextmanager
def open_doors() -> Iterator[dict[str, str]]:
    """Doors on loopback that let anyone in, one per kind (the negative control): an HTTP server
    answering 200, a Redis-speaking server answering +PONG, a TLS server that asks for no client
    certificate and greets whoever connects, and a plain TCP server that does the same."""
    with contextlib.ExitStack() as stack:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OpenHttp)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        tls = _throwaway_tls_context(stack.enter_context(tempfile.TemporaryDirectory()))

        def greet(conn: socket.socket) -> None:
            with tls.wrap_socket(conn, server_side=True) as session:
                session.sendall(b"welcome")
                session.recv(1)

        yield {
            "http": f"http://127.0.0.1:{server.server_address[1]}/api",
            "redis": serve_tcp(lambda conn: (conn.recv(64), conn.sendall(b"+PONG\r\n")), stack),
            "rediss": serve_tcp(lambda conn: (conn.recv(64), conn.sendall(b"+PONG\r\n")), stack),
            "amqp": serve_tcp(open_amqp, stack),
            "amqps": serve_tcp(open_amqp, stack),
            "mpmanager": serve_tcp(lambda conn: (conn.sendall(b"welcome"), conn.recv(1)), stack),
            "tls": serve_tcp(greet, stack),
            "tcp": serve_tcp(lambda conn: (conn.sendall(b"welcome"), conn.recv(1)), stack),
        }


@register
class SecurityAnonymous(Check):
    name = "security.anonymous"
    category = "security"
    tags = frozenset({"security"})
    description = (
        "From every node, each declared door of every engine refuses a client without credentials: "
        "HTTP 401/403, Redis: no plain-text answer and -NOAUTH over TLS, "
        "RabbitMQ: no plain-text answer and a wrong password refused over TLS, "
        "no TLS session without a client certificate; from a member that is not one of an exporter's "
        "clients (engines.monitoring.jobs.*.clients), no connection at all"
    )
    correctness_rule = "each door's answer to a client without credentials == refused"
    timeout = 120.0

    def applies(self, ctx: CheckContext) -> str | None:
        if not engine_doors(ctx):
            return "cluster.json declares no engine door to try"
        return None

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        doors = engine_doors(ctx)
        with contextlib.ExitStack() as stack:
            control = "open-door" if ctx.inject == "open-door" else None
            # Under the control every door is knocked at the check's own open door of its kind.
            opened = stack.enter_context(open_doors()) if control else {}
            here = ctx.host.address if ctx.host is not None else ""
            for door in doors:
                name = f"security.anonymous[{door.service}]"
                target = opened.get(door.kind, door.url)
                details = {"door": door.url, "kind": door.kind}
                if control:
                    details["knocked"] = f"{target} (the check's own open door, negative control)"
                # A node's own door is reached over loopback, which the host firewall lets through.
                mine = bool(door.clients) and _host_port(door.url)[0] == here
                outside = bool(door.clients) and bool(here) and here not in door.clients and not mine
                if outside:
                    details["clients"] = list(door.clients)
                try:
                    if outside:
                        answer = knock_from_outside(target, ctx.bounded(5), here, door.clients)
                    else:
                        answer = KNOCKS[door.kind](target, ctx.bounded(15))
                except (OSError, CheckError) as exc:
                    yield ctx.error(f"{door.url}: could not knock ({exc})", name=name, details=details)
                    continue
                refused = answer.startswith("refused")
                yield ctx.result(
                    name,
                    status=PASS if refused else FAIL,
                    reason="" if refused else f"{target} {answer}",
                    expected="refused",
                    observed=answer,
                    rule=self.correctness_rule,
                    control=control,
                    details=details,
                )
