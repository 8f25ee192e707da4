"""One time axis for every symbol: the train / validation / test windows (or the walk-forward
folds), and which rows each slice keeps, purges and embargoes.

Why one axis: when each symbol is cut at its own fraction, one symbol's training rows fall
inside another's test window (the two trade on the same news), a look-ahead across assets. So
the windows are cut on the union of every symbol's row times, and each row goes to the slice
its time falls in.

Why purge: every label looks ahead (libs/pipeline/labels.py `label_known_at`), so a row near
the end of a slice has a label computed from the next slice's prices. A row is purged when its
label reads a bar at or after the end of its own slice.

Why embargo: the first bars of the validation and test slices share indicator windows and
serially correlated labels with the end of the slice before; `embargo` bars of each symbol are
dropped at the start of each of them (`data_split.embargo`, default the label's look-ahead).

Times are int64 nanoseconds (UTC bar open times); a window is half-open, [start, end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from libs.pipeline.strategy import DataSplitConfig, WalkForwardConfig

BEFORE_ALL: Final = int(np.iinfo(np.int64).min)
AFTER_ALL: Final = int(np.iinfo(np.int64).max)  # also "never known" for a label
SLICES: Final = ("train", "validation", "test")


@dataclass(frozen=True, slots=True)
class Windows:
    """The [start, end) time interval of each slice (an empty validation has start == end)."""

    train: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int]

    def of(self, name: str) -> tuple[int, int]:
        window: tuple[int, int] = getattr(self, name)
        return window


@dataclass(frozen=True, slots=True)
class SliceRows:
    """One symbol's rows in one slice: the kept row positions, and how many were dropped."""

    rows: np.ndarray  # int64 positions into the symbol's rows, ascending
    purged: int
    embargoed: int

    @property
    def kept(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        return {"kept": self.kept, "purged": self.purged, "embargoed": self.embargoed}


def time_axis(times: Sequence[np.ndarray]) -> np.ndarray:
    """Every distinct row time of every symbol, sorted."""
    if not times:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(times))


def _at(axis: np.ndarray, k: int) -> int:
    return int(axis[k]) if k < len(axis) else AFTER_ALL


def holdout_windows(axis: np.ndarray, split: DataSplitConfig) -> Windows:
    """Train, validation and test by the configured shares of the axis."""
    n = len(axis)
    val_start = _at(axis, round(n * split.train))
    test_start = _at(axis, round(n * (split.train + split.validation)))
    return Windows(train=(BEFORE_ALL, val_start), validation=(val_start, test_start),
                   test=(test_start, AFTER_ALL))


def walk_forward_windows(
    axis: np.ndarray, walk: WalkForwardConfig, split: DataSplitConfig
) -> list[Windows]:
    """`walk.folds` folds over `walk.folds + 1` equal blocks of the axis: fold k tests on
    block k and trains on the blocks before it (expanding) or on block k - 1 (rolling), the
    last `validation / (train + validation)` of that window kept for validation."""
    n, blocks = len(axis), walk.folds + 1
    edges = [round(j * n / blocks) for j in range(blocks + 1)]
    share = split.validation / (split.train + split.validation)
    folds: list[Windows] = []
    for k in range(1, blocks):
        first = edges[0] if walk.mode == "expanding" else edges[k - 1]
        val_at = first + round((edges[k] - first) * (1.0 - share))
        start = BEFORE_ALL if walk.mode == "expanding" else _at(axis, first)
        folds.append(Windows(
            train=(start, _at(axis, val_at)),
            validation=(_at(axis, val_at), _at(axis, edges[k])),
            test=(_at(axis, edges[k]), _at(axis, edges[k + 1])),
        ))
    return folds


def assign_rows(
    times: np.ndarray, known_at: np.ndarray, bars: np.ndarray, windows: Windows, embargo: int
) -> dict[str, SliceRows]:
    """Slice one symbol's rows. `times`: the rows' bar times; `known_at`: the time of the last
    bar each row's label reads (AFTER_ALL: never); `bars`: every bar time of the symbol's base
    timeframe (the embargo counts these)."""
    out: dict[str, SliceRows] = {}
    for name in SLICES:
        start, end = windows.of(name)
        inside = (times >= start) & (times < end)
        purged = inside & (known_at >= end)
        embargoed = np.zeros_like(inside)
        if name != "train" and embargo > 0 and start != BEFORE_ALL:
            at = int(np.searchsorted(bars, start, side="left")) + embargo
            until = int(bars[at]) if at < len(bars) else AFTER_ALL
            embargoed = inside & ~purged & (times < until)
        kept = inside & ~purged & ~embargoed
        out[name] = SliceRows(rows=np.flatnonzero(kept), purged=int(purged.sum()),
                              embargoed=int(embargoed.sum()))
    return out


def iso(ns: int) -> str | None:
    """A window edge as ISO text (None for the open ends)."""
    if ns in (BEFORE_ALL, AFTER_ALL):
        return None
    return str(np.datetime64(ns, "ns").astype("datetime64[s]")) + "+00:00"
