"""An HTTP server on loopback behind basic auth, for the tests of what talks to the web gateway:
it answers the paths it was given, 401 to a request without the right password, 404 to the rest,
and records the Authorization header of every request."""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# path -> (Content-Type, body)
Routes = Mapping[str, tuple[str, bytes]]


@contextlib.contextmanager
def basic_auth_server(
    user: str, password: str | Callable[[], str], routes: Routes, realm: str = "clusterforge"
) -> Iterator[tuple[str, list[str | None]]]:
    """(base URL, the Authorization headers seen so far). PASSWORD may be a callable, read at each
    request (a secret that a converge run generates after the server started)."""
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            given = self.headers.get("Authorization")
            seen.append(given)
            secret = password() if callable(password) else password
            if given != "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode():
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Basic realm="{realm}"')
                self.end_headers()
                return
            if self.path not in routes:
                self.send_response(404)
                self.end_headers()
                return
            kind, body = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
