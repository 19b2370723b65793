"""The HTML report: one self-contained page from ``templates/report.html.j2``.

The controller renders it (standard library and Jinja2 only; nodes never import this module). The
page leads with the verdict and the failures, then a summary per engine, the network and MPI
matrices as heatmaps and the cluster-vs-local figures as bar charts (inline SVG, geometry computed
here), the results per engine with SKIPs folded, and the library versions per host. A Content
Security Policy in the page forbids anything from outside it, so the browser proves it self-contained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2

from compute_jobs.model import CLUSTER_TARGET, ERROR, FAIL, PASS, SKIP, STATUSES, count_statuses, utc_now
from compute_jobs.report import key_figure

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"

# Heatmap and bar chart geometry, in SVG user units (pixels at 100 % zoom).
CELL_W, CELL_H, CHAR_W = 72, 26, 7
BAR_W, BAR_H, LABEL_H = 300, 16, 18


def engine_of(result: dict[str, Any]) -> str:
    """The engine a result belongs to: the first part of its check's name (``mpi.latency`` -> mpi)."""
    return str(result.get("check") or result["name"]).split(".")[0]


def worst_status(counts: dict[str, int]) -> str:
    for status in (FAIL, ERROR, PASS):
        if counts.get(status):
            return status
    return SKIP


def verdict(results: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, str]:
    """The line the page opens with, and its class (PASS, FAIL, or the control's HELD/BROKEN)."""
    counts = count_statuses(results)
    control = summary.get("control")
    if control:
        if control.get("uncontrolled_failures"):
            extra = "; FAIL or ERROR the control does not explain: " + ", ".join(
                control["uncontrolled_failures"]
            )
            return {"status": FAIL, "line": control["line"] + extra}
        return {"status": "HELD" if control.get("held") else "BROKEN", "line": control["line"]}
    bad = counts[FAIL] + counts[ERROR]
    if bad:
        return {
            "status": FAIL,
            "line": f"FAIL: {counts[FAIL]} FAIL and {counts[ERROR]} ERROR among {len(results)} results",
        }
    return {
        "status": PASS,
        "line": f"PASS: {counts[PASS]} of {len(results)} results PASS, {counts[SKIP]} SKIP, no FAIL or ERROR",
    }


def row(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": result["name"],
        "target": result["target"],
        "category": result.get("category", ""),
        "status": result["status"],
        "figure": key_figure(result),
        "reason": str(result.get("reason") or ""),
        "control": result.get("control") or "",
        "json": json.dumps(result, indent=2, sort_keys=True, default=str),
    }


def engines(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A summary and the result rows per engine; engines with a FAIL or ERROR first."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        grouped.setdefault(engine_of(result), []).append(result)
    out = []
    for name, items in grouped.items():
        counts = count_statuses(items)
        targets = sorted({r["target"] for r in items}, key=lambda t: (t == CLUSTER_TARGET, t))
        out.append(
            {
                "name": name,
                "anchor": f"engine-{name}",
                "counts": counts,
                "status": worst_status(counts),
                "targets": targets,
                "checks": len({r.get("check") or r["name"] for r in items}),
                "rows": [row(r) for r in items if r["status"] != SKIP],
                "skipped": [row(r) for r in items if r["status"] == SKIP],
            }
        )
    order = {FAIL: 0, ERROR: 1, PASS: 2, SKIP: 3}
    return sorted(out, key=lambda e: (order[e["status"]], e["name"] == "cluster", e["name"]))


# --- heatmaps -----------------------------------------------------------------------------------


def _badness(value: float, low: float, high: float, better: str) -> float:
    """0 for the best value of the matrix, 1 for the worst."""
    if high <= low:
        return 0.0
    share = (value - low) / (high - low)
    return share if better == "lower" else 1.0 - share


def heatmap(
    title: str,
    unit: str,
    better: str,
    cells: dict[tuple[str, str], float | None],
    flagged: Iterable[tuple[str, str]] = (),
    note: str = "",
) -> dict[str, Any]:
    """Geometry of a host x host heatmap: green is the best value of the matrix, red the worst."""
    rows = sorted({a for a, _ in cells})
    cols = sorted({b for _, b in cells} | set(rows)) if rows else []
    rows = sorted(set(rows) | set(cols))
    values = [v for v in cells.values() if v is not None and math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 0.0)
    margin = CHAR_W * max([len(h) for h in rows] + [4]) + 12
    flagged = set(flagged)
    out = []
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            x, y = margin + j * CELL_W, LABEL_H + 8 + i * CELL_H
            value = cells.get((a, b))
            if value is None or not math.isfinite(value):
                fill, text = "#eef0f2", "-" if (a, b) not in cells else "ERR"
            else:
                hue = round(120 * (1 - _badness(value, low, high, better)))
                fill, text = f"hsl({hue},62%,78%)", f"{value:.4g}"
            out.append(
                {
                    "x": x,
                    "y": y,
                    "fill": fill,
                    "text": text,
                    "flag": (a, b) in flagged,
                    "tip": f"{a} -> {b}: {text} {unit}".rstrip(),
                }
            )
    return {
        "title": title,
        "unit": unit,
        "better": better,
        "note": note,
        "rows": [{"name": h, "y": LABEL_H + 8 + i * CELL_H + CELL_H / 2} for i, h in enumerate(rows)],
        "cols": [{"name": h, "x": margin + j * CELL_W + CELL_W / 2} for j, h in enumerate(cols)],
        "cells": out,
        "cell_w": CELL_W,
        "cell_h": CELL_H,
        "width": margin + len(cols) * CELL_W + 4,
        "height": LABEL_H + 8 + len(rows) * CELL_H + 4,
        "low": f"{low:.4g}",
        "high": f"{high:.4g}",
    }


def heatmaps(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The MPI pair matrices (a result per matrix) and the network pairs (a result per host and peer)."""
    maps = []
    for r in results:
        details = r.get("details") or {}
        for key in ("matrix_us", "matrix_mbs"):
            matrix = details.get(key)
            if not isinstance(matrix, dict) or not matrix:
                continue
            cells: dict[tuple[str, str], float | None] = {
                (a, b): _number(v) for a, peers in matrix.items() for b, v in (peers or {}).items()
            }
            intra = details.get("intra_us") or {}
            cells.update({(h, h): _number(v) for h, v in intra.items()})
            note = "diagonal: two ranks on one host" if intra else "between hosts only"
            if details.get("bytes"):
                note += f"; {details['bytes']} byte messages"
            flagged = {(a, b) for label in details.get("outliers") or {} for a, b in [_pair(label)]}
            flagged |= {(b, a) for a, b in flagged}
            maps.append(
                heatmap(r["name"], r.get("unit", ""), r.get("better") or "higher", cells, flagged, note)
            )
    net: dict[str, dict[str, Any]] = {}
    for r in results:
        peer = (r.get("details") or {}).get("peer")
        if r.get("check") != "net.pairs" or not peer or not r.get("metric"):
            continue
        entry = net.setdefault(
            r["metric"], {"unit": r.get("unit", ""), "better": r.get("better"), "cells": {}}
        )
        entry["cells"][(r["target"], peer)] = _number(r.get("value"))
        entry.setdefault("flagged", set())
        if r["status"] == FAIL:
            entry["flagged"].add((r["target"], peer))
        entry["unit"] = entry["unit"] or r.get("unit", "")
        entry["better"] = entry["better"] or r.get("better")
    for metric, entry in sorted(net.items()):
        better = entry["better"] or ("lower" if metric == "latency" else "higher")
        maps.append(
            heatmap(
                f"net.pairs.{metric}",
                entry["unit"],
                better,
                entry["cells"],
                entry["flagged"],
                "row: the host that measured; column: its peer",
            )
        )
    return maps


def _pair(label: str) -> tuple[str, str]:
    a, _, b = label.partition("<->")
    return a, b


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- bar charts: the cluster against a local reference ----------------------------------------


def local_pairs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each cluster figure next to the same figure measured locally.

    A check measures its local reference as a metric of its own: ``<metric>_local`` (Dask tasks per
    second, Spark session start) or ``local_<x>`` beside ``share_<x>`` (storage throughput), for the
    same target.
    """
    by_key = {(r.get("check"), r["target"], r.get("metric")): r for r in results if r.get("metric")}
    pairs = []
    for (check, target, metric), local in by_key.items():
        if metric.endswith("_local"):
            name = metric[: -len("_local")]
        elif metric.startswith("local_"):
            name = "share_" + metric[len("local_") :]
        else:
            continue
        cluster = by_key.get((check, target, name))
        a, b = _number((cluster or {}).get("value")), _number(local.get("value"))
        if cluster is None or a is None or b is None:
            continue
        pairs.append(
            {
                "check": check,
                "label": f"{name} on {target}" if target != CLUSTER_TARGET else name,
                "unit": cluster.get("unit", ""),
                "better": cluster.get("better") or "higher",
                "cluster": a,
                "local": b,
                "status": cluster["status"],
            }
        )
    return sorted(pairs, key=lambda p: (p["check"], p["label"]))


def bar_charts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chart per check; each figure is scaled to the larger of its two bars."""
    charts: dict[str, list[dict[str, Any]]] = {}
    for pair in local_pairs(results):
        charts.setdefault(pair["check"], []).append(pair)
    out = []
    label_x = 64
    for check, pairs in charts.items():
        items, y = [], 0
        for pair in pairs:
            scale = max(pair["cluster"], pair["local"]) or 1.0
            bars = []
            for k, kind in enumerate(("cluster", "local")):
                value = pair[kind]
                bars.append(
                    {
                        "kind": kind,
                        "y": y + LABEL_H + k * (BAR_H + 4),
                        "w": max(1.0, round(BAR_W * value / scale, 1)),
                        "text": f"{value:.4g} {pair['unit']}".strip(),
                    }
                )
            ratio = pair["cluster"] / pair["local"] if pair["local"] else None
            items.append(
                {
                    "label": pair["label"],
                    "y": y + LABEL_H - 5,
                    "bars": bars,
                    "ratio": f"cluster / local {ratio:.3g} ({pair['better']} is better)" if ratio else "",
                }
            )
            y += LABEL_H + 2 * (BAR_H + 4) + 10
        out.append(
            {
                "title": check,
                "items": items,
                "label_x": label_x,
                "bar_h": BAR_H,
                "width": label_x + BAR_W + 120,
                "height": y,
            }
        )
    return out


# --- versions -----------------------------------------------------------------------------------


def versions_table(summary: dict[str, Any]) -> dict[str, Any]:
    versions = summary.get("versions") or {}
    hosts = sorted(versions)
    rows = []
    for lib in sorted({lib for v in versions.values() for lib in v}):
        seen = {versions[h].get(lib) for h in hosts if versions[h].get(lib)}
        rows.append(
            {
                "lib": lib,
                "drift": len(seen) > 1,
                "cells": [str(versions[h].get(lib) or "-") for h in hosts],
            }
        )
    return {"hosts": hosts, "rows": rows, "drift": any(r["drift"] for r in rows)}


# --- page ---------------------------------------------------------------------------------------


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(results: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    counts = summary.get("counts") or count_statuses(results)
    page = {
        "cluster": str(summary.get("cluster_name") or "cluster"),
        "meta": [
            (key, str(summary.get(key) or ""))
            for key in ("run_id", "git_sha", "inventory_hash", "started_at", "finished_at")
        ],
        "statuses": STATUSES,
        "counts": counts,
        "verdict": verdict(results, summary),
        "warnings": summary.get("warnings") or [],
        "failures": [row(r) for r in results if r["status"] in (FAIL, ERROR)],
        "engines": engines(results),
        "heatmaps": heatmaps(results),
        "bar_charts": bar_charts(results),
        "versions": versions_table(summary),
        "generated": utc_now(),
    }
    return environment().get_template(TEMPLATE).render(**page)
