"""What the Airflow and Luigi checks share (this module registers no check of its own): how a run of
the file pipeline (``clusterforge_pipeline``) is judged: its totals against the closed form, the
digests, the back ends each step ran on and, with Dask, the hosts that processed files. Their HTTP
boundary is :mod:`compute_jobs.transport`, which needs no pipeline package.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from clusterforge_pipeline.spec import Spec, encode_big, expected_totals
from compute_jobs.context import CheckContext
from compute_jobs.model import Result


def pipeline_view(result: Any) -> dict[str, Any]:
    """The part of a pipeline result (Airflow verify XCom, Luigi Verify target) that is judged."""
    if not isinstance(result, dict):
        return {"totals": None, "digests_ok": None, "backends": None}
    return {
        "totals": result.get("observed"),
        "digests_ok": result.get("digests_ok"),
        "backends": result.get("backends"),
    }


def pipeline_expectation(spec: Spec, backends: dict[str, str] | None) -> dict[str, Any]:
    return {
        "totals": encode_big(expected_totals(spec)),
        "digests_ok": True,
        "backends": backends or {"generate": "local", "process": "local", "aggregate": "local"},
    }


def pipeline_spec(ctx: CheckContext, settings: dict[str, Any]) -> Spec:
    """The run's Spec from the check's parameters, with at least one file per host that must process
    files (the Dask back end deals files to the workers host by host): a larger cluster than
    ``files`` still has every worker take part."""
    workers = settings.get("pipeline_workers") or []
    files = max(ctx.params.files, len(workers))
    return Spec(files=files, mib=ctx.params.mib, seed=ctx.params.seed)


def judge_pipeline(
    ctx: CheckContext, spec: Spec, result: Any, settings: dict[str, Any], details: dict[str, Any]
) -> Iterator[Result]:
    """Correctness of a pipeline result and, with Dask, which hosts processed the files."""
    yield ctx.compare(
        pipeline_expectation(spec, settings.get("pipeline_backends")), pipeline_view(result), details=details
    )
    workers = settings.get("pipeline_workers")
    if workers:
        hosts = (result or {}).get("hosts", {}).get("process", []) if isinstance(result, dict) else []
        yield ctx.compare_sets(list(workers), hosts, name=f"{ctx.check.name}.placement", details=details)
