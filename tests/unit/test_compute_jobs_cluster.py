"""cluster.json: the JSON Schema and the hand-written validator agree, and errors name the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from compute_jobs.cluster import ClusterError, cluster_from_dict, load_cluster, validate_cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "compute_jobs" / "schema" / "cluster.example.json"


def example() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_example_is_valid_for_schema_and_validator(cj_validator):
    doc = example()
    cj_validator("cluster.schema.json").validate(doc)
    assert validate_cluster(doc) == []
    cluster = load_cluster(str(EXAMPLE))
    assert [h.name for h in cluster.hosts] == ["cf-lab-1", "cf-lab-2", "cf-lab-3"]
    assert cluster.head.name == "cf-lab-1"
    assert cluster.net_endpoint(cluster.hosts[0]) == ("10.213.17.11", 18555)
    assert cluster.net_endpoint(cluster.hosts[2]) == ("10.213.17.13", 18556)
    assert cluster.hosts[2].gpus == 0 and cluster.hosts[2].gpu_models == ()
    assert cluster.params["node.stream"] == {"n": 5000000}


def test_minimal_document_gets_defaults(cj_cluster_dict, cj_validator):
    doc = cj_cluster_dict()
    del doc["net"]
    cj_validator("cluster.schema.json").validate(doc)
    cluster = cluster_from_dict(doc)
    assert cluster.net is None and cluster.engines == {} and cluster.pinned_libraries == {}
    assert cluster.head.name == "a"


def _set(path: list[Any], value: Any):
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]):
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


# (mutation, message the hand-written validator must produce, whether JSON Schema can see it too)
MALFORMED = [
    (_set(["hosts", 1, "cores"], "two"), 'hosts[1].cores: expected integer >= 1, got "two"', True),
    (_set(["hosts", 0, "cores"], 0), "hosts[0].cores: expected integer >= 1, got 0", True),
    (_set(["hosts", 0, "cores"], True), "hosts[0].cores: expected integer >= 1, got true", True),
    (_set(["hosts", 2, "memory_mb"], 1.5), "hosts[2].memory_mb: expected integer >= 1, got 1.5", True),
    (_delete(["hosts", 1, "address"]), "hosts[1].address: required field is missing", True),
    (_set(["hosts", 0, "core"], 2), "hosts[0].core: unknown field", True),
    (_set(["hosts", 0, "groups"], "head"), 'hosts[0].groups: expected array of strings, got "head"', True),
    (_set(["hosts", 0, "net_port"], 70000), "hosts[0].net_port: expected integer 1..65535, got 70000", True),
    (_set(["hosts", 1, "name"], "cf-lab-1"), 'hosts[1].name: duplicate host name "cf-lab-1"', False),
    (_set(["hosts"], []), "hosts: expected non-empty array of host objects, got []", True),
    (_delete(["run_id"]), "run_id: required field is missing", True),
    (_set(["schema_version"], 2), "schema_version: expected 1", True),
    (_set(["inventory_hash"], "abc"), 'inventory_hash: expected "sha256:" followed by 64', True),
    (_set(["cluster_name"], "my lab"), "cluster_name: expected name of letters", True),
    (_set(["net", "port"], "18555"), 'net.port: expected integer 1..65535, got "18555"', True),
    (_delete(["net", "token_file"]), "net.token_file: required field is missing", True),
    (_set(["pinned_libraries", "numpy"], 2), "pinned_libraries.numpy: expected version string, got 2", True),
    (_set(["engines", "dask"], "tcp://x"), 'engines.dask: expected object, got "tcp://x"', True),
    (
        _set(["engines", "spark", "expected_workers"], "two"),
        'engines.spark.expected_workers: expected array of strings or integer, got "two"',
        True,
    ),
    (
        _set(["params", "node.stream"], 5),
        "params.node.stream: expected object of parameter name -> value",
        True,
    ),
    (_set(["params", "node.stream", "n"], [1]), "params.node.stream.n: expected number, string", True),
    (_set(["extra"], 1), "extra: unknown field", True),
]


@pytest.mark.parametrize(("mutate", "message", "schema_sees_it"), MALFORMED)
def test_malformed_cluster_json_names_the_field(mutate, message, schema_sees_it, cj_validator, tmp_path):
    doc = copy.deepcopy(example())
    mutate(doc)
    problems = validate_cluster(doc)
    assert any(message in p for p in problems), problems
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ClusterError) as caught:
        load_cluster(str(path))
    assert f"{path}: " in str(caught.value) and message in str(caught.value)
    schema_errors = list(cj_validator("cluster.schema.json").iter_errors(doc))
    assert bool(schema_errors) == schema_sees_it


def test_every_problem_is_reported_at_once():
    doc = example()
    doc["hosts"][0]["cores"] = "x"
    doc["hosts"][1]["memory_mb"] = -1
    problems = validate_cluster(doc)
    assert len(problems) == 2


def test_unreadable_and_invalid_json(tmp_path):
    with pytest.raises(ClusterError, match="cannot read"):
        load_cluster(str(tmp_path / "absent.json"))
    bad = tmp_path / "cluster.json"
    bad.write_text('{"schema_version": 1,\n "hosts": [}')
    with pytest.raises(ClusterError, match="not valid JSON: line 2"):
        load_cluster(str(bad))
    top = tmp_path / "list.json"
    top.write_text("[]")
    with pytest.raises(ClusterError, match="expected object, got"):
        load_cluster(str(top))


# --- engine sections, typed once (compute_jobs/engines.py) --------------------------------------


def test_the_schema_engines_part_is_generated_from_the_typed_sections():
    """Regenerate: python -m compute_jobs.engines (engines: properties.engines, unavailable: $defs)."""
    from compute_jobs.engines import UNAVAILABLE_SCHEMA, engines_schema

    schema = json.loads((Path(__file__).parents[2] / "compute_jobs/schema/cluster.schema.json").read_text())
    assert schema["properties"]["engines"] == engines_schema()
    assert schema["$defs"]["unavailable"] == UNAVAILABLE_SCHEMA


BAD_SECTIONS = [
    ({"dask": {"endpoint": "tls://x:8786", "tls": True}}, "engines.dask.tls: not a field of engines.dask"),
    (
        {"dask": {"workers": {"n2": {"nthreads": "2"}}}},
        'engines.dask.workers.n2.nthreads: expected integer, got "2"',
    ),
    ({"mpi": {"slots": {"n1": -1}}}, "engines.mpi.slots.n1: expected an integer >= 0, got -1"),
    ({"celery": {"workers": ["n2"]}}, "engines.celery.workers: expected object of name -> integer"),
    ({"gpu": {"hosts": {"g1": {"driver_version": 550}}}}, "engines.gpu.hosts.g1.driver_version: expected"),
    ({"luigi": {"unavailable": "x", "endpoint": "y"}}, "engines.luigi: an unavailable engine has no other"),
]


@pytest.mark.parametrize(("section", "problem"), BAD_SECTIONS)
def test_engine_sections_are_validated_when_cluster_json_loads(section, problem, tmp_path):
    doc = copy.deepcopy(example())
    doc["engines"] = section
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ClusterError) as caught:
        load_cluster(str(path))
    assert problem in str(caught.value)


def test_an_engine_without_a_type_is_any_object_until_it_gets_one():
    doc = copy.deepcopy(example())
    doc["engines"] = {"scratch": {"exports": {"n1": ["/srv/shared"]}}}
    assert validate_cluster(doc) == []


# --- one reading of the workers an engine expects -------------------------------------------------


def test_worker_maps_and_host_counts_are_read_one_way_for_every_engine():
    from compute_jobs.engines import host_counts, worker_map

    spark = {"workers": {"b": {"cores": 2}, "a": {"cores": 1}}, "expected_workers": ["a", "b"]}
    assert list(worker_map(spark, "spark", "c.json")) == ["a", "b"]
    with pytest.raises(ValueError, match=r"engines\.spark\.expected_workers \['a'\] differs"):
        worker_map({**spark, "expected_workers": ["a"]}, "spark", "c.json")
    assert host_counts({"slots": {"a": 2, "b": 1}}, "mpi", "slots", "c.json") == {"a": 2, "b": 1}
    assert host_counts({}, "celery", "workers", "c.json") == {}  # the checks fall back to the group
    for bad in ({"a": 0}, {"a": True}, {"a": "2"}, ["a"]):
        with pytest.raises(ValueError, match=r"c\.json: engines\.celery\.workers must map host names"):
            host_counts({"workers": bad}, "celery", "workers", "c.json")
