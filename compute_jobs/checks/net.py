"""Network checks between nodes through the authenticated netserver (``python -m compute_jobs netserver``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from compute_jobs.cluster import Host
from compute_jobs.context import CheckContext
from compute_jobs.model import ERROR, FAIL, PASS, Check, CheckError, Metric, Param, Result, register
from compute_jobs.services.netserver import NetClient, NetError, load_token


@register
class NetPairs(Check):
    name = "net.pairs"
    category = "performance"
    tags = frozenset({"net"})
    description = "Authenticated latency and throughput from this node to every other host; who answered"
    params = (
        Param(
            "bytes",
            int,
            None,
            "bytes per throughput sample (null: net.bytes)",
            1,
            1 << 32,
            nullable=True,
            smoke=65536,
        ),
        Param("message_bytes", int, 64, "payload of a latency round trip", 1, 65536),
        Param("latency_repeats", int, 20, "timed round trips per peer after 3 warm-ups", 5, 100000, smoke=5),
        Param("throughput_repeats", int, 5, "timed bulk transfers per peer after 1 warm-up", 5, 1000),
        Param(
            "connect_timeout", float, 3.0, "s to connect and authenticate to one peer", 0.05, 600, smoke=1.0
        ),
        Param("io_timeout", float, 20.0, "s one echo or bulk transfer may take", 0.05, 3600, smoke=5.0),
        Param("outlier_factor", float, 3.0, "FAIL a peer this many times worse than the median", 1.0, 1000),
        Param(
            "outlier_retries",
            int,
            2,
            "re-measure an outlier peer this many times and keep its best figure before judging",
            0,
            20,
            smoke=1,
        ),
        Param("retry_pause", float, 2.0, "s to wait before each re-measure", 0.0, 600, smoke=0.1),
    )
    placement_rule = "peers that answered the HMAC challenge == every other host in cluster.json"
    metrics = (
        Metric("latency", "us", better="lower", help="median round trip of a small message"),
        Metric("throughput", "MB/s", help="10^6 bytes/s, this node -> peer, until the peer acknowledges"),
    )
    timeout = 180.0

    def applies(self, ctx: CheckContext) -> str | None:
        if ctx.cluster.net is None:
            return f"{ctx.cluster.source} has no net section (port, token_file)"
        if not self._peers(ctx):
            return "no other hosts in the cluster"
        return None

    @staticmethod
    def _peers(ctx: CheckContext) -> list[Host]:
        return [h for h in ctx.cluster.hosts if h.name != ctx.target]

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        net = ctx.cluster.net
        assert net is not None  # applies() checked
        try:
            token = load_token(net.token_file)
        except NetError as exc:
            raise CheckError(str(exc)) from exc
        peers = self._peers(ctx)
        endpoints = {h.name: ctx.cluster.net_endpoint(h) for h in peers}

        def probe(host: Host) -> NetClient | str:
            address, port = endpoints[host.name]  # type: ignore[misc]
            try:
                return NetClient(address, port, token, ctx.bounded(p.connect_timeout))
            except NetError as exc:
                return f"{address}:{port}: {exc}"

        # Reachability first, all peers at once, so unreachable peers cost one connect_timeout in total.
        with ThreadPoolExecutor(max_workers=min(16, len(peers)), thread_name_prefix="net-probe") as pool:
            probes = dict(zip([h.name for h in peers], pool.map(probe, peers), strict=True))
        clients = {name: c for name, c in probes.items() if isinstance(c, NetClient)}
        errors = {name: c for name, c in probes.items() if isinstance(c, str)}
        yield ctx.compare_sets(
            [h.name for h in peers],
            list(clients),
            name="net.reachability",
            details={"errors": errors, "endpoints": {k: f"{a}:{b}" for k, (a, b) in endpoints.items()}},
        )
        measured: dict[str, tuple[list[float], list[float]]] = {}
        failures = dict(errors)
        retries: dict[str, int] = {}
        nbytes = net.bytes if p.bytes is None else p.bytes
        slowest = 0.0
        try:
            for name, client in clients.items():
                began = time.monotonic()
                try:
                    measured[name] = self._measure(ctx, client, nbytes)
                except NetError as exc:
                    failures[name] = f"{client.endpoint}: {exc}"
                slowest = max(slowest, time.monotonic() - began)
            # A peer whose host is busy with other work answers late for a few seconds; a slow
            # link stays slow. Re-measure the outliers after a pause and keep each one's best figure.
            for _ in range(p.outlier_retries):
                suspects = _suspects(measured, p.outlier_factor)
                # Only while the deadline leaves room: a re-measure must not turn findings into a timeout.
                if not suspects or ctx.remaining() < p.retry_pause + 2 * slowest * len(suspects):
                    break
                time.sleep(p.retry_pause)
                for name in suspects:
                    try:
                        again = self._measure(ctx, clients[name], nbytes)
                    except NetError:
                        break  # keep the figures already taken; the peer answered before
                    measured[name] = _best(measured[name], again)
                    retries[name] = retries.get(name, 0) + 1
        finally:
            for client in clients.values():
                client.close()
        yield from self._results(ctx, peers, measured, failures, retries)

    @staticmethod
    def _measure(ctx: CheckContext, client: NetClient, nbytes: int) -> tuple[list[float], list[float]]:
        p = ctx.params
        client.settimeout(ctx.bounded(p.io_timeout))
        payload = bytes(range(256)) * (p.message_bytes // 256 + 1)
        payload = payload[: p.message_bytes]
        for _ in range(3):
            client.echo(payload)
        latencies = []
        for _ in range(p.latency_repeats):
            ctx.check_deadline()
            latencies.append(client.echo(payload) * 1e6)
        block = memoryview(bytes(min(nbytes, 1 << 20)))
        rates = []
        for index in range(1 + p.throughput_repeats):
            ctx.check_deadline()
            client.settimeout(ctx.bounded(p.io_timeout))
            seconds = client.sink(block, nbytes)
            if index:
                rates.append(nbytes / seconds / 1e6)
        return latencies, rates

    def _results(
        self,
        ctx: CheckContext,
        peers: list[Host],
        measured: dict[str, tuple[list[float], list[float]]],
        failures: dict[str, str],
        retries: dict[str, int],
    ) -> Iterator[Result]:
        factor = ctx.params.outlier_factor
        results: dict[str, list[Result]] = {}
        for host in peers:
            if host.name in failures:
                why = f"peer {host.name} at {failures[host.name]}"
                results[host.name] = [
                    ctx.error(
                        why,
                        name=f"net.pairs.{metric}[{host.name}]",
                        metric=metric,
                        details={"peer": host.name},
                    )
                    for metric in ("latency", "throughput")
                ]
            else:
                latencies, rates = measured[host.name]
                info = {"remeasured": retries.get(host.name, 0)}
                results[host.name] = [
                    ctx.performance("latency", latencies, peer=host.name, details=info),
                    ctx.performance("throughput", rates, peer=host.name, details=info),
                ]
        for position, metric in enumerate(("latency", "throughput")):
            judged = [r[position] for r in results.values() if r[position].status != ERROR]
            _flag_outliers(judged, metric, factor)
        for host in peers:
            yield from results[host.name]


def _worse(value: float, middle: float, metric: str, factor: float) -> bool:
    """True when VALUE is FACTOR times worse than MIDDLE (latency: higher is worse)."""
    return value > factor * middle if metric == "latency" else value * factor < middle


def _peer_median(values: list[float]) -> float | None:
    """The median over the peers' figures, the yardstick of an outlier (None: fewer than two, or not > 0)."""
    if len(values) < 2:
        return None
    middle = statistics.median(values)
    return middle if middle > 0 else None


def _suspects(measured: dict[str, tuple[list[float], list[float]]], factor: float) -> list[str]:
    """Peers whose median latency or throughput is an outlier by the rule of ``_flag_outliers``."""
    found: set[str] = set()
    for position, metric in enumerate(("latency", "throughput")):
        values = {name: statistics.median(samples[position]) for name, samples in measured.items()}
        middle = _peer_median(list(values.values()))
        if middle is not None:
            found.update(name for name, value in values.items() if _worse(value, middle, metric, factor))
    return sorted(found)


def _best(
    first: tuple[list[float], list[float]], second: tuple[list[float], list[float]]
) -> tuple[list[float], list[float]]:
    """The lower-median latency samples and the higher-median throughput samples of two measures."""
    latencies = min(first[0], second[0], key=statistics.median)
    rates = max(first[1], second[1], key=statistics.median)
    return latencies, rates


def _flag_outliers(results: list[Result], metric: str, factor: float) -> None:
    """Mark a peer FAIL when its figure is ``factor`` times worse than the median over all peers."""
    middle = _peer_median([r.value for r in results if r.value is not None])
    if middle is None:
        return
    for result in results:
        value = result.value
        if value is None:
            continue
        lower_is_better = metric == "latency"
        worse = _worse(value, middle, metric, factor)
        result.details["median_over_peers"] = middle
        result.details["outlier"] = worse
        if worse:
            sign = ">" if lower_is_better else "<"
            scale = f"{factor:g} x" if lower_is_better else f"1/{factor:g} x"
            why = f"outlier: {metric} {value:.4g} {result.unit} {sign} {scale} median over peers {middle:.4g}"
            result.status = FAIL if result.status == PASS else result.status
            result.reason = f"{result.reason}; {why}" if result.reason else why
