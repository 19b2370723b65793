"""MPI-IO on COMM_WORLD over one file in the shared data directory: every rank writes its block with a
collective write, then reads its neighbour's block with a collective read; rank 0 also reads the whole
file back and hashes it. Without a filesystem shared by all hosts this cannot pass (and, with some MPI-IO
drivers, hangs: the check runs it under a timeout).

    mpirun --hostfile /etc/clusterforge/mpi/hostfile /opt/clusterforge/venv/bin/python \
        -m compute_jobs.services.mpi_jobs.fileio /shared/data/io-test.dat 1048576
"""

from __future__ import annotations

import hashlib
import sys

from compute_jobs.services.mpi_jobs import emit


def block_of(rank: int, block: int) -> bytes:
    """The bytes rank ``rank`` writes: its number repeated, so every block differs."""
    unit = f"rank {rank:08d};".encode()
    return (unit * (block // len(unit) + 1))[:block]


def expected_sha256(size: int, block: int) -> str:
    """sha256 of the whole file a world of ``size`` ranks writes."""
    digest = hashlib.sha256()
    for rank in range(size):
        digest.update(block_of(rank, block))
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    from mpi4py import MPI

    path, block = argv[0], int(argv[1])
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    start = MPI.Wtime()
    handle = MPI.File.Open(comm, path, MPI.MODE_CREATE | MPI.MODE_WRONLY)
    handle.Write_at_all(rank * block, block_of(rank, block))
    handle.Close()
    comm.Barrier()
    wrote = MPI.Wtime()
    peer = (rank + 1) % size
    neighbour = bytearray(block)
    handle = MPI.File.Open(comm, path, MPI.MODE_RDONLY)
    handle.Read_at_all(peer * block, neighbour)
    whole = bytearray(size * block) if rank == 0 else None
    if whole is not None:
        handle.Read_at(0, whole)
    handle.Close()
    comm.Barrier()
    read = MPI.Wtime()
    rows = comm.gather((rank, MPI.Get_processor_name(), bytes(neighbour) == block_of(peer, block)), root=0)
    if rank == 0:
        assert whole is not None and rows is not None
        emit(
            {
                "job": "fileio",
                "size": size,
                "block": block,
                "ranks": [{"rank": r, "host": h, "neighbour_ok": ok} for r, h, ok in rows],
                "sha256": hashlib.sha256(whole).hexdigest(),
                "write_s": wrote - start,
                "read_s": read - wrote,
            }
        )
        MPI.File.Delete(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
