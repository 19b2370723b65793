"""compute_jobs.services.drain: when a Dask scheduler or a Spark master has no work left."""

from __future__ import annotations

import pytest

from compute_jobs.services import drain
from compute_jobs.services.drain import busy_tasks, running_apps, spark_workers, undrained


def test_tasks_still_to_run_count_and_results_in_memory_do_not():
    assert busy_tasks({"memory": 50, "released": 3, "forgotten": 1}) == 0
    assert busy_tasks({"memory": 50, "processing": 4, "queued": 146, "waiting": 2, "no-worker": 1}) == 153


def test_a_spark_master_with_active_applications_is_not_idle():
    assert running_apps({"activeapps": [], "completedapps": [{"id": "app-1"}]}) == []
    assert running_apps({"activeapps": [{"id": "app-2"}, {"id": "app-1"}]}) == ["app-1", "app-2"]
    assert running_apps({}) == []


def _worker(host: str, state: str, coresused: int, port: int = 7078) -> dict:
    return {"host": host, "port": port, "state": state, "coresused": coresused}


def test_a_decommissioned_spark_worker_counts_only_once_its_executors_are_gone():
    leaving = ["10.0.0.13:7078"]
    status = {"workers": [_worker("10.0.0.13", "DEAD", 0), _worker("10.0.0.13", "ALIVE", 2)]}
    assert undrained(spark_workers(status, leaving), leaving) == leaving
    status["workers"][1] = _worker("10.0.0.13", "DECOMMISSIONED", 2)
    assert undrained(spark_workers(status, leaving), leaving) == leaving
    status["workers"][1] = _worker("10.0.0.13", "DECOMMISSIONED", 0)
    assert undrained(spark_workers(status, leaving), leaving) == []
    # Another port on the same host, or a worker the master dropped, is not waited for.
    assert spark_workers({"workers": [_worker("10.0.0.13", "ALIVE", 2, port=7079)]}, leaving) == {}
    assert undrained({}, leaving) == []


@pytest.mark.parametrize(
    ("answers", "ok", "waiting"),
    [
        (["ALIVE", "DECOMMISSIONED", "DECOMMISSIONED"], True, []),  # cores 2, 2, 0: drained
        (["ALIVE"], False, ["10.0.0.13:7078"]),  # never decommissioned: the timeout says which
    ],
)
def test_waiting_for_decommission_ends_when_drained_or_at_the_timeout(monkeypatch, answers, ok, waiting):
    from compute_jobs.checks import spark

    clock = {"now": 0.0}
    seen = []

    def fetch(url, timeout):
        seen.append(url)
        i = min(len(seen), len(answers)) - 1
        cores = 0 if i == len(answers) - 1 and answers[i] == "DECOMMISSIONED" else 2
        return {"workers": [_worker("10.0.0.13", answers[i], cores), _worker("10.0.0.12", "ALIVE", 2)]}

    monkeypatch.setattr(spark, "use_gateway_credentials", lambda url, path: None)
    monkeypatch.setattr(spark, "fetch_json", fetch)
    monkeypatch.setattr(drain.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(drain.time, "sleep", lambda s: clock.__setitem__("now", clock["now"] + s))
    result = drain.wait_spark_decommissioned("https://m:8080", "/x", ["10.0.0.13:7078"], timeout=5)
    assert result["ok"] is ok and result["waiting"] == waiting
    assert seen[0] == "https://m:8080/json/" and set(result["workers"]) == {"10.0.0.13:7078"}
