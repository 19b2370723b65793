"""Comparators and statistics shared by every check.

- :func:`judge_values`: exact or tolerance comparison of an expected and an observed value.
- :func:`judge_sets`: expected vs observed members (hosts, workers, ranks) for placement.
- :func:`sample_stats`: median, p5, p95 and coefficient of variation of repeated measurements.
- :func:`perturb` / :func:`drop_one`: the negative controls, applied to the observed value *before*
  the comparison, so the real judging code is what turns the control into a FAIL.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute_jobs.model import SetVerdict, judge_sets

__all__ = ["SetVerdict", "judge_sets"]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    error: float | None
    reason: str


def default_error(expected: Any, observed: Any) -> float:
    """Absolute difference for numbers and arrays (max over elements); 0/1 equality otherwise."""
    if _is_number(expected) and _is_number(observed):
        return abs(float(observed) - float(expected))
    if isinstance(expected, np.ndarray) or isinstance(observed, np.ndarray):
        exp = np.asarray(expected)
        obs = np.asarray(observed)
        if exp.shape != obs.shape:
            return math.inf
        if exp.size == 0:
            return 0.0
        if np.issubdtype(exp.dtype, np.number) and np.issubdtype(obs.dtype, np.number):
            return float(np.max(np.abs(obs.astype(np.float64) - exp.astype(np.float64))))
        return 0.0 if np.array_equal(exp, obs) else 1.0
    return 0.0 if expected == observed else 1.0


def judge_values(
    expected: Any,
    observed: Any,
    tolerance: float | None = None,
    error: Callable[[Any, Any], float] | None = None,
) -> Verdict:
    """Compare ``observed`` with ``expected``.

    ``tolerance=None`` means exact: the values must be equal (``error`` must be 0 when given).
    Otherwise the error (``error(expected, observed)``, default absolute difference) must be strictly
    below ``tolerance``, the way the rules are stated ("residual < 16", "relative error < 1e-13").
    """
    if error is None and tolerance is None:
        equal = _exactly_equal(expected, observed)
        return Verdict(equal, 0.0 if equal else None, "" if equal else "observed value differs from expected")
    err = float((error or default_error)(expected, observed))
    if math.isnan(err):
        return Verdict(False, None, "error is NaN")
    if tolerance is None:
        passed = err == 0.0
        return Verdict(passed, err, "" if passed else f"error {err:.6g} != 0 (exact rule)")
    passed = err < tolerance
    return Verdict(passed, err, "" if passed else f"error {err:.6g} not < tolerance {tolerance:.6g}")


def _exactly_equal(expected: Any, observed: Any) -> bool:
    if isinstance(expected, np.ndarray) or isinstance(observed, np.ndarray):
        return bool(np.array_equal(np.asarray(expected), np.asarray(observed)))
    if _is_number(expected) and _is_number(observed):
        return bool(expected == observed)
    return type(expected) is type(observed) and bool(expected == observed)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


# --- negative controls --------------------------------------------------------------------------


def perturb(value: Any) -> Any:
    """Return a clearly wrong copy of ``value`` (the wrong-answer control); never mutates the input.

    Numbers move by ``|x| + 1`` (so even a loose relative tolerance fails), arrays element-wise the
    same way, strings and bytes change their last character, containers gain a foreign member.
    """
    if isinstance(value, bool | np.bool_):
        return not value
    if isinstance(value, int | np.integer):
        return value + abs(value) + 1
    if isinstance(value, float | np.floating):
        return value + abs(value) + 1.0
    if isinstance(value, complex):
        return value + abs(value) + 1.0
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            return np.logical_not(value)
        if np.issubdtype(value.dtype, np.number):
            return value + (np.abs(value) + 1).astype(value.dtype)
        return np.array([*value.tolist(), "\u2260"], dtype=object)
    if isinstance(value, str):
        if not value:
            return "\u2260"
        last = "0" if value[-1] != "0" else "1"
        return value[:-1] + last
    if isinstance(value, bytes | bytearray):
        if not value:
            return b"\x00"
        return bytes(value[:-1]) + bytes([value[-1] ^ 0xFF])
    if isinstance(value, dict):
        return {**value, "\u2260injected": True}
    if isinstance(value, list):
        return [*value, "\u2260injected"]
    if isinstance(value, tuple):
        return (*value, "\u2260injected")
    if isinstance(value, set | frozenset):
        return type(value)([*value, "\u2260injected"])
    if value is None:
        return "\u2260injected"
    raise TypeError(f"cannot perturb a value of type {type(value).__name__}")


def drop_one(observed: Collection[Any]) -> list[Any]:
    """The missing-worker control: the observed members without one (the last in sorted order)."""
    members = sorted(observed, key=str)
    return members[:-1]


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Percentile with linear interpolation between closest ranks (numpy's default method)."""
    if len(values) == 0:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def sample_stats(samples: Sequence[float]) -> dict[str, float | None]:
    """median, p5, p95 and cv (sample standard deviation / mean; None when the mean is 0)."""
    values = [float(v) for v in samples]
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    p5, p95 = np.percentile(np.asarray(values, dtype=np.float64), [5, 95])
    return {
        "median": float(statistics.median(values)),
        "p5": float(p5),
        "p95": float(p95),
        "cv": (stdev / mean) if mean else None,
    }


def summarize(value: Any, limit: int = 4) -> Any:
    """A JSON-friendly, bounded rendering of a compared value (arrays become shape/dtype/sum/head)."""
    if isinstance(value, np.ndarray):
        summary: dict[str, Any] = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if value.size and np.issubdtype(value.dtype, np.number):
            summary["sum"] = float(np.sum(value, dtype=np.float64))
        summary["head"] = value.reshape(-1)[:limit].tolist()
        return summary
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes | bytearray):
        return value[:64].hex()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return value


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference rounded to 3 decimals; None when either is missing or the reference is 0."""
    return round(value / reference, 3) if value is not None and reference else None
