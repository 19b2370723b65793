"""Programs launched under ``mpirun`` by the mpi checks (and usable by hand, see docs/mpi.md).

Each job is a module run as ``mpirun ... <venv python> -m compute_jobs.services.mpi_jobs.<job> [args]``.
Rank 0 prints exactly one line ``CFJSON {...}`` with what the job observed; everything else on stdout
and stderr is diagnostics. A launch that went wrong (an ``mpirun`` from another MPI, no launcher) starts
N singletons that each print their own ``CFJSON`` line with ``"size": 1``: the checks count the lines.
mpi4py is imported inside ``main`` so that the payload helpers stay importable without it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MARKER = "CFJSON "


def emit(record: dict[str, Any]) -> None:
    """Print the job's one result line (rank 0 only)."""
    sys.stdout.write(MARKER + json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_output(text: str) -> list[dict[str, Any]]:
    """Every ``CFJSON`` record in a job's standard output, in order."""
    records = []
    for line in text.splitlines():
        if line.startswith(MARKER):
            records.append(json.loads(line[len(MARKER) :]))
    return records


def loaded_libmpi() -> str | None:
    """Path of the libmpi shared object mapped into this process (None if none is loaded)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "/libmpi.so" in line})
    except OSError:
        return None
    return paths[0] if paths else None
