"""Luigi check: the file pipeline as Luigi tasks through the central scheduler ``luigid``.

``engines.luigi`` in cluster.json::

    {
      "endpoint": "https://10.0.0.11:8082",                 # luigid behind its authenticating proxy
      "client_config": "/etc/clusterforge/luigi/client.cfg", # [core] scheduler_url with credentials
      "ca_file": "/etc/clusterforge/tls/ca.crt",            # CA of the proxy's certificate (https)
      "pipeline_config": "/etc/clusterforge/luigi/pipeline.json",
      "python": "/opt/clusterforge/luigi-venv/bin/python",   # the Luigi venv (imports clusterforge_pipeline)
      "pipeline_backends": {"generate": "dask", "process": "dask", "aggregate": "spark"},
      "pipeline_workers": ["node-2", "node-3"]
    }
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from clusterforge_pipeline.orchestrate import parse_output
from compute_jobs.checks._pipeline import judge_pipeline, pipeline_spec
from compute_jobs.context import CheckContext
from compute_jobs.model import Check, CheckError, Param, Result, register
from compute_jobs.transport import Transport, https_transport, urllib_transport

TASKS = ("Generate", "Process", "Aggregate", "Verify")

Runner = Callable[..., Any]


def run_subprocess(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """The boundary to the Luigi client process (replaced by a fake in the unit tests)."""
    return subprocess.run(command, **kwargs)


def scheduler_url(path: str) -> str:
    """``[core] scheduler_url`` of a Luigi client configuration (it carries the proxy credentials)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
        return parser.get("core", "scheduler_url")
    except (OSError, configparser.Error) as exc:
        raise CheckError(
            f"cannot read scheduler_url from {path}: {exc}; converge the airflow tier (luigi client)"
        ) from exc


def split_credentials(url: str) -> tuple[str, str | None]:
    """``http://user:pw@host:port/`` -> (``http://host:port/``, ``Basic ...`` header or None)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    plain = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    return plain, "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def done_tasks(base: str, auth: str | None, run_id: str, transport: Transport) -> tuple[int, list[str]]:
    """Families of the DONE tasks of ``run_id`` that luigid knows (HTTP status, sorted names)."""
    query = urllib.parse.quote(json.dumps({"status": "DONE", "search": run_id}))
    headers = {"Accept": "application/json"}
    if auth:
        headers["Authorization"] = auth
    status, raw = transport("GET", base.rstrip("/") + f"/api/task_list?data={query}", headers, None, 15.0)
    if status != 200:
        return status, []
    response = json.loads(raw.decode()).get("response", {})
    names = sorted(
        {
            v.get("name") or k.split("_", 1)[0]
            for k, v in response.items()
            if run_id in json.dumps(v.get("params", {}))
        }
    )
    return status, names


@register
class LuigiPipeline(Check):
    name = "luigi.pipeline"
    category = "correctness"
    scope = "cluster"
    engine = "luigi"
    tags = frozenset({"luigi", "pipeline"})
    description = (
        "File pipeline as Luigi tasks through luigid: known answer, every task seen; anonymous refused"
    )
    params = (
        Param("files", int, 8, "files generated", 1, 4096, smoke=2),
        Param("mib", int, 8, "MiB per file", 1, 4096, smoke=1),
        Param("seed", int, 20261121, "data seed", 0, 2**32 - 1),
    )
    correctness_rule = (
        "count, sum, sum of squares, min, max equal the closed forms; file SHA-256s match; luigid lists "
        "Generate, Process, Aggregate and Verify of the run as DONE; a request without credentials gets 401"
    )
    placement_rule = "hosts that summarised files == engines.luigi.pipeline_workers (Dask back end)"
    timeout = 240.0

    def __init__(self, runner: Runner | None = None, transport: Transport | None = None) -> None:
        self.runner = runner or run_subprocess
        self.transport = transport or urllib_transport

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        settings = dict(ctx.cluster.engines.get("luigi", {}))
        for key in ("endpoint", "client_config", "pipeline_config", "python"):
            if not settings.get(key):
                raise CheckError(f"{ctx.cluster.source}: engines.luigi needs {key}")
        spec = pipeline_spec(ctx, settings)
        base, auth = split_credentials(scheduler_url(settings["client_config"]))
        transport, ca_file = self.transport, str(settings.get("ca_file") or "")
        if settings["endpoint"].startswith("https://"):
            if not ca_file:
                raise CheckError(f"{ctx.cluster.source}: engines.luigi needs ca_file for an https endpoint")
            transport = https_transport(ca_file)
        anon_status, _ = transport("GET", settings["endpoint"].rstrip("/") + "/api/task_list", {}, None, 10.0)
        yield ctx.compare(
            "refused",
            "refused" if anon_status == 401 else f"answered HTTP {anon_status}",
            name="luigi.pipeline.anonymous",
            rule="luigid is reachable only through the proxy, which answers 401 without credentials",
            details={"status": anon_status},
        )
        run_id = f"cf-check-{uuid.uuid4().hex[:12]}"
        env = dict(os.environ)
        env["LUIGI_CONFIG_PATH"] = settings["client_config"]
        env["CLUSTERFORGE_PIPELINE_CONFIG"] = settings["pipeline_config"]
        if ca_file:
            # Luigi's client sends its requests through the requests library, which trusts this CA.
            env["REQUESTS_CA_BUNDLE"] = ca_file
        command = [settings["python"], "-m", "clusterforge_pipeline.luigi_tasks", "--run-id", run_id]
        command += ["--files", str(spec.files), "--mib", str(spec.mib), "--seed", str(spec.seed)]
        try:
            done = self.runner(
                command,
                capture_output=True,
                text=True,
                env=env,
                timeout=ctx.bounded(ctx.remaining() - 5),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CheckError(
                f"the Luigi pipeline did not finish within the check's deadline ({run_id})"
            ) from exc
        except OSError as exc:
            raise CheckError(f"cannot start {settings['python']}: {exc}") from exc
        try:
            outcome = parse_output("luigi", done.stdout or "")
        except RuntimeError as exc:
            tail = "\n".join((done.stderr or "").strip().splitlines()[-10:])
            raise CheckError(f"Luigi pipeline printed no result (exit {done.returncode}): {tail}") from exc
        details = {
            "run_id": run_id,
            "spec": spec.to_dict(),
            "luigi_status": outcome.get("luigi_status"),
            "hosts": (outcome.get("verify") or {}).get("hosts"),
        }
        status, names = done_tasks(base, auth, run_id, transport)
        yield ctx.compare(
            sorted(TASKS),
            names if status == 200 else f"task_list answered HTTP {status}",
            name="luigi.pipeline.scheduler",
            rule="luigid lists the run's Generate, Process, Aggregate and Verify as DONE",
            details=details,
        )
        yield from judge_pipeline(ctx, spec, outcome.get("verify"), settings, details)
