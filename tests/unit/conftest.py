"""Shared fixtures. compute_jobs fixtures are prefixed ``cj_``."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CJ_SCHEMA_DIR = REPO / "compute_jobs" / "schema"
CJ_HASH = "sha256:" + "ab" * 32


def cj_load_schema(name: str) -> dict[str, Any]:
    return json.loads((CJ_SCHEMA_DIR / name).read_text(encoding="utf-8"))


@pytest.fixture
def cj_token_file(tmp_path: Path) -> Path:
    """A shared netserver token, mode 0600."""
    path = tmp_path / "net.token"
    path.write_text(secrets.token_hex(24) + "\n", encoding="ascii")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def cj_cluster_dict(cj_token_file: Path) -> Callable[..., dict[str, Any]]:
    """Factory: a valid cluster.json document for hosts on 127.0.0.1 (target ``a`` is the head)."""

    def make(hosts: list[dict[str, Any]] | None = None, **top: Any) -> dict[str, Any]:
        if hosts is None:
            hosts = [
                {"name": "a", "address": "127.0.0.1", "groups": ["head"], "cores": 1, "memory_mb": 16},
            ]
        doc: dict[str, Any] = {
            "schema_version": 1,
            "cluster_name": "unit",
            "inventory_hash": CJ_HASH,
            "run_id": "20261121T101500Z-unit",
            "hosts": hosts,
            "net": {"port": 1, "token_file": str(cj_token_file), "bytes": 65536},
        }
        doc.update(top)
        return doc

    return make


@pytest.fixture
def cj_cluster(cj_cluster_dict: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """Factory: a validated Cluster object (same arguments as cj_cluster_dict)."""
    from compute_jobs.cluster import cluster_from_dict

    def make(hosts: list[dict[str, Any]] | None = None, **top: Any) -> Any:
        return cluster_from_dict(cj_cluster_dict(hosts, **top))

    return make


@pytest.fixture
def cj_netservers(cj_token_file: Path) -> Iterator[Callable[[int], list[Any]]]:
    """Factory: start n authenticated netservers on 127.0.0.1 (ephemeral ports), stopped afterwards."""
    from compute_jobs.services.netserver import load_token, start_server

    started: list[Any] = []

    def start(count: int, token: bytes | None = None) -> list[Any]:
        key = token if token is not None else load_token(str(cj_token_file))
        servers = [start_server("127.0.0.1", 0, key) for _ in range(count)]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cj_validator() -> Callable[[str], Any]:
    """Factory: a jsonschema Draft 2020-12 validator for one of compute_jobs/schema/*.json."""
    import jsonschema

    def make(name: str) -> Any:
        schema = cj_load_schema(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        return jsonschema.Draft202012Validator(schema)

    return make


@pytest.fixture(autouse=True)
def cj_own_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    """security.listeners judges the test process's own listening sockets, read from the kernel like
    on a node: the build host's other services are not the unit under test."""
    from compute_jobs.checks import security

    def own() -> list[Any]:
        mine = {
            inode for inode, owner in security.socket_owners().items() if owner.endswith(f"[{os.getpid()}]")
        }
        return [listener for listener in security.read_listeners() if listener.inode in mine]

    monkeypatch.setattr(security, "LISTENERS", own)
