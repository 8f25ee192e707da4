"""Sequence windows for recurrent models, without copying each window.

A recurrent model reads, for row i, the `length` consecutive base bars of row i's own symbol
ending at row i's bar (oldest first): a (length, features) window. Materialising every window
would copy each bar `length` times; instead `Windows` holds each bar once, in one bars-major
float32 (bars, features) matrix for all symbols, plus `ends`, the bar of each row. A batch is
gathered from it (`windows[idx]` -> (B, length, features)), and `view()` shows every window of
the matrix at once without a copy (`Tensor.unfold`).

The bars come from the feature matrix the MLP path builds: a recurrent strategy is engineered
with lags = length - 1 (`strategy.lags_of`), so `FeatureMatrix.defined_rows` already says which
rows have all their bars defined, and its unlagged `columns` are the per-step features. Bars
before a split's first row are read as features only (known at that time, like lags); a
window never crosses symbols, since each symbol's bars are copied as their own block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from libs.pipeline.features import FeatureMatrix

IndexLike = slice | int | torch.Tensor | np.ndarray | Sequence[int]


class WindowError(ValueError):
    """Raised when windows cannot be built from the bars and rows handed in."""


class Windows:
    """Row i is `bars[ends[i] - length + 1 : ends[i] + 1]`, a (length, features) window."""

    __slots__ = ("bars", "ends", "length")

    def __init__(self, bars: np.ndarray | torch.Tensor, ends: np.ndarray | torch.Tensor,
                 length: int) -> None:
        bars_t = torch.as_tensor(bars)  # shares a numpy array's memory
        ends_t = torch.as_tensor(ends)
        if bars_t.ndim != 2 or bars_t.dtype != torch.float32:
            raise WindowError(f"bars must be 2-D float32, got {bars_t.dtype} {tuple(bars_t.shape)}")
        if ends_t.ndim != 1 or ends_t.dtype != torch.int64:
            raise WindowError(f"ends must be 1-D int64, got {ends_t.dtype} {tuple(ends_t.shape)}")
        if length < 1:
            raise WindowError(f"length must be >= 1, got {length}")
        if len(ends_t) and (int(ends_t.min()) < length - 1 or int(ends_t.max()) >= len(bars_t)):
            raise WindowError(f"ends must lie in [{length - 1}, {len(bars_t)}) so every window "
                              f"has its {length} bars")
        self.bars, self.ends, self.length = bars_t, ends_t, length

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.ends), self.length, self.n_features

    @property
    def n_features(self) -> int:
        return int(self.bars.shape[1])

    @property
    def device(self) -> torch.device:
        return self.bars.device

    def __getitem__(self, index: IndexLike) -> torch.Tensor:
        """The rows' windows, (B, length, features), gathered for these rows only."""
        ends = self.ends[_as_index(index, self.ends.device)].reshape(-1)
        if not len(ends):
            return self.bars.new_empty((0, self.length, self.n_features))
        return self.view()[ends - (self.length - 1)]

    def view(self) -> torch.Tensor:
        """Every window of the bars matrix, (bars - length + 1, length, features), as a view:
        window j starts at bar j; row i's window is `view()[ends[i] - length + 1]`."""
        return self.bars.unfold(0, self.length, 1).transpose(1, 2)

    def numpy_view(self) -> np.ndarray:
        """`view()` as a read-only numpy view (CPU bars only)."""
        windows = np.lib.stride_tricks.sliding_window_view(self.bars.numpy(), self.length, axis=0)
        return windows.swapaxes(1, 2)

    def to(self, device: torch.device | str) -> Windows:
        return Windows(self.bars.to(device), self.ends.to(device), self.length)

    def select(self, index: IndexLike) -> Windows:
        """A row subset over the same bars (no copy of the bars)."""
        ends = self.ends[_as_index(index, self.ends.device)].reshape(-1)
        return Windows(self.bars, ends, self.length)

    def step_rows(self) -> np.ndarray:
        """The bars some window reads, (n, features): the per-step rows a scaler is fitted on."""
        return self.bars[torch.as_tensor(referenced_bars(
            self.ends.cpu().numpy(), len(self.bars), self.length))].cpu().numpy()

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.bars).all())


def _as_index(index: IndexLike, device: torch.device) -> Any:
    if isinstance(index, slice | int):
        return index
    if isinstance(index, np.ndarray) and index.dtype == np.bool_:
        index = np.flatnonzero(index)
    tensor = torch.as_tensor(index, device=device)
    return tensor.nonzero().reshape(-1) if tensor.dtype == torch.bool else tensor.long()


def referenced_bars(ends: np.ndarray, n_bars: int, length: int) -> np.ndarray:
    """True for the bars at least one window reads: +1 where a window starts, -1 past its end,
    a running sum."""
    marks = np.zeros(n_bars + 1, dtype=np.int64)
    np.add.at(marks, ends - (length - 1), 1)
    np.add.at(marks, ends + 1, -1)
    return np.cumsum(marks[:-1]) > 0


def step_names(names: Sequence[str], length: int) -> tuple[str, ...]:
    """The per-step feature names of a recurrent model: the unlagged ones (no `_lag_` names),
    the first `len(names) // length` of a matrix engineered with lags = length - 1."""
    if len(names) % length:
        raise WindowError(f"{len(names)} feature names are not {length} steps of equal width")
    return tuple(names[: len(names) // length])


def symbol_bars(features: FeatureMatrix, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(bars (n, per-step features) bars-major, the bar each row ends at) of one symbol.

    A matrix engineered with lags = length - 1 is its own bars: `columns` transposed (a view),
    row i ending at bar i + lags. A matrix whose rows were picked by a mask (the lags expanded
    into lag-named columns, lags 0) is rebuilt row by row: each row's window becomes its own
    `length` bars (a copy, only for that uncommon case)."""
    rows = len(features.index)
    if features.lags == length - 1:
        return features.columns.T, np.arange(rows, dtype=np.int64) + features.lags
    if features.lags == 0 and len(features.names) % length == 0:
        per_step = len(features.names) // length
        # Lag block k holds lag k; a window runs oldest first, so the blocks go in reverse.
        values = features.values.reshape(rows, length, per_step)[:, ::-1]
        bars = np.ascontiguousarray(values).reshape(rows * length, per_step)
        return bars, np.arange(rows, dtype=np.int64) * length + (length - 1)
    raise WindowError(f"a feature matrix with {features.lags} lags and {len(features.names)} "
                      f"names does not make windows of {length} bars")


def stack_windows(parts: Sequence[tuple[FeatureMatrix, np.ndarray]], length: int) -> Windows:
    """The windows of the given rows of every symbol, symbols in order: each symbol's bars
    from its first selected window's start to its last row's bar are copied once, as their
    own block (so no window crosses symbols). Bars that no window reads (rows purged between
    two kept ones, whose features may be NaN) are zeroed, so a finite check of the bars
    checks exactly what the model reads."""
    blocks: list[tuple[np.ndarray, int]] = []  # (symbol bars, first bar copied)
    selected: list[np.ndarray] = []
    total = 0
    per_step: int | None = None
    for features, rows in parts:
        bars, ends = symbol_bars(features, length)
        if per_step is not None and bars.shape[1] != per_step:
            raise WindowError(f"symbols differ in per-step features: {per_step} vs "
                              f"{bars.shape[1]}")
        per_step = int(bars.shape[1])
        mine = ends[np.asarray(rows, dtype=np.int64)]
        if not len(mine):
            continue
        first = int(mine.min()) - (length - 1)
        blocks.append((bars[first : int(mine.max()) + 1], first))
        selected.append(mine - first + total)
        total += int(mine.max()) + 1 - first
    out = np.empty((total, per_step or 0), dtype=np.float32)
    at = 0
    for block, _ in blocks:
        out[at : at + len(block)] = block
        at += len(block)
    ends_all = np.concatenate(selected) if selected else np.empty(0, dtype=np.int64)
    out[~referenced_bars(ends_all, total, length)] = 0.0
    return Windows(out, ends_all, length)
