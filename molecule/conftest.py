"""What every scenario's testinfra run shares: tests that belong to one node.

testinfra runs each test that takes `host` once per node of the scenario. A test that is driven
from one node (a client on the head node, a restart the head node watches) is marked
`@pytest.mark.on_host(NAME, reason=...)`: it runs against NAME only and is deselected for the
other nodes, so the report counts it once and shows no SKIP that the inventory does not explain.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "on_host(name, reason): run this testinfra test against the node NAME only (why: reason)"
    )


def _node_of(item: pytest.Item) -> str | None:
    """The node a testinfra item runs against, None for an item that takes no `host`."""
    callspec = getattr(item, "callspec", None)
    host = callspec.params.get("_testinfra_host") if callspec is not None else None
    return host.backend.get_hostname() if host is not None else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    nodes = {_node_of(item) for item in items} - {None}
    kept, deselected = [], []
    for item in items:
        marker = item.get_closest_marker("on_host")
        if marker is None:
            kept.append(item)
            continue
        if len(marker.args) != 1 or not marker.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: on_host takes one node name and a reason")
        node = _node_of(item)
        if node is None:
            raise pytest.UsageError(f"{item.nodeid}: on_host marks a test that takes no testinfra host")
        # A name that is none of the run's nodes would leave the test out everywhere, unseen.
        wanted = marker.args[0]
        if wanted not in nodes:
            known = ", ".join(sorted(nodes))
            raise pytest.UsageError(f"{item.nodeid}: on_host names {wanted}, not one of ({known})")
        (kept if node == wanted else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
