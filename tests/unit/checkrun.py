"""Run a few registered checks against a test cluster, as the unit tests of the checks do."""

from __future__ import annotations

from typing import Any

from compute_jobs.model import Registry, Result, registry
from compute_jobs.runner import RunConfig, Runner


def run_checks(
    cluster: Any, names: list[str], target: str = "a", overrides: dict[str, Any] | None = None, **config: Any
) -> dict[str, Result]:
    """Results by name of the checks ``names`` only, with their smoke parameters unless ``overrides``."""
    local = Registry()
    for name in names:
        local.register(registry.get(name))
    if overrides is None:
        overrides = {name: registry.get(name).smoke_params() for name in names}
    outcome = Runner(local).run(RunConfig(cluster=cluster, target=target, overrides=overrides, **config))
    return {r.name: r for r in outcome.results}
