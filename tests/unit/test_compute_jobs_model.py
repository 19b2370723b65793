"""The check model and the runner: declarations, statuses, timeouts, comparators, controls, baselines."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from compute_jobs.baseline import FLOOR, Baseline, BaselineError, build_baseline
from compute_jobs.compare import drop_one, judge_sets, judge_values, percentile, perturb, sample_stats
from compute_jobs.model import (
    ERROR,
    FAIL,
    PASS,
    SKIP,
    Check,
    CheckError,
    DefinitionError,
    Metric,
    Param,
    ParamError,
    Reference,
    Registry,
    Result,
    SkipCheck,
    to_jsonable,
)
from compute_jobs.runner import (
    RunConfig,
    Runner,
    SelectionError,
    parse_param_overrides,
    resolve_params,
    select_checks,
)

CJ_HASH = "sha256:" + "ab" * 32  # as in conftest.cj_cluster_dict
RELEASE = threading.Event()  # lets abandoned "hung" checks finish when the module's tests are done


@pytest.fixture(scope="module", autouse=True)
def _release_hung_checks():
    yield
    RELEASE.set()


def fake(name: str, body: Any = None, registry: Registry | None = None, **attrs: Any) -> type[Check]:
    """Declare (and optionally register) a check whose run() is ``body(self, ctx)``."""
    namespace: dict[str, Any] = {
        "name": name,
        "category": "correctness",
        "tags": frozenset({"fake"}),
        "description": "a fake check",
        **attrs,
    }
    if body is not None:
        namespace["run"] = body
    cls = type("Fake_" + name.replace(".", "_"), (Check,), namespace)
    if registry is not None:
        registry.register(cls)
    return cls


def run_one(cls: type[Check], cluster: Any, **config: Any) -> list[Result]:
    registry = Registry()
    registry.register(cls)
    outcome = Runner(registry).run(RunConfig(cluster=cluster, target=config.pop("target", "a"), **config))
    return outcome.results


# --- declarations -------------------------------------------------------------------------------


def test_param_coercion_names_the_field():
    param = Param("n", int, 8, "size", minimum=1)
    assert param.coerce(5, "x") == 5
    assert param.coerce("12", "x") == 12
    with pytest.raises(ParamError, match=r'params\.node\.x\.n: expected integer >= 1, got "two"'):
        param.coerce("two", "params.node.x.n")
    with pytest.raises(ParamError, match="got 0"):
        param.coerce(0, "n")
    with pytest.raises(ParamError, match="got true"):
        param.coerce(True, "n")
    number = Param("t", float, 1.0, "t", maximum=2)
    assert number.coerce(1, "t") == 1.0
    with pytest.raises(ParamError, match="<= 2"):
        number.coerce(3.5, "t")
    flag = Param("f", bool, False, "flag")
    assert flag.coerce("yes", "f") is True
    with pytest.raises(ParamError):
        flag.coerce("maybe", "f")
    nullable = Param("b", int, None, "b", nullable=True)
    assert nullable.coerce(None, "b") is None
    with pytest.raises(ParamError, match="got null"):
        param.coerce(None, "n")


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"category": "speed"}, "category"),
        ({"tags": frozenset()}, "tags"),
        ({"scope": "rack"}, "scope"),
        ({"description": "two\nlines"}, "one line"),
        ({"params": (Param("n", int, 0, "n", minimum=1),)}, "default"),
        ({"params": (Param("n", int, 5, "n", minimum=1, smoke=0),)}, "smoke"),
        ({"params": (Param("timeout", float, 1.0, "reserved"),)}, "reserved"),
        ({"references": {"rate": Reference(1.0, -0.1, None, "GB/s")}}, "undeclared metric"),
        (
            {
                "metrics": (Metric("rate", "GB/s"),),
                "references": {"rate": Reference(1.0, -0.1, None, "MB/s")},
            },
            "unit",
        ),
        ({"metrics": (Metric("rate", "GB/s", better="faster"),)}, "better"),
    ],
)
def test_inconsistent_declarations_are_rejected_at_registration(attrs, message):
    name = attrs.pop("name", "fake.bad")
    with pytest.raises(DefinitionError, match=message):
        fake(name, registry=Registry(), **attrs)


def test_registering_two_checks_under_one_name_is_refused():
    registry = Registry()
    fake("fake.same", registry=registry)
    with pytest.raises(DefinitionError, match="registered twice"):
        fake("fake.same", registry=registry)


def test_reference_bounds_follow_the_reframe_convention():
    ref = Reference(100.0, -0.1, 0.2, "GB/s")
    assert ref.bounds() == pytest.approx((90.0, 120.0))
    assert ref.judge(90.0) is None and ref.judge(120.0) is None
    assert "outside reference [90, 120]" in ref.judge(89.9)
    assert ref.judge(120.1) is not None
    open_top = Reference(100.0, -0.25, None, "GB/s")
    assert open_top.judge(1e9) is None and open_top.judge(74.0) is not None
    assert Reference(100.0, None, None, "GB/s").judge(0.0) is None


# --- comparators and statistics -----------------------------------------------------------------


def test_percentiles_and_cv_match_numpy():
    samples = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0]
    stats = sample_stats(samples)
    assert stats["median"] == pytest.approx(np.median(samples))
    assert stats["p5"] == pytest.approx(np.percentile(samples, 5))
    assert stats["p95"] == pytest.approx(np.percentile(samples, 95))
    assert stats["cv"] == pytest.approx(np.std(samples, ddof=1) / np.mean(samples))
    assert percentile([7.0], 95) == 7.0
    assert sample_stats([0.0, 0.0])["cv"] is None


def test_numpy_percentiles_agree_with_the_closest_ranks_formula_on_real_samples():
    """p5/p95 come from np.percentile (linear); on a lab run's samples they equal the formula the
    suite used before to within a few units in the last place (numpy interpolates from the upper
    rank above the middle); the verdicts judge the median, which is unchanged."""

    def closest_ranks(values: list[float], q: float) -> float:
        ordered = sorted(values)
        pos = (len(ordered) - 1) * q / 100.0
        low, high = math.floor(pos), math.ceil(pos)
        return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

    lab = Path(__file__).parent / "data" / "lab-report.jsonl"
    records = [json.loads(line) for line in lab.read_text().splitlines()]
    samples = [r["samples"] for r in records if r.get("samples")]
    assert len(samples) > 50
    for values in [*samples, [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0], [7.0], [1.0, 2.0]]:
        stats = sample_stats(values)
        for q in (5, 95):
            assert math.isclose(stats[f"p{q}"], closest_ranks(values, q), rel_tol=1e-15, abs_tol=1e-300)
        assert stats["p5"] <= stats["median"] <= stats["p95"]


def test_value_comparator_exact_and_tolerance():
    assert judge_values(338350, 338350).passed
    assert not judge_values(338350, 338351).passed
    assert judge_values(1, 1.0).passed
    assert not judge_values([1, 2], (1, 2)).passed
    assert judge_values(np.arange(4), np.arange(4)).passed
    near = judge_values(math.pi, math.pi + 1e-12, tolerance=1e-9)
    assert near.passed and near.error == pytest.approx(1e-12, rel=1e-3)
    far = judge_values(math.pi, 3.14, tolerance=1e-9)
    assert not far.passed and "not < tolerance" in far.reason
    assert not judge_values(1.0, float("nan"), tolerance=1.0).passed
    assert not judge_values(1.0, 2.0, tolerance=1.0).passed  # the rule is strict: error < tolerance


def test_set_comparator_reports_both_directions():
    verdict = judge_sets(["a", "b", "c"], ["b", "c", "x"])
    assert not verdict.passed
    assert verdict.missing == ["a"] and verdict.unexpected == ["x"]
    assert verdict.reason() == "missing: a; unexpected: x"
    assert judge_sets({"a"}, ["a"]).passed


@pytest.mark.parametrize(
    ("value", "tolerance"),
    [
        (338350, None),
        (0, None),
        (3.141592653589793, 0.01),
        (np.float64(2.5), 0.5),
        (np.arange(5, dtype=np.float64), 0.9),
        (np.zeros(3, dtype=np.int64), None),
        (np.array([True, False]), None),
        ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", None),
        ("", None),
        (b"\x01\x02", None),
        ([1, 2, 3], None),
        ((1, 2), None),
        ({"a": 1}, None),
        ({"a", "b"}, None),
        (True, None),
        (None, None),
    ],
)
def test_perturbed_values_fail_the_comparison(value, tolerance):
    assert judge_values(value, value, tolerance=tolerance).passed
    assert not judge_values(value, perturb(value), tolerance=tolerance).passed


def test_drop_one_removes_exactly_one_member():
    assert sorted(drop_one({"w1", "w2", "w3"})) == ["w1", "w2"]
    assert drop_one([]) == []


def test_to_jsonable_gives_strict_json():
    data = to_jsonable({"a": np.float64(1.5), "b": float("inf"), "c": np.arange(2), "d": {3, 1}, "e": (1,)})
    assert data == {"a": 1.5, "b": None, "c": [0, 1], "d": [1, 3], "e": [1]}


# --- statuses -----------------------------------------------------------------------------------


def _exact(answer: Any):
    def body(self, ctx):
        yield ctx.compare(338350, answer, rule="sum of i^2 for i in 1..100")

    return body


def test_pass_and_fail_from_the_real_comparison(cj_cluster):
    (ok,) = run_one(fake("fake.sum", _exact(338350)), cj_cluster())
    assert ok.status == PASS and ok.reason == "" and ok.observed == 338350
    (bad,) = run_one(fake("fake.sum", _exact(338351)), cj_cluster())
    assert bad.status == FAIL and "differs" in bad.reason and "sum of i^2" in bad.reason
    assert bad.duration_s is not None and bad.started_at.endswith("Z")


def test_skip_paths_carry_a_reason(cj_cluster):
    def never(self, ctx):
        raise AssertionError("a skipped check must not run")

    def skip_inside(self, ctx):
        raise SkipCheck("no widgets on this node")
        yield

    cases = [
        (fake("fake.applies", never, applies=lambda self, ctx: "not today"), "not today"),
        (fake("fake.inside", skip_inside), "no widgets"),
        (fake("fake.gpu", never, groups=("gpu_nodes",)), "not in group gpu_nodes"),
        (fake("fake.dask", never, engine="dask"), "engines.dask"),
    ]
    for cls, reason in cases:
        (result,) = run_one(cls, cj_cluster())
        assert result.status == SKIP, cls.name
        assert reason in result.reason


def test_group_and_engine_checks_apply_when_declared(cj_cluster):
    hosts = [{"name": "a", "address": "127.0.0.1", "groups": ["gpu_nodes"], "cores": 1, "memory_mb": 1}]
    cluster = cj_cluster(hosts, engines={"dask": {"endpoint": "tcp://127.0.0.1:1"}})
    (gpu,) = run_one(fake("fake.gpu", _exact(338350), groups=("gpu_nodes",)), cluster)
    (dask,) = run_one(fake("fake.dask", _exact(338350), engine="dask"), cluster)
    assert gpu.status == PASS and dask.status == PASS


def test_an_engine_section_without_the_keys_a_check_needs_skips_naming_them(cj_cluster):
    def never(self, ctx):
        raise AssertionError("a check without its engine keys must not run")

    cluster = cj_cluster(engines={"dask": {"dashboard": "https://x/status"}})
    (both,) = run_one(
        fake("fake.dask", never, engine="dask", engine_keys=("endpoint", "config_dir")), cluster
    )
    assert both.status == SKIP and both.reason.endswith("engines.dask has neither endpoint nor config_dir")
    (one,) = run_one(fake("fake.ui", never, engine="dask", engine_keys=("webui",)), cluster)
    assert one.status == SKIP and one.reason.endswith("engines.dask has no webui")
    (found,) = run_one(fake("fake.board", _exact(338350), engine="dask", engine_keys=("dashboard",)), cluster)
    assert found.status == PASS


def test_an_engine_the_inventory_provisions_but_cannot_describe_fails(cj_cluster):
    def never(self, ctx):
        raise AssertionError("a check of an unavailable engine must not run")

    why = "the inventory provisions Dask, but these hosts have no facts of it: b (clusterforge_dask_worker)"
    cluster = cj_cluster(engines={"dask": {"unavailable": why}})
    (result,) = run_one(fake("fake.dask", never, engine="dask"), cluster)
    assert result.status == FAIL
    assert result.reason == f"engines.dask unavailable: {why}"
    # Under an injected fault the reason stays the unavailable engine, not a control error.
    (injected,) = run_one(fake("fake.dask", never, engine="dask"), cluster, inject="wrong-answer")
    assert injected.status == FAIL and "unavailable" in injected.reason


def test_check_error_and_exceptions_become_error_with_the_cause(cj_cluster):
    def cannot(self, ctx):
        raise CheckError("scheduler tcp://10.0.0.1:8786 refused the connection")
        yield

    def buggy(self, ctx):
        yield ctx.compare(1, 1)
        return {}["missing-key"]

    (error,) = run_one(fake("fake.cannot", cannot), cj_cluster())
    assert error.status == ERROR and "tcp://10.0.0.1:8786" in error.reason
    (crash,) = run_one(fake("fake.buggy", buggy), cj_cluster())
    assert crash.status == ERROR and crash.reason == "KeyError: 'missing-key'"
    assert "Traceback" in crash.details["traceback"]
    assert crash.details["partial"][0]["status"] == PASS  # what ran before the crash is kept


def test_hung_check_is_error_within_its_time_limit(cj_cluster):
    def hangs(self, ctx):
        RELEASE.wait(60)
        yield ctx.compare(1, 1)

    runner = Runner(Registry())
    runner.registry.register(fake("fake.hangs", hangs, timeout=0.3))
    start = time.monotonic()
    outcome = runner.run(RunConfig(cluster=cj_cluster(), target="a"))
    elapsed = time.monotonic() - start
    (result,) = outcome.results
    assert result.status == ERROR and "timed out" in result.reason
    assert elapsed < 3.0
    assert outcome.abandoned == ["fake.hangs"]


def test_cooperative_deadline_stops_a_check(cj_cluster):
    def loops(self, ctx):
        while True:
            ctx.check_deadline()
            time.sleep(0.01)
        yield

    start = time.monotonic()
    (result,) = run_one(fake("fake.loops", loops), cj_cluster(), timeout=0.2)
    assert result.status == ERROR and "timed out" in result.reason
    assert time.monotonic() - start < 3.0


def test_malformed_results_become_error(cj_cluster):
    def nothing(self, ctx):
        return []

    def not_a_result(self, ctx):
        yield {"status": "PASS"}

    def duplicated(self, ctx):
        yield ctx.compare(1, 1)
        yield ctx.compare(2, 2)

    def wrong_status(self, ctx):
        yield ctx.result(status="OK")

    assert run_one(fake("fake.nothing", nothing), cj_cluster())[0].reason == "check produced no results"
    assert run_one(fake("fake.dict", not_a_result), cj_cluster())[0].status == ERROR
    first, second = run_one(fake("fake.dup", duplicated), cj_cluster())
    assert first.status == PASS and second.status == ERROR and "duplicate" in second.reason
    assert "status 'OK'" in run_one(fake("fake.status", wrong_status), cj_cluster())[0].reason


# --- negative controls at the framework level ---------------------------------------------------


def _placement(self, ctx):
    yield ctx.compare_sets(["w1", "w2", "w3"], ["w3", "w1", "w2"], rule="every worker ran a task")


def test_wrong_answer_control_fails_correctness_only(cj_cluster):
    correct = fake("fake.sum", _exact(338350))
    place = fake("fake.place", _placement, category="placement")
    (normal,) = run_one(correct, cj_cluster())
    (injected,) = run_one(correct, cj_cluster(), inject="wrong-answer")
    assert normal.status == PASS and normal.control is None
    assert injected.status == FAIL and injected.control == "wrong-answer"
    assert injected.observed != 338350 and injected.expected == 338350
    (untouched,) = run_one(place, cj_cluster(), inject="wrong-answer")
    assert untouched.status == PASS


def test_missing_worker_control_fails_placement_and_names_the_worker(cj_cluster):
    place = fake("fake.place", _placement, category="placement")
    (normal,) = run_one(place, cj_cluster())
    (injected,) = run_one(place, cj_cluster(), inject="missing-worker")
    assert normal.status == PASS and normal.missing == [] and normal.unexpected == []
    assert injected.status == FAIL and injected.missing == ["w3"] and injected.reason == "missing: w3"
    (untouched,) = run_one(fake("fake.sum", _exact(338350)), cj_cluster(), inject="missing-worker")
    assert untouched.status == PASS


def test_results_that_bypass_the_comparators_cannot_pass_a_control(cj_cluster):
    def shortcut(self, ctx):
        yield ctx.result(category="correctness", status=PASS, expected=1, observed=1, tolerance=None, error=0)

    def shortcut_sets(self, ctx):
        yield ctx.result(category="placement", status=PASS, expected_workers=["a"], observed_workers=["a"])

    (normal,) = run_one(fake("fake.short", shortcut), cj_cluster())
    assert normal.status == PASS
    (injected,) = run_one(fake("fake.short", shortcut), cj_cluster(), inject="wrong-answer")
    assert injected.status == ERROR and "ctx.compare()" in injected.reason
    (injected,) = run_one(
        fake("fake.sets", shortcut_sets, category="placement"), cj_cluster(), inject="missing-worker"
    )
    assert injected.status == ERROR and "ctx.compare_sets()" in injected.reason


# --- performance, references and baselines ------------------------------------------------------


def _perf(samples: list[float], reference: Reference | None = None):
    def body(self, ctx):
        yield ctx.performance("rate", samples, reference=reference)

    return body


PERF: dict[str, Any] = {"category": "performance", "metrics": (Metric("rate", "GB/s"),)}
SAMPLES = [10.0, 11.0, 9.0, 10.5, 9.5]


def test_performance_result_carries_statistics(cj_cluster):
    (result,) = run_one(fake("fake.perf", _perf(SAMPLES), **PERF), cj_cluster())
    assert result.status == PASS and result.name == "fake.perf.rate"
    assert result.value == result.median == 10.0
    assert result.samples == SAMPLES and result.unit == "GB/s" and result.p5 <= 10.0 <= result.p95
    assert result.reference is None and result.ratio is None


def test_reference_outside_bounds_is_fail(cj_cluster):
    low = Reference(20.0, -0.25, None, "GB/s", kind="typical")
    (result,) = run_one(fake("fake.perf", _perf(SAMPLES, low), **PERF), cj_cluster())
    assert result.status == FAIL and "outside reference" in result.reason and result.ratio == 0.5
    declared = fake(
        "fake.decl", _perf(SAMPLES), references={"rate": Reference(10.0, -0.1, 0.1, "GB/s")}, **PERF
    )
    (inside,) = run_one(declared, cj_cluster())
    assert inside.status == PASS and inside.ratio == 1.0 and inside.reference["lower"] == -0.1


def _baseline(value: float, unit: str = "GB/s", inventory: str | None = None) -> dict[str, Any]:
    return {
        "type": "baseline",
        "schema_version": 1,
        "cluster_name": "unit",
        "inventory_hash": inventory or CJ_HASH,
        "created_at": "2026-11-21T10:00:00Z",
        "floor": FLOOR,
        "baselines": {"fake.perf.rate": {"a": {"rate": {"value": value, "unit": unit, "better": "higher"}}}},
    }


@pytest.mark.parametrize(
    ("base", "status", "reason"),
    [
        (13.0, PASS, ""),  # 10 >= 0.75 x 13
        (14.0, FAIL, "regression: 10 GB/s < 0.75 x baseline 14 GB/s"),
    ],
)
def test_baseline_regression_below_floor_is_fail(cj_cluster, base, status, reason):
    baseline = Baseline(_baseline(base))
    (result,) = run_one(fake("fake.perf", _perf(SAMPLES), **PERF), cj_cluster(), baseline=baseline)
    assert result.status == status and result.reason == reason
    assert result.baseline["value"] == base and result.ratio == pytest.approx(10.0 / base)


def test_lower_is_better_baseline_and_unit_mismatch(cj_cluster):
    latency = {"category": "performance", "metrics": (Metric("rate", "GB/s", better="lower"),)}
    (slow,) = run_one(
        fake("fake.perf", _perf(SAMPLES), **latency), cj_cluster(), baseline=Baseline(_baseline(7.0))
    )
    assert slow.status == FAIL and "> baseline 7 GB/s / 0.75" in slow.reason
    (ok,) = run_one(
        fake("fake.perf", _perf(SAMPLES), **latency), cj_cluster(), baseline=Baseline(_baseline(8.0))
    )
    assert ok.status == PASS
    (odd,) = run_one(
        fake("fake.perf", _perf(SAMPLES), **PERF), cj_cluster(), baseline=Baseline(_baseline(1, "MB/s"))
    )
    assert odd.status == ERROR and "unit" in odd.reason


def test_baseline_of_another_inventory_is_refused(tmp_path):
    import json

    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(_baseline(1.0, inventory="sha256:" + "0" * 64)))
    with pytest.raises(BaselineError, match="calibrated for inventory"):
        Baseline.load(str(path), inventory_hash="sha256:" + "1" * 64)
    path.write_text(
        json.dumps({"type": "baseline", "inventory_hash": "x", "baselines": {"n": {"t": {"m": {}}}}})
    )
    with pytest.raises(BaselineError, match="value"):
        Baseline.load(str(path))


def test_calibrated_baseline_round_trips(cj_cluster, cj_validator):
    cls = fake("fake.perf", _perf(SAMPLES), **PERF)
    results = run_one(cls, cj_cluster())
    data = build_baseline(results, "unit", "sha256:" + "ab" * 32, "2026-11-21T10:00:00Z")
    cj_validator("baseline.schema.json").validate(data)
    assert data["baselines"]["fake.perf.rate"]["a"]["rate"]["value"] == 10.0
    (again,) = run_one(cls, cj_cluster(), baseline=Baseline(data))
    assert again.status == PASS and again.ratio == 1.0


# --- parameters and selection -------------------------------------------------------------------


def test_params_layer_defaults_cluster_json_and_command_line(cj_cluster):
    cls = fake("fake.p", params=(Param("n", int, 8, "n", minimum=1), Param("s", float, 1.0, "s")))
    assert resolve_params(cls, None) == {"n": 8, "s": 1.0, "timeout": 60.0}
    values = resolve_params(cls, {"n": 16}, {"s": "2.5"}, timeout=5)
    assert values == {"n": 16, "s": 2.5, "timeout": 5.0}
    with pytest.raises(ParamError, match=r"params\.fake\.p\.x: unknown parameter \(known: n, s, timeout\)"):
        resolve_params(cls, {"x": 1})
    with pytest.raises(ParamError, match=r'params\.fake\.p\.n: expected integer >= 1, got "big"'):
        resolve_params(cls, {"n": "big"})
    assert parse_param_overrides(["node.stream.n=10"]) == {"node.stream": {"n": "10"}}
    with pytest.raises(ParamError, match=r"CHECK\.PARAM=VALUE"):
        parse_param_overrides(["n10"])


def test_unknown_check_in_cluster_params_is_refused(cj_cluster):
    registry = Registry()
    fake("fake.sum", _exact(338350), registry=registry)
    from compute_jobs.cluster import ClusterError

    with pytest.raises(ClusterError, match=r"params\.fake\.typo: unknown check"):
        Runner(registry).run(RunConfig(cluster=cj_cluster(params={"fake.typo": {}}), target="a"))


def test_selection_by_tag_name_and_scope():
    registry = Registry()
    fake("fake.node", registry=registry, tags=frozenset({"node"}))
    fake("fake.net", registry=registry, tags=frozenset({"net"}))
    fake("fake.cluster", registry=registry, tags=frozenset({"dask"}), scope="cluster")

    def names(only=None, scope=None, head=True):
        return [c.name for c in select_checks(registry, frozenset(only) if only else None, scope, head)]

    assert names() == ["fake.cluster", "fake.net", "fake.node"]
    assert names(head=False) == ["fake.net", "fake.node"]
    assert names(scope="cluster", head=False) == ["fake.cluster"]
    assert names(scope="node") == ["fake.net", "fake.node"]
    assert names(only={"node", "fake.net"}) == ["fake.net", "fake.node"]
    with pytest.raises(SelectionError, match="unknown tag or check nod"):
        names(only={"nod"})


def test_cluster_scope_results_target_the_cluster(cj_cluster):
    (result,) = run_one(fake("fake.c", _exact(338350), scope="cluster"), cj_cluster())
    assert result.target == "cluster" and result.status == PASS


def test_unknown_target_is_refused(cj_cluster):
    with pytest.raises(SelectionError, match="'zz' is not a host"):
        run_one(fake("fake.sum", _exact(1)), cj_cluster(), target="zz")


class _Counting(Check):
    name = "fake.counting"
    category = "correctness"
    tags = frozenset({"fake"})
    description = "records the params it ran with"
    params = (Param("n", int, 3, "n", minimum=1, smoke=1),)
    seen: ClassVar[list[int]] = []

    def run(self, ctx):
        self.seen.append(ctx.params.n)
        yield ctx.compare(ctx.params.n, ctx.params.n)


def test_cluster_json_params_reach_the_check(cj_cluster):
    _Counting.seen.clear()
    run_one(_Counting, cj_cluster(params={"fake.counting": {"n": 7}}))
    run_one(_Counting, cj_cluster(), overrides={"fake.counting": {"n": "9"}})
    assert _Counting.seen == [7, 9]
    assert _Counting.smoke_params() == {"n": 1}


def test_the_documented_example_is_a_valid_declaration():
    """docs/verification.md "Writing a check": the example must register as written."""
    import re
    from pathlib import Path

    from compute_jobs.model import registry

    text = (Path(__file__).resolve().parents[2] / "docs" / "verification.md").read_text(encoding="utf-8")
    code = re.search(r"## Writing a check.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict[str, Any] = {}
    try:
        exec(compile(code, "docs/verification.md", "exec"), namespace)
        cls = namespace["DaskSumOfSquares"]
        assert registry.get(cls.name) is cls and cls.engine == "dask" and cls.scope == "cluster"
        assert cls.smoke_params() == {"n": 100}
    finally:
        registry.unregister("dask.sum_of_squares")
