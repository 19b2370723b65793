"""Library versions from package metadata, without importing the (heavy) libraries themselves."""

from __future__ import annotations

import platform
from importlib import metadata

# Key in the report -> distribution names that provide it (first one installed wins).
LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "scipy": ("scipy",),
    "threadpoolctl": ("threadpoolctl",),
    "dask": ("dask",),
    "distributed": ("distributed",),
    "cloudpickle": ("cloudpickle",),
    "msgpack": ("msgpack",),
    "pandas": ("pandas",),
    "pyarrow": ("pyarrow",),
    "pyspark": ("pyspark",),
    "py4j": ("py4j",),
    "celery": ("celery",),
    "kombu": ("kombu",),
    "redis": ("redis",),
    "apache-airflow": ("apache-airflow",),
    "mpi4py": ("mpi4py",),
    "cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"),
    "numba": ("numba",),
    "numba-cuda": ("numba-cuda",),
    "pyopencl": ("pyopencl",),
    "nvidia-ml-py": ("nvidia-ml-py",),
    "luigi": ("luigi",),
}


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str]:
    """``{"python": "3.13.5", "numpy": "2.2.6", ...}`` for every known library that is installed."""
    found = {"python": platform.python_version()}
    for key, dists in LIBRARIES.items():
        for dist in dists:
            version = distribution_version(dist)
            if version is not None:
                found[key] = version
                break
    return found


def pinned_drift(pins: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """Pinned distributions whose installed version differs: ``{lib: {"pinned": .., "installed": ..}}``."""
    drift: dict[str, dict[str, str | None]] = {}
    for lib, pinned in sorted(pins.items()):
        installed = platform.python_version() if lib == "python" else distribution_version(lib)
        if installed != pinned:
            drift[lib] = {"pinned": pinned, "installed": installed}
    return drift
