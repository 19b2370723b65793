"""A scenario's instances by name, for tests that talk from one node to another.

Imported by the scenarios' tests (``sys.path`` gets this directory); not a scenario itself.
"""

from __future__ import annotations

import testinfra


def node(name: str):
    """The testinfra host of instance NAME (podman), commands as root."""
    return testinfra.get_host(f"podman://{name}", sudo=False)


def address(name: str) -> str:
    """NAME's first address (its cluster address in the scenarios)."""
    return node(name).run("hostname -I").stdout.split()[0]
