"""notebooks.hub and notebooks.run against fakes at their boundaries: the hub's REST API (and the
user server's API behind it), the kernel's websocket, and systemctl show of the user's unit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from checkrun import run_checks

from compute_jobs.checks import load_all
from compute_jobs.checks import notebooks as nbc
from compute_jobs.model import ERROR, FAIL, PASS, SKIP, Result

load_all()

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD, TOKEN = "cfcheck", "s3cret", "tok-123"
SHIPPED = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
HOSTS = {
    "dask": ["b", "c"],
    "spark": ["b", "c"],
    "celery": ["b", "c"],
    "mpmanager": ["b", "c"],
    "opencl": ["a"],
    "gpu": ["a"],
    "mpi": ["a", "b", "c"],
    "luigi": ["b", "c"],
    None: ["a"],
}
# The hub host (a) and two workers; every one an OpenCL node unless a test says otherwise.
CLUSTER_HOSTS = [
    {"name": "a", "address": "127.0.0.1", "groups": ["head", "jupyter"], "cores": 1, "memory_mb": 16},
    {"name": "b", "address": "127.0.0.2", "groups": ["workers"], "cores": 1, "memory_mb": 16},
    {"name": "c", "address": "127.0.0.3", "groups": ["workers"], "cores": 1, "memory_mb": 16},
]


class FakeHub:
    """JupyterHub and the check account's server: tokens, server start, contents, kernels."""

    def __init__(self) -> None:
        self.anonymous_allowed = False
        self.wrong_password_allowed = False
        self.server_ready = True
        self.missing: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.kernels: list[str] = []

    def transport(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float):
        path = url.split(":8000", 1)[1]
        self.calls.append((method, path))
        authorized = headers.get("Authorization") == f"token {TOKEN}"
        if path == f"/hub/api/users/{USER}/tokens" and method == "POST":
            auth = json.loads(body or b"{}").get("auth", {})
            if auth.get("password") == PASSWORD or self.wrong_password_allowed:
                return 201, json.dumps({"token": TOKEN}).encode()
            return 403, b'{"status": 403, "message": "Forbidden"}'
        if not authorized and not self.anonymous_allowed:
            return 403, b'{"status": 403}'
        if path == "/hub/api/users":
            return 200, b"[]"
        if path == f"/hub/api/users/{USER}/server":
            return (202 if method == "POST" else 204), b""
        if path == f"/hub/api/users/{USER}":
            return 200, json.dumps({"servers": {"": {"ready": self.server_ready}}}).encode()
        if path == f"/user/{USER}/api/kernels" and method == "POST":
            self.kernels.append(f"k{len(self.kernels)}")
            return 201, json.dumps({"id": self.kernels[-1]}).encode()
        if path.startswith(f"/user/{USER}/api/kernels/") and method == "DELETE":
            return 204, b""
        prefix = f"/user/{USER}/api/contents/notebooks/"
        if path.startswith(prefix):
            name = path[len(prefix) :]
            if name in self.missing:
                return 404, b'{"message": "No such file"}'
            content = json.loads((REPO / "notebooks" / name).read_text())
            return 200, json.dumps({"type": "notebook", "content": content}).encode()
        return 404, b"{}"


class FakeKernel:
    """Runs nothing: answers each cell as the real notebook would, from the notebook's metadata."""

    answers: ClassVar[dict[str, Any]] = {}
    hosts: ClassVar[dict[str | None, list[str]]] = {}
    fail_cell: str | None = None

    def __init__(self, *args: Any) -> None:
        self.closed = False

    def execute(self, code: str, timeout: float) -> nbc.CellOutcome:
        if code == "print(6 * 7)":
            return nbc.CellOutcome("42\n", None)
        if self.fail_cell and self.fail_cell in code:
            return nbc.CellOutcome("", "ConnectionRefusedError: [Errno 111] Connection refused")
        for name, (engine, answer) in self.answers.items():
            if code == last_cell(name):
                line = json.dumps({"answer": answer, "hosts": self.hosts.get(engine, [])})
                return nbc.CellOutcome(f"noise\n{nbc.MARKER}{line}\n", None)
        return nbc.CellOutcome("", None)

    def close(self) -> None:
        self.closed = True


def last_cell(name: str) -> str:
    """The source of a notebook's last code cell: the one that prints the marker."""
    cells = json.loads((REPO / "notebooks" / name).read_text())["cells"]
    return "".join([c for c in cells if c["cell_type"] == "code"][-1]["source"])


def notebook_engine(name: str) -> str | None:
    meta = json.loads((REPO / "notebooks" / name).read_text())["metadata"]
    return meta.get("clusterforge", {}).get("engine")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    hub = FakeHub()
    monkeypatch.setattr(nbc, "https_transport", lambda ca_file: hub.transport)
    FakeKernel.answers = {n: (notebook_engine(n), nbc.KNOWN_ANSWERS[n]) for n in SHIPPED}
    FakeKernel.hosts = dict(HOSTS)
    FakeKernel.fail_cell = None
    monkeypatch.setattr(nbc, "open_websocket_kernel", FakeKernel)
    monkeypatch.setattr(
        nbc,
        "show_unit",
        lambda unit: {"ActiveState": "active", "MemoryMax": str(2 * 1024**3), "CPUQuotaPerSecUSec": "1s"},
    )
    return hub


@pytest.fixture
def cluster(cj_cluster, tmp_path):
    credentials = tmp_path / "check.json"
    credentials.write_text(json.dumps({"user": USER, "password": PASSWORD}))

    def make(
        engines: tuple[str, ...] = (
            *("dask", "spark", "celery", "storage", "mpmanager", "opencl", "gpu", "mpi", "luigi"),
        ),
        opencl_hosts: tuple[str, ...] = ("a", "b", "c"),
        gpu_hosts: tuple[str, ...] = ("a",),
        spark_share: int = 0,
        **jupyter: Any,
    ) -> Any:
        settings = {
            "url": "https://10.0.0.11:8000",
            "ca_file": "/etc/clusterforge/jupyter/ca.crt",
            "credentials_file": str(credentials),
            "kernel": "clusterforge",
            "notebooks": SHIPPED,
            "notebooks_dir": "notebooks",
            "cpu_quota_percent": 100,
            "memory_limit": "2G",
            "shared_homes": True,
        }
        settings.update(jupyter)
        sections: dict[str, Any] = {"jupyter": settings}
        if "dask" in engines:
            sections["dask"] = {"workers": {h: {"nworkers": 1} for h in HOSTS["dask"]}}
        if "spark" in engines:
            sections["spark"] = {"expected_workers": HOSTS["spark"]}
            if spark_share:  # the master grants each application this many of the workers' cores
                sections["spark"]["workers"] = {h: {"cores": 2} for h in HOSTS["spark"]}
                sections["spark"]["app_default_cores"] = spark_share
        if "celery" in engines:
            sections["celery"] = {"workers": {h: 2 for h in HOSTS["celery"]}}
        if "storage" in engines:
            sections["storage"] = {"backend": "sshfs", "server": "a", "data_dir": "/shared/data"}
        if "mpmanager" in engines:
            sections["mpmanager"] = {"address": "a:50000", "processes": {h: 2 for h in HOSTS["mpmanager"]}}
        if "opencl" in engines:
            sections["opencl"] = {
                "hosts": {h: {"platforms": ["Portable Computing Language"]} for h in opencl_hosts}
            }
        if "luigi" in engines:
            sections["luigi"] = {
                "endpoint": "https://a:8082",
                "pipeline_workers": HOSTS["luigi"],
                "pipeline_backends": {"generate": "dask", "process": "dask", "aggregate": "spark"},
            }
        if "mpi" in engines:
            sections["mpi"] = {
                "hostfile": "/etc/clusterforge/mpi/hostfile",
                "slots": {h: 2 for h in HOSTS["mpi"]},
            }
        if "gpu" in engines:
            sections["gpu"] = {"hosts": {h: {"driver_version": "580.95.05"} for h in gpu_hosts}}
        return cj_cluster(CLUSTER_HOSTS, engines=sections)

    return make


def run(cluster: Any, names: list[str], **config: Any) -> dict[str, Result]:
    return run_checks(cluster, names, **config)


def stem(name: str) -> str:
    return f"notebooks.run.{name.removesuffix('.ipynb')}"


def test_every_shipped_notebook_has_a_known_answer_and_ends_in_an_assert_and_the_marker():
    assert SHIPPED and set(SHIPPED) == set(nbc.KNOWN_ANSWERS)
    for name in SHIPPED:
        doc = json.loads((REPO / "notebooks" / name).read_text())
        assert doc["metadata"]["kernelspec"]["name"] == "clusterforge"
        last = last_cell(name)
        assert "assert answer ==" in last and "CLUSTERFORGE_RESULT" in last, name


def test_the_hub_refuses_strangers_and_serves_a_kernel_under_the_limits(fake, cluster, cj_validator):
    validator = cj_validator("result.schema.json")
    results = run(cluster(), ["notebooks.hub"])
    for result in results.values():
        validator.validate(result.to_dict())
    assert {n: r.status for n, r in results.items()} == {
        "notebooks.hub.anonymous": PASS,
        "notebooks.hub.wrong_password": PASS,
        "notebooks.hub.kernel": PASS,
        "notebooks.hub.time_to_first_kernel": PASS,
        "notebooks.hub.limits": PASS,
    }
    assert results["notebooks.hub.time_to_first_kernel"].unit == "s"


def test_an_open_api_and_a_wrong_password_that_works_fail(fake, cluster):
    fake.anonymous_allowed = True
    fake.wrong_password_allowed = True
    results = run(cluster(), ["notebooks.hub"])
    assert results["notebooks.hub.anonymous"].status == FAIL
    assert results["notebooks.hub.wrong_password"].status == FAIL


def test_a_server_without_its_memory_limit_fails(fake, cluster):
    results = run(cluster(memory_limit="1536M"), ["notebooks.hub"])
    assert results["notebooks.hub.limits"].status == FAIL


def test_every_notebook_passes_with_answer_placement_and_wall_time(fake, cluster, cj_validator):
    validator = cj_validator("result.schema.json")
    results = run(cluster(), ["notebooks.run"])
    for result in results.values():
        validator.validate(result.to_dict())
    for name in SHIPPED:
        assert results[stem(name)].status == PASS, results[stem(name)].reason
        assert results[stem(name) + ".wall_time"].status == PASS
        if notebook_engine(name):
            assert results[stem(name) + ".placement"].status == PASS
    assert ("DELETE", f"/hub/api/users/{USER}/server") in fake.calls


def timed_notebooks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, float]]:
    """Wrap run_notebook: each notebook takes 50 ms; returns (label, start, end) of each as it ends."""
    spans: list[tuple[str, float, float]] = []
    original = nbc.NotebooksRun.run_notebook

    def timed(self, ctx, settings, hub, user, plan):
        start = time.monotonic()
        time.sleep(0.05)
        judged = original(self, ctx, settings, hub, user, plan)
        spans.append((plan.label, start, time.monotonic()))
        return judged

    monkeypatch.setattr(nbc.NotebooksRun, "run_notebook", timed)
    return spans


def overlaps(spans: list[tuple[str, float, float]]) -> set[frozenset[str]]:
    return {frozenset((a, b)) for a, s1, e1 in spans for b, s2, e2 in spans if a < b and s1 < e2 and s2 < e1}


SPARK_NOTEBOOKS = {
    stem(n) for n in ("02-pyspark.ipynb", "13-pandas-on-spark.ipynb", "15-luigi-pipeline.ipynb")
}


def test_notebooks_run_two_at_a_time_but_never_two_on_spark(fake, cluster, monkeypatch):
    spans = timed_notebooks(monkeypatch)
    judged = run(cluster(), ["notebooks.run"], overrides={"notebooks.run": {"cell_timeout": 30.0}})
    results = [r for name, r in judged.items() if name.startswith("notebooks.run.")]
    assert all(r.status in (PASS, SKIP) for r in results), [
        (r.name, r.reason) for r in results if r.status != PASS
    ]
    ran = [label for label, _, _ in spans]
    assert len(ran) == len(SHIPPED)
    assert set(ran) >= SPARK_NOTEBOOKS
    pairs = overlaps(spans)
    assert pairs, "no two notebooks ran at once"
    assert max(sum(s <= t < e for _, s, e in spans) for _, t, _ in spans) == 2  # never more than two kernels
    assert not [pair for pair in pairs if pair <= SPARK_NOTEBOOKS], "two Spark notebooks ran at once"
    # The results keep the notebooks' order, whichever finished first.
    answers = [r.name for r in results if r.name.count(".") == 2 and r.status != SKIP]
    assert answers == sorted(answers)


def test_the_spark_notebooks_wait_for_each_other_while_another_runs_beside(fake, cluster, monkeypatch):
    spans = timed_notebooks(monkeypatch)
    first = [
        "02-pyspark.ipynb",
        "13-pandas-on-spark.ipynb",
        "15-luigi-pipeline.ipynb",
        "01-dask-array-dataframe.ipynb",
    ]
    results = run(
        cluster(notebooks=first), ["notebooks.run"], overrides={"notebooks.run": {"cell_timeout": 30.0}}
    )
    assert all(results[stem(name)].status == PASS for name in first)
    pairs = overlaps(spans)
    assert not [pair for pair in pairs if pair <= SPARK_NOTEBOOKS], "two Spark notebooks ran at once"
    assert frozenset({stem(first[0]), stem(first[3])}) in pairs  # the Dask one did not wait for Spark


def test_spark_notebooks_run_side_by_side_as_many_as_the_master_shares_the_cores(fake, cluster, monkeypatch):
    # Two workers of two cores: a share of 2 runs two Spark applications at once, never three; a
    # share of 3 fits once.
    spans = timed_notebooks(monkeypatch)
    overrides = {"notebooks.run": {"cell_timeout": 30.0, "kernels": 3}}
    results = run(cluster(spark_share=2), ["notebooks.run"], overrides=overrides)
    assert all(results[name].status == PASS for name in SPARK_NOTEBOOKS)
    spark_spans = [span for span in spans if span[0] in SPARK_NOTEBOOKS]
    assert [pair for pair in overlaps(spark_spans)], "no two Spark notebooks ran at once"
    assert max(sum(s <= t < e for _, s, e in spark_spans) for _, t, _ in spark_spans) == 2
    spans.clear()
    results = run(cluster(spark_share=3), ["notebooks.run"], overrides=overrides)
    assert all(results[name].status == PASS for name in SPARK_NOTEBOOKS)
    assert not overlaps([span for span in spans if span[0] in SPARK_NOTEBOOKS])


def test_one_kernel_runs_the_notebooks_one_after_the_other(fake, cluster, monkeypatch):
    spans = timed_notebooks(monkeypatch)
    results = run(
        cluster(), ["notebooks.run"], overrides={"notebooks.run": {"cell_timeout": 30.0, "kernels": 1}}
    )
    assert all(r.status in (PASS, SKIP) for r in results.values())
    assert len(spans) == len(SHIPPED) and not overlaps(spans)
    assert [label for label, _, _ in spans] == sorted(label for label, _, _ in spans)


def test_a_kernel_that_cannot_start_stops_the_run_after_what_is_running(fake, cluster, monkeypatch):
    started: list[str] = []

    def broken(self, ctx, settings, hub, user, plan):
        started.append(plan.label)
        if plan.label == stem("03-celery-canvas.ipynb"):
            raise nbc.CheckError("starting a clusterforge kernel answered HTTP 500")
        time.sleep(0.3)  # the failure (at once, beside) lands long before these end
        return [ctx.result(plan.label, status=PASS)]

    monkeypatch.setattr(nbc.NotebooksRun, "run_notebook", broken)
    results = run(cluster(), ["notebooks.run"], overrides={"notebooks.run": {"cell_timeout": 30.0}})
    assert results["notebooks.run"].status == ERROR and "HTTP 500" in results["notebooks.run"].reason
    assert stem("15-luigi-pipeline.ipynb") not in started  # nothing new starts after the failure
    assert fake.calls[-1] == ("DELETE", f"/hub/api/users/{USER}/server")  # the server is stopped last


def test_side_by_side_keeps_the_order_and_raises_in_place():
    plans = [
        nbc.NotebookPlan(f"p{i}", f"n{i}", None, None, [], frozenset({"spark"} if i in (1, 2) else ()))
        for i in range(5)
    ]

    def execute(plan):
        time.sleep(0.02 * (5 - int(plan.label[1:])))  # the later ones finish first
        if plan.label == "n3":
            raise ValueError("n3 broke")
        return plan.label

    got = []
    with pytest.raises(ValueError, match="n3 broke"):
        for value in nbc.side_by_side(plans, 2, execute):
            got.append(value)
    assert got == ["n0", "n1", "n2"]
    assert list(nbc.side_by_side(plans[:3], 3, lambda plan: plan.label)) == ["n0", "n1", "n2"]
    assert list(nbc.side_by_side([], 2, lambda plan: plan.label)) == []


def test_a_worker_that_did_no_work_fails_placement(fake, cluster):
    FakeKernel.hosts["dask"] = ["b"]
    result = run(cluster(), ["notebooks.run"])[stem("01-dask-array-dataframe.ipynb") + ".placement"]
    assert result.status == FAIL and result.missing == ["c"]


def test_a_cell_that_raises_fails_with_its_error(fake, cluster):
    FakeKernel.fail_cell = "SparkSession.builder"
    result = run(cluster(), ["notebooks.run"])[stem("02-pyspark.ipynb")]
    assert result.status == FAIL and "ConnectionRefusedError" in result.reason


def test_a_notebook_for_an_engine_the_inventory_lacks_is_skipped(fake, cluster):
    results = run(cluster(engines=("dask", "spark")), ["notebooks.run"])
    assert results[stem("03-celery-canvas.ipynb")].status == SKIP
    assert results[stem("01-dask-array-dataframe.ipynb")].status == PASS


def test_a_notebook_that_requires_shared_storage_is_skipped_without_it(fake, cluster):
    results = run(cluster(engines=("dask", "spark", "celery")), ["notebooks.run"])
    shared = results[stem("05-shared-data.ipynb")]
    assert shared.status == SKIP and shared.reason == "the inventory provisions no storage"
    assert results[stem("01-dask-array-dataframe.ipynb")].status == PASS


def test_a_worker_that_cannot_see_the_saved_file_fails_the_shared_data_notebook(fake, cluster):
    FakeKernel.hosts["dask"] = ["b"]  # c's worker read another file (or none): not among the hosts
    FakeKernel.answers["05-shared-data.ipynb"] = (
        "dask",
        {"sum_squares": [333383335000], "same_file_everywhere": False},
    )
    results = run(cluster(), ["notebooks.run"])
    assert results[stem("05-shared-data.ipynb")].status == FAIL
    assert results[stem("05-shared-data.ipynb") + ".placement"].missing == ["c"]


def test_the_opencl_notebook_runs_on_the_hub_host_and_skips_where_it_is_no_opencl_node(fake, cluster):
    name = stem("07-pyopencl.ipynb")
    results = run(cluster(), ["notebooks.run"])
    assert results[name].status == PASS and results[name + ".placement"].status == PASS
    FakeKernel.hosts["opencl"] = ["b"]  # the work ran elsewhere than on the hub host
    assert run(cluster(), ["notebooks.run"])[name + ".placement"].status == FAIL
    skipped = run(cluster(opencl_hosts=("b", "c")), ["notebooks.run"])[name]
    assert skipped.status == SKIP
    assert skipped.reason == "the hub host (a) is not an OpenCL node (opencl_nodes or gpu_nodes)"
    assert (
        run(cluster(engines=("dask",)), ["notebooks.run"])[name].reason
        == "the inventory provisions no opencl"
    )


def test_the_gpu_notebook_runs_on_the_hub_host_and_skips_where_it_is_no_gpu_node(fake, cluster):
    notebook = "14-cupy-numba-cuda.ipynb"
    name = stem(notebook)
    results = run(cluster(), ["notebooks.run"])
    assert results[name].status == PASS and results[name + ".placement"].status == PASS
    FakeKernel.answers[notebook] = ("gpu", {**nbc.KNOWN_ANSWERS[notebook], "numba_cuda_sum_squares": 0})
    assert run(cluster(), ["notebooks.run"])[name].status == FAIL
    skipped = run(cluster(gpu_hosts=("b",)), ["notebooks.run"])[name]
    assert skipped.status == SKIP and skipped.reason == "the hub host (a) is not a GPU node (gpu_nodes)"
    no_gpu = run(cluster(engines=("dask", "spark")), ["notebooks.run"])[name]
    assert no_gpu.status == SKIP and no_gpu.reason == "the inventory provisions no gpu"


def test_the_mpi_notebook_needs_every_mpi_host_and_homes_on_the_share(fake, cluster):
    name = stem("12-mpi-ipyparallel.ipynb")
    results = run(cluster(), ["notebooks.run"])
    assert results[name].status == PASS and results[name + ".placement"].status == PASS
    FakeKernel.hosts["mpi"] = ["a", "b"]  # mpirun left out an MPI host
    assert run(cluster(), ["notebooks.run"])[name + ".placement"].missing == ["c"]
    local = run(cluster(shared_homes=False), ["notebooks.run"])[name]
    assert local.status == SKIP
    assert local.reason == (
        "the course accounts' homes are not on the share (jupyter_home_dir is not shared_storage_home_dir)"
    )
    no_mpi = run(cluster(engines=("dask", "storage")), ["notebooks.run"])[name]
    assert no_mpi.status == SKIP and no_mpi.reason == "the inventory provisions no mpi"


def test_the_luigi_notebook_is_judged_on_the_pipeline_and_the_workers_that_processed(fake, cluster):
    notebook = "15-luigi-pipeline.ipynb"
    name = stem(notebook)
    results = run(cluster(), ["notebooks.run"])
    assert results[name].status == PASS and results[name + ".placement"].status == PASS
    failed = {**nbc.KNOWN_ANSWERS[notebook], "luigi_status": "FAILED", "ok": None}
    FakeKernel.answers[notebook] = ("luigi", failed)
    FakeKernel.hosts["luigi"] = []
    results = run(cluster(), ["notebooks.run"])
    assert results[name].status == FAIL and results[name + ".placement"].missing == ["b", "c"]
    skipped = run(cluster(engines=("dask", "spark")), ["notebooks.run"])[name]
    assert skipped.status == SKIP and skipped.reason == "the inventory provisions no luigi"


def test_the_concurrency_notebook_fails_when_requests_did_not_overlap(fake, cluster):
    name = "10-async-threads-gevent.ipynb"
    answer = json.loads(json.dumps(nbc.KNOWN_ANSWERS[name]))
    answer["in_flight"]["gevent"] = 1  # the greenlets ran one after another (a blocking sleep)
    FakeKernel.answers[name] = (None, answer)
    assert run(cluster(), ["notebooks.run"])[stem(name)].status == FAIL


def test_a_notebook_missing_from_the_home_is_an_error(fake, cluster):
    fake.missing = {"02-pyspark.ipynb"}
    result = run(cluster(), ["notebooks.run"])[stem("02-pyspark.ipynb")]
    assert result.status == ERROR and "not copied" in result.reason


def test_unreadable_credentials_are_an_error(fake, cluster):
    result = run(cluster(credentials_file="/nonexistent/check.json"), ["notebooks.hub"])["notebooks.hub"]
    assert result.status == ERROR and "converge playbooks/jupyter.yml" in result.reason


@pytest.mark.parametrize(
    ("control", "check", "failing"),
    [
        ("wrong-answer", "notebooks.hub", {"anonymous", "wrong_password", "kernel", "limits"}),
        ("wrong-answer", "notebooks.run", {n.removesuffix(".ipynb") for n in SHIPPED}),
        (
            "missing-worker",
            "notebooks.run",
            {n.removesuffix(".ipynb") + ".placement" for n in SHIPPED if notebook_engine(n)},
        ),
    ],
)
def test_negative_controls(fake, cluster, control, check, failing):
    results = run(cluster(), [check], inject=control)
    prefix = check + "."
    assert {n.removeprefix(prefix) for n, r in results.items() if r.status == FAIL} == failing


@pytest.mark.parametrize(
    ("limit", "expected"), [("2G", 2 * 1024**3), ("1536M", 1536 * 1024**2), ("4096", 4096)]
)
def test_memory_limits_read_as_systemd_reads_them(limit, expected):
    assert nbc.memory_bytes(limit) == expected


def test_the_last_marker_line_wins_and_garbage_is_none():
    out = f'{nbc.MARKER}{{"answer": 1}}\nx\n{nbc.MARKER}{{"answer": 2}}\n'
    assert nbc.parse_result(out) == {"answer": 2}
    assert nbc.parse_result("nothing") is None
