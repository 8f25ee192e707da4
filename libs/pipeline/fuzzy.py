"""Fuzzy membership functions.

- triangular [a, b, c]: 0 at/below a and at/above c, rising linearly to 1 at b, then falling;
- trapezoidal [a, b, c, d]: 0 outside (a, d), 1 on [b, c], linear ramps;
- gaussian [mu, sigma]: exp(-(x - mu)^2 / (2 sigma^2)).

No saturating shoulders (a set is 0 beyond its ends), sets are independent (no sum-to-one), NaN
in gives NaN out. A vertical edge (a == b, or b == c) is a step: the set is 1 at the peak.
Parameters were validated by the config (counts, ordering, sigma > 0, finite).

The ramps are one compiled pass (`kernels.trapezoid_into`); gaussians take NumPy's vectorised
exp of a compiled exponent. `compute_memberships` computes every set of a timeframe in one pass
over its indicator columns, column after column (pandas' own layout), and notes on the way
which bars are fully defined, so that nothing has to scan the memberships again for NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from libs.pipeline import kernels
from libs.pipeline.strategy import FuzzySetConfig, MembershipConfig


class FuzzyError(ValueError):
    """Raised when a fuzzy set reads a column the indicator frame does not have."""


@dataclass(frozen=True, eq=False)
class Memberships:
    """One timeframe's memberships: `columns[j]` is membership `names[j]` (float32, named
    `{fuzzy_set}_{membership}`) on the bars of `index`; `bar_defined[i]` is True when bar i has
    no NaN (its indicators were defined)."""

    columns: np.ndarray
    names: tuple[str, ...]
    index: pd.Index
    bar_defined: np.ndarray

    def __post_init__(self) -> None:
        shape = (len(self.names), len(self.index))
        if self.columns.dtype != np.float32 or self.columns.shape != shape:
            raise FuzzyError(
                f"columns must be float32 {shape}, got {self.columns.dtype} {self.columns.shape}"
            )
        if self.bar_defined.shape != (len(self.index),):
            raise FuzzyError(f"bar_defined must have one flag per bar ({len(self.index)})")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Memberships:
        """Memberships from a frame of them (columns `{fuzzy_set}_{membership}`)."""
        columns = np.ascontiguousarray(frame.to_numpy(dtype=np.float32).T)
        return cls(columns, tuple(map(str, frame.columns)), frame.index, defined_bars(columns))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns.T, index=self.index, columns=list(self.names), copy=False)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[self.names.index(name)]
        except ValueError:
            raise KeyError(name) from None


def defined_bars(columns: np.ndarray) -> np.ndarray:
    """Per bar (column of the 2-D `columns`): True when none of its values is NaN."""
    # A NaN anywhere makes the sum NaN; a product with a ones vector is that sum done by BLAS,
    # one vectorised pass.
    return ~np.isnan(np.ones(columns.shape[0], dtype=columns.dtype) @ columns)


def _trapezoid(cfg: MembershipConfig) -> tuple[float, float, float, float]:
    """(a, b, c, d) of a triangular or trapezoidal set: a triangle's top is one point."""
    p = cfg.parameters
    return (p[0], p[1], p[1], p[2]) if cfg.type == "triangular" else (p[0], p[1], p[2], p[3])


def membership(values: np.ndarray, cfg: MembershipConfig) -> np.ndarray:
    """Degrees of membership of `values` in one set, same shape (NaN stays NaN); float32 in
    gives float32 out, anything else float64."""
    x = np.asarray(values)
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    if cfg.type == "gaussian":
        mu, sigma = cfg.parameters
        kernels.gaussian_exponent_into(x.reshape(-1), mu, sigma, out.reshape(-1))
        np.exp(out, out=out)
    else:
        kernels.trapezoid_into(x.reshape(-1), *_trapezoid(cfg), out.reshape(-1))
    return out


def membership_columns(fuzzy_sets: Mapping[str, FuzzySetConfig]) -> list[str]:
    return [f"{fs_id}_{m}" for fs_id, fs in fuzzy_sets.items() for m in fs.memberships]


def compute_memberships(
    indicator_frame: pd.DataFrame, fuzzy_sets: Mapping[str, FuzzySetConfig]
) -> Memberships:
    """Memberships `{fuzzy_set}_{membership}` in the order written, on the indicator index."""
    inputs: dict[str, int] = {}  # indicator column -> position in xs
    xs: list[np.ndarray] = []
    source: list[int] = []
    kinds: list[int] = []
    params: list[tuple[float, float, float, float]] = []
    for fs_id, fs in fuzzy_sets.items():
        if fs.indicator not in indicator_frame.columns:
            raise FuzzyError(
                f"fuzzy set {fs_id!r} reads {fs.indicator!r}, which is not among the "
                f"indicator columns ({', '.join(map(str, indicator_frame.columns))})"
            )
        if fs.indicator not in inputs:
            inputs[fs.indicator] = len(xs)
            column = indicator_frame[fs.indicator].to_numpy(dtype=np.float64)
            xs.append(np.ascontiguousarray(column))
        for cfg in fs.memberships.values():
            source.append(inputs[fs.indicator])
            if cfg.type == "gaussian":
                kinds.append(kernels.GAUSSIAN_EXPONENT)
                params.append((*cfg.parameters, 0.0, 0.0))  # type: ignore[arg-type]
            else:
                kinds.append(kernels.TRAPEZOID)
                params.append(_trapezoid(cfg))

    n = len(indicator_frame)
    columns = np.empty((len(source), n), dtype=np.float32)
    defined = np.empty(n, dtype=np.bool_)
    if source:
        kernels.memberships_into(
            kernels.readonly_tuple(xs),
            np.asarray(source, dtype=np.int64),
            np.asarray(kinds, dtype=np.int64),
            np.asarray(params, dtype=np.float64),
            columns,
            defined,
        )
    else:
        defined[:] = True
    for j, kind in enumerate(kinds):
        if kind == kernels.GAUSSIAN_EXPONENT:
            np.exp(columns[j], out=columns[j])
    names = tuple(membership_columns(fuzzy_sets))
    return Memberships(columns, names, indicator_frame.index, defined)
