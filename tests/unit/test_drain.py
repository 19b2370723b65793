"""compute_jobs.services.drain: which Dask workers count as back on a host after its upgrade."""

from __future__ import annotations

from compute_jobs.services.drain import busy_tasks, dask_running_on, running_apps


def test_only_running_workers_of_that_address_count():
    workers = {
        "tls://10.0.0.12:8790": {"status": "running"},
        "tls://10.0.0.12:8791": {"status": "closing_gracefully"},
        "tls://10.0.0.13:8790": {"status": "running"},
        "tls://10.0.0.121:8790": {"status": "running"},
    }
    assert dask_running_on(workers, "10.0.0.12") == ["tls://10.0.0.12:8790"]


def test_a_retired_host_has_no_running_worker_until_it_comes_back():
    retired = {"tls://10.0.0.12:8790": {"status": "closing_gracefully"}}
    assert dask_running_on(retired, "10.0.0.12") == []
    assert dask_running_on({**retired, "tls://10.0.0.12:8792": {"status": "running"}}, "10.0.0.12") == [
        "tls://10.0.0.12:8792"
    ]


def test_a_scheduler_that_reports_no_status_counts_its_workers_as_running():
    assert dask_running_on({"tcp://10.0.0.12:8790": {}}, "10.0.0.12") == ["tcp://10.0.0.12:8790"]


def test_tasks_still_to_run_count_and_results_in_memory_do_not():
    assert busy_tasks({"memory": 50, "released": 3, "forgotten": 1}) == 0
    assert busy_tasks({"memory": 50, "processing": 4, "queued": 146, "waiting": 2, "no-worker": 1}) == 153


def test_a_spark_master_with_active_applications_is_not_idle():
    assert running_apps({"activeapps": [], "completedapps": [{"id": "app-1"}]}) == []
    assert running_apps({"activeapps": [{"id": "app-2"}, {"id": "app-1"}]}) == ["app-1", "app-2"]
    assert running_apps({}) == []
