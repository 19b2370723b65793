"""Reference answers the checks hold engines to, computed in numpy alone."""

from __future__ import annotations

import numpy as np


def reference_groupby(keys: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """What pandas computes for groupby(key).value.agg([sum, count]) on int64, in numpy."""
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = np.zeros(len(unique), dtype=np.int64)
    np.add.at(sums, inverse, values)
    counts = np.bincount(inverse, minlength=len(unique)).astype(np.int64)
    return {"key": unique.astype(np.int64), "sum": sums, "count": counts}
