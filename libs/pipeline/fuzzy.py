"""Fuzzy membership functions, vectorised.

- triangular [a, b, c]: 0 at/below a and at/above c, rising linearly to 1 at b, then falling;
- trapezoidal [a, b, c, d]: 0 outside (a, d), 1 on [b, c], linear ramps;
- gaussian [mu, sigma]: exp(-(x - mu)^2 / (2 sigma^2)).

No saturating shoulders (a set is 0 beyond its ends), sets are independent (no sum-to-one), NaN
in gives NaN out. A vertical edge (a == b, or b == c) is a step: the set is 1 at the peak.
Parameters were validated by the config (counts, ordering, sigma > 0, finite).

Results keep the input's float dtype: the pipeline feeds float32 (the feature matrix dtype),
which halves the memory traffic of these elementwise passes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from libs.pipeline.config import FuzzySetConfig, MembershipConfig


class FuzzyError(ValueError):
    """Raised when a fuzzy set reads a column the indicator frame does not have."""


def membership(
    values: np.ndarray, cfg: MembershipConfig, *, scratch: np.ndarray | None = None
) -> np.ndarray:
    """Degrees of membership of `values` in one set, same shape and float dtype (NaN stays NaN).

    `scratch`, an array like `values`, is reused for the second edge instead of allocating one
    per call: these passes are memory-bound, and fresh pages cost as much as the arithmetic.
    """
    x = np.asarray(values)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    out = np.empty_like(x)
    p = cfg.parameters
    if cfg.type == "gaussian":
        mu, sigma = p
        np.subtract(x, mu, out=out)
        np.divide(out, sigma, out=out)
        np.multiply(out, out, out=out)
        np.multiply(out, -0.5, out=out)
        return np.exp(out, out=out)
    # A triangle is a trapezoid whose top is one point.
    a, b, c, d = (p[0], p[1], p[1], p[2]) if cfg.type == "triangular" else p
    rising, falling = a < b, c < d
    if rising:  # (x - a) / (b - a): 0 at a, 1 at b, unclipped
        np.subtract(x, a, out=out)
        np.divide(out, b - a, out=out)
    if falling:  # (d - x) / (d - c): 1 at c, 0 at d, unclipped
        tmp = out
        if rising:
            tmp = scratch if scratch is not None and scratch.shape == x.shape else np.empty_like(x)
        np.subtract(d, x, out=tmp)
        np.divide(tmp, d - c, out=tmp)
        if rising:
            np.minimum(out, tmp, out=out)
    if not (rising or falling):
        np.subtract(x, x, out=out)  # 0, or NaN where x is NaN
        np.add(out, 1.0, out=out)
    if b < c or not (rising and falling):
        np.minimum(out, 1.0, out=out)  # the flat top (a lone ramp overshoots past its end)
    # A vertical edge is a mask: 1 from b (or up to c) on, 0 beyond. Multiplying keeps NaN.
    if not rising:
        np.multiply(out, x >= a, out=out)
    if not falling:
        np.multiply(out, x <= d, out=out)
    np.maximum(out, 0.0, out=out)
    return out


def membership_columns(fuzzy_sets: Mapping[str, FuzzySetConfig]) -> list[str]:
    return [f"{fs_id}_{m}" for fs_id, fs in fuzzy_sets.items() for m in fs.memberships]


def compute_memberships(
    indicator_frame: pd.DataFrame,
    fuzzy_sets: Mapping[str, FuzzySetConfig],
    *,
    dtype: type[np.floating] = np.float32,
) -> pd.DataFrame:
    """Columns `{fuzzy_set}_{membership}` in the order written; index = the indicator index."""
    columns: dict[str, np.ndarray] = {}
    for fs_id, fs in fuzzy_sets.items():
        if fs.indicator not in indicator_frame.columns:
            raise FuzzyError(
                f"fuzzy set {fs_id!r} reads {fs.indicator!r}, which is not among the "
                f"indicator columns ({', '.join(map(str, indicator_frame.columns))})"
            )
        x = indicator_frame[fs.indicator].to_numpy(dtype=dtype)
        scratch = np.empty_like(x)
        for name, cfg in fs.memberships.items():
            columns[f"{fs_id}_{name}"] = membership(x, cfg, scratch=scratch)
    return pd.DataFrame(columns, index=indicator_frame.index, copy=False)
