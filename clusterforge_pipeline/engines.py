"""Back ends of the pipeline steps: the provisioned Dask and Spark clusters, or this node.

Which back end a step uses is decided by the node configuration (``spec.NodeConfig``), never by
whether an engine happens to answer: a configured engine that cannot be reached is an error.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from . import data
from .spec import NodeConfig, Spec, encode_big, safe_name

CONNECT_TIMEOUT = 30.0


def run_dir(config: NodeConfig, run_id: str) -> str:
    return os.path.join(config.work_dir, safe_name(run_id))


# --- Dask ---------------------------------------------------------------------------------------


@contextmanager
def dask_client(config: NodeConfig) -> Iterator[Any]:
    """A distributed.Client for the provisioned scheduler, configured by the Dask client config dir."""
    settings = config.dask or {}
    config_dir = settings.get("config_dir")
    if config_dir:
        if not os.path.isdir(config_dir):
            raise RuntimeError(f"Dask client configuration {config_dir} is missing: converge the dask tier")
        os.environ["DASK_CONFIG"] = config_dir
    import dask
    from distributed import Client

    dask.config.refresh()
    client_kwargs: dict[str, Any] = {
        "timeout": settings.get("timeout", CONNECT_TIMEOUT),
        "set_as_default": False,
    }
    address = settings.get("scheduler_address") or dask.config.get("scheduler-address", None)
    if not address:
        raise RuntimeError("no Dask scheduler address: set dask.scheduler_address or use a client config dir")
    client = Client(address, **client_kwargs)
    try:
        with tempfile.TemporaryDirectory(prefix="cf-pipeline-") as tmp:
            upload_package(client, package_zip(tmp))
        yield client
    finally:
        client.close()


# One plugin name for every upload of this package: registering it again replaces the previous
# one. (Client.upload_file registers a new plugin per call; a worker that restarts then replays
# all of them at once, and concurrent reloads of one zip break Python's zipimport cache:
# KeyError in pkgutil.iter_zipimport_modules, and every later upload to that worker fails.)
UPLOAD_PLUGIN = "clusterforge-pipeline-package"


def upload_package(client: Any, path: str) -> None:
    """Make this package importable on the scheduler and the workers (they unpickle the task
    graph, which refers to its functions by module name); new and restarted workers get it too."""
    from distributed.diagnostics.plugin import SchedulerUploadFile, UploadFile

    client.register_plugin(SchedulerUploadFile(path, load=True), name=UPLOAD_PLUGIN)
    client.register_plugin(UploadFile(path, load=True), name=UPLOAD_PLUGIN)


def package_zip(directory: str) -> str:
    """This package as ``<directory>/clusterforge_pipeline.zip`` (its .py files only)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(directory, "clusterforge_pipeline.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(os.listdir(here)):
            if name.endswith(".py"):
                archive.write(os.path.join(here, name), f"clusterforge_pipeline/{name}")
    return path


def _dask_workers(client: Any) -> list[dict[str, Any]]:
    info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
    workers = [
        {"address": addr, "host": w.get("host"), "name": str(w.get("name"))}
        for addr, w in info["workers"].items()
    ]
    if not workers:
        raise RuntimeError("the Dask scheduler has no workers")
    # One worker of each host, then a second of each...: round-robin over this list reaches every
    # host as soon as there are as many files as hosts.
    by_host: dict[str, list[dict[str, Any]]] = {}
    for worker in sorted(workers, key=lambda w: w["address"]):
        by_host.setdefault(str(worker["host"]), []).append(worker)
    rounds = max(len(group) for group in by_host.values())
    return [group[i] for i in range(rounds) for _, group in sorted(by_host.items()) if i < len(group)]


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def dask_generate(config: NodeConfig, spec: Spec, run_id: str) -> list[dict[str, Any]]:
    directory = run_dir(config, run_id)
    with dask_client(config) as client:
        workers = _dask_workers(client)
        futures = []
        for j in range(spec.files):
            worker = workers[j % len(workers)]["address"]
            futures.append(
                client.submit(
                    data.write_file,
                    spec.to_dict(),
                    j,
                    directory,
                    workers=[worker],
                    allow_other_workers=False,
                    pure=False,
                    key=f"cf-pipeline-generate-{safe_name(run_id)}-{j}",
                )
            )
        results = client.gather(futures)
    for item, j in zip(results, range(spec.files), strict=True):
        item["worker"] = workers[j % len(workers)]["address"]
    return results


def dask_process(
    config: NodeConfig, spec: Spec, manifest: list[dict[str, Any]], run_id: str
) -> list[dict[str, Any]]:
    with dask_client(config) as client:
        alive = {w["address"] for w in _dask_workers(client)}
        futures = []
        for item in manifest:
            # The file lives where it was written; a file whose worker is gone is regenerated elsewhere.
            pinned = item.get("worker") in alive
            futures.append(
                client.submit(
                    data.summarize_file,
                    spec.to_dict(),
                    item["index"],
                    item["path"],
                    workers=[item["worker"]] if pinned else None,
                    allow_other_workers=not pinned,
                    pure=False,
                    key=f"cf-pipeline-process-{safe_name(run_id)}-{item['index']}",
                )
            )
        results = client.gather(futures)
    for item, src in zip(results, manifest, strict=True):
        item["worker"] = src.get("worker")
    return results


def dask_cleanup(config: NodeConfig, run_id: str) -> list[dict[str, Any]]:
    directory = run_dir(config, run_id)
    with dask_client(config) as client:
        done = client.run(data.remove_dir, directory)
    return [dict(v, worker=k) for k, v in sorted(done.items())]


# --- Spark --------------------------------------------------------------------------------------


def _read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            secret = handle.read().strip()
    except OSError as exc:
        raise RuntimeError(
            f"cannot read the Spark authentication secret {path}: {exc.strerror or exc}"
        ) from exc
    if not secret:
        raise RuntimeError(f"the Spark authentication secret {path} is empty")
    return secret


def spark_session(config: NodeConfig) -> Any:
    """A SparkSession on the provisioned master.

    With ``spark.conf_dir`` (the spark role's client configuration: master URL, shared secret, RPC
    encryption, driver address) the session reads spark-defaults.conf and spark-env.sh from there;
    ``master`` / ``secret_file`` / ``driver_host`` configure it explicitly instead.
    """
    settings = config.spark or {}
    conf_dir = settings.get("conf_dir")
    if conf_dir:
        if not os.path.isfile(os.path.join(conf_dir, "spark-defaults.conf")):
            raise RuntimeError(
                f"Spark client configuration {conf_dir}/spark-defaults.conf is missing or unreadable"
            )
        os.environ["SPARK_CONF_DIR"] = conf_dir
    elif not settings.get("master"):
        raise RuntimeError("the pipeline configuration names neither spark.conf_dir nor spark.master")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(settings.get("app_name", "clusterforge-pipeline"))
    conf: dict[str, str] = {
        "spark.ui.enabled": "false",
        "spark.cores.max": str(settings.get("cores_max", 2)),
        "spark.executor.cores": "1",
    }
    if settings.get("master"):
        conf["spark.master"] = settings["master"]
    for key, prop in (
        ("driver_host", "spark.driver.host"),
        ("driver_bind_address", "spark.driver.bindAddress"),
        ("executor_memory", "spark.executor.memory"),
        ("executor_python", "spark.pyspark.python"),
    ):
        if settings.get(key):
            conf[prop] = str(settings[key])
    if settings.get("secret_file"):
        conf["spark.authenticate"] = "true"
        conf["spark.authenticate.secret"] = _read_secret(settings["secret_file"])
    conf.update({str(k): str(v) for k, v in (settings.get("conf") or {}).items()})
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def spark_aggregate(config: NodeConfig, partials: list[dict[str, Any]]) -> dict[str, Any]:
    """Reduce the per-file summaries on the Spark executors (one partition per file)."""
    session = spark_session(config)
    try:
        sc = session.sparkContext
        rows = [(p["count"], int(p["sum"]), int(p["sumsq"]), p["min"], p["max"]) for p in partials]

        def merge(a: tuple, b: tuple) -> tuple:
            return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], min(a[4], b[4]), max(a[5], b[5]))

        def tag(rows_in_partition):
            import socket as _socket

            host = _socket.gethostname()
            for r in rows_in_partition:
                yield (1, r[0], r[1], r[2], r[3], r[4]), host

        tagged = sc.parallelize(rows, numSlices=max(1, len(rows))).mapPartitions(tag).cache()
        files, count, total, sumsq, low, high = tagged.map(lambda t: t[0]).reduce(merge)
        hosts = sorted(set(tagged.map(lambda t: t[1]).collect()))
        return {
            "totals": encode_big(
                {"files": files, "count": count, "sum": total, "sumsq": sumsq, "min": low, "max": high}
            ),
            "hosts": hosts,
            "spark_version": sc.version,
            "master": sc.master,
        }
    finally:
        session.stop()


# --- local ---------------------------------------------------------------------------------------


def local_generate(config: NodeConfig, spec: Spec, run_id: str) -> list[dict[str, Any]]:
    directory = run_dir(config, run_id)
    with ThreadPoolExecutor(max_workers=min(4, spec.files)) as pool:
        return list(pool.map(lambda j: data.write_file(spec.to_dict(), j, directory), range(spec.files)))


def local_process(config: NodeConfig, spec: Spec, manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Another Airflow worker may have generated the files: summarize_file regenerates missing ones.
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(manifest)))) as pool:
        return list(pool.map(lambda m: data.summarize_file(spec.to_dict(), m["index"], m["path"]), manifest))


def local_aggregate(partials: list[dict[str, Any]]) -> dict[str, Any]:
    return {"totals": data.totals_of(partials), "hosts": [socket.gethostname()]}


def local_cleanup(config: NodeConfig, run_id: str) -> list[dict[str, Any]]:
    return [data.remove_dir(run_dir(config, run_id))]


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start
