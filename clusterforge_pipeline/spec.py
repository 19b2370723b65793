"""Pipeline specification, node configuration and closed-form answers (standard library only).

Data set: ``files`` files of ``mib`` MiB each, little-endian uint64 values. File ``j`` holds a seeded
permutation of the integers ``[j*N, (j+1)*N)`` with ``N = mib * 2**20 / 8`` values per file, so that
over all ``M = files * N`` values:

- count = M, min = 0, max = M - 1,
- sum = M(M-1)/2, sum of squares = (M-1)M(2M-1)/6 (exact integers),
- each file's SHA-256 depends on the seed and on the order of its values.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

VALUE_BYTES = 8
MIB = 1 << 20
DEFAULT_CONFIG = "/etc/clusterforge/pipeline.json"
_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


class SpecError(ValueError):
    """A pipeline specification or configuration does not fit the contract; the message says which field."""


@dataclass(frozen=True)
class Spec:
    """What one pipeline run computes on."""

    files: int = 8
    mib: int = 8
    seed: int = 20261121

    def __post_init__(self) -> None:
        for name, low, high in (("files", 1, 4096), ("mib", 1, 4096), ("seed", 0, 2**32 - 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise SpecError(f"pipeline spec: {name} must be an integer in [{low}, {high}], got {value!r}")

    @property
    def values_per_file(self) -> int:
        return self.mib * MIB // VALUE_BYTES

    @property
    def total_values(self) -> int:
        return self.files * self.values_per_file

    @property
    def total_bytes(self) -> int:
        return self.files * self.mib * MIB

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Spec:
        if not isinstance(data, dict):
            raise SpecError(f"pipeline spec: expected an object, got {data!r}")
        unknown = set(data) - {"files", "mib", "seed"}
        if unknown:
            raise SpecError(
                f"pipeline spec: unknown field(s) {', '.join(sorted(unknown))} (known: files, mib, seed)"
            )
        return cls(**data)


# Integers that outgrow 64 bits (sum of squares) or JavaScript's 2**53 (sums) travel as decimal strings
# between steps, in XComs and in results: Airflow's XCom serialisation rejects ints beyond 64 bits.
BIG_FIELDS = ("sum", "sumsq")


def encode_big(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with the big integer fields as decimal strings."""
    return {k: (str(v) if k in BIG_FIELDS and v is not None else v) for k, v in record.items()}


def decode_big(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with the big integer fields as Python ints."""
    return {k: (int(v) if k in BIG_FIELDS and v is not None else v) for k, v in record.items()}


def expected_totals(spec: Spec) -> dict[str, int]:
    """The aggregate over every file, from the closed forms (no data is generated)."""
    m = spec.total_values
    return {
        "files": spec.files,
        "count": m,
        "sum": m * (m - 1) // 2,
        "sumsq": (m - 1) * m * (2 * m - 1) // 6,
        "min": 0,
        "max": m - 1,
    }


def check_run_id(run_id: str) -> str:
    """Run ids name directories on the nodes: letters, digits and ``._:+-`` only."""
    if not isinstance(run_id, str) or not _RUN_RE.match(run_id) or ".." in run_id:
        raise SpecError(f"pipeline run id {run_id!r}: use 1-128 letters, digits, '.', '_', ':', '+', '-'")
    return run_id


def safe_name(run_id: str) -> str:
    """A file-system name for a run id (``:`` and ``+`` are legal in Airflow run ids, awkward in paths)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", check_run_id(run_id))


# --- fan-out / fan-in verification ------------------------------------------------------------


def split_ranges(n: int, k: int) -> list[tuple[int, int]]:
    """``[0, n)`` as ``k`` contiguous half-open ranges whose sizes differ by at most one."""
    if not isinstance(n, int) or not isinstance(k, int) or n < 0 or k < 1:
        raise SpecError(f"split_ranges: need integers n >= 0 and k >= 1, got n={n!r} k={k!r}")
    base, extra = divmod(n, k)
    out, low = [], 0
    for i in range(k):
        high = low + base + (1 if i < extra else 0)
        out.append((low, high))
        low = high
    return out


# The fan-out DAG's partial sums write "<marker> [low, high) = sum" into their task logs.
FANOUT_LOG_MARKER = "clusterforge partial_sum"


def range_sum(low: int, high: int) -> int:
    """Sum of the integers in ``[low, high)``, in closed form."""
    return (high - low) * (low + high - 1) // 2 if high > low else 0


def fanout_total(n: int) -> int:
    """The known answer of the fan-out DAG: sum of i for i in [0, n) = n(n-1)/2."""
    return n * (n - 1) // 2


# --- node configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeConfig:
    """``/etc/clusterforge/pipeline.json`` as the airflow and luigi roles write it on each node.

    ``dask`` / ``spark`` are null when the cluster has no such engine: the step then runs locally, by
    design and visibly (the results name the back end). When they are set and the engine cannot be
    reached, the step fails: it never falls back silently.
    """

    python: str
    pythonpath: str
    work_dir: str
    dask: dict[str, Any] | None = None
    spark: dict[str, Any] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str = DEFAULT_CONFIG) -> NodeConfig:
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected an object")
        for key in ("python", "pythonpath", "work_dir"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise SpecError(f"{source}: {key} must be a non-empty string")
        for key in ("dask", "spark"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise SpecError(f"{source}: {key} must be an object or null")
        env = data.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise SpecError(f"{source}: env must be an object of strings")
        return cls(
            python=data["python"],
            pythonpath=data["pythonpath"],
            work_dir=data["work_dir"],
            dask=data.get("dask"),
            spark=data.get("spark"),
            env=dict(env),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def backends(self) -> dict[str, str]:
        return {
            "generate": "dask" if self.dask else "local",
            "process": "dask" if self.dask else "local",
            "aggregate": "spark" if self.spark else "local",
        }


CONFIG_JSON_ENV = "CLUSTERFORGE_PIPELINE_CONFIG_JSON"


def load_config(path: str | None = None) -> NodeConfig:
    """The node configuration: the orchestrator's own (``$CLUSTERFORGE_PIPELINE_CONFIG_JSON``, set for
    the step subprocesses it starts), else the file ``path``, ``$CLUSTERFORGE_PIPELINE_CONFIG`` or the
    default path."""
    inline = os.environ.get(CONFIG_JSON_ENV)
    if inline and not path:
        try:
            return NodeConfig.from_dict(json.loads(inline), f"${CONFIG_JSON_ENV}")
        except json.JSONDecodeError as exc:
            raise SpecError(f"${CONFIG_JSON_ENV}: not valid JSON: {exc}") from exc
    path = path or os.environ.get("CLUSTERFORGE_PIPELINE_CONFIG") or DEFAULT_CONFIG
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise SpecError(
            f"{path}: cannot read the pipeline configuration ({exc.strerror or exc}); "
            "converge the airflow or luigi tier on this node"
        ) from exc
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON: {exc}") from exc
    return NodeConfig.from_dict(data, path)
