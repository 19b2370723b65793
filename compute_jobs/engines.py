"""The engine sections of cluster.json, typed once: what each engine role publishes, what its checks read.

Each section is a dataclass below; :data:`SECTIONS` maps the engine name to it. ``cluster.json`` is
validated against them when it loads (:func:`validate_section`), and the ``engines`` part of
``schema/cluster.schema.json`` is generated from them (``python -m compute_jobs.engines``; a unit
test fails when the file drifts). Every field is optional (a check that needs one says so, through
``engine_keys`` or a CheckError); fields a section does not declare are refused, so that a role and
the checks cannot drift apart silently. Any engine may instead be ``{"unavailable": why}``: the
inventory declares it but its hosts did not publish it (its checks FAIL). An engine without a type
here (a new one) is accepted as an object of any fields until it gets one.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from compute_jobs.model import CheckError, SkipCheck, describe_value

Workers = Union[list[str], int]  # noqa: UP007 (a runtime alias the validator reads)


@dataclass(frozen=True)
class DaskWorker:
    """One worker host: its nanny-managed processes and what each gets."""

    address: str = ""
    nworkers: int = 1
    nthreads: int = 1
    memory_limit: int = 0  # bytes per worker process


@dataclass(frozen=True)
class Dask:
    endpoint: str = ""  # scheduler address, tls://host:8786
    config_dir: str = ""  # the client's DASK_CONFIG directory (TLS material, scheduler address)
    ca_file: str = ""  # CA of the scheduler's and workers' certificates (TLS only)
    dashboard: str = ""
    expected_workers: Workers = field(default_factory=list)
    workers: dict[str, DaskWorker] = field(default_factory=dict)


@dataclass(frozen=True)
class SparkWorker:
    address: str = ""
    cores: int = 1
    memory_mb: int = 0


@dataclass(frozen=True)
class Spark:
    endpoint: str = ""  # master URL, spark://host:7077
    master_webui: str = ""  # https://host:8080, behind the authenticating web gateway
    webui_credentials: str = ""  # file holding user:password of the web UI gateway
    conf_dir: str = ""  # SPARK_CONF_DIR of the driver
    python: str = ""  # executors' Python
    expected_workers: Workers = field(default_factory=list)
    workers: dict[str, SparkWorker] = field(default_factory=dict)
    # Cores the master grants an application that does not set spark.cores.max (0: every free core).
    app_default_cores: int = 0


@dataclass(frozen=True)
class Mpi:
    hostfile: str = ""
    slots: dict[str, int] = field(default_factory=dict)  # host -> ranks
    mpirun: str = ""
    python: str = ""
    pingpong: str = ""  # the C latency reference
    mca: dict[str, str] = field(default_factory=dict)  # extra --mca for every launch


@dataclass(frozen=True)
class Celery:
    config: str = ""  # client configuration (broker URL with its password)
    workers: dict[str, int] = field(default_factory=dict)  # host -> concurrency
    flower_url: str = ""
    broker: dict[str, Any] = field(default_factory=dict)
    worker_queue_prefix: str = ""
    shared_queue: str = ""


@dataclass(frozen=True)
class Airflow:
    endpoint: str = ""
    ca_file: str = ""  # CA certificate of the API server's certificate (an https endpoint)
    credentials_file: str = ""
    executor: str = ""
    expected_workers: Workers = field(default_factory=list)
    fanout_dag: str = ""
    pipeline_dag: str = ""
    pipeline_backends: dict[str, str] = field(default_factory=dict)
    pipeline_workers: list[str] = field(default_factory=list)
    server_host: str = ""
    restart_commands: dict[str, list[str]] = field(default_factory=dict)
    # The systemd unit each restart command restarts (its stop time is read after the restart).
    restart_units: dict[str, str] = field(default_factory=dict)
    # Port of the Celery workers' log servers, on their cluster addresses (0: none, LocalExecutor).
    log_server_port: int = 0
    # Whether they serve HTTPS (certificates from the cluster CA, ca_file) or plain HTTP.
    log_server_tls: bool = False


@dataclass(frozen=True)
class Luigi:
    endpoint: str = ""
    client_config: str = ""
    ca_file: str = ""  # CA certificate of the proxy's certificate (an https endpoint)
    pipeline_config: str = ""
    python: str = ""
    pipeline_backends: dict[str, str] = field(default_factory=dict)
    pipeline_workers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GpuHost:
    driver_version: str = ""
    cuda_version: str = ""
    memory_mib: int = 0


@dataclass(frozen=True)
class Gpu:
    """What gpu.inventory compares besides hosts[].gpus and gpu_models ("" and 0: not declared)."""

    driver_version: str = ""
    cuda_version: str = ""
    memory_mib: int = 0
    hosts: dict[str, GpuHost] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenclHost:
    platforms: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Opencl:
    platforms: list[str] = field(default_factory=list)
    hosts: dict[str, OpenclHost] = field(default_factory=dict)


@dataclass(frozen=True)
class Storage:
    backend: str = ""  # nfs or sshfs
    server: str = ""  # the storage server (it bind-mounts its own trees)
    data_dir: str = ""
    home_dir: str = ""  # parent of the shared homes <home_dir>/<account>
    accounts: list[str] = field(default_factory=list)
    service_user: str = ""


@dataclass(frozen=True)
class S3:
    """The cluster's S3 bucket, as the nodes reach it ("" bucket: none is declared)."""

    bucket: str = ""
    prefix: str = ""  # key prefix the nodes may use, ending in "/" ("" for the whole bucket)
    region: str = ""
    endpoint_url: str = ""  # an S3-compatible endpoint instead of AWS ("" for AWS)


@dataclass(frozen=True)
class Jupyter:
    """JupyterHub as the check reaches it, and what a user's server gets."""

    url: str = ""  # https://host:8000, the hub's front door
    ca_file: str = ""  # CA certificate that signed the hub's certificate
    credentials_file: str = ""  # the check account's {"user", "password"} (0600, the service account's)
    kernel: str = ""  # kernel spec name of the notebooks (clusterforge)
    notebooks: list[str] = field(default_factory=list)  # notebook file names
    notebooks_dir: str = ""  # where they are in a user's home, relative to it
    cpu_quota_percent: int = 0  # CPUQuota of a user's server
    memory_limit: str = ""  # MemoryMax of a user's server (systemd syntax, 2G)
    shared_homes: bool = False  # the accounts' homes are on the share: the same home on every node


@dataclass(frozen=True)
class MonitoringJob:
    """One scrape job: its targets; for an engine, the workers it must count and its alert; its health."""

    targets: dict[str, str] = field(default_factory=dict)  # node -> host:port
    workers: int = 0  # workers the inventory declares (0: not an engine job)
    workers_query: str = ""  # PromQL that counts the engine's live workers
    alert: str = ""  # the alert that fires when workers_query stays below workers
    # A service exporter's health: name -> PromQL that must answer 1 (the exporter reaches its service).
    health: dict[str, str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)  # the job's other alert rules
    # How Prometheus logs in: "certificate" (the exporter demands a client certificate of the
    # cluster CA: a door of its own) or "password" (through the engine's HTTPS gateway).
    auth: str = ""
    # node -> the cluster addresses that target's host firewall lets open the exporter's port (the
    # Prometheus host and the head node); a node not named lets every member open it.
    clients: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Monitoring:
    """Prometheus as the checks reach it (through its HTTPS gateway), what it scrapes, and the alert drill."""

    url: str = ""  # https://host:9090
    ca_file: str = ""
    credentials_file: str = ""  # user:password of the gateway (the service account's group may read it)
    scrape_interval: str = ""  # Prometheus durations: 15s, 1m
    evaluation_interval: str = ""
    alert_for: str = ""
    jobs: dict[str, MonitoringJob] = field(default_factory=dict)
    # The worker-count alert drill: {alert, host, unit, stop: [argv], start: [argv]} ({}: none).
    drill: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mpmanager:
    """The multiprocessing Managers cluster: its server, the client settings, the worker processes."""

    address: str = ""  # host:port of the BaseManager server (cluster address of the head node)
    config: str = ""  # client settings on the head node (compute_jobs.services.mpmanager)
    processes: dict[str, int] = field(default_factory=dict)  # worker host -> worker processes


@dataclass(frozen=True)
class PackageCache:
    """The cluster's Python package cache (role package_cache): a caching proxy of the package index
    behind an authenticating HTTPS gateway on the cache host."""

    index_url: str = ""  # https://host:3143/simple/ (PEP 503), what the nodes' pip.conf names
    ca_file: str = ""  # CA of the gateway's certificate (the cluster CA)
    credentials_file: str = ""  # user:password of the gateway (the verification account's group may read it)


SECTIONS: dict[str, type] = {
    "dask": Dask,
    "spark": Spark,
    "mpi": Mpi,
    "celery": Celery,
    "airflow": Airflow,
    "luigi": Luigi,
    "storage": Storage,
    "gpu": Gpu,
    "opencl": Opencl,
    "s3": S3,
    "jupyter": Jupyter,
    "monitoring": Monitoring,
    "mpmanager": Mpmanager,
    "package_cache": PackageCache,
}


# --- validation ---------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=vars(sys.modules[__name__]))


def _describe(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "object (" + ", ".join(f.name for f in dataclasses.fields(tp)) + ")"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"array of {_describe(typing.get_args(tp)[0])}s"
    if origin is dict:
        return f"object of name -> {_describe(typing.get_args(tp)[1])}"
    return {str: "string", int: "integer", bool: "boolean", Any: "any value"}.get(tp, str(tp))


def _got(value: Any) -> str:
    return "got " + (describe_value(value) if not isinstance(value, list | dict) else json.dumps(value)[:60])


def _problems(tp: Any, value: Any, path: str) -> list[str]:
    """How VALUE at PATH differs from the type TP (empty: it matches)."""
    if tp is Any:
        return []
    if dataclasses.is_dataclass(tp):
        return validate_object(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [_problems(a, value, path) for a in typing.get_args(tp)]
        return [] if any(not p for p in options) else [f"{path}: expected {_describe(tp)}, {_got(value)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected {_describe(tp)}, {_got(value)}"]
        (item,) = typing.get_args(tp)
        return [p for i, v in enumerate(value) for p in _problems(item, v, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, Mapping):
            return [f"{path}: expected {_describe(tp)}, {_got(value)}"]
        _, item = typing.get_args(tp)
        return [p for k, v in value.items() for p in _problems(item, v, f"{path}.{k}")]
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if tp is int and ok and value < 0:
        return [f"{path}: expected an integer >= 0, got {value}"]
    return [] if ok else [f"{path}: expected {_describe(tp)}, {_got(value)}"]


def validate_object(cls: type, value: Any, path: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{path}: expected object, {_got(value)}"]
    hints = _hints(cls)
    problems = [
        f"{path}.{key}: not a field of {path} (fields: {', '.join(hints)})"
        for key in value
        if key not in hints
    ]
    for key, tp in hints.items():
        if key in value and value[key] is not None:
            problems += _problems(tp, value[key], f"{path}.{key}")
    return problems


def validate_section(name: str, value: Any) -> list[str]:
    """Problems of engines.NAME: a typed section, {"unavailable": why}, or any object if untyped."""
    path = f"engines.{name}"
    if not isinstance(value, Mapping):
        return [f"{path}: expected object, {_got(value)}"]
    if "unavailable" in value:
        why = value["unavailable"]
        if not isinstance(why, str) or not why:
            return [f"{path}.unavailable: expected a non-empty string"]
        extra = sorted(set(value) - {"unavailable"})
        return [f"{path}: an unavailable engine has no other fields ({', '.join(extra)})"] if extra else []
    cls = SECTIONS.get(name)
    return validate_object(cls, value, path) if cls else []


# --- one reading of the workers an engine expects -----------------------------------------------


def worker_map(section: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    """engines.NAME.workers (host -> what it runs), checked against expected_workers when listed.

    Raises ValueError naming the section when the map is empty or disagrees with the list.
    """
    workers = section.get("workers")
    if not isinstance(workers, Mapping) or not workers:
        raise ValueError(f"{source}: engines.{name}.workers must map each worker host to its settings")
    listed = section.get("expected_workers")
    if isinstance(listed, list) and sorted(listed) != sorted(workers):
        raise ValueError(
            f"{source}: engines.{name}.expected_workers {sorted(listed)} differs from the hosts of "
            f"engines.{name}.workers {sorted(workers)}"
        )
    return {str(k): workers[k] for k in sorted(workers)}


def spark_share(section: Mapping[str, Any]) -> tuple[int, int]:
    """(app_default_cores, the cores of every worker together) of engines.spark: the share the master
    grants an application that asks for no number (0: every free core) and what it is a share of."""
    workers = section.get("workers")
    cores = (
        sum(int((w or {}).get("cores", 1)) for w in workers.values()) if isinstance(workers, Mapping) else 0
    )
    return int(section.get("app_default_cores") or 0), cores


def host_counts(section: Mapping[str, Any], name: str, key: str, source: str) -> dict[str, int]:
    """engines.NAME.KEY as host -> integer >= 1 (Celery worker concurrency, MPI slots); {} when absent.

    Raises ValueError naming the section when it is not such a map.
    """
    counts = section.get(key)
    if not counts:
        return {}
    if not isinstance(counts, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in counts.values()
    ):
        raise ValueError(f"{source}: engines.{name}.{key} must map host names to integers >= 1")
    return {str(k): int(v) for k, v in counts.items()}


def expected_host_counts(ctx: Any, engine: str, key: str, group: str) -> dict[str, int]:
    """The workers a check expects: engines.ENGINE.KEY (host -> count), else the hosts of inventory
    GROUP with their cores; CheckError for a malformed map, SkipCheck when neither names a host."""
    try:
        counts = host_counts(ctx.cluster.engines[engine], engine, key, ctx.cluster.source)
    except ValueError as exc:
        raise CheckError(str(exc)) from exc
    if counts:
        return counts
    hosts = ctx.cluster.group(group)
    if not hosts:
        raise SkipCheck(f"no engines.{engine}.{key} and no host in group {group}")
    return {h.name: h.cores for h in hosts}


# --- JSON schema --------------------------------------------------------------------------------


def _schema(tp: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(tp):
        doc = (tp.__doc__ or "").strip()
        out: dict[str, Any] = {"type": "object", "additionalProperties": False}
        if doc and not doc.startswith(f"{tp.__name__}("):
            out["description"] = doc
        out["properties"] = {k: _schema(v) for k, v in _hints(tp).items()}
        return out
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema(a) for a in typing.get_args(tp)]}
    if origin is list:
        return {"type": "array", "items": _schema(typing.get_args(tp)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(typing.get_args(tp)[1])}
    if tp is int:
        return {"type": "integer", "minimum": 0}
    if tp is Any:
        return {}
    return {"type": {str: "string", bool: "boolean"}[tp]}


UNAVAILABLE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["unavailable"],
    "properties": {
        "unavailable": {
            "type": "string",
            "minLength": 1,
            "description": "The inventory declares the engine but its hosts did not publish it; "
            "its checks FAIL.",
        }
    },
}


def engines_schema() -> dict[str, Any]:
    """The ``engines`` property of cluster.schema.json."""
    return {
        "type": "object",
        "description": "One section per engine the inventory declares, merged from what the engine roles "
        "published (generated from compute_jobs/engines.py).",
        "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "properties": {
            name: {"anyOf": [{"$ref": "#/$defs/unavailable"}, _schema(cls)]} for name, cls in SECTIONS.items()
        },
        "additionalProperties": {"type": "object"},
    }


if __name__ == "__main__":
    json.dump({"engines": engines_schema(), "unavailable": UNAVAILABLE_SCHEMA}, sys.stdout, indent=2)
    print()
