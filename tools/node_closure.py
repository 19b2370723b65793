"""The pinned closures of the node venv: record what each package requires, and find what floats.

The Dask role installs ``roles/dask/files/closure-py<X.Y>.txt`` with ``pip --no-deps`` (a complete
lock, like Airflow's constraints files) and the Spark role pins its packages by name; a package whose
dependency is not pinned beside it would float to whatever the index serves that day. This module
keeps a record of what every pinned package requires (name, version, Requires-Dist, Requires-Python)
per Python version, ``tests/unit/data/closure-py<X.Y>.json`` for the node venv (every role's list and
the Dask lock) and ``hub-py<X.Y>.json`` for JupyterHub's own venv, and ``unpinned`` lists the
dependencies a set of pins leaves open and the pins whose Requires-Python excludes the Python of
their Debian release (the unit test fails on any).

A record is made on a node of that release, from every pin of the venv (the roles' lists as they
render there): ``python3 -m venv /tmp/rv; /tmp/rv/bin/pip install --dry-run --ignore-installed
--no-deps --report REPORT.json -r PINS.txt``, then ``record`` below.

    python tools/node_closure.py record REPORT.json OUT.json
        the record from ``pip install --dry-run --ignore-installed --report REPORT.json ...``
    python tools/node_closure.py freeze OUT.json
        the record of the Python running it (on a node: ``/opt/clusterforge/venv/bin/python``)
    python tools/node_closure.py lock RECORD.json NAME...
        pip requirement lines of the closure of NAME... in RECORD (the lock file's body)

Standard library only, plus ``packaging`` for ``unpinned`` and ``lock`` (the controller venv has it).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Record = dict[str, dict[str, Any]]


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def from_report(report: Mapping[str, Any]) -> Record:
    """The record of the packages of a pip installation report."""
    record: Record = {}
    for item in report["install"]:
        meta = item["metadata"]
        record[canonical(meta["name"])] = {
            "version": meta["version"],
            "requires_dist": list(meta.get("requires_dist") or []),
            "requires_python": meta.get("requires_python") or "",
        }
    return dict(sorted(record.items()))


def from_environment() -> Record:
    """The record of the distributions installed in the running Python."""
    from importlib import metadata

    record: Record = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            record[canonical(name)] = {
                "version": dist.version,
                "requires_dist": list(dist.requires or []),
                "requires_python": dist.metadata["Requires-Python"] or "",
            }
    return dict(sorted(record.items()))


def parse_pins(lines: Iterable[str]) -> dict[str, str]:
    """name -> version of ``name==version`` lines (comments and blank lines ignored)."""
    pins: dict[str, str] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version:
            raise ValueError(f"{raw.strip()!r}: expected name==version")
        pins[canonical(name.split("[", 1)[0])] = version.strip()
    return pins


def full_version(python: str) -> str:
    """PYTHON as a release's full version: ``3.11.2`` stays, ``3.13`` is taken as ``3.13.0``."""
    parts = python.split(".")
    if len(parts) not in (2, 3) or not all(part.isdigit() for part in parts):
        raise ValueError(f"{python!r}: expected a Python version X.Y or X.Y.Z")
    return python if len(parts) == 3 else f"{python}.0"


def requirements(record: Record, name: str, python: str) -> list[Any]:
    """The Requires-Dist of NAME that apply on Linux x86_64 with Python PYTHON (``3.11.2``; ``3.13``
    means 3.13.0) and no extras."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    full = full_version(python)
    env = {
        **default_environment(),
        "python_version": ".".join(full.split(".")[:2]),
        "python_full_version": full,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    out = []
    for line in record[name]["requires_dist"]:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(env):
            out.append(requirement)
    return out


def unpinned(pins: Mapping[str, str], record: Record, python: str) -> list[str]:
    """What the PINS leave open on Python PYTHON (a release's full version, ``3.11.2``): packages
    without a record, packages whose Requires-Python excludes it, and dependencies unpinned or
    off-range."""
    from packaging.specifiers import SpecifierSet

    full = full_version(python)
    problems: list[str] = []
    for name, version in sorted(pins.items()):
        if name not in record:
            problems.append(f"{name}=={version}: not in the record; regenerate it (tools/node_closure.py)")
            continue
        if record[name]["version"] != version:
            problems.append(f"{name}=={version}: the record has {record[name]['version']}; regenerate it")
            continue
        needs = record[name].get("requires_python") or ""
        if not SpecifierSet(needs).contains(full, prereleases=True):
            problems.append(f"{name}=={version} requires Python {needs}, not {full}")
        for requirement in requirements(record, name, python):
            dep = canonical(requirement.name)
            if dep not in pins:
                problems.append(f"{name}=={version} requires {requirement}, which is not pinned")
            elif not requirement.specifier.contains(pins[dep], prereleases=True):
                problems.append(f"{name}=={version} requires {requirement}, pinned {dep}=={pins[dep]}")
    return problems


def closure(record: Record, names: Iterable[str], python: str) -> dict[str, str]:
    """name -> version of NAMES and everything they require, transitively, per RECORD."""
    todo = [canonical(n) for n in names]
    seen: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = record[name]["version"]
        todo += [canonical(r.name) for r in requirements(record, name, python)]
    return dict(sorted(seen.items()))


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "record":
        record = from_report(json.loads(Path(argv[1]).read_text(encoding="utf-8")))
    elif len(argv) == 2 and argv[0] == "freeze":
        record = from_environment()
    elif len(argv) >= 3 and argv[0] == "lock":
        record = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        python = re.search(r"py(\d+\.\d+)", argv[1])
        if python is None:
            print(f"{argv[1]}: the record's name must carry its Python version (closure-py3.13.json)")
            return 2
        for name, version in closure(record, argv[2:], python.group(1)).items():
            print(f"{name}=={version}")
        return 0
    else:
        print(__doc__)
        return 2
    Path(argv[-1]).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
