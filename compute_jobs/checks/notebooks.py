"""Notebook checks: the course notebooks run through JupyterHub exactly as a participant runs them.

The suite logs in to the hub over HTTPS as the check account (a non-admin course account) through
the REST API, starts that account's own server (a systemd unit under the user limits), opens
kernels of the ``clusterforge`` kernel spec through the server's API and runs each notebook from
the account's home, cell after cell, each in a kernel of its own, two notebooks at a time (param
``kernels``) but no more that compute on Spark than the cluster runs applications at once: one
where an application takes every core of the standalone master (Spark's default), as many as
``engines.spark.app_default_cores`` fits into the workers' cores where the master grants each a
share. Each notebook ends in a cell that asserts its known answer
and prints one line ``CLUSTERFORGE_RESULT {"answer": ..., "hosts": [...]}``; the check judges that
answer against its own table and the hosts against the inventory's workers of the engine the
notebook uses (its ``metadata.clusterforge.engine``). A notebook for an engine the inventory does
not provision, or that ``requires`` one (``metadata.clusterforge.requires``, e.g. ``["storage"]``),
is SKIPped with the reason. A notebook of an engine installed per node (OpenCL, the GPU stack)
computes on the hub host: it runs where ``engines.<engine>.hosts`` names a host of group ``jupyter``
and must report that host, and SKIPs, saying so, where the hub host is not such a node.

``engines.jupyter`` in cluster.json::

    {
      "url": "https://10.0.0.11:8000",                              # the hub's front door
      "ca_file": "/etc/clusterforge/jupyter/ca.crt",                # CA of the hub's certificate
      "credentials_file": "/etc/clusterforge/jupyter/check.json",   # {"user", "password"}, 0600
      "kernel": "clusterforge",
      "notebooks": ["01-dask-array-dataframe.ipynb", ...],
      "notebooks_dir": "notebooks",                                  # relative to the user's home
      "cpu_quota_percent": 100,
      "memory_limit": "2G",
      "shared_homes": true                                           # homes on the share (every node)
    }
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from compute_jobs.context import CheckContext
from compute_jobs.engines import spark_share
from compute_jobs.model import FAIL, SKIP, Check, CheckError, Metric, Param, Result, register
from compute_jobs.transport import Transport, https_transport

MARKER = "CLUSTERFORGE_RESULT "
N = 1_000_000
SUM_SQUARES = N * (N + 1) * (2 * N + 1) // 6  # 333333833333500000
# What each shipped notebook must answer (its own assert says the same; the check does not trust it).
KNOWN_ANSWERS: dict[str, Any] = {
    "01-dask-array-dataframe.ipynb": {"array_sum_squares": SUM_SQUARES, "dataframe_counts": [10_000]},
    "02-pyspark.ipynb": {"rdd_sum_squares": SUM_SQUARES, "dataframe_counts": [10_000]},
    "03-celery-canvas.ipynb": {"chain": 32, "chord": 338350},
    "04-processes-threads.ipynb": {"loop": SUM_SQUARES, "processes": SUM_SQUARES, "threads": SUM_SQUARES},
    "05-shared-data.ipynb": {"sum_squares": [333383335000], "same_file_everywhere": True},
    "06-managers-cluster.ipynb": {"sum_squares": 2686700},
    "07-pyopencl.ipynb": {"sum_squares": SUM_SQUARES, "vecadd_exact": True},
    "08-profiling-blas.ipynb": {
        "square_calls": 300_000,
        "loop_equals_numpy": True,
        "sum_squares": 300_000 * 300_001 * 600_001 // 6,  # 9000045000050000
        "matmul_exact": True,
    },
    "09-numba-joblib.ipynb": {
        "jit_sum_squares": SUM_SQUARES,
        "python_equals_jit": True,
        "joblib_dask_sum_squares": SUM_SQUARES,
    },
    "10-async-threads-gevent.ipynb": {
        "totals": dict.fromkeys(("loop", "threads", "asyncio", "gevent", "processes"), SUM_SQUARES),
        # 40 requests: a loop waits for one at a time, 8 threads or greenlets for 8, asyncio for all.
        "in_flight": {"loop": 1, "threads": 8, "asyncio": 40, "gevent": 8},
    },
    "11-numba-pythran.ipynb": {
        f"{way}{form}": SUM_SQUARES for way in ("python", "numba", "pythran") for form in ("", "_array")
    },
    "12-mpi-ipyparallel.ipynb": {
        "allreduce_sum_squares": [SUM_SQUARES],
        "ranks_complete": True,
        "scatter_gather_sum_squares": 338350,
    },
    "13-pandas-on-spark.ipynb": {"sum_squares": SUM_SQUARES, "rows_per_key": [100_000], "keys": 10},
    "14-cupy-numba-cuda.ipynb": {
        "vecadd_exact": True,
        "cupy_sum_squares": SUM_SQUARES,
        "numba_cuda_sum_squares": SUM_SQUARES,
    },
    "15-luigi-pipeline.ipynb": {"luigi_status": "SUCCESS", "ok": True, "digests_ok": True, "problems": []},
}
# Engines whose notebooks compute on the hub host itself (the engine is installed per node): such a
# notebook runs where engines.<engine>.hosts names the hub host, and its work must run there.
HUB_ENGINES = {"opencl": "an OpenCL node (opencl_nodes or gpu_nodes)", "gpu": "a GPU node (gpu_nodes)"}
# What a notebook may require besides engines (metadata.clusterforge.requires): a flag of
# engines.jupyter, and the reason of the SKIP where it is off.
HUB_REQUIREMENTS = {
    "shared_homes": (
        "the course accounts' homes are not on the share (jupyter_home_dir is not shared_storage_home_dir)"
    )
}
# Engines of which only so many notebooks may compute at once (see engine_slots): a Spark application
# takes every core the standalone master has unless the master grants a share, so a second one would
# wait for the first to end (or starve until it does).
LIMITED_ENGINES = frozenset({"spark"})
# engines.<engine> keys that name the hosts which must take part (first one present wins).
WORKER_KEYS = ("workers", "expected_workers", "processes", "slots", "pipeline_workers")
MEMORY_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


# --- the HTTP and kernel boundaries (replaced by fakes in the unit tests) -------------------------


@dataclass
class CellOutcome:
    stdout: str
    error: str | None  # "Name: value" of the exception the cell raised, None when it ran clean


class Kernel(Protocol):
    def execute(self, code: str, timeout: float) -> CellOutcome: ...

    def close(self) -> None: ...


class WebSocketKernel:
    """A kernel of a user's server, driven over its websocket (Jupyter messaging protocol, JSON)."""

    def __init__(self, ws_url: str, token: str, ca_file: str, timeout: float) -> None:
        import asyncio

        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        self._loop = asyncio.new_event_loop()
        self._session = uuid.uuid4().hex
        request = HTTPRequest(
            ws_url,
            headers={"Authorization": f"token {token}"},
            ssl_options=ssl.create_default_context(cafile=ca_file),
            connect_timeout=timeout,
            request_timeout=timeout,
        )

        async def connect() -> Any:
            # Inside a coroutine: tornado finds the running loop (a check runs in its own thread).
            return await websocket_connect(request)

        self._ws = self._loop.run_until_complete(connect())

    def _message(self, code: str) -> tuple[str, str]:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "clusterforge-check",
            "session": self._session,
            "version": "5.3",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        content.update(allow_stdin=False, stop_on_error=True)
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        message["channel"] = "shell"
        return msg_id, json.dumps(message)

    def execute(self, code: str, timeout: float) -> CellOutcome:
        import asyncio

        msg_id, raw = self._message(code)

        async def run() -> CellOutcome:
            await self._ws.write_message(raw)
            stdout, error = [], None
            while True:
                text = await self._ws.read_message()
                if text is None:
                    raise CheckError("the kernel's websocket closed while a cell ran")
                reply = json.loads(text)
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = reply.get("msg_type"), reply.get("content", {})
                if kind == "stream" and content.get("name") == "stdout":
                    stdout.append(content.get("text", ""))
                elif kind == "error":
                    error = f"{content.get('ename')}: {content.get('evalue')}"
                elif kind == "status" and content.get("execution_state") == "idle":
                    return CellOutcome("".join(stdout), error)

        try:
            return self._loop.run_until_complete(asyncio.wait_for(run(), timeout))
        except TimeoutError as exc:
            raise CheckError(f"a cell did not finish within {timeout:.0f} s") from exc

    def close(self) -> None:
        async def shut() -> None:
            self._ws.close()  # writes the close frame through the loop's stream

        try:
            self._loop.run_until_complete(shut())
        finally:
            self._loop.close()


def open_websocket_kernel(ws_url: str, token: str, ca_file: str, timeout: float) -> Kernel:
    """The boundary to a running kernel (replaced by a fake in the unit tests)."""
    return WebSocketKernel(ws_url, token, ca_file, timeout)


def show_unit(unit: str) -> dict[str, str]:
    """``systemctl show`` of the limits of a user's server unit (readable by any account)."""
    done = subprocess.run(
        ["systemctl", "show", unit, "-p", "ActiveState,MemoryMax,CPUQuotaPerSecUSec"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


# --- the hub's REST API -----------------------------------------------------------------------------


class Hub:
    """The few REST calls a course user's session needs, through ``transport``."""

    def __init__(self, url: str, transport: Transport) -> None:
        self.url = url.rstrip("/")
        self.transport = transport
        self.token: str | None = None

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        token = token if token is not None else self.token
        if token:
            headers["Authorization"] = f"token {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        status, raw = self.transport(method, self.url + path, headers, data, timeout)
        try:
            return status, json.loads(raw.decode() or "null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return status, raw.decode(errors="replace")[:200]

    def request_token(self, user: str, password: str) -> tuple[int, str | None]:
        """A token of ``user`` for its own password (POST /hub/api/users/{user}/tokens)."""
        body = {"auth": {"username": user, "password": password}, "note": "clusterforge notebooks check"}
        body["expires_in"] = 3600
        status, reply = self.call("POST", f"/hub/api/users/{urllib.parse.quote(user)}/tokens", body, token="")
        return status, (reply.get("token") if isinstance(reply, dict) else None)

    def start_server(self, user: str, deadline: float, poll: float = 1.0) -> dict[str, Any]:
        """Start ``user``'s default server (or find it running) and wait until it is ready."""
        quoted = urllib.parse.quote(user)
        status, reply = self.call("POST", f"/hub/api/users/{quoted}/server", {})
        if status not in (201, 202, 400):
            raise CheckError(f"starting {user}'s server answered HTTP {status}: {reply}")
        while True:
            status, model = self.call("GET", f"/hub/api/users/{quoted}")
            server = (model or {}).get("servers", {}).get("", {}) if status == 200 else {}
            if server.get("ready"):
                return server
            if time.monotonic() > deadline:
                raise CheckError(f"{user}'s server was not ready in time (last state: {server or status})")
            time.sleep(poll)

    def stop_server(self, user: str) -> int:
        status, _ = self.call("DELETE", f"/hub/api/users/{urllib.parse.quote(user)}/server")
        return status


# --- judging ----------------------------------------------------------------------------------------


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The last ``CLUSTERFORGE_RESULT`` line a notebook printed, or None."""
    found = None
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            try:
                found = json.loads(line[len(MARKER) :])
            except json.JSONDecodeError:
                found = None
    return found


def memory_bytes(limit: str) -> int:
    """systemd's ``2G`` / ``1536M`` / ``1048576`` as bytes (base 1024, as MemoryMax= reads it)."""
    match = re.fullmatch(r"(\d+)([KMGT]?)", limit.strip())
    if not match:
        raise CheckError(f"engines.jupyter.memory_limit {limit!r} is not a systemd size such as 2G")
    return int(match.group(1)) * MEMORY_UNITS[match.group(2)]


def expected_hosts(ctx: CheckContext, engine: str) -> list[str] | None:
    """The hosts that must do a notebook's work: the workers engines.<engine> names (None: unknown);
    for an engine of HUB_ENGINES, the hub host where engines.<engine>.hosts names it (else none)."""
    section = ctx.cluster.engines.get(engine)
    if not isinstance(section, dict):
        return None
    if engine in HUB_ENGINES:
        return sorted(set(hub_host_names(ctx)) & set(section.get("hosts") or {}))
    for key in WORKER_KEYS:
        value = section.get(key)
        if isinstance(value, dict) and value:
            return sorted(value)
        if isinstance(value, list) and value:
            return sorted(value)
    return None


def hub_host_names(ctx: CheckContext) -> list[str]:
    return sorted(h.name for h in ctx.cluster.group("jupyter"))


def settings_of(ctx: CheckContext) -> dict[str, Any]:
    settings = dict(ctx.cluster.engines.get("jupyter", {}))
    for key in ("url", "ca_file", "credentials_file"):
        if not settings.get(key):
            raise CheckError(f"{ctx.cluster.source}: engines.jupyter needs {key}")
    return settings


def read_credentials(path: str) -> tuple[str, str]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data["user"], data["password"]
    except PermissionError as exc:
        raise CheckError(f"{path}: permission denied; run the suite as the service account") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise CheckError(
            f"cannot read the check account from {path}: {exc}; converge playbooks/jupyter.yml"
        ) from exc


@dataclass(frozen=True)
class NotebookPlan:
    """A notebook the check runs: its cells, who must do its work, which limited engines it uses."""

    path: str
    label: str
    engine: str | None
    hosts: list[str] | None
    cells: list[str]
    limited: frozenset[str]


def engines_used(ctx: CheckContext, meta: dict[str, Any]) -> set[str]:
    """The engines a notebook computes on: its engine, what it requires, and the back ends of a
    pipeline engine (engines.<engine>.pipeline_backends: the Luigi notebook aggregates on Spark)."""
    engine = meta.get("engine")
    used = {e for e in (engine, *meta.get("requires", [])) if e}
    section = ctx.cluster.engines.get(engine) if engine else None
    if isinstance(section, dict):
        used.update(str(v) for v in (section.get("pipeline_backends") or {}).values())
    return used


def engine_slots(ctx: CheckContext) -> dict[str, int]:
    """How many applications of each limited engine run at once on this cluster: Spark's standalone
    master grants an application every free core unless ``engines.spark.app_default_cores`` (the
    master's spark.deploy.defaultCores) gives each a share; then as many as fit in the workers' cores."""
    spark = ctx.cluster.engines.get("spark")
    share, cores = spark_share(spark) if isinstance(spark, dict) else (0, 0)
    return {"spark": max(1, cores // share) if share > 0 and cores > 0 else 1}


Outcome = TypeVar("Outcome")


def side_by_side(
    plans: list[NotebookPlan],
    kernels: int,
    execute: Callable[[NotebookPlan], Outcome],
    slots: dict[str, int] | None = None,
) -> Iterator[Outcome]:
    """EXECUTE the PLANS, up to KERNELS at once, never more at once that use a limited engine than
    its SLOTS (one where SLOTS does not say); each starts as soon as that allows, in the list's order
    (with more than one kernel, those of a limited engine first: they form the longest queue). The
    outcomes come in the list's order, each as soon as it and those before it are done; the first
    exception stops what has not started and is raised in its place once the running ones have
    finished."""
    lock = threading.Condition()
    pending = list(range(len(plans)))
    busy: dict[str, int] = {}
    outcomes: dict[int, tuple[bool, Any]] = {}
    stopped = False

    def fits(index: int) -> bool:
        return all(busy.get(e, 0) < max(1, (slots or {}).get(e, 1)) for e in plans[index].limited)

    def worker() -> None:
        nonlocal stopped
        while True:
            with lock:
                while True:
                    if stopped or not pending:
                        return
                    free = [i for i in pending if fits(i)]
                    # Beside another kernel, those of a limited engine first: they queue behind
                    # each other anyway. One kernel keeps the list's order.
                    index = min(free, key=lambda i: (kernels > 1 and not plans[i].limited, i), default=None)
                    if index is not None:
                        break
                    lock.wait()
                pending.remove(index)
                for engine in plans[index].limited:
                    busy[engine] = busy.get(engine, 0) + 1
            try:
                outcome: tuple[bool, Any] = (True, execute(plans[index]))
            except BaseException as exc:  # handed to the caller's thread, raised there
                outcome = (False, exc)
            with lock:
                for engine in plans[index].limited:
                    busy[engine] -= 1
                outcomes[index] = outcome
                stopped = stopped or not outcome[0]
                lock.notify_all()

    threads = [
        threading.Thread(target=worker, name=f"notebook-kernel-{n}", daemon=True)
        for n in range(max(1, min(kernels, len(plans))))
    ]
    for thread in threads:
        thread.start()
    try:
        for index in range(len(plans)):
            with lock:
                while index not in outcomes and not (stopped and index in pending):
                    lock.wait()
                if index not in outcomes:
                    break
                ok, value = outcomes[index]
            if not ok:
                raise value
            yield value
    finally:
        with lock:
            stopped = True
            lock.notify_all()
        for thread in threads:
            thread.join()


# --- the checks -------------------------------------------------------------------------------------


class _HubCheck(Check):
    scope = "cluster"
    engine = "jupyter"
    engine_keys = ("url",)

    def session(self, ctx: CheckContext) -> tuple[dict[str, Any], Hub, str, str]:
        settings = settings_of(ctx)
        hub = Hub(settings["url"], https_transport(settings["ca_file"]))
        user, password = read_credentials(settings["credentials_file"])
        return settings, hub, user, password

    def login(self, hub: Hub, user: str, password: str) -> None:
        status, token = hub.request_token(user, password)
        if status != 201 or not token:
            raise CheckError(f"{user} could not log in through the REST API (HTTP {status})")
        hub.token = token

    def open_kernel(
        self, ctx: CheckContext, settings: dict[str, Any], hub: Hub, user: str
    ) -> tuple[Kernel, str]:
        base = f"/user/{urllib.parse.quote(user)}/api/kernels"
        status, model = hub.call("POST", base, {"name": settings.get("kernel") or "clusterforge"})
        if status != 201 or not isinstance(model, dict):
            raise CheckError(f"starting a {settings.get('kernel')} kernel answered HTTP {status}: {model}")
        kernel_id = model["id"]
        ws = hub.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        kernel = open_websocket_kernel(
            f"{ws}{base}/{kernel_id}/channels", hub.token or "", settings["ca_file"], ctx.bounded(60)
        )
        return kernel, kernel_id

    def close_kernel(self, hub: Hub, user: str, kernel: Kernel, kernel_id: str) -> None:
        kernel.close()
        hub.call("DELETE", f"/user/{urllib.parse.quote(user)}/api/kernels/{kernel_id}")


@register
class NotebooksHub(_HubCheck):
    name = "notebooks.hub"
    category = "correctness"
    tags = frozenset({"jupyter", "notebooks"})
    description = (
        "JupyterHub: anonymous and wrong-password requests refused; a course account logs in, its server "
        "starts under its limits and a clusterforge kernel answers"
    )
    metrics = (Metric("time_to_first_kernel", "s", better="lower", help="login to a first kernel's answer"),)
    correctness_rule = (
        "GET /hub/api/users without a token and a token request with a wrong password get 403; the check "
        "account gets a token; its server unit runs with MemoryMax and CPUQuota of engines.jupyter; the "
        "kernel computes 6 * 7 = 42"
    )
    timeout = 240.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings, hub, user, password = self.session(ctx)
        status, _ = hub.call("GET", "/hub/api/users", token="")
        yield ctx.compare(
            "refused",
            "refused" if status == 403 else f"answered HTTP {status}",
            name="notebooks.hub.anonymous",
            rule="the hub's REST API answers 403 to a request without a token",
            details={"status": status},
        )
        status, token = hub.request_token(user, password + "-wrong")
        yield ctx.compare(
            "refused",
            "refused" if status == 403 and not token else f"answered HTTP {status}",
            name="notebooks.hub.wrong_password",
            rule="a token request with a wrong password gets 403",
            details={"status": status},
        )
        started = time.monotonic()
        self.login(hub, user, password)
        hub.start_server(user, time.monotonic() + ctx.bounded(ctx.remaining() - 30))
        kernel, kernel_id = self.open_kernel(ctx, settings, hub, user)
        try:
            outcome = kernel.execute("print(6 * 7)", ctx.bounded(60))
        finally:
            self.close_kernel(hub, user, kernel, kernel_id)
        first_kernel = time.monotonic() - started
        yield ctx.compare(
            "42",
            outcome.error or outcome.stdout.strip(),
            name="notebooks.hub.kernel",
            rule="a clusterforge kernel of the account's own server prints 6 * 7",
            details={"user": user, "kernel": settings.get("kernel")},
        )
        yield ctx.performance("time_to_first_kernel", [first_kernel], details={"user": user})
        yield from self.judge_limits(ctx, settings, user)

    def judge_limits(self, ctx: CheckContext, settings: dict[str, Any], user: str) -> Iterator[Result]:
        unit = f"jupyter-{user}-singleuser"
        shown = show_unit(unit)
        expected = {"ActiveState": "active"}
        if settings.get("memory_limit"):
            expected["MemoryMax"] = str(memory_bytes(str(settings["memory_limit"])))
        if settings.get("cpu_quota_percent"):
            expected["CPUQuotaPerSecUSec"] = f"{int(settings['cpu_quota_percent']) / 100:g}s"
        yield ctx.compare(
            expected,
            {key: shown.get(key, "?") for key in expected},
            name="notebooks.hub.limits",
            rule="the account's server runs in its own systemd unit with the limits engines.jupyter declares",
            details={"unit": unit},
        )


@register
class NotebooksRun(_HubCheck):
    name = "notebooks.run"
    category = "correctness"
    tags = frozenset({"jupyter", "notebooks"})
    description = (
        "Each course notebook, run in the clusterforge kernel of a course account's server: known answer, "
        "and the work ran on every worker host of its engine"
    )
    params = (
        Param("cell_timeout", float, 300.0, "seconds one cell may run", 1.0, 3600.0, smoke=30.0),
        Param(
            "kernels",
            int,
            2,
            "notebooks that run at once, each in a kernel of its own (as a participant with two open "
            "notebooks); no more that compute on Spark than the cluster runs applications at once "
            "(engines.spark.app_default_cores)",
            1,
            8,
        ),
    )
    metrics = (Metric("wall_time", "s", better="lower", help="one notebook, first cell to last"),)
    correctness_rule = "the notebook's CLUSTERFORGE_RESULT answer equals the check's known answer"
    placement_rule = "hosts the notebook reports == the workers engines.<engine> names"
    timeout = 900.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings, hub, user, password = self.session(ctx)
        self.login(hub, user, password)
        hub.start_server(user, time.monotonic() + ctx.bounded(ctx.remaining() - 30))
        folder = (settings.get("notebooks_dir") or "notebooks").strip("/")
        try:
            plans: list[NotebookPlan] = []
            for name in settings.get("notebooks") or []:
                ctx.check_deadline()
                judged, plan = self.plan_notebook(ctx, settings, hub, user, f"{folder}/{name}")
                yield from judged
                if plan is not None:
                    plans.append(plan)

            def execute(plan: NotebookPlan) -> list[Result]:
                ctx.check_deadline()
                return self.run_notebook(ctx, settings, hub, user, plan)

            for judged in side_by_side(plans, ctx.params.kernels, execute, engine_slots(ctx)):
                yield from judged
        finally:
            hub.stop_server(user)

    def plan_notebook(
        self, ctx: CheckContext, settings: dict[str, Any], hub: Hub, user: str, path: str
    ) -> tuple[list[Result], NotebookPlan | None]:
        """What to run of the notebook at PATH, or the SKIP/ERROR that stands for it."""
        name = path.rsplit("/", 1)[-1]
        label = f"notebooks.run.{name.removesuffix('.ipynb')}"
        status, model = hub.call(
            "GET", f"/user/{urllib.parse.quote(user)}/api/contents/{urllib.parse.quote(path)}"
        )
        if status != 200 or not isinstance(model, dict):
            error = f"{user}'s server has no {path} (HTTP {status}): the notebooks were not copied"
            return [ctx.error(error, label)], None
        notebook = model.get("content") or {}
        meta = notebook.get("metadata", {}).get("clusterforge", {})
        engine = meta.get("engine")
        requires = [engine, *meta.get("requires", [])]
        lacking = [e for e in requires if e and e not in HUB_REQUIREMENTS and e not in ctx.cluster.engines]
        if lacking:
            reason = f"the inventory provisions no {' and no '.join(lacking)}"
            return [ctx.result(label, status=SKIP, reason=reason)], None
        unmet = [HUB_REQUIREMENTS[r] for r in requires if r in HUB_REQUIREMENTS and not settings.get(r)]
        if unmet:
            return [ctx.result(label, status=SKIP, reason="; ".join(unmet))], None
        hosts = expected_hosts(ctx, engine) if engine else None
        if engine in HUB_ENGINES and not hosts:
            where = ", ".join(hub_host_names(ctx)) or "no host in group jupyter"
            reason = f"the hub host ({where}) is not {HUB_ENGINES[engine]}"
            return [ctx.result(label, status=SKIP, reason=reason)], None
        cells = [
            "".join(c.get("source", "")) for c in notebook.get("cells", []) if c.get("cell_type") == "code"
        ]
        plan = NotebookPlan(
            path, label, engine, hosts, cells, frozenset(engines_used(ctx, meta) & LIMITED_ENGINES)
        )
        return [], plan

    def run_notebook(
        self, ctx: CheckContext, settings: dict[str, Any], hub: Hub, user: str, plan: NotebookPlan
    ) -> list[Result]:
        """Run PLAN's cells in a kernel of its own and judge what the notebook printed."""
        name = plan.path.rsplit("/", 1)[-1]
        kernel, kernel_id = self.open_kernel(ctx, settings, hub, user)
        started = time.monotonic()
        stdout, error = [], None
        try:
            for number, code in enumerate(plan.cells, start=1):
                try:
                    outcome = kernel.execute(code, ctx.bounded(ctx.params.cell_timeout))
                except CheckError as exc:  # this notebook fails; the next one still runs
                    error = f"cell {number}: {exc}"
                    break
                stdout.append(outcome.stdout)
                if outcome.error:
                    error = f"cell {number}: {outcome.error}"
                    break
        finally:
            self.close_kernel(hub, user, kernel, kernel_id)
        wall = time.monotonic() - started
        result = parse_result("".join(stdout)) or {}
        details = {"path": plan.path, "engine": plan.engine or "none", "user": user, "error": error}
        label = plan.label
        judged = []
        if error:
            reason = f"{plan.path} stopped at {error}"
            judged.append(
                ctx.result(label, category="correctness", status=FAIL, reason=reason, details=details)
            )
        else:
            judged.append(
                ctx.compare(
                    KNOWN_ANSWERS.get(name, "a known answer"),
                    result.get("answer"),
                    name=label,
                    details=details,
                )
            )
        if plan.hosts is not None and not error:
            judged.append(
                ctx.compare_sets(
                    plan.hosts, result.get("hosts") or [], name=f"{label}.placement", details=details
                )
            )
        judged.append(ctx.performance("wall_time", [wall], name=f"{label}.wall_time", details=details))
        return judged
