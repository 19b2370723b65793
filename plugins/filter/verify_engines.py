# Copyright: clusterforge maintainers
# Apache-2.0
"""engines.* of cluster.json, assembled from what the engine roles published on the nodes.

Each engine role publishes, on every host it configures, that host's part of its engine section
of cluster.json in its final shape, as one local fact ``clusterforge_engine_<name>``
(``/etc/ansible/facts.d/clusterforge_engine_<name>.fact``). The verification tier merges the
parts of the hosts the inventory declares for the engine; it knows no fact layout. An engine
whose groups have members but whose parts are missing (a tier not converged, a failed install)
becomes ``{"unavailable": why}``, so that its checks FAIL instead of being skipped.

The table of engines (which groups declare each one, which hosts publish) is ENGINES below;
``verify_engines`` in the inventory overrides or adds entries. Adding an engine is one entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FACT_PREFIX = "clusterforge_engine_"

# How one engine entry is read, where the entry leaves a key out.
ENTRY_DEFAULTS: dict[str, Any] = {
    # Inventory groups that declare the engine (a member in any of them declares it).
    "groups": [],
    # Every one of `groups` must then have a member (false: any one of them is enough).
    "every_group": True,
    # Every member of `groups` publishes its part (false: only the head node publishes).
    "members": True,
    # The head node publishes a part too (the client configuration the checks use).
    "head": True,
    # What to converge when a part is missing.
    "playbook": "site.yml",
    # The engine is declared by its parts alone (a service a variable turns on, not a group): the
    # hosts of `groups` that published one make the section, and none makes no section.
    "optional": False,
}

ENGINES: dict[str, dict[str, Any]] = {
    "dask": {"groups": ["dask_scheduler", "dask_workers"], "playbook": "playbooks/dask.yml"},
    "spark": {"groups": ["spark_master", "spark_workers"], "playbook": "playbooks/spark.yml"},
    "mpi": {"groups": ["mpi_hosts"], "playbook": "playbooks/mpi.yml"},
    "celery": {"groups": ["celery_broker", "celery_workers"], "playbook": "playbooks/celery.yml"},
    "mpmanager": {"groups": ["mpmanager", "mpmanager_workers"], "playbook": "playbooks/mpmanager.yml"},
    "airflow": {"groups": ["airflow"], "members": False, "playbook": "playbooks/airflow.yml"},
    "luigi": {
        "groups": ["luigi", "airflow"],
        "every_group": False,
        "members": False,
        "playbook": "playbooks/airflow.yml",
    },
    "storage": {"groups": ["storage_server"], "playbook": "playbooks/storage.yml"},
    "gpu": {"groups": ["gpu_nodes"], "head": False, "playbook": "playbooks/gpu.yml"},
    "opencl": {
        "groups": ["opencl_nodes", "gpu_nodes"],
        "every_group": False,
        "head": False,
        "playbook": "playbooks/gpu.yml",
    },
    # The Dask client configuration on the head node publishes the bucket (an empty part when none
    # is declared: s3.object then SKIPs with that reason) and installs s3fs, which the check uses.
    "s3": {
        "groups": ["dask_scheduler", "dask_workers"],
        "every_group": False,
        "members": False,
        "playbook": "playbooks/dask.yml",
    },
    "jupyter": {"groups": ["jupyter"], "head": False, "playbook": "playbooks/jupyter.yml"},
    "monitoring": {"groups": ["monitoring"], "head": False, "playbook": "playbooks/monitoring.yml"},
    # The Python package cache (package_cache_enabled and package_cache_pip_enabled): its host publishes.
    "package_cache": {
        "groups": ["all"],
        "head": False,
        "optional": True,
        "playbook": "playbooks/package_cache.yml",
    },
}


class EngineSpecError(ValueError):
    """An entry of the engine table that cannot be used."""


def engine_table(overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """ENGINES with OVERRIDES applied (per key of an entry; an entry null removes the engine)."""
    table = {name: {**ENTRY_DEFAULTS, **entry} for name, entry in ENGINES.items()}
    for name, entry in (overrides or {}).items():
        if entry is None:
            table.pop(name, None)
            continue
        if not isinstance(entry, Mapping):
            raise EngineSpecError(f"verify_engines.{name}: expected a mapping, got {entry!r}")
        unknown = sorted(set(entry) - set(ENTRY_DEFAULTS))
        if unknown:
            raise EngineSpecError(
                f"verify_engines.{name}: unknown keys {', '.join(unknown)} "
                f"(known: {', '.join(sorted(ENTRY_DEFAULTS))})"
            )
        table[name] = {**table.get(name, ENTRY_DEFAULTS), **entry}
    for name, entry in table.items():
        if not entry["groups"] or not all(isinstance(g, str) for g in entry["groups"]):
            raise EngineSpecError(f"verify_engines.{name}.groups: expected a non-empty list of group names")
    return table


class MergeConflict(ValueError):
    """Two hosts published different values for one key of an engine section."""


def merge_part(
    section: dict[str, Any], part: Mapping[str, Any], path: str, origin: dict[str, str], host: str
) -> None:
    """Merge one host's PART into SECTION: mappings key by key, equal values once, else a conflict."""
    for key, value in part.items():
        where = f"{path}.{key}"
        if key not in section:
            section[key] = _plain(value)
            origin[where] = host
        elif isinstance(section[key], dict) and isinstance(value, Mapping):
            merge_part(section[key], value, where, origin, host)
        elif section[key] != _plain(value):
            first = origin.get(where, "?")
            raise MergeConflict(
                f"hosts disagree on {where}: {first} published {section[key]!r}, "
                f"{host} published {_plain(value)!r}"
            )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _local_facts(hostvars: Mapping[str, Any], host: str) -> Mapping[str, Any]:
    """The ansible_local facts of HOST, and nothing else of its variables."""
    try:
        facts = hostvars[host].get("ansible_facts", {}) or {}
    except (KeyError, AttributeError):
        return {}
    local = facts.get("ansible_local", {}) if isinstance(facts, Mapping) else {}
    return local if isinstance(local, Mapping) else {}


def verify_engines(
    hostvars: Mapping[str, Any],
    groups: Mapping[str, Any],
    members: list[str],
    head: str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """engines.* of cluster.json for the hosts MEMBERS (the verified group), HEAD the head node."""
    members = list(members)
    wanted = set(members)
    engines: dict[str, Any] = {}
    for name, entry in engine_table(overrides).items():
        in_group = {g: [h for h in groups.get(g) or [] if h in wanted] for g in entry["groups"]}
        if not any(in_group.values()):
            continue
        empty = [g for g, hosts in in_group.items() if not hosts]
        if entry["every_group"] and empty:
            engines[name] = {
                "unavailable": f"the inventory provisions {name}, but group {', '.join(empty)} has no member"
            }
            continue
        publishers: list[str] = [head] if entry["head"] else []
        if entry["members"]:
            for hosts in in_group.values():
                publishers += [h for h in hosts if h not in publishers]
        fact = FACT_PREFIX + name
        if entry["optional"]:
            publishers = [h for h in publishers if fact in _local_facts(hostvars, h)]
            if not publishers:
                continue
        missing = [h for h in publishers if fact not in _local_facts(hostvars, h)]
        if missing:
            engines[name] = {
                "unavailable": f"the inventory provisions {name}, but these hosts published no {fact}: "
                f"{', '.join(missing)}; converge {entry['playbook']}"
            }
            continue
        section: dict[str, Any] = {}
        origin: dict[str, str] = {}
        try:
            for host in publishers:
                part = _local_facts(hostvars, host)[fact]
                if not isinstance(part, Mapping):
                    raise MergeConflict(f"{host} published {fact} as {type(part).__name__}, not a mapping")
                merge_part(section, part, f"engines.{name}", origin, host)
        except MergeConflict as exc:
            engines[name] = {"unavailable": f"{exc}; converge {entry['playbook']}"}
            continue
        engines[name] = section
    return engines


class FilterModule:
    """clusterforge verification filters."""

    def filters(self) -> dict[str, Any]:
        return {"verify_engines": verify_engines}
