"""The node venv's pins leave nothing to float: the Dask closure files (installed with pip --no-deps)
and the Spark role's packages pin every dependency of every package they list, at a version in range,
per the record of what each package requires (tests/unit/data/closure-py<X.Y>.json, tools/node_closure.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("node_closure", ROOT / "tools" / "node_closure.py")
assert spec is not None and spec.loader is not None
node_closure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node_closure)

PYTHONS = ("3.11", "3.13")  # Debian 12, Debian 13


def record(python: str) -> dict[str, Any]:
    return json.loads((ROOT / "tests" / "unit" / "data" / f"closure-py{python}.json").read_text())


def defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())


def dask_lock(python: str) -> dict[str, str]:
    return node_closure.parse_pins(
        (ROOT / "roles" / "dask" / "files" / f"closure-py{python}.txt").read_text().splitlines()
    )


@pytest.mark.parametrize("python", PYTHONS)
def test_the_dask_closure_pins_every_dependency(python: str) -> None:
    lock = dask_lock(python)
    assert node_closure.unpinned(lock, record(python), python) == []
    top = node_closure.parse_pins(defaults("dask")["dask_packages"])
    assert {name: lock.get(name) for name in top} == top, "every dask_packages pin is in the closure file"
    assert {
        "s3fs",
        "aiobotocore",
        "botocore",
        "aiohttp",
        "fsspec",
        "partd",
        "zict",
        "toolz",
        "cloudpickle",
    } <= set(lock)


@pytest.mark.parametrize("python", PYTHONS)
def test_the_spark_packages_pin_every_dependency(python: str) -> None:
    pins = node_closure.parse_pins(defaults("spark")["spark_packages"])
    assert "py4j" in pins
    assert node_closure.unpinned(pins, record(python), python) == []


# Every package list a role installs into the node venv (cluster_venv_dir); the jupyter kernel's goes
# there too. Pins of the GPU stack (cuda role) depend on the CUDA major version and are kept apart.
NODE_VENV_LISTS = (
    ("common", "common_venv_packages"),
    ("common", "common_toolbox_packages"),
    ("celery", "celery_pip_packages"),
    ("spark", "spark_packages"),
    ("opencl", "opencl_python_packages"),
    ("jupyter", "jupyter_kernel_packages"),
)


@pytest.mark.parametrize("python", PYTHONS)
def test_pins_shared_with_the_other_roles_of_the_venv_agree(python: str) -> None:
    """One venv: a package pinned by two roles must have one version, or converging them alternates
    (a re-converge of a host with both roles then reports changes)."""
    versions: dict[str, dict[str, str]] = {}
    for name, version in dask_lock(python).items():
        versions.setdefault(name, {})["dask closure"] = version
    for role, key in NODE_VENV_LISTS:
        for name, version in node_closure.parse_pins(defaults(role)[key]).items():
            versions.setdefault(name, {})[role] = version
    disagree = {name: by for name, by in versions.items() if len(set(by.values())) > 1}
    assert disagree == {}


def test_an_unpinned_or_off_range_dependency_is_named() -> None:
    lock = dask_lock("3.13")
    without = {name: version for name, version in lock.items() if name != "aiohttp"}
    problems = node_closure.unpinned(without, record("3.13"), "3.13")
    assert any(p.startswith("aiobotocore==") and "aiohttp" in p and "not pinned" in p for p in problems), (
        problems
    )
    off = {**lock, "fsspec": "2021.1.0"}
    problems = node_closure.unpinned(off, record("3.13"), "3.13")
    assert any("s3fs==2026.9.0 requires fsspec" in p and "pinned fsspec==2021.1.0" in p for p in problems), (
        problems
    )
    problems = node_closure.unpinned({**lock, "dask": "2020.1.0"}, record("3.13"), "3.13")
    assert "dask==2020.1.0: the record has 2026.8.0; regenerate it" in problems
