"""Every rank says where it runs: the smallest proof that mpirun reaches all hosts.

    mpirun --hostfile /etc/clusterforge/mpi/hostfile /opt/clusterforge/venv/bin/python \
        -m compute_jobs.services.mpi_jobs.hello
"""

from __future__ import annotations


def main() -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rows = comm.gather((comm.rank, MPI.Get_processor_name()), root=0)
    if comm.rank == 0:
        for rank, host in rows:
            print(f"rank {rank} of {comm.size} on {host}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
