"""The authenticated netserver and net.pairs: measurement, refusal of wrong tokens, bounded failures."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from compute_jobs.checks import load_all
from compute_jobs.checks.net import _flag_outliers
from compute_jobs.cluster import cluster_from_dict
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Registry, Result, registry
from compute_jobs.runner import RunConfig, Runner
from compute_jobs.services.netserver import AuthError, NetClient, NetError, load_token

load_all()
REPO = Path(__file__).resolve().parents[2]


def run_pairs(cluster: Any, **config: Any) -> dict[str, Result]:
    local = Registry()
    local.register(registry.get("net.pairs"))
    overrides = {"net.pairs": registry.get("net.pairs").smoke_params() | config.pop("params", {})}
    outcome = Runner(local).run(RunConfig(cluster=cluster, target="a", overrides=overrides, **config))
    return {r.name: r for r in outcome.results}


def hosts(ports: dict[str, int]) -> list[dict[str, Any]]:
    """Host a (the target, no server needed) plus one host per given netserver port."""
    out = [{"name": "a", "address": "127.0.0.1", "groups": ["head"], "cores": 1, "memory_mb": 1}]
    for name, port in ports.items():
        out.append(
            {
                "name": name,
                "address": "127.0.0.1",
                "groups": ["workers"],
                "cores": 1,
                "memory_mb": 1,
                "net_port": port,
            }
        )
    return out


def free_port() -> int:
    """A port with nothing listening (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def blackhole():
    """A listener that accepts TCP connections into its backlog but never speaks."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


# --- protocol -----------------------------------------------------------------------------------


def test_authenticated_client_echoes_and_sinks(cj_netservers, cj_token_file):
    (server,) = cj_netservers(1)
    token = load_token(str(cj_token_file))
    client = NetClient("127.0.0.1", server.port, token, timeout=2.0)
    try:
        assert client.echo(b"x" * 64) > 0
        assert client.sink(memoryview(bytes(1000)), 250_000) > 0
    finally:
        client.close()
    assert server.accepted == 1 and server.rejected == 0


def test_wrong_token_is_rejected_by_the_server(cj_netservers):
    (server,) = cj_netservers(1)
    with pytest.raises(AuthError, match="rejected by peer"):
        NetClient("127.0.0.1", server.port, b"not-the-shared-token-at-all", timeout=2.0)
    assert server.rejected == 1 and server.accepted == 0


def test_client_without_auth_gets_no_service(cj_netservers):
    (server,) = cj_netservers(1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock:
        greeting = sock.recv(200)
        assert greeting.startswith(b"CFNET1 ")
        sock.sendall(b"ECHO 4\nabcd")
        assert sock.recv(100) == b"DENIED\n"
        assert sock.recv(100) == b""  # closed


def test_server_that_cannot_prove_the_token_is_not_trusted(cj_token_file):
    """A listener that speaks the protocol but does not hold the token must not count as a peer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def impostor() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"CFNET1 " + b"00" * 32 + b"\n")
            conn.recv(400)
            conn.sendall(b"OK " + b"11" * 32 + b"\n")
            conn.recv(10)

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    with pytest.raises(AuthError, match="could not prove"):
        NetClient("127.0.0.1", listener.getsockname()[1], load_token(str(cj_token_file)), timeout=2.0)
    listener.close()


def test_other_services_are_not_mistaken_for_a_netserver(cj_token_file):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def ssh_like() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\n")
            time.sleep(0.2)

    threading.Thread(target=ssh_like, daemon=True).start()
    with pytest.raises(NetError, match="not a clusterforge netserver"):
        NetClient("127.0.0.1", listener.getsockname()[1], load_token(str(cj_token_file)), timeout=2.0)
    listener.close()


def test_token_file_rules(tmp_path):
    loose = tmp_path / "loose.token"
    loose.write_text("x" * 32)
    os.chmod(loose, 0o644)
    with pytest.raises(NetError, match="world-readable"):
        load_token(str(loose))
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    os.chmod(short, 0o600)
    with pytest.raises(NetError, match="at least 16"):
        load_token(str(short))
    with pytest.raises(NetError, match="cannot read"):
        load_token(str(tmp_path / "absent"))


# --- net.pairs ----------------------------------------------------------------------------------


def test_pairs_measure_every_authenticated_peer(cj_cluster, cj_netservers, cj_validator):
    servers = cj_netservers(2)
    # Two loopback peers on a busy host can differ fivefold in one round: the outlier rule has its
    # own test (test_outliers_are_fail_with_the_reason); here every peer must be measured.
    cluster = cj_cluster(hosts({"b": servers[0].port, "c": servers[1].port}))
    results = run_pairs(cluster, params={"outlier_factor": 1000.0})
    reach = results["net.reachability"]
    assert reach.status == PASS and reach.category == "placement"
    assert reach.expected_workers == ["b", "c"] == reach.observed_workers
    validator = cj_validator("result.schema.json")
    for peer in ("b", "c"):
        latency = results[f"net.pairs.latency[{peer}]"]
        throughput = results[f"net.pairs.throughput[{peer}]"]
        for result in (latency, throughput):
            validator.validate(result.to_dict())
            assert result.status == PASS and result.details["peer"] == peer and len(result.samples) >= 5
        assert latency.unit == "us" and latency.better == "lower" and 0 < latency.value < 1e6
        assert throughput.unit == "MB/s" and throughput.value > 0
    assert all(s.accepted == 1 for s in servers)


def test_wrong_token_makes_every_peer_missing(cj_cluster, cj_netservers):
    servers = cj_netservers(2, token=b"a-different-token-held-by-the-servers")
    results = run_pairs(cj_cluster(hosts({"b": servers[0].port, "c": servers[1].port})))
    reach = results["net.reachability"]
    assert reach.status == FAIL and reach.missing == ["b", "c"]
    assert "rejected" in reach.details["errors"]["b"]
    assert results["net.pairs.latency[b]"].status == ERROR
    assert all(s.rejected == 1 for s in servers)


def test_unreachable_peers_fail_in_bounded_time_and_are_named(cj_cluster, cj_netservers, blackhole):
    (server,) = cj_netservers(1)
    closed = free_port()
    cluster = cj_cluster(hosts({"b": server.port, "silent": blackhole, "down": closed}))
    start = time.monotonic()
    results = run_pairs(cluster, params={"connect_timeout": 0.5})
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    reach = results["net.reachability"]
    assert (
        reach.status == FAIL
        and reach.missing == ["down", "silent"]
        and reach.reason == "missing: down, silent"
    )
    silent = results["net.pairs.latency[silent]"]
    assert silent.status == ERROR
    assert (
        f"peer silent at 127.0.0.1:{blackhole}" in silent.reason and "timed out after 0.5 s" in silent.reason
    )
    down = results["net.pairs.throughput[down]"]
    assert down.status == ERROR and f"127.0.0.1:{closed}: connect failed" in down.reason
    assert results["net.pairs.latency[b]"].status == PASS


def test_check_timeout_bounds_a_peer_that_stalls_midway(cj_cluster, blackhole):
    """Even with generous per-peer timeouts, the check's own limit ends it with ERROR."""
    cluster = cj_cluster(hosts({"silent": blackhole}))
    start = time.monotonic()
    results = run_pairs(cluster, params={"connect_timeout": 30.0}, timeout=1.0)
    assert time.monotonic() - start < 4.0
    reach = results["net.reachability"]
    assert reach.status == FAIL and reach.missing == ["silent"]
    # Bounded by what was left of the check's 1 s, not by the peer's 30 s (how much was left depends
    # on the host's speed).
    waited = re.search(r"timed out after (\d+(?:\.\d+)?) s", reach.details["errors"]["silent"])
    assert waited and 0 < float(waited.group(1)) <= 1.0


def test_missing_worker_control_fails_reachability(cj_cluster, cj_netservers):
    servers = cj_netservers(2)
    results = run_pairs(
        cj_cluster(hosts({"b": servers[0].port, "c": servers[1].port})), inject="missing-worker"
    )
    reach = results["net.reachability"]
    assert reach.status == FAIL and reach.missing == ["c"] and reach.control == "missing-worker"


def test_pairs_skip_without_peers_or_net_section(cj_cluster, cj_cluster_dict):
    alone = run_pairs(cj_cluster())["net.pairs"]
    assert alone.status == SKIP and alone.reason == "no other hosts in the cluster"
    doc = cj_cluster_dict(hosts({"b": 1}))
    del doc["net"]
    no_net = run_pairs(cluster_from_dict(doc))["net.pairs"]
    assert no_net.status == SKIP and "no net section" in no_net.reason


def _perf_result(value: float, metric: str) -> Result:
    return Result(
        name=f"net.pairs.{metric}[x]", check="net.pairs", category="performance", tags=["net"], target="a",
        status=PASS, metric=metric, unit="us" if metric == "latency" else "MB/s", value=value,
    )  # fmt: skip


def test_outliers_are_fail_with_the_reason():
    latencies = [_perf_result(v, "latency") for v in (100.0, 110.0, 120.0, 900.0)]
    _flag_outliers(latencies, "latency", 3.0)
    assert [r.status for r in latencies] == [PASS, PASS, PASS, FAIL]
    assert "outlier: latency 900 us > 3 x median over peers 115" in latencies[3].reason
    rates = [_perf_result(v, "throughput") for v in (1000.0, 900.0, 1100.0, 200.0)]
    _flag_outliers(rates, "throughput", 3.0)
    assert [r.status for r in rates] == [PASS, PASS, PASS, FAIL]
    assert rates[3].details["outlier"] is True and rates[0].details["outlier"] is False


def _scripted_measures(monkeypatch, script: dict[int, list[float]]) -> dict[int, int]:
    """Make net.pairs take latency figures from SCRIPT (port -> one median per measure, last repeats)."""
    calls: dict[int, int] = {}

    def fake(ctx, client, nbytes):
        port = int(client.endpoint.rsplit(":", 1)[1])
        figures = script[port]
        calls[port] = calls.get(port, 0) + 1
        latency = figures[min(calls[port], len(figures)) - 1]
        return [latency] * 5, [1000.0] * 5

    monkeypatch.setattr(registry.get("net.pairs"), "_measure", staticmethod(fake))
    return calls


def test_a_peer_slow_for_a_moment_is_remeasured_and_passes(cj_cluster, cj_netservers, monkeypatch):
    servers = cj_netservers(3)
    ports = {name: s.port for name, s in zip("bcd", servers, strict=True)}
    calls = _scripted_measures(
        monkeypatch, {ports["b"]: [100.0], ports["c"]: [110.0], ports["d"]: [900.0, 120.0]}
    )
    results = run_pairs(cj_cluster(hosts(ports)), params={"outlier_factor": 3.0, "outlier_retries": 2})
    d = results["net.pairs.latency[d]"]
    assert d.status == PASS and d.value == 120.0 and d.details["remeasured"] == 1
    assert calls == {ports["b"]: 1, ports["c"]: 1, ports["d"]: 2}
    assert results["net.pairs.latency[b]"].details["remeasured"] == 0


def test_a_peer_that_stays_slow_fails_after_its_retries(cj_cluster, cj_netservers, monkeypatch):
    servers = cj_netservers(3)
    ports = {name: s.port for name, s in zip("bcd", servers, strict=True)}
    calls = _scripted_measures(monkeypatch, {ports["b"]: [100.0], ports["c"]: [110.0], ports["d"]: [900.0]})
    results = run_pairs(cj_cluster(hosts(ports)), params={"outlier_factor": 3.0, "outlier_retries": 2})
    d = results["net.pairs.latency[d]"]
    assert d.status == FAIL and d.details["remeasured"] == 2 and calls[ports["d"]] == 3
    assert "outlier: latency 900 us > 3 x median over peers 110" in d.reason
    none = run_pairs(cj_cluster(hosts(ports)), params={"outlier_factor": 3.0, "outlier_retries": 0})
    assert (
        none["net.pairs.latency[d]"].status == FAIL
        and none["net.pairs.latency[d]"].details["remeasured"] == 0
    )


# --- the netserver command ----------------------------------------------------------------------


def test_netserver_command_serves_then_exits_after_its_lifetime(cj_token_file):
    lifetime = 8
    port = free_port()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "compute_jobs", "netserver", "--bind", "127.0.0.1", "--port", str(port),
         "--token-file", str(cj_token_file), "--lifetime", str(lifetime)],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        token = load_token(str(cj_token_file))
        client = None
        # The import of every check module comes first: seconds on a loaded host.
        while client is None and time.monotonic() - start < lifetime:
            try:
                client = NetClient("127.0.0.1", port, token, timeout=1.0)
            except NetError:
                time.sleep(0.05)
        assert client is not None, "netserver did not come up"
        assert client.echo(b"ping") > 0
        client.close()
        assert proc.wait(timeout=lifetime + 10) == 0
    finally:
        proc.kill()
    assert time.monotonic() - start < lifetime + 10
    assert f"listening on 127.0.0.1:{port}" in proc.stderr.read()


def test_netserver_command_refuses_a_world_readable_token(tmp_path):
    token = tmp_path / "t"
    token.write_text("x" * 40)
    os.chmod(token, 0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "compute_jobs", "netserver", "--bind", "127.0.0.1", "--port", "1",
         "--token-file", str(token), "--lifetime", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "world-readable" in proc.stderr
