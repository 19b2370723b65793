"""cluster.json: the inventory as the verify playbook renders it, and its hand-written validator.

The nodes have no jsonschema, so this module validates by hand and names the offending field
(``cluster.json: hosts[1].cores: expected integer >= 1, got "two"``). schema/cluster.schema.json
documents the same contract; a unit test keeps the two in agreement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compute_jobs.engines import validate_section
from compute_jobs.model import describe_value

SCHEMA_VERSION = 1
DEFAULT_NET_BYTES = 8 * 1024 * 1024
HEAD_GROUP = "head"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_ADDRESS_RE = re.compile(r"^\S+$")

_TOP_FIELDS = (
    "schema_version",
    "cluster_name",
    "inventory_hash",
    "run_id",
    "hosts",
    "pinned_libraries",
    "net",
    "engines",
    "params",
)
_TOP_REQUIRED = ("schema_version", "cluster_name", "inventory_hash", "run_id", "hosts")
_HOST_FIELDS = (
    "name",
    "address",
    "groups",
    "cores",
    "memory_mb",
    "gpus",
    "gpu_models",
    "opencl_devices",
    "net_port",
)
_HOST_REQUIRED = ("name", "address", "groups", "cores", "memory_mb")
_NET_FIELDS = ("port", "token_file", "bytes")
_NET_REQUIRED = ("port", "token_file")


class ClusterError(ValueError):
    """cluster.json is unreadable or does not match the contract; the message names every field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" if source else p for p in problems))


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    groups: tuple[str, ...]
    cores: int
    memory_mb: int
    gpus: int = 0
    gpu_models: tuple[str, ...] = ()
    opencl_devices: int = 0
    net_port: int | None = None


@dataclass(frozen=True)
class NetConfig:
    port: int
    token_file: str
    bytes: int = DEFAULT_NET_BYTES


@dataclass(frozen=True)
class Cluster:
    cluster_name: str
    inventory_hash: str
    run_id: str
    hosts: tuple[Host, ...]
    schema_version: int = SCHEMA_VERSION
    pinned_libraries: Mapping[str, str] = field(default_factory=dict)
    net: NetConfig | None = None
    engines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "cluster.json"

    def host(self, name: str) -> Host | None:
        for host in self.hosts:
            if host.name == name:
                return host
        return None

    @property
    def head(self) -> Host:
        """The host that runs cluster-scope checks: the first of group ``head``, else the first host."""
        for host in self.hosts:
            if HEAD_GROUP in host.groups:
                return host
        return self.hosts[0]

    def group(self, group: str) -> list[Host]:
        return [h for h in self.hosts if group in h.groups]

    def net_endpoint(self, host: Host) -> tuple[str, int] | None:
        if self.net is None:
            return None
        return host.address, host.net_port or self.net.port


# --- validation ---------------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, text: str) -> None:
        self.items.append(f"{path}: {text}" if path else text)

    def expect(self, path: str, what: str, value: Any) -> None:
        self.add(path, f"expected {what}, got {describe_value(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_object(
    obj: Any, path: str, known: tuple[str, ...], required: tuple[str, ...], problems: _Problems
) -> bool:
    if not isinstance(obj, dict):
        problems.expect(path, "object", obj)
        return False
    for key in required:
        if key not in obj:
            problems.add(_join(path, key), "required field is missing")
    for key in obj:
        if key not in known:
            problems.add(_join(path, key), "unknown field (known: " + ", ".join(known) + ")")
    return True


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int_field(
    obj: dict, key: str, path: str, minimum: int, maximum: int | None, problems: _Problems
) -> None:
    if key not in obj:
        return
    value = obj[key]
    ok = _is_int(value) and value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        what = f"integer >= {minimum}" if maximum is None else f"integer {minimum}..{maximum}"
        problems.expect(_join(path, key), what, value)


def _str_field(
    obj: dict, key: str, path: str, pattern: re.Pattern[str] | None, what: str, p: _Problems
) -> None:
    if key not in obj:
        return
    value = obj[key]
    if not isinstance(value, str) or not value or (pattern is not None and not pattern.match(value)):
        p.expect(_join(path, key), what, value)


def _str_list(obj: dict, key: str, path: str, problems: _Problems) -> None:
    if key not in obj:
        return
    value = obj[key]
    if not isinstance(value, list):
        problems.expect(_join(path, key), "array of strings", value)
        return
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            problems.expect(f"{_join(path, key)}[{index}]", "non-empty string", item)


def validate_cluster(data: Any) -> list[str]:
    """Return every problem found in a parsed cluster.json (empty list when it is valid)."""
    p = _Problems()
    if not _check_object(data, "", _TOP_FIELDS, _TOP_REQUIRED, p):
        return p.items
    if "schema_version" in data and (not _is_int(data["schema_version"]) or data["schema_version"] != 1):
        p.expect(
            "schema_version",
            f"{SCHEMA_VERSION} (this compute_jobs reads schema version 1)",
            data["schema_version"],
        )
    _str_field(data, "cluster_name", "", _NAME_RE, "name of letters, digits, '.', '_', '-'", p)
    _str_field(data, "inventory_hash", "", _HASH_RE, '"sha256:" followed by 64 lower-case hex digits', p)
    _str_field(data, "run_id", "", _RUN_ID_RE, "run id of letters, digits, '.', '_', ':', '-'", p)
    if "hosts" in data:
        _validate_hosts(data["hosts"], p)
    if "pinned_libraries" in data:
        pins = data["pinned_libraries"]
        if not isinstance(pins, dict):
            p.expect("pinned_libraries", "object of library name -> version string", pins)
        else:
            for lib, version in pins.items():
                if not isinstance(version, str) or not version:
                    p.expect(f"pinned_libraries.{lib}", "version string", version)
    if "net" in data and _check_object(data["net"], "net", _NET_FIELDS, _NET_REQUIRED, p):
        net = data["net"]
        _int_field(net, "port", "net", 1, 65535, p)
        _str_field(net, "token_file", "net", None, "path of the shared token file", p)
        _int_field(net, "bytes", "net", 1, None, p)
    if "engines" in data:
        _validate_engines(data["engines"], p)
    if "params" in data:
        _validate_params_shape(data["params"], p)
    return p.items


def _validate_hosts(hosts: Any, p: _Problems) -> None:
    if not isinstance(hosts, list) or not hosts:
        p.expect("hosts", "non-empty array of host objects", hosts)
        return
    seen: dict[str, int] = {}
    for index, host in enumerate(hosts):
        path = f"hosts[{index}]"
        if not _check_object(host, path, _HOST_FIELDS, _HOST_REQUIRED, p):
            continue
        _str_field(host, "name", path, _NAME_RE, "host name of letters, digits, '.', '_', '-'", p)
        _str_field(host, "address", path, _ADDRESS_RE, "address without spaces", p)
        _str_list(host, "groups", path, p)
        _int_field(host, "cores", path, 1, None, p)
        _int_field(host, "memory_mb", path, 1, None, p)
        _int_field(host, "gpus", path, 0, None, p)
        _str_list(host, "gpu_models", path, p)
        _int_field(host, "opencl_devices", path, 0, None, p)
        _int_field(host, "net_port", path, 1, 65535, p)
        name = host.get("name")
        if isinstance(name, str):
            if name in seen:
                p.add(f"{path}.name", f'duplicate host name "{name}" (also hosts[{seen[name]}])')
            seen.setdefault(name, index)


def _validate_engines(engines: Any, p: _Problems) -> None:
    if not isinstance(engines, dict):
        p.expect("engines", "object of engine name -> settings object", engines)
        return
    for name, settings in engines.items():
        if not _NAME_RE.match(name):
            p.add(f"engines.{name}", "engine name must be letters, digits, '.', '_', '-'")
        for problem in validate_section(name, settings):
            path, _, text = problem.partition(": ")
            p.add(path, text)


def _validate_params_shape(params: Any, p: _Problems) -> None:
    if not isinstance(params, dict):
        p.expect("params", "object of check name -> parameter object", params)
        return
    for check, values in params.items():
        if not isinstance(values, dict):
            p.expect(f"params.{check}", "object of parameter name -> value", values)
            continue
        for key, value in values.items():
            if isinstance(value, dict | list):
                p.expect(f"params.{check}.{key}", "number, string, boolean or null", value)


def cluster_from_dict(data: dict[str, Any], source: str = "cluster.json") -> Cluster:
    problems = validate_cluster(data)
    if problems:
        raise ClusterError(source, problems)
    hosts = tuple(
        Host(
            name=h["name"],
            address=h["address"],
            groups=tuple(h["groups"]),
            cores=h["cores"],
            memory_mb=h["memory_mb"],
            gpus=h.get("gpus", 0),
            gpu_models=tuple(h.get("gpu_models", ())),
            opencl_devices=h.get("opencl_devices", 0),
            net_port=h.get("net_port"),
        )
        for h in data["hosts"]
    )
    net = None
    if "net" in data:
        raw = data["net"]
        net = NetConfig(
            port=raw["port"], token_file=raw["token_file"], bytes=raw.get("bytes", DEFAULT_NET_BYTES)
        )
    return Cluster(
        schema_version=data["schema_version"],
        cluster_name=data["cluster_name"],
        inventory_hash=data["inventory_hash"],
        run_id=data["run_id"],
        hosts=hosts,
        pinned_libraries=dict(data.get("pinned_libraries", {})),
        net=net,
        engines={k: dict(v) for k, v in data.get("engines", {}).items()},
        params={k: dict(v) for k, v in data.get("params", {}).items()},
        source=source,
    )


def load_cluster(path: str) -> Cluster:
    """Read and validate cluster.json; raise ClusterError with a message naming each bad field."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ClusterError(path, [f"cannot read: {exc.strerror or exc}"]) from exc
    except json.JSONDecodeError as exc:
        raise ClusterError(
            path, [f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"]
        ) from exc
    return cluster_from_dict(data, source=path)
