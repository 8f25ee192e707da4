"""Strategy files: names resolved only inside the strategies directory, read with a size cap."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from libs.pipeline.strategy.build import StrategyCheck, check_strategy, parse_strategy
from libs.pipeline.strategy.dialect import MAX_STRATEGY_BYTES
from libs.pipeline.strategy.problems import Issue
from libs.pipeline.strategy.schema import StrategyConfig, StrategyError
from libs.pipeline.types import STRATEGY_NAME_RE, is_strategy_name


def strategies_dir() -> Path:
    """`TRAINBUS_STRATEGIES_DIR`, default `./strategies`."""
    return env_strategies_dir()


def env_strategies_dir() -> Path:
    # Separate name: the loaders' `strategies_dir` parameter shadows the public function.
    return Path(os.environ.get("TRAINBUS_STRATEGIES_DIR", "strategies"))


def _read_strategy_file(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_STRATEGY_BYTES + 1)
    except OSError as exc:
        raise StrategyError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_STRATEGY_BYTES:
        raise StrategyError(f"{path}: larger than {MAX_STRATEGY_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StrategyError(f"{path}: not UTF-8 text") from None


def resolve_strategy_path(name: str, strategies_dir: Path | None = None) -> Path:
    """`<dir>/<name>.yaml|.yml`, only for a well-formed name and only inside the directory."""
    if not is_strategy_name(name):
        raise StrategyError(
            f"invalid strategy name {name!r}: must match {STRATEGY_NAME_RE.pattern}"
        )
    base = strategies_dir if strategies_dir is not None else env_strategies_dir()
    root = base.resolve()
    for suffix in (".yaml", ".yml"):
        candidate = base / f"{name}{suffix}"
        if candidate.is_file():
            # A symlink may point anywhere; the promise is "inside the strategies directory".
            if not candidate.resolve().is_relative_to(root):
                raise StrategyError(f"strategy {name!r} resolves outside {base}")
            return candidate
    available = sorted(p.stem for p in _iter_strategy_files(base))
    raise StrategyError(
        f"strategy {name!r} not found in {base}"
        + (f" (available: {', '.join(available)})" if available else "")
    )


def _iter_strategy_files(base: Path) -> Iterator[Path]:
    if base.is_dir():
        yield from (p for p in base.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_strategy_by_name(name: str, strategies_dir: Path | None = None) -> StrategyConfig:
    """Strict lookup for untrusted input (commands from the bus): names only, never paths."""
    path = resolve_strategy_path(name, strategies_dir)
    return parse_strategy(_read_strategy_file(path), source=str(path))


def load_strategy(name_or_path: str, strategies_dir: Path | None = None) -> StrategyConfig:
    """A strategy by bare name (looked up in the strategies dir) or by a `.yaml`/`.yml` path.

    Paths are for people at a shell; code serving remote requests uses `load_strategy_by_name`.
    """
    if is_strategy_name(name_or_path):
        return load_strategy_by_name(name_or_path, strategies_dir)
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        raise StrategyError(
            f"{name_or_path!r} is neither a strategy name ({STRATEGY_NAME_RE.pattern}) "
            "nor a .yaml/.yml path"
        )
    if not path.is_file():
        raise StrategyError(f"{path}: no such strategy file")
    return parse_strategy(_read_strategy_file(path), source=str(path))


def check_strategy_file(path: Path) -> StrategyCheck:
    """`check_strategy` of a file (any path: for people at a shell and their tools)."""
    try:
        text = _read_strategy_file(path)
    except StrategyError as exc:
        return StrategyCheck(None, [Issue("(file)", str(exc).removeprefix(f"{path}: "))], [])
    return check_strategy(text, source=str(path))


def check_strategy_by_name(name: str, strategies_dir: Path | None = None) -> StrategyCheck:
    """`check_strategy` of a strategy by name (only inside the strategies directory)."""
    try:
        path = resolve_strategy_path(name, strategies_dir)
        text = _read_strategy_file(path)
    except StrategyError as exc:
        return StrategyCheck(None, [Issue("(file)", str(exc))], [])
    return check_strategy(text, source=str(path))


def strategy_files(base: Path) -> list[Path]:
    """The `.yaml`/`.yml` files of a strategies directory, by name."""
    return sorted(_iter_strategy_files(base))
