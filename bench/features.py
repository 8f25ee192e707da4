"""Features + labels for 1,000,000 bars of one symbol vs TA-Lib alone, in one run.

    .venv/bin/python bench/features.py [--bars 1000000] [--rounds 9] [--strategy rsi_macd_zigzag]

"ours" is the whole per-symbol chain on prices already in memory: it calls
`dataset.symbol_data_from_prices`, what `dataset.build_symbol_data` runs after loading:
indicators (TA-Lib through the registry) -> fuzzy memberships (float32, every value computed)
-> the feature matrix (its lags are offsets into the memberships, not copies) -> labels and
when each is known (one scan) -> alignment (warm-up and undefined rows dropped).
"TA-Lib alone" is the bare TA-Lib calls for the same indicators on float64 arrays prepared
outside the timing. Rounds alternate (talib, ours, ours, talib, ...) so machine noise hits both
alike; medians are compared, with a per-stage breakdown of ours. Three unmeasured rounds go
first: the first few of a fresh process run slower on both sides (allocator and caches settle,
kernels load), and the steady state is what a trainer sees from its second job on.
For context, outside the ratio: loading the bars from Parquet, and writing the row-major matrix
the model reads (lags expanded), which the split does once when it copies the rows into
x_train/x_val/x_test (it always copied them).
Then the floor: the steps no such chain can skip (every membership value written once, the
serial zigzag scan, a label and a label time per bar), each timed alone beside TA-Lib, and the
ratio their sum would give.
Goal (issue 19): ours under 2x TA-Lib alone (issue 2: under 1 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import talib  # noqa: E402

from libs.pipeline import kernels  # noqa: E402
from libs.pipeline.data import load_price_data, synthesize, write_price_file  # noqa: E402
from libs.pipeline.dataset import symbol_data_from_prices  # noqa: E402
from libs.pipeline.fuzzy import compute_memberships  # noqa: E402
from libs.pipeline.indicator_specs import resolved_params  # noqa: E402
from libs.pipeline.indicators import COMPUTE, PriceArrays, compute_indicators  # noqa: E402
from libs.pipeline.strategy import (  # noqa: E402
    IndicatorConfig,
    StrategyConfig,
    load_strategy,
    timeframes_of,
)


def bare_talib_calls(strategy: StrategyConfig, prices: pd.DataFrame) -> Callable[[], None]:
    """The TA-Lib calls alone for the strategy's indicators, on arrays made beforehand."""
    columns: dict[str, np.ndarray] = {
        c: np.ascontiguousarray(prices[c].to_numpy(np.float64)) for c in prices.columns
    }
    calls = [bare_call(cfg, columns, prices) for cfg in strategy.indicators.values()]

    def run() -> None:
        for call in calls:
            call()

    return run


def bare_call(
    cfg: IndicatorConfig, columns: dict[str, np.ndarray], prices: pd.DataFrame
) -> Callable[[], Any]:
    """One indicator's bare TA-Lib call(s), bound to its resolved parameters."""
    p = resolved_params(cfg)
    if cfg.type == "rsi":
        return lambda: talib.RSI(columns[p["source"]], p["period"])
    if cfg.type == "macd":
        return lambda: talib.MACD(
            columns[p["source"]], p["fast_period"], p["slow_period"], p["signal_period"]
        )
    # other types: the registry's compute is the TA-Lib call(s) and nothing else
    arrays = PriceArrays(prices)
    for column in ("open", "high", "low", "close", "volume"):
        arrays[column]  # convert outside the timing
    return lambda: COMPUTE[cfg.type](arrays, p)


def stages(strategy: StrategyConfig, prices: pd.DataFrame, tf: str) -> dict[str, float]:
    """`dataset.symbol_data_from_prices`, the chain a job runs, timed stage by stage through
    its step hook (seconds): each stage lasts until the next one starts, and "labels" runs to
    the end (labels, when each is known, sample weights, alignment)."""
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    data = symbol_data_from_prices(
        strategy, "BENCH", {tf: prices}, tf,
        step=lambda phase, _message: marks.append((phase, time.perf_counter())),
    )
    t_end = time.perf_counter()
    times = {phase: 0.0 for phase in STAGES}
    for (phase, at), (_, until) in zip(marks, [*marks[1:], ("end", t_end)], strict=True):
        times[phase] += until - at
    times["total"] = t_end - t0
    times["kept"] = float(len(data))
    times["width"] = float(data.features.shape[1])
    return times


STAGES = ("indicators", "fuzzy", "features", "labels")


def floor_steps(
    strategy: StrategyConfig, prices: pd.DataFrame, tf: str
) -> dict[str, Callable[[], Any]]:
    """The steps a chain of this strategy cannot skip, each alone with its inputs made
    beforehand: the memberships (every value computed and written once: our fuzzy step, shown
    beside NumPy's cast copy of its inputs into the same columns, which does no membership
    function at all and is no faster), the zigzag scan (serial: each pivot depends on the path
    so far; our kernel is the bare loop over bars), and one label and one label time written
    per bar. Keys starting with "(" are shown, not summed."""
    indicators = compute_indicators(prices, strategy.indicators)
    inputs = [np.ascontiguousarray(indicators[fs.indicator].to_numpy(np.float64))
              for fs in strategy.fuzzy_sets.values() for _ in fs.memberships]
    n = len(prices)
    close = np.ascontiguousarray(prices["close"].to_numpy(np.float64))
    threshold = getattr(strategy.training.labels, "zigzag_threshold", None)

    def cast_copy() -> None:
        columns = np.empty((len(inputs), n), dtype=np.float32)
        for column, x in zip(columns, inputs, strict=True):
            np.copyto(column, x, casting="same_kind")

    def outputs() -> None:
        np.empty(n, dtype=np.float64).fill(1.0)
        np.empty(n, dtype=np.int64).fill(0)

    steps: dict[str, Callable[[], Any]] = {
        "memberships": lambda: compute_memberships(indicators, strategy.fuzzy_sets),
        "(their inputs cast-copied)": cast_copy,
    }
    if threshold is not None:
        steps["zigzag scan"] = lambda: kernels.zigzag_pivots(close, threshold)
    steps["labels + times written"] = outputs
    return steps


def floor(
    strategy: StrategyConfig, prices: pd.DataFrame, tf: str, talib_s: float,
    bare: Callable[[], None],
) -> None:
    """Each floor step's median time beside TA-Lib's (both timed here, alternating), and the
    ratio they leave: what "features + labels" would be with no code but those steps."""
    steps = floor_steps(strategy, prices, tf)
    times: dict[str, list[float]] = {name: [] for name in ["TA-Lib", *steps]}
    for _ in range(3):  # warm-up: first-touch allocations
        for step in steps.values():
            step()
    for _ in range(15):
        for name, step in [("TA-Lib", bare), *steps.items()]:
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print("floor (each step alone, medians):")
    for name, seconds in medians.items():
        print(f"  {name:28s} {seconds * 1e3:6.2f} ms")
    total = sum(seconds for name, seconds in medians.items() if not name.startswith("("))
    print(f"  sum {total * 1e3:.1f} ms: a chain doing only these would be "
          f"{total / medians['TA-Lib']:.2f}x TA-Lib (timed alongside: "
          f"{medians['TA-Lib'] * 1e3:.1f} ms; in the rounds {talib_s * 1e3:.1f})")


def row_major_copy(strategy: StrategyConfig, prices: pd.DataFrame, tf: str) -> float:
    """Seconds to write the kept rows as the row-major matrix the model reads (median of 3)."""
    data = symbol_data_from_prices(strategy, "BENCH", {tf: prices}, tf)
    seconds = []
    for _ in range(3):
        rows = np.empty(data.features.shape, dtype=np.float32)
        started = time.perf_counter()
        data.features.rows_into(rows)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def parquet_load(prices: pd.DataFrame, tf: str) -> float:
    """Seconds to load the bars from a Parquet file (the second read: pyarrow warmed)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_price_file(prices, Path(tmp) / f"BENCH_{tf}.parquet")
        load_price_data("BENCH", tf, data_dir=Path(tmp))
        started = time.perf_counter()
        load_price_data("BENCH", tf, data_dir=Path(tmp))
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--strategy", default="rsi_macd_zigzag")
    args = parser.parse_args()

    strategy = load_strategy(args.strategy, ROOT / "strategies")
    timeframes = timeframes_of(strategy)
    if len(timeframes) != 1:
        parser.error(f"{strategy.name} has timeframes {timeframes}; the bench takes one")
    tf = timeframes[0]
    prices = synthesize("BENCH", tf, args.bars, seed=1)

    bare = bare_talib_calls(strategy, prices)
    for _ in range(3):  # warm-up, not measured: imports, kernels, first-touch allocations
        bare()
        stages(strategy, prices, tf)
    talib_s: list[float] = []
    ours: list[dict[str, float]] = []
    for i in range(args.rounds):
        order = ("talib", "ours") if i % 2 == 0 else ("ours", "talib")
        for side in order:
            if side == "talib":
                started = time.perf_counter()
                bare()
                talib_s.append(time.perf_counter() - started)
            else:
                ours.append(stages(strategy, prices, tf))

    def median(key: str) -> float:
        return statistics.median(r[key] for r in ours)

    # The context figures come after the rounds, not before: they must not disturb them.
    copy_s = row_major_copy(strategy, prices, tf)
    load_s = parquet_load(prices, tf)
    talib_med, ours_med = statistics.median(talib_s), median("total")
    ratio = ours_med / talib_med
    kinds = ", ".join(f"{i}: {c.type}" for i, c in strategy.indicators.items())
    labels = type(strategy.training.labels).__struct_config__.tag
    print(f"strategy {strategy.name} ({kinds}); labels {labels}")
    rows, width = int(ours[0]["kept"]), int(ours[0]["width"])
    print(f"bars: {args.bars:,} ({tf}); rows kept: {rows:,} x {width} features")
    print(f"TA-Lib alone      median {talib_med * 1e3:8.1f} ms   (min {min(talib_s) * 1e3:.1f})")
    print(
        f"features+labels   median {ours_med * 1e3:8.1f} ms   "
        f"(min {min(r['total'] for r in ours) * 1e3:.1f})"
    )
    print(
        "  "
        + "  ".join(
            f"{k} {median(k) * 1e3:.1f}"
            for k in STAGES
        )
        + " ms"
    )
    print(f"ratio             {ratio:8.2f}x TA-Lib alone")
    print("for context, outside the ratio:")
    print(f"  loading the {args.bars:,} bars from Parquet   {load_s * 1e3:8.1f} ms")
    print(f"  the split's row-major copy of the matrix    {copy_s * 1e3:8.1f} ms")
    floor(strategy, prices, tf, talib_med, bare)
    under_1s, under_2x = ours_med < 1.0, ratio < 2.0
    print(
        f"goal: < 1 s {'met' if under_1s else 'MISSED'}; "
        f"< 2x TA-Lib {'met' if under_2x else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
