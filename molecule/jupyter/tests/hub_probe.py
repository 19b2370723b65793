"""Run on the hub node with the hub venv's Python: what a browser and a notebook do, over HTTPS.

    hub_probe.py URL CA USER PASSWORD ACTION [CODE]

ACTION: anonymous (GET /hub/api/users without a token), token (REST token request), form (login
form with its XSRF token), start (token, start the user's server, wait until ready), kernel (start,
then run CODE in a clusterforge kernel through the server's websocket), stop. Prints one JSON line.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

URL, CA, USER, PASSWORD, ACTION = sys.argv[1:6]
CONTEXT = ssl.create_default_context(cafile=CA)


def call(method, path, body=None, token=None, opener=None, form=None):
    headers = {"Accept": "application/json"}
    data = None
    if token:
        headers["Authorization"] = f"token {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(URL + path, data=data, method=method, headers=headers)
    open_ = opener.open if opener else (lambda r: urllib.request.urlopen(r, context=CONTEXT))
    try:
        with open_(request) as response:
            return response.status, response.read().decode(), response.geturl()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.geturl()


def token(password=PASSWORD):
    status, text, _ = call(
        "POST", f"/hub/api/users/{USER}/tokens", {"auth": {"username": USER, "password": password}}
    )
    return status, (json.loads(text).get("token") if status == 201 else None)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def form():
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=CONTEXT), urllib.request.HTTPCookieProcessor(jar), NoRedirect()
    )
    _, page, _ = call("GET", "/hub/login", opener=opener)
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page)
    fields = {"username": USER, "password": PASSWORD, "_xsrf": xsrf.group(1) if xsrf else ""}
    status, _, _ = call("POST", "/hub/login?next=", form=fields, opener=opener)
    return {"status": status, "cookies": sorted(c.name for c in jar)}


def start():
    status, tok = token()
    assert status == 201, status
    began = time.monotonic()
    call("POST", f"/hub/api/users/{USER}/server", {}, token=tok)
    for _ in range(240):
        _, text, _ = call("GET", f"/hub/api/users/{USER}", token=tok)
        if json.loads(text).get("servers", {}).get("", {}).get("ready"):
            return tok, time.monotonic() - began
        time.sleep(0.5)
    raise SystemExit(f"{USER}'s server never became ready")


def kernel(code):
    import websocket  # websocket-client, in the hub venv

    tok, ready_s = start()
    began = time.monotonic()
    status, text, _ = call("POST", f"/user/{USER}/api/kernels", {"name": "clusterforge"}, token=tok)
    assert status == 201, (status, text)
    kid = json.loads(text)["id"]
    ws = websocket.create_connection(
        URL.replace("https://", "wss://") + f"/user/{USER}/api/kernels/{kid}/channels",
        header=[f"Authorization: token {tok}"],
        sslopt={"ca_certs": CA},
        timeout=300,
    )
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": USER,
        "session": uuid.uuid4().hex,
        "version": "5.3",
    }
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
    }
    ws.send(
        json.dumps(
            {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
        )
    )
    out, error = [], None
    while True:
        reply = json.loads(ws.recv())
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, body = reply["msg_type"], reply["content"]
        if kind == "stream":
            out.append(body["text"])
        elif kind == "error":
            error = f"{body['ename']}: {body['evalue']}"
        elif kind == "status" and body["execution_state"] == "idle":
            break
    ws.close()
    call("DELETE", f"/user/{USER}/api/kernels/{kid}", token=tok)
    return {
        "stdout": "".join(out),
        "error": error,
        "server_ready_s": round(ready_s, 1),
        "kernel_s": round(time.monotonic() - began, 1),
    }


if ACTION == "anonymous":
    status, _, _ = call("GET", "/hub/api/users")
    print(json.dumps({"status": status}))
elif ACTION == "token":
    status, tok = token()
    print(json.dumps({"status": status, "token": bool(tok)}))
elif ACTION == "form":
    print(json.dumps(form()))
elif ACTION == "start":
    print(json.dumps({"ready_s": round(start()[1], 1)}))
elif ACTION == "kernel":
    print(json.dumps(kernel(sys.argv[6])))
elif ACTION == "stop":
    _, tok = token()
    status, _, _ = call("DELETE", f"/hub/api/users/{USER}/server", token=tok)
    print(json.dumps({"status": status}))
