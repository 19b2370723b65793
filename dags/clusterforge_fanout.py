"""Fan-out / fan-in verification DAG: sum of i for i in [0, n) split into k ranges (dynamic task mapping).

The ranges are dealt round-robin to lanes, one lane per Airflow Celery worker queue (deployed in
clusterforge_airflow.json beside this file) or a single lane on the default queue with the
LocalExecutor; each lane is a mapped task over its ranges, so every worker provably computes part of
the answer. The fan-in task fails the run unless the total is exactly n(n-1)/2.
"""

from __future__ import annotations

import itertools
import json
import os

import pendulum
from airflow.sdk import Param, dag, task

SETTINGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clusterforge_airflow.json")


def load_lanes() -> dict[str, str]:
    """Lane name -> Celery queue; one lane ("local", queue "default") when no worker queues exist."""
    try:
        with open(SETTINGS_FILE, encoding="utf-8") as handle:
            queues = json.load(handle).get("worker_queues") or {}
    except (OSError, ValueError):
        queues = {}
    if not queues:
        return {"local": "default"}
    return {"".join(c if c.isalnum() else "_" for c in host): queue for host, queue in sorted(queues.items())}


LANES = load_lanes()


@dag(
    dag_id="clusterforge_fanout",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=8,
    tags=["clusterforge", "verification"],
    params={
        "n": Param(1_000_000, type="integer", minimum=0, maximum=10**9, description="sum over [0, n)"),
        "k": Param(8, type="integer", minimum=1, maximum=1024, description="number of ranges (mapped tasks)"),
    },
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=5)},
    doc_md=__doc__,
)
def clusterforge_fanout():
    @task
    def ranges(lane: str, params: dict | None = None) -> list[list[int]]:
        """The ranges of one lane: range i of split_ranges(n, k) goes to lane i mod (number of lanes)."""
        from clusterforge_pipeline.spec import split_ranges

        n, k = int(params["n"]), int(params["k"])
        if k < len(LANES):
            raise ValueError(f"k={k} is smaller than the number of worker lanes ({len(LANES)}): raise k")
        position = list(LANES).index(lane)
        return [[low, high] for i, (low, high) in enumerate(split_ranges(n, k)) if i % len(LANES) == position]

    def partial_sum(bounds: list[int]) -> dict:
        import socket

        from clusterforge_pipeline.spec import FANOUT_LOG_MARKER

        low, high = bounds
        # Iterate for real: the closed form is what the result is checked against.
        total = sum(range(low, high))
        # Into the task's log: airflow.dag_run reads it back through the API server, which fetches
        # it from this worker's log server.
        print(f"{FANOUT_LOG_MARKER} [{low}, {high}) = {total}", flush=True)
        return {"low": low, "high": high, "sum": total, "host": socket.gethostname()}

    @task
    def total(lanes: list, params: dict | None = None) -> dict:
        from clusterforge_pipeline.spec import fanout_total

        parts = [p for lane in lanes for p in lane]
        n, k = int(params["n"]), int(params["k"])
        covered = sorted((p["low"], p["high"]) for p in parts)
        contiguous = len(parts) == k and all(a[1] == b[0] for a, b in itertools.pairwise(covered))
        if parts and (covered[0][0] != 0 or covered[-1][1] != n):
            contiguous = False
        value = sum(p["sum"] for p in parts)
        result = {
            "n": n,
            "k": k,
            "total": value,
            "expected": fanout_total(n),
            "parts": len(parts),
            "hosts": sorted({p["host"] for p in parts}),
        }
        if not contiguous or value != result["expected"]:
            raise ValueError(f"fan-in mismatch: {result}")
        return result

    lanes = []
    for lane, queue in LANES.items():
        lane_ranges = ranges.override(task_id=f"ranges_{lane}", queue=queue)(lane)
        mapped = task(partial_sum, task_id=f"partial_sum_{lane}", queue=queue)
        lanes.append(mapped.expand(bounds=lane_ranges))
    total(lanes=lanes)


clusterforge_fanout()
