"""Site-calibrated performance baselines, stored per inventory.

``calibrate`` writes ``{"baselines": {result name: {target: {metric: {"value", "unit", "better"}}}}}``
together with the inventory hash it was measured on. ``run --baseline`` judges each performance
result against ``FLOOR`` x baseline (higher-is-better) or baseline / ``FLOOR`` (lower-is-better).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any

from compute_jobs.model import ERROR, FAIL, PASS, Metric, Result, to_jsonable

FLOOR = 0.75
BASELINE_VERSION = 1


class BaselineError(ValueError):
    """The baseline file is unreadable, malformed or belongs to another inventory."""


class Baseline:
    def __init__(self, data: dict[str, Any], source: str = "baseline") -> None:
        self.data = data
        self.source = source
        self.floor = float(data.get("floor", FLOOR))

    @classmethod
    def load(cls, path: str, inventory_hash: str | None = None) -> Baseline:
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except OSError as exc:
            raise BaselineError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise BaselineError(f"{path}: not valid JSON: line {exc.lineno}: {exc.msg}") from exc
        problems = validate_baseline(data)
        if problems:
            raise BaselineError(f"{path}: " + "; ".join(problems))
        if inventory_hash is not None and data["inventory_hash"] != inventory_hash:
            raise BaselineError(
                f"{path}: calibrated for inventory {data['inventory_hash']}, but cluster.json has "
                f"{inventory_hash}; run 'python -m compute_jobs calibrate' for this inventory"
            )
        return cls(data, source=path)

    def entry(self, name: str, target: str, metric: str) -> dict[str, Any] | None:
        return self.data["baselines"].get(name, {}).get(target, {}).get(metric)

    def judge(
        self, name: str, target: str, metric: str, value: float, declared: Metric
    ) -> tuple[dict[str, Any] | None, str | None, str]:
        """Return (baseline record for the result, status override or None, reason)."""
        entry = self.entry(name, target, metric)
        if entry is None:
            return None, None, ""
        base = float(entry["value"])
        record: dict[str, Any] = {"value": base, "unit": entry["unit"], "floor": self.floor, "ratio": None}
        if entry["unit"] != declared.unit:
            return record, ERROR, f"baseline unit {entry['unit']} differs from metric unit {declared.unit}"
        record["ratio"] = value / base if base else None
        unit = declared.unit
        if declared.better == "higher" and value < self.floor * base:
            return (
                record,
                FAIL,
                f"regression: {value:.4g} {unit} < {self.floor:g} x baseline {base:.4g} {unit}",
            )
        if declared.better == "lower" and value * self.floor > base:
            return (
                record,
                FAIL,
                f"regression: {value:.4g} {unit} > baseline {base:.4g} {unit} / {self.floor:g}",
            )
        return record, None, ""


def validate_baseline(data: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(data, dict):
        return ["expected a JSON object"]
    if data.get("type") != "baseline":
        problems.append('type: expected "baseline"')
    if not isinstance(data.get("inventory_hash"), str):
        problems.append("inventory_hash: expected string")
    floor = data.get("floor", FLOOR)
    if not isinstance(floor, int | float) or isinstance(floor, bool) or not 0 < floor <= 1:
        problems.append("floor: expected number in (0, 1]")
    baselines = data.get("baselines")
    if not isinstance(baselines, dict):
        problems.append("baselines: expected object")
        return problems
    for name, targets in baselines.items():
        if not isinstance(targets, dict):
            problems.append(f"baselines.{name}: expected object of target -> metrics")
            continue
        for target, metrics in targets.items():
            if not isinstance(metrics, dict):
                problems.append(f"baselines.{name}.{target}: expected object of metric -> entry")
                continue
            for metric, entry in metrics.items():
                where = f"baselines.{name}.{target}.{metric}"
                if not isinstance(entry, dict):
                    problems.append(f"{where}: expected object")
                    continue
                value = entry.get("value")
                if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                    problems.append(f"{where}.value: expected number > 0")
                if not isinstance(entry.get("unit"), str):
                    problems.append(f"{where}.unit: expected string")
    return problems


def build_baseline(
    results: Iterable[Result],
    cluster_name: str,
    inventory_hash: str,
    created_at: str,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Baseline document from PASSing performance results, merged into ``previous`` (same inventory)."""
    data: dict[str, Any] = {
        "type": "baseline",
        "schema_version": BASELINE_VERSION,
        "cluster_name": cluster_name,
        "inventory_hash": inventory_hash,
        "created_at": created_at,
        "floor": FLOOR,
        "baselines": {},
    }
    if previous and previous.get("inventory_hash") == inventory_hash:
        data["baselines"] = previous.get("baselines", {})
    for result in results:
        if result.category != "performance" or result.status != PASS or result.value is None:
            continue
        entry = {
            "value": result.value,
            "unit": result.unit,
            "better": result.better,
            "cv": result.cv,
            "samples": len(result.samples or ()),
            "calibrated_at": result.started_at or created_at,
        }
        data["baselines"].setdefault(result.name, {}).setdefault(result.target, {})[result.metric] = entry
    return to_jsonable(data)


def write_json_atomic(path: str, data: Any) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
