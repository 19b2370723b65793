"""Security checks: what each node exposes on the network.

``security.listeners`` runs on every node. Every listening TCP socket must be bound to loopback or
to this node's cluster address (where the engine checks prove that each service refuses anonymous
clients); a socket on every address (``0.0.0.0``, ``::``) or on another interface is an open door,
unless its port is on the allowlist (sshd by default). The sockets come from ``/proc/net/tcp`` and
``/proc/net/tcp6``; the owning process is named where this account may see it.

A role may declare a port that its service binds to every address because the software has no
bind option; the check then demands that the port refuses an anonymous request. Today: Airflow's
Celery workers' log server (``engines.airflow.log_server_port`` on ``expected_workers``), which
must answer 403 to a request without a signed token.

Negative control: ``--inject open-door`` makes the check open a listener on every address for the
duration of its scan; the result must then FAIL.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


@dataclass(frozen=True)
class DeclaredDoor:
    """A port a role binds to every address on purpose, and how to prove it refuses strangers."""

    port: int
    why: str
    url: str


def declared_doors(ctx: CheckContext, address: str) -> dict[int, DeclaredDoor]:
    airflow = ctx.cluster.engines.get("airflow") or {}
    port = int(airflow.get("log_server_port") or 0)
    workers = airflow.get("expected_workers")
    if port and isinstance(workers, list) and ctx.target in workers:
        why = "Airflow's worker log server (Airflow binds it to every address)"
        return {port: DeclaredDoor(port, why, f"http://{address}:{port}/log/clusterforge-probe.log")}
    return {}


def anonymous_status(url: str, timeout: float) -> str:
    """'refused (HTTP n)' for 401/403, else what the door answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return f"answered HTTP {answer.status} without credentials"
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"refused (HTTP {exc.code})"
        return f"answered HTTP {exc.code} without credentials"
    except (OSError, ValueError) as exc:
        return f"did not answer: {exc}"


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
        "address or another interface outside the allowlist; a port a role declares there refuses "
        "anonymous requests"
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
        declared = declared_doors(ctx, host.address)
        probes = {
            door.port: anonymous_status(door.url, ctx.bounded(10))
            for door in declared.values()
            if any(x.port == door.port and exposure(x, host.address) != "loopback" for x in listeners)
        }
        counts: dict[str, int] = {}
        doors = []
        for listener in sorted(set(listeners), key=lambda x: (x.port, x.address)):
            where = exposure(listener, host.address)
            counts[where] = counts.get(where, 0) + 1
            if where not in ("every address", "other interface") or listener.port in allowed:
                continue
            owner = owners.get(listener.inode, "process not visible to this account")
            probe = probes.get(listener.port, "")
            if listener.port in declared and probe.startswith("refused"):
                continue
            if listener.port in declared:
                owner = f"{declared[listener.port].why}: {probe}"
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
                "declared": {
                    str(port): {"why": d.why, "anonymous": probes.get(port, "not listening")}
                    for port, d in sorted(declared.items())
                },
            },
        )
