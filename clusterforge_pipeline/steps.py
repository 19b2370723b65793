"""The pipeline steps, JSON in and JSON out, each run in the cluster venv by ``python -m``.

Payloads: every step takes ``{"run_id": str, "spec": {files, mib, seed}}`` plus its own input
(``manifest`` for ``process``, ``partials`` for ``aggregate``, ``totals`` and ``digests`` for
``verify``) and returns a JSON object naming the back end it used and how long it took.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from .spec import NodeConfig, Spec, SpecError, check_run_id

STEPS = ("generate", "process", "aggregate", "verify", "cleanup")


def _common(payload: dict[str, Any]) -> tuple[str, Spec]:
    if not isinstance(payload, dict):
        raise SpecError("step payload must be a JSON object")
    return check_run_id(payload.get("run_id", "")), Spec.from_dict(payload.get("spec", {}))


def generate(config: NodeConfig, payload: dict[str, Any]) -> dict[str, Any]:
    from . import engines

    run_id, spec = _common(payload)
    if config.dask:
        manifest = engines.dask_generate(config, spec, run_id)
    else:
        manifest = engines.local_generate(config, spec, run_id)
    return {"backend": config.backends()["generate"], "manifest": manifest}


def process(config: NodeConfig, payload: dict[str, Any]) -> dict[str, Any]:
    from . import engines

    run_id, spec = _common(payload)
    manifest = payload.get("manifest")
    if not isinstance(manifest, list) or len(manifest) != spec.files:
        raise SpecError(f"process: manifest must list {spec.files} files, got {manifest!r:.200}")
    if config.dask:
        partials = engines.dask_process(config, spec, manifest, run_id)
    else:
        partials = engines.local_process(config, spec, manifest)
    return {"backend": config.backends()["process"], "partials": partials}


def aggregate(config: NodeConfig, payload: dict[str, Any]) -> dict[str, Any]:
    from . import engines

    _common(payload)
    partials = payload.get("partials")
    if not isinstance(partials, list) or not partials:
        raise SpecError("aggregate: partials must be a non-empty list of file summaries")
    result = engines.spark_aggregate(config, partials) if config.spark else engines.local_aggregate(partials)
    result["digests"] = {str(p["index"]): p["sha256"] for p in partials}
    result["backend"] = config.backends()["aggregate"]
    return result


def verify(config: NodeConfig, payload: dict[str, Any]) -> dict[str, Any]:
    from . import data

    _, spec = _common(payload)
    totals = payload.get("totals")
    digests = payload.get("digests")
    if not isinstance(totals, dict) or not isinstance(digests, dict):
        raise SpecError("verify: totals and digests must be objects")
    return data.judge(spec, totals, digests)


def cleanup(config: NodeConfig, payload: dict[str, Any]) -> dict[str, Any]:
    from . import engines

    run_id = check_run_id(payload.get("run_id", ""))
    removed = engines.dask_cleanup(config, run_id) if config.dask else engines.local_cleanup(config, run_id)
    # Files generated locally by a local-fallback run on this node are removed as well.
    if config.dask:
        removed += engines.local_cleanup(config, run_id)
    return {"removed": removed}


HANDLERS: dict[str, Callable[[NodeConfig, dict[str, Any]], dict[str, Any]]] = {
    "generate": generate,
    "process": process,
    "aggregate": aggregate,
    "verify": verify,
    "cleanup": cleanup,
}


def run(step: str, config: NodeConfig, payload: dict[str, Any]) -> dict[str, Any]:
    if step not in HANDLERS:
        raise SpecError(f"unknown step {step!r} (steps: {', '.join(STEPS)})")
    start = time.perf_counter()
    result = HANDLERS[step](config, payload)
    result["step"] = step
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["client_host"] = socket.gethostname()
    return result
