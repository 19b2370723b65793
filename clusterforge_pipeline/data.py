"""Writing and summarising the seeded files, combining summaries, judging the result (numpy).

Every function here is idempotent and self-contained (no module globals besides imports), because
the Dask back end ships them to the workers by value, and Dask may run a task twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Iterable
from typing import Any

import numpy as np

from .spec import Spec, decode_big, encode_big, expected_totals

# Values per exact sum-of-squares block: 65536 * (2**23)**2 < 2**64 for files up to 64 MiB each;
# larger files use smaller blocks (see _square_block).
_SUMSQ_BLOCK = 65536


def file_values(spec: Spec, index: int) -> np.ndarray:
    """The values of file ``index``: a permutation (seeded by seed and index) of its integer block."""
    n = spec.values_per_file
    rng = np.random.default_rng([spec.seed, index])
    return rng.permutation(n).astype("<u8") + np.uint64(index * n)


def file_name(index: int) -> str:
    return f"part-{index:05d}.u64"


def write_file(spec_dict: dict[str, int], index: int, directory: str) -> dict[str, Any]:
    """Write file ``index`` into ``directory`` (atomically) and describe it."""
    spec = Spec.from_dict(spec_dict)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, file_name(index))
    values = file_values(spec, index)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(values.tobytes())
    os.replace(tmp, path)
    return {
        "index": index,
        "path": path,
        "bytes": os.path.getsize(path),
        "host": socket.gethostname(),
    }


def _square_block(max_value: int) -> int:
    """Values per block such that block * max_value**2 stays below 2**64."""
    if max_value <= 0:
        return _SUMSQ_BLOCK
    return max(1, min(_SUMSQ_BLOCK, (2**64 - 1) // (max_value * max_value)))


def summarize_array(values: np.ndarray) -> dict[str, Any]:
    """count, sum, exact sum of squares, min, max of a uint64 array (Python ints, no overflow)."""
    values = np.asarray(values, dtype="<u8")
    if values.size == 0:
        return {"count": 0, "sum": 0, "sumsq": 0, "min": None, "max": None}
    top = int(values.max())
    block = _square_block(top)
    sumsq = 0
    for start in range(0, values.size, block):
        chunk = values[start : start + block]
        sumsq += int(np.dot(chunk, chunk))
    total = 0
    # The sum itself can exceed 2**64 only for enormous files; add per block to stay exact.
    sum_block = max(1, (2**64 - 1) // max(top, 1))
    for start in range(0, values.size, sum_block):
        total += int(values[start : start + sum_block].sum(dtype=np.uint64))
    return {"count": int(values.size), "sum": total, "sumsq": sumsq, "min": int(values.min()), "max": top}


def summarize_file(spec_dict: dict[str, int], index: int, path: str) -> dict[str, Any]:
    """Summarise one file; regenerate it first when it is missing (a lost worker, a rerun task)."""
    regenerated = False
    if not os.path.exists(path):
        write_file(spec_dict, index, os.path.dirname(path))
        regenerated = True
    with open(path, "rb") as handle:
        raw = handle.read()
    summary = summarize_array(np.frombuffer(raw, dtype="<u8"))
    summary = encode_big(summary)
    summary.update(
        {
            "index": index,
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "host": socket.gethostname(),
            "regenerated": regenerated,
        }
    )
    return summary


def remove_dir(directory: str) -> dict[str, Any]:
    """Remove a run directory of generated files; report what was removed. Every Dask worker process
    runs this, and several may share a host: a file or the directory another one removed first is not
    an error."""
    removed = 0
    if os.path.isdir(directory):
        names: list[str] = []
        with contextlib.suppress(FileNotFoundError):  # the other process removed the directory itself
            names = os.listdir(directory)
        for name in names:
            if name.startswith("part-"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, name))
                    removed += 1
        with contextlib.suppress(OSError):
            os.rmdir(directory)
    return {"host": socket.gethostname(), "removed": removed}


def combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Associative merge of two summaries (the reduction that Spark, or Python, applies)."""
    a, b = decode_big(a), decode_big(b)

    def pick(fn, x, y):
        if x is None:
            return y
        if y is None:
            return x
        return fn(x, y)

    return {
        "files": a.get("files", 1) + b.get("files", 1),
        "count": a["count"] + b["count"],
        "sum": a["sum"] + b["sum"],
        "sumsq": a["sumsq"] + b["sumsq"],
        "min": pick(min, a["min"], b["min"]),
        "max": pick(max, a["max"], b["max"]),
    }


def totals_of(partials: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Reduce per-file summaries locally (the back end used when no Spark cluster exists)."""
    total: dict[str, Any] = {"files": 0, "count": 0, "sum": 0, "sumsq": 0, "min": None, "max": None}
    for part in partials:
        total = combine(total, {**part, "files": 1})
    return encode_big(total)


def expected_digests(spec: Spec) -> dict[str, str]:
    """SHA-256 of every file, regenerated from the seed (what the files must contain)."""
    return {str(j): hashlib.sha256(file_values(spec, j).tobytes()).hexdigest() for j in range(spec.files)}


def judge(spec: Spec, totals: dict[str, Any], digests: dict[str, str]) -> dict[str, Any]:
    """Compare an aggregate and the per-file digests with the known answer."""
    want = expected_totals(spec)
    want_digests = expected_digests(spec)
    try:
        got = decode_big(totals)
    except (TypeError, ValueError):
        got = {}
    problems = [
        f"{key}: expected {want[key]}, observed {got.get(key)}" for key in want if got.get(key) != want[key]
    ]
    bad_files = sorted(
        (k for k in want_digests if digests.get(k) != want_digests[k]),
        key=int,
    )
    if bad_files:
        problems.append(f"file digests differ for file(s) {', '.join(bad_files)}")
    extra = sorted(set(digests) - set(want_digests))
    if extra:
        problems.append(f"unexpected file(s) {', '.join(extra)}")
    return {
        "ok": not problems,
        "problems": problems,
        "expected": encode_big(want),
        "observed": encode_big({key: got.get(key) for key in want}),
        "digests_ok": not bad_files and not extra,
    }
