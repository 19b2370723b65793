"""Who runs where, with which MPI: the data behind mpi.placement and mpi.library."""

from __future__ import annotations

import os
import socket
import sys

from compute_jobs.services.mpi_jobs import emit, loaded_libmpi


def main() -> int:
    import mpi4py
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    record = {
        "rank": comm.rank,
        "size": comm.size,
        "host": MPI.Get_processor_name(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "library": MPI.Get_library_version().strip(),
        "mpi_version": "{}.{}".format(*MPI.Get_version()),
        "mpi4py": mpi4py.__version__,
        "libmpi": loaded_libmpi(),
        "python": sys.executable,
    }
    records = comm.gather(record, root=0)
    if comm.rank == 0:
        emit({"job": "probe", "size": comm.size, "ranks": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
