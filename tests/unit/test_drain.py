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


class _Handle:
    """A task handle of the fake workload: done once its number is in DONE."""

    def __init__(self, number: int, done: set[int]):
        self.number = number
        self._done = done

    def is_done(self) -> bool:
        return self.number in self._done


def _stream(round_size: int, done: set[int]) -> drain.Stream:
    return drain.Stream(
        round_size,
        lambda first: [_Handle(i, done) for i in range(first, first + round_size)],
        _Handle.is_done,
    )


def test_a_stream_submits_a_new_round_only_when_half_a_round_or_less_is_left():
    done: set[int] = set()
    stream = _stream(4, done)
    assert stream.rounds == 1 and stream.tick(more=True) == 4 and stream.rounds == 1
    done.update({0, 1})
    assert stream.tick(more=True) == 2 and stream.rounds == 2  # 2 left of 4: round 2 (tasks 4..7)
    assert [h.number for h in stream.handles] == list(range(8)) and stream.tasks == 8
    done.update(range(8))
    # Without MORE (after the release), nothing is submitted and the dry moment is remembered.
    assert stream.tick(more=False) == 0 and stream.rounds == 2 and stream.min_in_flight == 0


def test_the_streams_run_until_the_release_file_and_say_what_was_in_flight(tmp_path, monkeypatch):
    release = tmp_path / "probe.json.release"
    done: set[int] = set()
    stream = _stream(10, done)
    clock = {"now": 0.0}

    def sleep(seconds: float) -> None:
        # Three tasks end per pause; the playbook releases the probe after 20 s.
        clock["now"] += seconds
        finished = len(done)
        done.update(range(finished, finished + 3))
        if clock["now"] >= 20:
            release.write_text("")

    monkeypatch.setattr(drain.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(drain.time, "sleep", sleep)
    state = drain.run_streams({"celery": stream}, str(release), stream_limit=600, pause=0.5)
    assert state["released"] is True and 19.5 <= state["seconds"] <= 20.5
    # 40 pauses, 3 tasks each: 120 tasks ended, never fewer than 5 in flight (a round at <= 5 left).
    assert stream.rounds >= 12 and stream.min_in_flight > 0
    assert state["in_flight_at_release"]["celery"] == stream.tasks - len(done) > 0


def test_a_probe_never_released_stops_submitting_at_its_limit(tmp_path, monkeypatch):
    stream = _stream(10, set())
    clock = {"now": 0.0}
    monkeypatch.setattr(drain.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(drain.time, "sleep", lambda s: clock.__setitem__("now", clock["now"] + s))
    state = drain.run_streams({"dask": stream}, str(tmp_path / "never"), stream_limit=30, pause=0.5)
    assert state["released"] is False and stream.rounds == 1 and state["in_flight_at_release"] == {"dask": 10}


def test_the_sums_judge_every_task_once():
    assert drain.judge(range(4), [0, 2, 4, 6], lambda i: 2 * i)["exact"] is True
    assert drain.judge(range(4), [0, 2, 4, 7], lambda i: 2 * i)["exact"] is False
    # A lost task whose value is 0 leaves the sum unchanged: the count still tells it.
    assert drain.judge(range(4), [2, 4, 6], lambda i: 2 * i)["exact"] is False


def test_a_worker_restarted_mid_batch_shows_two_processes():
    values = [
        {"host": "n1", "worker": "celery@node1", "parent": 100, "value": 0},
        {"host": "n1", "worker": "celery@node1", "parent": 100, "value": 2},
        {"host": "n2", "worker": "celery@node2", "parent": 200, "value": 4},
        {"host": "n2", "worker": "celery@node2", "parent": 233, "value": 6},
    ]
    assert drain.worker_instances(values) == {"node1": 1, "node2": 2}
