"""Start dask-cloudprovider's EC2Cluster against a moto server, then close it (test helper).

Runs in the venv of ``aiobotocore.lock`` (see testenv.py), started by
tests/unit/test_cloud_dask.py:  python ec2cluster_run.py SPEC.json RESULT.json

SPEC holds the EC2Cluster keyword arguments. The environment points aiobotocore at moto
(AWS_ENDPOINT_URL) with fake credentials. Every EC2 call EC2Cluster makes is recorded.

moto's instances never boot, so nothing runs the scheduler the user data describes. This script
does what cloud-init would do on the scheduler's instance: it takes the scheduler command and
the Dask configuration (TLS credentials included) out of the RunInstances user data and starts
that scheduler, bound to the private address moto gave the instance. The test's subnet lies in
127.0.0.0/8, so that address is a loopback address of this host, and EC2Cluster's own start-up
(waiting for the port, connecting with TLS) runs unchanged. Then it checks that a TLS client
without a certificate is refused, closes the cluster and writes what happened to RESULT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

INHERIT = re.compile(
    r'env DASK_INTERNAL_INHERIT_CONFIG="([^"]+)" python -m distributed\.cli\.dask_scheduler([^\']*)'
)


def record_calls(calls: list[dict[str, Any]]) -> None:
    """Record the operation and parameters of every EC2 call of EC2Cluster's sessions."""
    import dask_cloudprovider.aws.ec2 as ec2_module

    original = ec2_module.get_session

    def session_with_recorder(*args: Any, **kwargs: Any) -> Any:
        session = original(*args, **kwargs)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            calls.append({"operation": model.name, "params": json.loads(json.dumps(params, default=str))})

        session.register("provide-client-params.ec2", record)
        return session

    ec2_module.get_session = session_with_recorder


def scheduler_command(calls: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The inherited Dask configuration and the scheduler's arguments, from its user data."""
    for call in calls:
        if call["operation"] == "RunInstances":
            found = INHERIT.search(call["params"].get("UserData", ""))
            if found:
                return found.group(1), shlex.split(found.group(2))
    raise RuntimeError("no RunInstances call carries a scheduler command in its user data")


def refused_without_certificate(host: str, port: int, ca_pem: str) -> str:
    """Connect with TLS and the cluster CA but no client certificate; '' if the server accepted."""
    context = ssl.create_default_context(cadata=ca_pem)
    context.check_hostname = False
    try:
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.settimeout(5)
            data = tls.recv(1)
            return "" if data else "closed without data"
    except (ssl.SSLError, ConnectionError, TimeoutError) as error:
        return f"{type(error).__name__}: {error}"


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    from dask_cloudprovider.aws import EC2Cluster
    from distributed import Client

    calls: list[dict[str, Any]] = []
    record_calls(calls)
    cluster = EC2Cluster(asynchronous=True, **spec["kwargs"])
    starting = asyncio.ensure_future(cluster._start())
    scheduler = None
    address = ""
    for _ in range(600):
        address = getattr(getattr(cluster, "scheduler", None), "address", None) or ""
        if address or starting.done():
            break
        await asyncio.sleep(0.1)
    if not address:
        starting.result()  # raises what stopped the start
        raise RuntimeError("EC2Cluster started without a scheduler address")
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    config, arguments = scheduler_command(calls)
    listen = ["--host", host, "--port", port, "--no-dashboard"]
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", *arguments, *listen],
        env=dict(os.environ, DASK_INTERNAL_INHERIT_CONFIG=config),
    )
    result: dict[str, Any] = {"scheduler_address": address, "scheduler_arguments": arguments}
    try:
        await asyncio.wait_for(starting, timeout=180)
        result["security_require_encryption"] = bool(cluster.security.require_encryption)
        async with Client(cluster, asynchronous=True, security=cluster.security) as client:
            identity = await client.scheduler.identity()
            result["scheduler_info_address"] = identity["address"]
        result["plain_tls_refused"] = refused_without_certificate(
            host, int(port), cluster.security.tls_ca_file
        )
        result["worker_names"] = sorted(cluster.worker_spec)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(cluster.close(), timeout=120)
        scheduler.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            scheduler.wait(timeout=20)
        if scheduler.poll() is None:
            scheduler.kill()
    for call in calls:
        user_data = call["params"].pop("UserData", None)
        if user_data is not None:
            call["params"]["UserData.summary"] = {
                "inherits_config": "DASK_INTERNAL_INHERIT_CONFIG=" in user_data,
                "docker_run": [line.strip() for line in user_data.splitlines() if "docker run" in line],
            }
    result["calls"] = calls
    return result


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    result = asyncio.run(run(spec))
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
