"""The HTTP boundary of the checks that talk to a service's REST API (Airflow, Luigi, JupyterHub).

One protocol, :data:`Transport`: ``(method, url, headers, body, timeout) -> (HTTP status, response
body)``. The checks call it and nothing else for HTTP, so the unit tests replace it with fakes
(the seam is the module attribute ``urllib_transport`` or ``https_transport`` of the check module).
An HTTP error status is an answer (returned); a connection that fails is a CheckError naming the URL.
Standard library only.
"""

from __future__ import annotations

import functools
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable

from compute_jobs.model import CheckError, register_secret

Transport = Callable[[str, str, dict[str, str], bytes | None, float], tuple[int, bytes]]


class NoAnswer(CheckError):
    """The server did not answer within the call's limit (a busy server, not a refusal): a read
    may be asked again."""


def urllib_exchange(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request: (HTTP status, response headers with lower-case names, response body)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        kind = NoAnswer if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError) else CheckError
        raise kind(f"{method} {url}: {reason}") from exc


def urllib_transport(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    status, _, answer = urllib_exchange(method, url, headers, body, timeout, context)
    return status, answer


def ca_context(ca_file: str) -> ssl.SSLContext:
    """A TLS client context trusting only ``ca_file`` (the CA that signed the service's certificate)."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:
        raise CheckError(f"cannot read the CA certificate {ca_file}: {exc}") from exc


def https_transport(ca_file: str) -> Transport:
    """urllib over HTTPS, trusting only ``ca_file`` (the CA that signed the service's certificate)."""
    return functools.partial(urllib_transport, context=ca_context(ca_file))


def read_user_password(path: str, playbook: str) -> tuple[str, str]:
    """(user, password) of a web gateway credentials file (``user:password``), the password
    registered as a secret (redacted wherever it would appear). CheckError naming ``playbook``
    (what converges the file) when it cannot be read or holds no user:password."""
    try:
        with open(path, encoding="utf-8") as handle:
            user, sep, password = handle.read().strip().partition(":")
    except OSError as exc:
        raise CheckError(
            f"cannot read the credentials {path}: {exc.strerror}; run as the service account "
            f"(its group may read them) or converge {playbook}"
        ) from exc
    if not sep or not user:
        raise CheckError(f"{path} does not hold user:password: converge {playbook} again")
    register_secret(password)
    return user, password
