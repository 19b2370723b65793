"""File pipeline DAG: generate seeded files on the nodes, summarise them in parallel (Dask), aggregate
the summaries (Spark) and check the aggregate against the closed-form answer.

Each task runs one step of clusterforge_pipeline in the cluster venv (whose Dask and Spark clients
match the provisioned services); /etc/clusterforge/pipeline.json says which engines exist. Steps are
idempotent, so task retries (after a scheduler, worker or database restart) are safe.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task


def _payload(params: dict, run_id: str, **extra) -> dict:
    spec = {"files": int(params["files"]), "mib": int(params["mib"]), "seed": int(params["seed"])}
    return {"run_id": run_id, "spec": spec, **extra}


def _step(step: str, payload: dict) -> dict:
    from clusterforge_pipeline.orchestrate import run_step

    return run_step(step, payload)


@dag(
    dag_id="clusterforge_pipeline",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=2,
    tags=["clusterforge", "pipeline"],
    params={
        "files": Param(8, type="integer", minimum=1, maximum=4096, description="number of files"),
        "mib": Param(8, type="integer", minimum=1, maximum=4096, description="MiB per file"),
        "seed": Param(20261121, type="integer", minimum=0, maximum=2**32 - 1, description="data seed"),
    },
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=5)},
    doc_md=__doc__,
)
def clusterforge_pipeline():
    @task
    def generate(params: dict | None = None, run_id: str | None = None) -> dict:
        return _step("generate", _payload(params, run_id))

    @task
    def process(generated: dict, params: dict | None = None, run_id: str | None = None) -> dict:
        result = _step("process", _payload(params, run_id, manifest=generated["manifest"]))
        result["generate_backend"] = generated["backend"]
        result["generate_hosts"] = sorted({m["host"] for m in generated["manifest"]})
        return result

    @task
    def aggregate(processed: dict, params: dict | None = None, run_id: str | None = None) -> dict:
        result = _step("aggregate", _payload(params, run_id, partials=processed["partials"]))
        result["process_backend"] = processed["backend"]
        result["process_hosts"] = sorted({p["host"] for p in processed["partials"]})
        result["generate_backend"] = processed["generate_backend"]
        result["generate_hosts"] = processed["generate_hosts"]
        result["regenerated"] = sum(1 for p in processed["partials"] if p.get("regenerated"))
        return result

    @task
    def verify(aggregated: dict, params: dict | None = None, run_id: str | None = None) -> dict:
        verdict = _step(
            "verify",
            _payload(params, run_id, totals=aggregated["totals"], digests=aggregated["digests"]),
        )
        from clusterforge_pipeline.orchestrate import summary_of

        result = summary_of(verdict, aggregated)
        if not verdict["ok"]:
            raise ValueError("pipeline answer is wrong: " + "; ".join(verdict["problems"]))
        return result

    @task(trigger_rule="all_done", retries=0)
    def cleanup(params: dict | None = None, run_id: str | None = None) -> dict:
        return _step("cleanup", _payload(params, run_id))

    checked = verify(aggregate(process(generate())))
    checked >> cleanup()


clusterforge_pipeline()
