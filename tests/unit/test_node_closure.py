"""The node venv's pins leave nothing to float: the Dask closure files (installed with pip --no-deps)
and the Spark role's packages pin every dependency of every package they list, at a version in range,
per the record of what each package requires (tests/unit/data/closure-py<X.Y>.json, tools/node_closure.py).
On each tested Debian release (its Python: DEBIAN_PYTHON) every pin of the node venv and of the hub's
venv installs, and the node venv as a whole leaves no dependency open or off range."""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from packaging.version import Version
from pathload import load

ROOT = Path(__file__).resolve().parents[2]
node_closure = load("node_closure", ROOT / "tools" / "node_closure.py")

PYTHONS = ("3.11", "3.13")  # Debian 12, Debian 13
# The Python each tested Debian release ships: every pin must install there (Requires-Python).
DEBIAN_PYTHON = {"3.11": "3.11.2", "3.13": "3.13.5"}


def record(python: str) -> dict[str, Any]:
    return json.loads((ROOT / "tests" / "unit" / "data" / f"closure-py{python}.json").read_text())


def hub_record(python: str) -> dict[str, Any]:
    return json.loads((ROOT / "tests" / "unit" / "data" / f"hub-py{python}.json").read_text())


def defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())


def dask_lock(python: str) -> dict[str, str]:
    return node_closure.parse_pins(
        (ROOT / "roles" / "dask" / "files" / f"closure-py{python}.txt").read_text().splitlines()
    )


_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}


def _render(template: str, python_full: str, names: dict[str, str] | None = None) -> str:
    """TEMPLATE as Ansible renders it on a node whose Python is PYTHON_FULL (the facts and the
    ``version`` test a role's per-Python pin uses)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.tests["version"] = lambda value, ref, op="==": _COMPARE[op](Version(str(value)), Version(str(ref)))
    facts = {"ansible_facts": {"python_version": python_full}}
    return env.from_string(template).render({**(names or {}), **facts})


def rendered_pins(role: str, key: str, python_full: str) -> list[str]:
    """The pins of the role default KEY on a node whose Python is PYTHON_FULL: a pin that depends on
    the node's Python names a variable of the role's vars/main.yml (``{{ __common_setuptools_version }}``)."""
    variables = yaml.safe_load((ROOT / "roles" / role / "vars" / "main.yml").read_text()) or {}
    pins = []
    for item in defaults(role)[key]:
        names = {name: _render(variables[name], python_full) for name in re.findall(r"{{\s*(\w+)\s*}}", item)}
        pins.append(_render(item, python_full, names))
    return pins


@pytest.mark.parametrize("python", PYTHONS)
def test_the_dask_closure_pins_every_dependency(python: str) -> None:
    lock = dask_lock(python)
    assert node_closure.unpinned(lock, record(python), DEBIAN_PYTHON[python]) == []
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
    assert node_closure.unpinned(pins, record(python), DEBIAN_PYTHON[python]) == []


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
# The lists of the hub's own venv (jupyter_venv_dir).
HUB_LISTS = (("jupyter", "jupyter_packages"),)


@pytest.mark.parametrize("python", PYTHONS)
def test_pins_shared_with_the_other_roles_of_the_venv_agree(python: str) -> None:
    """One venv: a package pinned by two roles must have one version, or converging them alternates
    (a re-converge of a host with both roles then reports changes)."""
    versions: dict[str, dict[str, str]] = {}
    for name, version in dask_lock(python).items():
        versions.setdefault(name, {})["dask closure"] = version
    for role, key in NODE_VENV_LISTS:
        for name, version in node_closure.parse_pins(rendered_pins(role, key, DEBIAN_PYTHON[python])).items():
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


def node_venv_pins(python: str) -> dict[str, str]:
    """Everything pinned into the node venv on the Debian release of PYTHON: the Dask lock and every
    role's list, rendered for that release's Python."""
    pins = dask_lock(python)
    for role, key in NODE_VENV_LISTS:
        pins.update(node_closure.parse_pins(rendered_pins(role, key, DEBIAN_PYTHON[python])))
    return pins


@pytest.mark.parametrize("python", PYTHONS)
def test_the_node_venv_installs_and_leaves_no_dependency_open_or_off_range(python: str) -> None:
    """One venv, one set of pins: every pin installs on the Python of its Debian release
    (Requires-Python) and every dependency of every pinned package is pinned in its range there
    (Pythran 0.19.0 requires setuptools < 60 on Python 3.11, not on 3.13)."""
    assert node_closure.unpinned(node_venv_pins(python), record(python), DEBIAN_PYTHON[python]) == []


@pytest.mark.parametrize("python", PYTHONS)
def test_the_hub_venv_installs_and_leaves_no_dependency_open_or_off_range(python: str) -> None:
    """Soup Sieve 4.1.3 needs Python 3.11.5; Debian 12 has 3.11.2: the hub pins 2.10 there."""
    pins = node_closure.parse_pins(rendered_pins("jupyter", "jupyter_packages", DEBIAN_PYTHON[python]))
    assert node_closure.unpinned(pins, hub_record(python), DEBIAN_PYTHON[python]) == []


def test_a_pin_beyond_the_python_of_debian_12_is_named() -> None:
    """The per-Python pins are what keep the tests above green: the Debian 13 versions on Debian 12's
    Python are refused, each naming why."""
    pins = {**node_venv_pins("3.11"), "setuptools": "84.2.1"}
    problems = node_closure.unpinned(pins, record("3.11"), DEBIAN_PYTHON["3.11"])
    assert any(p.startswith("pythran==0.19.0 requires setuptools<60") for p in problems), problems
    assert "setuptools==84.2.1: the record has 59.8.0; regenerate it" in problems
    on_13 = {**node_venv_pins("3.13"), "setuptools": "84.2.1"}
    assert node_closure.unpinned(on_13, record("3.13"), DEBIAN_PYTHON["3.13"]) == []
    hub_13 = node_closure.parse_pins(rendered_pins("jupyter", "jupyter_packages", DEBIAN_PYTHON["3.13"]))
    problems = node_closure.unpinned(hub_13, hub_record("3.13"), DEBIAN_PYTHON["3.11"])
    assert "soupsieve==4.1.3 requires Python >=3.11.5, not 3.11.2" in problems, problems


def test_markers_are_evaluated_for_the_release_s_own_python() -> None:
    """redis requires async-timeout on Python < 3.11.3 (``python_full_version`` marker): on Debian 12's
    3.11.2, not on 3.11.5; a bare X.Y is taken as X.Y.0."""
    redis = {"redis": "8.1.0"}

    def needs_async_timeout(python: str) -> bool:
        return any("async-timeout" in p for p in node_closure.unpinned(redis, record("3.11"), python))

    assert needs_async_timeout("3.11.2") and needs_async_timeout("3.11")
    assert not needs_async_timeout("3.11.5")
    with pytest.raises(ValueError, match="expected a Python version"):
        node_closure.unpinned(redis, record("3.11"), "py3.11")
