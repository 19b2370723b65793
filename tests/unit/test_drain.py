"""compute_jobs.services.drain: when a Dask scheduler or a Spark master has no work left."""

from __future__ import annotations

from compute_jobs.services.drain import busy_tasks, running_apps


def test_tasks_still_to_run_count_and_results_in_memory_do_not():
    assert busy_tasks({"memory": 50, "released": 3, "forgotten": 1}) == 0
    assert busy_tasks({"memory": 50, "processing": 4, "queued": 146, "waiting": 2, "no-worker": 1}) == 153


def test_a_spark_master_with_active_applications_is_not_idle():
    assert running_apps({"activeapps": [], "completedapps": [{"id": "app-1"}]}) == []
    assert running_apps({"activeapps": [{"id": "app-2"}, {"id": "app-1"}]}) == ["app-1", "app-2"]
    assert running_apps({}) == []
