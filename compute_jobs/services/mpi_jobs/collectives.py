"""Collectives with known answers: Allreduce of rank+1, Bcast, Gather and Alltoall of rank-coded data.

Both mpi4py paths are exercised: buffer (upper-case methods, numpy arrays moved by MPI itself) and
pickle (lower-case methods, Python objects). The payload and checksum helpers below are pure numpy,
so the check computes the expected values without MPI.
"""

from __future__ import annotations

import argparse
import socket

import numpy as np

from compute_jobs.services.mpi_jobs import emit

# A prime modulus keeps the order-sensitive checksum exact in int64 for any size.
MODULUS = 2**31 - 1


def checksum(values: np.ndarray | list[int]) -> int:
    """Order-sensitive checksum: sum of (position + 1) * value, modulo 2**31 - 1."""
    flat = np.asarray(values, dtype=np.int64).ravel() % MODULUS
    weights = np.arange(1, flat.size + 1, dtype=np.int64) % MODULUS
    return int(np.sum((flat * weights) % MODULUS) % MODULUS)


def bcast_payload(elements: int) -> np.ndarray:
    return np.arange(elements, dtype=np.int64) * 7919 + 17


def gather_row(rank: int, elements: int) -> np.ndarray:
    return rank * 1_000_003 + np.arange(elements, dtype=np.int64)


def alltoall_send(rank: int, size: int, elements: int) -> np.ndarray:
    """Row d goes to rank d and encodes (sender, receiver)."""
    codes = (rank * size + np.arange(size, dtype=np.int64)) * 1000
    return codes[:, None] + np.arange(elements, dtype=np.int64)[None, :]


def alltoall_expected(rank: int, size: int, elements: int) -> np.ndarray:
    """What rank ``rank`` must receive: row s came from rank s."""
    codes = (np.arange(size, dtype=np.int64) * size + rank) * 1000
    return codes[:, None] + np.arange(elements, dtype=np.int64)[None, :]


def expected_results(size: int, elements: int) -> dict[str, object]:
    """The record a correct run on ``size`` ranks prints (minus hosts)."""
    total = size * (size + 1) // 2
    bcast = checksum(bcast_payload(elements))
    gather = checksum(np.concatenate([gather_row(r, elements) for r in range(size)]))
    alltoall = [checksum(alltoall_expected(r, size, elements)) for r in range(size)]
    return {
        "allreduce_buffer": [total] * size,
        "allreduce_pickle": [total] * size,
        "bcast_buffer": [bcast] * size,
        "bcast_pickle": [bcast] * size,
        "gather_buffer": gather,
        "gather_pickle": gather,
        "alltoall_buffer": alltoall,
        "alltoall_pickle": alltoall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compute_jobs.services.mpi_jobs.collectives")
    parser.add_argument("--elements", type=int, default=4096, help="elements per payload row")
    args = parser.parse_args(argv)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size, k = comm.rank, comm.size, args.elements

    mine = np.array([rank + 1], dtype=np.int64)
    total = np.zeros(1, dtype=np.int64)
    comm.Allreduce(mine, total, op=MPI.SUM)
    total_pickle = comm.allreduce(rank + 1, op=MPI.SUM)

    payload = bcast_payload(k) if rank == 0 else np.zeros(k, dtype=np.int64)
    comm.Bcast(payload, root=0)
    payload_pickle = comm.bcast(bcast_payload(k).tolist() if rank == 0 else None, root=0)

    gathered = np.zeros((size, k), dtype=np.int64) if rank == 0 else None
    comm.Gather(gather_row(rank, k), gathered, root=0)
    gathered_pickle = comm.gather(gather_row(rank, k).tolist(), root=0)

    received = np.zeros((size, k), dtype=np.int64)
    comm.Alltoall(alltoall_send(rank, size, k), received)
    received_pickle = comm.alltoall(alltoall_send(rank, size, k).tolist())

    mine_record = {
        "host": socket.gethostname(),
        "allreduce_buffer": int(total[0]),
        "allreduce_pickle": int(total_pickle),
        "bcast_buffer": checksum(payload),
        "bcast_pickle": checksum(payload_pickle),
        "alltoall_buffer": checksum(received),
        "alltoall_pickle": checksum(received_pickle),
    }
    rows = comm.gather(mine_record, root=0)
    if rank == 0:
        record: dict[str, object] = {"job": "collectives", "size": size, "elements": k}
        for key in ("allreduce_buffer", "allreduce_pickle", "bcast_buffer", "bcast_pickle"):
            record[key] = [row[key] for row in rows]
        record["alltoall_buffer"] = [row["alltoall_buffer"] for row in rows]
        record["alltoall_pickle"] = [row["alltoall_pickle"] for row in rows]
        record["gather_buffer"] = checksum(gathered)
        record["gather_pickle"] = checksum(gathered_pickle)
        record["hosts"] = [row["host"] for row in rows]
        emit(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
