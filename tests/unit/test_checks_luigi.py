"""luigi.pipeline against fakes at its two boundaries: the Luigi client subprocess and luigid's HTTP API."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from typing import Any

import pytest
from checkrun import run_checks

from clusterforge_pipeline import data
from clusterforge_pipeline.orchestrate import MARKER
from clusterforge_pipeline.spec import Spec
from compute_jobs.checks import load_all
from compute_jobs.checks import luigi as lg
from compute_jobs.model import ERROR, FAIL, PASS, Result

load_all()

WORKERS = ["b", "c"]
NAME = "luigi.pipeline"


class FakeLuigi:
    """The Luigi client run (subprocess) and luigid behind its proxy (HTTP)."""

    def __init__(self) -> None:
        self.anonymous_allowed = False
        self.forget = ""  # a task family luigid does not report as DONE
        self.sum_offset = 0
        self.backends = {"generate": "dask", "process": "dask", "aggregate": "spark"}
        self.process_hosts = list(WORKERS)
        self.exit_without_result = False
        self.run_ids: list[str] = []
        self.commands: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.ca_files: list[str] = []  # what https_transport was asked to trust

    def runner(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        self.commands.append(command)
        self.envs.append(kwargs["env"])
        assert kwargs["env"]["LUIGI_CONFIG_PATH"].endswith("client.cfg")
        run_id = command[command.index("--run-id") + 1]
        self.run_ids.append(run_id)
        if self.exit_without_result:
            return subprocess.CompletedProcess(command, 1, "", "luigi.rpc.RPCError: Errors (3 attempts)\n")
        spec = Spec(
            files=int(command[command.index("--files") + 1]),
            mib=int(command[command.index("--mib") + 1]),
            seed=int(command[command.index("--seed") + 1]),
        )
        partials = [dict(data.summarize_array(data.file_values(spec, j)), index=j) for j in range(spec.files)]
        totals = data.totals_of(partials)
        totals["sum"] = str(int(totals["sum"]) + self.sum_offset)
        verdict = data.judge(spec, totals, data.expected_digests(spec))
        verify = {
            "ok": verdict["ok"],
            "observed": verdict["observed"],
            "expected": verdict["expected"],
            "digests_ok": verdict["digests_ok"],
            "backends": self.backends,
            "hosts": {"generate": WORKERS, "process": self.process_hosts, "aggregate": WORKERS},
        }
        out = {"run_id": run_id, "luigi_status": "SUCCESS", "verify": verify}
        return subprocess.CompletedProcess(
            command, 0, "INFO noise\n" + MARKER + "\n" + json.dumps(out) + "\n", ""
        )

    def transport(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float):
        if (
            headers.get("Authorization") != lg.split_credentials(SCHEDULER_URL)[1]
            and not self.anonymous_allowed
        ):
            return 401, b"<html>401 Authorization Required</html>"
        query = json.loads(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("data", ["{}"])[0])
        tasks = {}
        for run_id in self.run_ids:
            if query.get("search") != run_id:
                continue
            for family in lg.TASKS:
                if family != self.forget:
                    tasks[f"{family}_{run_id}"] = {
                        "name": family,
                        "status": "DONE",
                        "params": {"run_id": run_id},
                    }
        return 200, json.dumps({"response": tasks}).encode()

    def https_transport(self, ca_file: str):
        self.ca_files.append(ca_file)
        return self.transport


SCHEDULER_URL = "https://clusterforge:p%40ss@10.0.0.11:8082/"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLuigi:
    server = FakeLuigi()
    monkeypatch.setattr(lg, "urllib_transport", server.transport)
    monkeypatch.setattr(lg, "https_transport", server.https_transport)
    monkeypatch.setattr(lg, "run_subprocess", server.runner)
    return server


@pytest.fixture
def cluster(cj_cluster, tmp_path):
    client_cfg = tmp_path / "client.cfg"
    client_cfg.write_text(f"[core]\nscheduler_url = {SCHEDULER_URL}\n")

    def make(**engine: Any) -> Any:
        settings = {
            "endpoint": "https://10.0.0.11:8082",
            "client_config": str(client_cfg),
            "ca_file": "/etc/clusterforge/tls/ca.crt",
            "pipeline_config": "/etc/clusterforge/luigi/pipeline.json",
            "python": "/opt/clusterforge/luigi-venv/bin/python",
            "pipeline_backends": {"generate": "dask", "process": "dask", "aggregate": "spark"},
            "pipeline_workers": WORKERS,
        }
        settings.update(engine)
        return cj_cluster(engines={"luigi": settings})

    return make


def run(cluster: Any, **config: Any) -> dict[str, Result]:
    return run_checks(cluster, [NAME], **config)


def test_credentials_come_out_of_the_scheduler_url():
    plain, header = lg.split_credentials(SCHEDULER_URL)
    assert plain == "https://10.0.0.11:8082/"
    assert header == "Basic Y2x1c3RlcmZvcmdlOnBAc3M="  # clusterforge:p@ss
    assert lg.split_credentials("http://10.0.0.11:8082/") == ("http://10.0.0.11:8082/", None)


def test_pipeline_passes_through_the_scheduler(fake, cluster, cj_validator):
    validator = cj_validator("result.schema.json")
    results = run(cluster())
    for result in results.values():
        validator.validate(result.to_dict())
    assert {n: r.status for n, r in results.items()} == {
        "luigi.pipeline.anonymous": PASS,
        "luigi.pipeline.scheduler": PASS,
        "luigi.pipeline": PASS,
        "luigi.pipeline.placement": PASS,
    }
    # Both doors are HTTPS: this check's own requests and the Luigi client's trust the cluster CA.
    assert fake.ca_files == ["/etc/clusterforge/tls/ca.crt"]
    assert fake.envs[0]["REQUESTS_CA_BUNDLE"] == "/etc/clusterforge/tls/ca.crt"
    command = fake.commands[0]
    assert command[:3] == [
        "/opt/clusterforge/luigi-venv/bin/python",
        "-m",
        "clusterforge_pipeline.luigi_tasks",
    ]


def test_an_open_scheduler_fails(fake, cluster):
    fake.anonymous_allowed = True
    assert run(cluster())["luigi.pipeline.anonymous"].status == FAIL


def test_a_task_the_scheduler_never_saw_fails(fake, cluster):
    fake.forget = "Aggregate"
    assert run(cluster())["luigi.pipeline.scheduler"].status == FAIL


def test_a_wrong_answer_fails(fake, cluster):
    fake.sum_offset = -1
    assert run(cluster())["luigi.pipeline"].status == FAIL


def test_a_silent_fallback_to_local_back_ends_fails(fake, cluster):
    fake.backends = {"generate": "local", "process": "local", "aggregate": "local"}
    assert run(cluster())["luigi.pipeline"].status == FAIL


def test_an_idle_dask_worker_fails_placement(fake, cluster):
    fake.process_hosts = ["b"]
    result = run(cluster())["luigi.pipeline.placement"]
    assert result.status == FAIL and result.missing == ["c"]


@pytest.mark.parametrize(
    ("control", "failing"),
    [
        ("wrong-answer", {"luigi.pipeline", "luigi.pipeline.anonymous", "luigi.pipeline.scheduler"}),
        ("missing-worker", {"luigi.pipeline.placement"}),
    ],
)
def test_negative_controls(fake, cluster, control, failing):
    results = run(cluster(), inject=control)
    assert {n for n, r in results.items() if r.status == FAIL} == failing


def test_a_client_without_result_is_an_error(fake, cluster):
    fake.exit_without_result = True
    result = run(cluster())["luigi.pipeline"]
    assert result.status == ERROR and "RPCError" in result.reason


def test_missing_client_config_is_an_error(fake, cluster):
    result = run(cluster(client_config="/nonexistent.cfg"))["luigi.pipeline"]
    assert result.status == ERROR and "converge the airflow tier" in result.reason


def test_an_https_scheduler_without_its_ca_is_an_error(fake, cluster):
    result = run(cluster(ca_file=""))["luigi.pipeline"]
    assert result.status == ERROR and "engines.luigi needs ca_file for an https endpoint" in result.reason
    assert fake.commands == [], "nothing runs before the check knows whom to trust"
