"""A tiny authenticated TCP server for the net.pairs check, and its client.

Protocol (line based, ASCII, every line ends with ``\\n``)::

    server: CFNET1 <server nonce, 64 hex>
    client: AUTH <client nonce, 64 hex> <HMAC-SHA256(token, "client:" + snonce + cnonce), hex>
    server: OK <HMAC-SHA256(token, "server:" + cnonce + snonce), hex>      (or DENIED, then close)
    client: ECHO <n>  + n bytes   -> server sends the n bytes back          (n <= 64 KiB)
    client: SINK <n>  + n bytes   -> server reads them, answers DONE <n>   (n <= 4 GiB)
    client: SOURCE <n>            -> server sends n bytes                   (n <= 4 GiB)
    client: QUIT

Both sides prove they hold the shared token without sending it; a client that fails is refused
before any command is served, and a peer that cannot prove the token does not count as reachable.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
from typing import Any

PROTOCOL = "CFNET1"
MAX_LINE = 512
MAX_ECHO = 64 * 1024
MAX_BULK = 4 * 1024**3
AUTH_TIMEOUT_S = 5.0
IO_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 64
CHUNK = 1024 * 1024


class NetError(Exception):
    """A peer could not be reached, authenticated or measured; the message names the cause."""


class AuthError(NetError):
    """The shared-token challenge failed (either side)."""


def load_token(path: str) -> bytes:
    """The shared token (surrounding whitespace stripped); refuses empty or world-readable files."""
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise NetError(f"cannot read token file {path}: {exc.strerror or exc}") from exc
    if info.st_mode & stat.S_IROTH:
        raise NetError(f"token file {path} is world-readable; set mode 0600 or 0640")
    if len(token) < 16:
        raise NetError(f"token file {path} holds {len(token)} bytes; at least 16 are needed")
    return token


def _mac(token: bytes, label: bytes, first: bytes, second: bytes) -> str:
    return hmac.new(token, label + first + second, hashlib.sha256).hexdigest()


class Conn:
    """A socket with a small read buffer: whole lines and exact byte counts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def recv_line(self) -> str:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 1]
                return line.decode("ascii", errors="replace").strip()
            if len(self.buf) > MAX_LINE:
                raise NetError("line too long")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise NetError("connection closed by peer")
            self.buf += chunk

    def recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(4096, n - len(self.buf)))
            if not chunk:
                raise NetError("connection closed by peer")
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def discard(self, n: int) -> None:
        take = min(n, len(self.buf))
        del self.buf[:take]
        n -= take
        scratch = bytearray(min(CHUNK, max(n, 1)))
        view = memoryview(scratch)
        while n > 0:
            got = self.sock.recv_into(view[: min(n, len(scratch))])
            if not got:
                raise NetError("connection closed by peer")
            n -= got

    def send_line(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\n")


# --- server -------------------------------------------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    server: NetServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        conn = Conn(sock)
        try:
            sock.settimeout(AUTH_TIMEOUT_S)
            snonce = secrets.token_bytes(32)
            conn.send_line(f"{PROTOCOL} {snonce.hex()}")
            parts = conn.recv_line().split()
            if len(parts) != 3 or parts[0] != "AUTH":
                self.server.log(f"rejected {peer}: no AUTH line")
                conn.send_line("DENIED")
                return
            try:
                cnonce = bytes.fromhex(parts[1])
            except ValueError:
                cnonce = b""
            want = _mac(self.server.token, b"client:", snonce, cnonce)
            if len(cnonce) != 32 or not hmac.compare_digest(want, parts[2]):
                self.server.rejected += 1
                self.server.log(f"rejected {peer}: bad HMAC (wrong token?)")
                conn.send_line("DENIED")
                return
            conn.send_line("OK " + _mac(self.server.token, b"server:", cnonce, snonce))
            self.server.accepted += 1
            sock.settimeout(IO_TIMEOUT_S)
            self._serve(conn)
        except (OSError, NetError) as exc:
            self.server.log(f"connection from {peer} ended: {exc}")

    def _serve(self, conn: Conn) -> None:
        payload = bytes(CHUNK)
        while True:
            parts = conn.recv_line().split()
            if not parts or parts[0] == "QUIT":
                return
            command = parts[0]
            size = int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else -1
            if command == "ECHO" and 0 <= size <= MAX_ECHO:
                conn.sock.sendall(conn.recv_exact(size))
            elif command == "SINK" and 0 <= size <= MAX_BULK:
                conn.discard(size)
                conn.send_line(f"DONE {size}")
            elif command == "SOURCE" and 0 <= size <= MAX_BULK:
                view = memoryview(payload)
                left = size
                while left > 0:
                    step = min(left, CHUNK)
                    conn.sock.sendall(view[:step])
                    left -= step
            else:
                conn.send_line("ERR unknown command or size out of range")
                return


class NetServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, bind: str, port: int, token: bytes, quiet: bool = False) -> None:
        self.token = token
        self.quiet = quiet
        self.accepted = 0
        self.rejected = 0
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.address_family = family
        super().__init__((bind, port), _Handler)

    def log(self, text: str) -> None:
        if not self.quiet:
            print(f"netserver: {text}", file=sys.stderr, flush=True)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        self.log(f"refused {client_address[0]}: {MAX_CONNECTIONS} connections already open")
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def port(self) -> int:
        return self.server_address[1]


def start_server(bind: str, port: int, token: bytes, quiet: bool = True) -> NetServer:
    """Start a server in a background thread (tests and embedding); stop with ``shutdown()``."""
    server = NetServer(bind, port, token, quiet=quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return server


def serve(bind: str, port: int, token_file: str, lifetime: float) -> int:
    """``python -m compute_jobs netserver``: serve until ``lifetime`` seconds pass or SIGTERM/SIGINT."""
    token = load_token(token_file)
    server = NetServer(bind, port, token)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    server.log(f"listening on {bind}:{server.port} for {lifetime:g} s")
    stop.wait(lifetime)
    server.shutdown()
    server.server_close()
    server.log(f"stopped: {server.accepted} authenticated, {server.rejected} rejected")
    return 0


# --- client -------------------------------------------------------------------------------------


class NetClient:
    """An authenticated connection to one netserver."""

    def __init__(self, address: str, port: int, token: bytes, timeout: float) -> None:
        self.endpoint = f"{address}:{port}"
        self.timeout = timeout
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except TimeoutError as exc:
            raise NetError(f"connect timed out after {timeout:.3g} s") from exc
        except OSError as exc:
            raise NetError(f"connect failed: {exc.strerror or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = Conn(sock)
        try:
            self._authenticate(token)
        except BaseException:
            sock.close()
            raise

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except TimeoutError as exc:
            raise NetError(f"timed out after {self.conn.sock.gettimeout():.3g} s waiting for {what}") from exc
        except OSError as exc:
            raise NetError(f"{what} failed: {exc.strerror or exc}") from exc

    def _authenticate(self, token: bytes) -> None:
        greeting = self._call("the greeting", self.conn.recv_line).split()
        if len(greeting) != 2 or greeting[0] != PROTOCOL:
            raise NetError(f"not a clusterforge netserver (greeting {' '.join(greeting)[:40]!r})")
        try:
            snonce = bytes.fromhex(greeting[1])
        except ValueError as exc:
            raise NetError("malformed greeting nonce") from exc
        cnonce = secrets.token_bytes(32)
        self._call(
            "sending AUTH",
            self.conn.send_line,
            f"AUTH {cnonce.hex()} {_mac(token, b'client:', snonce, cnonce)}",
        )
        answer = self._call("the AUTH answer", self.conn.recv_line).split()
        if answer[:1] == ["DENIED"]:
            raise AuthError("authentication rejected by peer (token mismatch)")
        if len(answer) != 2 or answer[0] != "OK":
            raise AuthError(f"unexpected AUTH answer {' '.join(answer)[:40]!r}")
        if not hmac.compare_digest(answer[1], _mac(token, b"server:", cnonce, snonce)):
            raise AuthError("peer could not prove it holds the token")

    def settimeout(self, timeout: float) -> None:
        self.conn.sock.settimeout(timeout)

    def echo(self, payload: bytes) -> float:
        """One round trip of ``payload``; returns seconds."""

        def round_trip() -> float:
            start = time.perf_counter()
            self.conn.sock.sendall(f"ECHO {len(payload)}\n".encode("ascii") + payload)
            back = self.conn.recv_exact(len(payload))
            elapsed = time.perf_counter() - start
            if back != payload:
                raise NetError("echo returned different bytes")
            return elapsed

        return self._call("an echo", round_trip)

    def sink(self, data: memoryview, nbytes: int) -> float:
        """Send ``nbytes`` (repeating ``data``) and wait for the acknowledgement; returns seconds."""

        def bulk() -> float:
            start = time.perf_counter()
            self.conn.sock.sendall(f"SINK {nbytes}\n".encode("ascii"))
            left = nbytes
            while left > 0:
                step = min(left, len(data))
                self.conn.sock.sendall(data[:step])
                left -= step
            answer = self.conn.recv_line()
            elapsed = time.perf_counter() - start
            if answer != f"DONE {nbytes}":
                raise NetError(f"unexpected bulk answer {answer[:40]!r}")
            return elapsed

        return self._call("a bulk transfer", bulk)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send_line("QUIT")
        self.conn.sock.close()
