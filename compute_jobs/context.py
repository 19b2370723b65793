"""What a running check sees: the cluster, its target, its parameters, a deadline and result builders.

Every correctness result goes through :meth:`CheckContext.compare`, every placement result through
:meth:`CheckContext.compare_sets` and every performance result through :meth:`CheckContext.performance`.
That is where the negative controls are applied (to the observed value, before judging), and where
references and calibrated baselines are judged, identically for all checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from compute_jobs.compare import drop_one, judge_sets, judge_values, perturb, sample_stats, summarize
from compute_jobs.model import (
    ERROR,
    FAIL,
    PASS,
    Check,
    CheckTimeout,
    Reference,
    Result,
)

if TYPE_CHECKING:
    from compute_jobs.baseline import Baseline
    from compute_jobs.cluster import Cluster, Host


class Params:
    """Resolved parameter values with attribute access: ``ctx.params.n``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}") from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


class CheckContext:
    def __init__(
        self,
        check: Check,
        cluster: Cluster,
        target: str,
        host: Host | None,
        params: dict[str, Any],
        inject: str | None = None,
        baseline: Baseline | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.check = check
        self.cluster = cluster
        self.target = target
        self.host = host
        self.params = Params(params)
        self.inject = inject
        self.baseline = baseline
        self.deadline = deadline
        self._clock = clock

    # --- time -----------------------------------------------------------------------------------

    def remaining(self) -> float:
        """Seconds left before the check's deadline (inf when unbounded)."""
        if self.deadline is None:
            return float("inf")
        return self.deadline - self._clock()

    def check_deadline(self) -> None:
        """Raise CheckTimeout when the deadline has passed; call it between units of work."""
        if self.remaining() <= 0:
            raise CheckTimeout(f"{self.check.name}: timed out after {self.params.timeout:g} s")

    def bounded(self, timeout: float) -> float:
        """``timeout`` shortened to what is left of the deadline (for socket and wait timeouts).

        A small reserve (a fifth of the limit, at most 0.5 s) is kept back so that a check whose
        endpoint does not answer still reports its own finding (who, where, why) before the runner's
        hard limit replaces it with a bare "timed out".
        """
        limit = float(self.params.timeout)
        reserve = min(0.5, 0.2 * limit)
        return max(0.05, min(timeout, self.remaining() - reserve))

    def repeat(self, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
        """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return each duration in s."""
        for _ in range(warmup):
            self.check_deadline()
            fn()
        durations = []
        for _ in range(repeats):
            self.check_deadline()
            start = time.perf_counter()
            fn()
            durations.append(time.perf_counter() - start)
        return durations

    # --- result builders ------------------------------------------------------------------------

    def result(self, name: str | None = None, **values: Any) -> Result:
        values.setdefault("category", self.check.category)
        values.setdefault("status", PASS)
        return Result(
            name=name or self.check.name,
            check=self.check.name,
            tags=sorted(self.check.tags),
            target=self.target,
            **values,
        )

    def error(
        self, reason: str, name: str | None = None, category: str | None = None, **values: Any
    ) -> Result:
        """An ERROR result for one part of a check (e.g. one unreachable peer), naming the cause."""
        return self.result(
            name, category=category or self.check.category, status=ERROR, reason=reason, **values
        )

    def compare(
        self,
        expected: Any,
        observed: Any,
        *,
        tolerance: float | None = None,
        error: Callable[[Any, Any], float] | None = None,
        rule: str | None = None,
        name: str | None = None,
        render: Callable[[Any], Any] = summarize,
        details: dict[str, Any] | None = None,
    ) -> Result:
        """A correctness result: exact (``tolerance=None``) or ``error(expected, observed) < tolerance``.

        Under ``--inject wrong-answer`` the observed value is perturbed here, before it is judged.
        """
        control = None
        if self.inject == "wrong-answer":
            observed = perturb(observed)
            control = "wrong-answer"
        verdict = judge_values(expected, observed, tolerance, error)
        rule = rule or self.check.correctness_rule
        reason = ""
        if not verdict.passed:
            reason = verdict.reason + (f" (rule: {rule})" if rule else "")
        return self.result(
            name,
            category="correctness",
            status=PASS if verdict.passed else FAIL,
            reason=reason,
            expected=render(expected),
            observed=render(observed),
            tolerance=tolerance,
            error=verdict.error,
            rule=rule,
            control=control,
            details=dict(details or {}),
        )

    def compare_sets(
        self,
        expected: Collection[Any],
        observed: Collection[Any],
        *,
        rule: str | None = None,
        name: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Result:
        """A placement result: the observed members must equal the expected ones.

        Under ``--inject missing-worker`` one observed member is dropped here, before judging.
        """
        control = None
        if self.inject == "missing-worker":
            observed = drop_one(observed)
            control = "missing-worker"
        verdict = judge_sets(expected, observed)
        return self.result(
            name,
            category="placement",
            status=PASS if verdict.passed else FAIL,
            reason=verdict.reason(),
            expected_workers=verdict.expected,
            observed_workers=verdict.observed,
            missing=verdict.missing,
            unexpected=verdict.unexpected,
            rule=rule or self.check.placement_rule,
            control=control,
            details=dict(details or {}),
        )

    def performance(
        self,
        metric: str,
        samples: Iterable[float],
        *,
        name: str | None = None,
        peer: str | None = None,
        reference: Reference | None = None,
        details: dict[str, Any] | None = None,
    ) -> Result:
        """A performance result: value = median of ``samples`` (in the metric's unit, >= 1 sample).

        Judged against ``reference`` (or the check's declared reference for the metric) and against
        the calibrated baseline, if one is loaded: FAIL when outside the reference bounds, or on a
        regression below ``floor`` x baseline (above baseline / floor for lower-is-better metrics).
        """
        declared = self.check.metric(metric)
        name = name or f"{self.check.name}.{metric}" + (f"[{peer}]" if peer else "")
        values = [float(v) for v in samples]
        info = dict(details or {})
        if peer is not None:
            info.setdefault("peer", peer)
        base = {"metric": metric, "unit": declared.unit, "better": declared.better, "details": info}
        if not values:
            return self.result(name, category="performance", status=ERROR, reason="no samples", **base)
        stats = sample_stats(values)
        value = stats["median"]
        status, reasons = PASS, []
        reference = reference or self.check.references.get(metric)
        ratio = None
        ref_dict = None
        if reference is not None:
            ref_dict = reference.to_dict()
            if reference.unit != declared.unit:
                status = ERROR
                reasons.append(f"reference unit {reference.unit} differs from metric unit {declared.unit}")
            else:
                ratio = value / reference.value if reference.value else None
                why = reference.judge(value)
                if why:
                    status = FAIL
                    reasons.append(why)
        baseline_dict = None
        if self.baseline is not None:
            baseline_dict, verdict, why = self.baseline.judge(name, self.target, metric, value, declared)
            if verdict is not None:
                status = verdict if status != ERROR else status
                reasons.append(why)
            elif baseline_dict is None:
                info.setdefault("baseline", "no calibrated baseline for this result and target")
            if ratio is None and baseline_dict is not None:
                ratio = baseline_dict.get("ratio")
        return self.result(
            name,
            category="performance",
            status=status,
            reason="; ".join(reasons),
            value=value,
            samples=values,
            reference=ref_dict,
            ratio=ratio,
            baseline=baseline_dict,
            **stats,
            **base,
        )
