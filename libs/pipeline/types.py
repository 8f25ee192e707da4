"""The domain's names, defined once: what a strategy, a symbol and a timeframe may be called.

A leaf module (msgspec and the standard library only): the bus schema (`libs/events/schema.py`),
the strategy config, the model storage layout and the backend's catalog all import these, so a
name the API accepts is a name the trainer accepts, and the exported JSON Schemas say the same.

- A strategy name becomes a file name (`<name>.yaml`) and a directory (`models/<name>/`): letters,
  digits, `_` and `-`, starting with a letter or digit; no dots (no `..`, no hidden files, no
  extension games), at most 128 characters.
- A symbol becomes part of a price file's name (`<symbol>_<tf>.csv`): letters, digits, `_`, `.`
  and `-` (`BRK.B`), starting with a letter or digit; no `/` (a path separator), at most 32.
- A timeframe is one of the eight bar sizes the data layer resamples between.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal, get_args

from msgspec import Meta

# msgspec matches patterns with Python's `re.search`, where `$` also matches before a trailing
# newline ("abc\n" would pass); `(?!\n)` closes that gap and reads the same in ECMA-262 (the
# exported JSON Schemas), where `$` alone would do.
STRATEGY_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$(?!\n)"
SYMBOL_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$(?!\n)"



StrategyName = Annotated[
    str,
    Meta(
        pattern=STRATEGY_NAME_PATTERN,
        description="strategy name: 1-128 of [A-Za-z0-9_-], starting with a letter or digit",
        examples=["rsi_macd_zigzag"],
    ),
]
Symbol = Annotated[
    str,
    Meta(
        pattern=SYMBOL_PATTERN,
        description="symbol: 1-32 of [A-Za-z0-9_.-], starting with a letter or digit",
        examples=["EURUSD", "BRK.B"],
    ),
]
Timeframe = Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]

TIMEFRAMES: Final[tuple[str, ...]] = get_args(Timeframe)
TIMEFRAME_SECONDS: Final[dict[str, int]] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
    "1w": 604800,
}
assert tuple(TIMEFRAME_SECONDS) == TIMEFRAMES, "one entry per timeframe, in order"

# Training seeds are what numpy and torch accept as a 32-bit seed.
Seed = Annotated[int, Meta(ge=0, le=2**32 - 1, description="training seed (0 to 2**32-1)")]

STRATEGY_NAME_RE: Final = re.compile(STRATEGY_NAME_PATTERN)
SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)


def is_strategy_name(value: object) -> bool:
    return isinstance(value, str) and STRATEGY_NAME_RE.fullmatch(value) is not None
