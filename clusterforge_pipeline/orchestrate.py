"""How an orchestrator (an Airflow task, a Luigi task) runs a pipeline step: a subprocess in the
cluster venv, whose Dask and Spark clients match the provisioned services exactly.

Standard library only: this module is imported inside the Airflow and Luigi virtual environments.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from .spec import CONFIG_JSON_ENV, NodeConfig, load_config

MARKER = "--- clusterforge-pipeline result ---"
DEFAULT_TIMEOUT = 600.0


class StepFailed(RuntimeError):
    """A step exited non-zero or printed no result; the message carries the end of its stderr."""


def step_command(config: NodeConfig, step: str) -> list[str]:
    return [config.python, "-m", "clusterforge_pipeline", step]


def step_env(config: NodeConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    paths = [config.pythonpath] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # The step uses exactly the configuration its orchestrator decided on.
    env[CONFIG_JSON_ENV] = json.dumps(config.to_dict())
    env.update(config.env)
    return env


def parse_output(step: str, stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].strip() == MARKER and index + 1 < len(lines):
            try:
                result = json.loads(lines[index + 1])
            except json.JSONDecodeError as exc:
                raise StepFailed(f"step {step}: result line is not JSON: {exc}") from exc
            if not isinstance(result, dict):
                raise StepFailed(f"step {step}: result is not a JSON object")
            return result
    raise StepFailed(f"step {step}: printed no result (last output: {stdout[-500:]!r})")


def run_step(
    step: str,
    payload: dict[str, Any],
    config: NodeConfig | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    runner: Any = subprocess.run,
) -> dict[str, Any]:
    """Run ``step`` with ``payload`` in the cluster venv and return its JSON result."""
    config = config or load_config()
    try:
        done = runner(
            step_command(config, step),
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            env=step_env(config),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StepFailed(f"step {step}: no result after {timeout:g} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-15:]
        raise StepFailed(f"step {step} exited {done.returncode}:\n" + "\n".join(tail))
    return parse_output(step, done.stdout or "")


def summary_of(verdict: dict[str, Any], aggregated: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's result object (Airflow's verify task and the Luigi pipeline return it)."""
    return {
        "ok": verdict["ok"],
        "problems": verdict["problems"],
        "expected": verdict["expected"],
        "observed": verdict["observed"],
        "digests_ok": verdict["digests_ok"],
        "backends": {
            "generate": aggregated["generate_backend"],
            "process": aggregated["process_backend"],
            "aggregate": aggregated["backend"],
        },
        "hosts": {
            "generate": aggregated["generate_hosts"],
            "process": aggregated["process_hosts"],
            "aggregate": aggregated["hosts"],
        },
        "regenerated": aggregated["regenerated"],
    }
