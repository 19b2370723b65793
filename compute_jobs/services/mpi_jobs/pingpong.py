"""Ping-pong matrix: 8-byte latency and large-message bandwidth within each node and between every
pair of nodes, with mpi4py buffer messages (the C program pingpong.c is the reference without Python).

Layout: launch with (up to) two ranks per host. Pairs are the first two ranks of each host (shared
memory) and the first ranks of every two hosts (network). Pairs run one at a time, the other ranks wait
in a barrier, so a measurement never shares the network with another.
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

import numpy as np

from compute_jobs.services.mpi_jobs import emit


def plan_pairs(hosts: list[str]) -> list[dict[str, Any]]:
    """Pairs to measure from the host of every rank (index = rank)."""
    by_host: dict[str, list[int]] = {}
    for rank, host in enumerate(hosts):
        by_host.setdefault(host, []).append(rank)
    pairs = [
        {"kind": "intra", "a": ranks[0], "b": ranks[1], "host_a": host, "host_b": host}
        for host, ranks in by_host.items()
        if len(ranks) >= 2
    ]
    names = list(by_host)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = by_host[first][0], by_host[second][0]
            pairs.append({"kind": "inter", "a": a, "b": b, "host_a": first, "host_b": second})
    return pairs


def polite_barrier(comm: Any, pause: float = 0.0005) -> None:
    """A barrier that sleeps while it waits: idle ranks must not steal the CPU from the measured pair
    (a blocking MPI barrier busy-polls, which on oversubscribed hosts inflates latency 100-fold)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(pause)


def one_way_seconds(comm: Any, peer: int, leader: bool, buf: np.ndarray, iterations: int) -> float:
    """Average one-way time (half a round trip) of ``iterations`` round trips with ``peer``."""
    from mpi4py import MPI

    message = [buf, MPI.BYTE]
    comm.Barrier()  # the pair's own communicator: both start together
    start = MPI.Wtime()
    for _ in range(iterations):
        if leader:
            comm.Send(message, dest=peer, tag=7)
            comm.Recv(message, source=peer, tag=7)
        else:
            comm.Recv(message, source=peer, tag=7)
            comm.Send(message, dest=peer, tag=7)
    return (MPI.Wtime() - start) / (2.0 * iterations)


def measure(
    comm: Any, peer: int, leader: bool, nbytes: int, iterations: int, repeats: int, warmup: int
) -> list[float]:
    buf = np.zeros(nbytes, dtype=np.uint8)
    if warmup:
        one_way_seconds(comm, peer, leader, buf, warmup)
    return [one_way_seconds(comm, peer, leader, buf, iterations) for _ in range(repeats)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compute_jobs.services.mpi_jobs.pingpong")
    parser.add_argument("--latency-bytes", type=int, default=8)
    parser.add_argument("--latency-iterations", type=int, default=500)
    parser.add_argument("--bandwidth-bytes", type=int, nargs="*", default=[1 << 20, 4 << 20])
    parser.add_argument("--bandwidth-iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    hosts = world.allgather(MPI.Get_processor_name())
    pairs = plan_pairs(hosts)
    mine: list[dict[str, Any]] = []
    for index, pair in enumerate(pairs):
        member = world.rank in (pair["a"], pair["b"])
        # A two-rank communicator per pair: the others skip it entirely instead of spinning.
        comm = world.Split(0 if member else MPI.UNDEFINED, key=0 if world.rank == pair["a"] else 1)
        if member:
            leader = world.rank == pair["a"]
            latency = measure(
                comm,
                1 - comm.rank,
                leader,
                args.latency_bytes,
                args.latency_iterations,
                args.repeats,
                warmup=max(10, args.latency_iterations // 10),
            )
            bandwidth = {}
            for nbytes in args.bandwidth_bytes:
                seconds = measure(
                    comm, 1 - comm.rank, leader, nbytes, args.bandwidth_iterations, args.repeats, warmup=2
                )
                bandwidth[str(nbytes)] = [nbytes / s / 1e6 for s in seconds]
            if leader:
                mine.append(
                    {
                        **pair,
                        "index": index,
                        "latency_us": [s * 1e6 for s in latency],
                        "bandwidth_mbs": bandwidth,
                    }
                )
            comm.Free()
        polite_barrier(world)
    gathered = world.gather(mine, root=0)
    if world.rank == 0:
        rows = sorted((row for part in gathered for row in part), key=lambda row: row["index"])
        emit(
            {
                "job": "pingpong",
                "size": world.size,
                "hosts": hosts,
                "latency_bytes": args.latency_bytes,
                "host": socket.gethostname(),
                "pairs": rows,
            }
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
