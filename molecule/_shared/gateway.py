"""testinfra assertions for a web UI behind the authenticating HTTPS gateway (roles/web_gateway).

Imported by the scenarios' tests (``sys.path`` gets this directory); not a scenario itself.
"""

from __future__ import annotations


def http_code(host, url: str, *curl_args: str) -> str:
    """HTTP status of a GET from ``host`` (000 when no HTTP answer came back)."""
    placeholders = " ".join(["%s"] * len(curl_args))
    command = f"curl -sS -o /dev/null -w '%%{{http_code}}' --max-time 15 {placeholders} %s"
    answer = host.run(command, *curl_args, url)
    return answer.stdout.strip()


def assert_gateway_refuses_strangers(client, address: str, port: int, path: str, credentials: str) -> None:
    """From ``client`` (another node): anonymous and wrong passwords get 401, the credentials 200
    over TLS verified against the cluster CA (in the node's trust store), plain HTTP no content."""
    url = f"https://{address}:{port}{path}"
    user = credentials.split(":", 1)[0]
    assert http_code(client, url) == "401", "anonymous request not refused"
    assert http_code(client, url, "-u", f"{user}:wrong-password") == "401", "wrong password not refused"
    assert http_code(client, url, "-u", credentials) == "200", "the generated credentials are refused"
    # nginx answers 400 to plain HTTP on its TLS port and forwards nothing to the web UI.
    assert http_code(client, f"http://{address}:{port}{path}") == "400", "plain HTTP was served"


def assert_ui_listens_on_loopback_only(host, user: str, port: int) -> None:
    """The web UI's own socket (owned by ``user``) on ``port`` is bound to 127.0.0.1 only."""
    uid = host.user(user).uid
    lines = host.run("ss -Hltne").stdout.splitlines()
    mine = [line.split()[3] for line in lines if f"uid:{uid} " in line]
    bound = [a for a in mine if a.endswith(f":{port}")]
    assert bound, f"{user} does not listen on port {port}"
    assert all(a.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:") == "127.0.0.1" for a in bound), bound
