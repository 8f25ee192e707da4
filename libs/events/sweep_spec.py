"""Reading what a user asks a sweep to search: `key=dist` texts, a YAML sweep file, and the
strategy document of one trial (the base strategy with the sampled values set).

Pure and light (no Optuna, no strategy grammar): the strategy checker's verdict on each key is
libs/pipeline/sweep_check.py's, called by the edges before anything is submitted. Refusals are
`InvalidRequest` naming the field (`param`, `objective`, `trials`, ...).
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import yaml

from libs.events.errors import InvalidRequest
from libs.events.sweep_schema import (
    AnyDistribution,
    Choice,
    IntRange,
    LogUniform,
    Param,
    SweepSpec,
    Uniform,
)

_CALL_RE: Final = re.compile(r"^\s*(loguniform|uniform|int|choice)\s*\((.*)\)\s*$", re.DOTALL)
_KEY_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
OBJECTIVE_SOURCES: Final = ("test", "walkforward")
_SEED_STRIDE: Final = 1_000_003  # a prime: seeds of one sweep never collide for k < 4294


def parse_distribution(text: str, *, key: str = "") -> AnyDistribution:
    """`loguniform(1e-4,1e-2)`, `uniform(0.1,0.5)`, `int(8,64)`, `choice([32],[64,32])` (or
    `choice(relu, tanh)`: bare words are strings)."""
    field = f"param {key}" if key else "param"
    match = _CALL_RE.match(text)
    if match is None:
        raise InvalidRequest(
            f"{text!r} is not a distribution: use loguniform(a,b), uniform(a,b), int(a,b) or "
            "choice(x,y,...)", field=field)
    name, inner = match.group(1), match.group(2)
    values = _arguments(inner, field)
    if name == "choice":
        if not values:
            raise InvalidRequest("choice() needs at least one option", field=field)
        return Choice(options=tuple(values))
    if len(values) != 2:
        raise InvalidRequest(f"{name}(a,b) takes two bounds, got {len(values)}", field=field)
    low, high = values
    if name == "int":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise InvalidRequest(f"int(a,b) takes integers, got {inner.strip()}", field=field)
        if low > high:
            raise InvalidRequest(f"int({low},{high}): low is above high", field=field)
        return IntRange(low=low, high=high)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):
        raise InvalidRequest(f"{name}(a,b) takes two numbers, got {inner.strip()}", field=field)
    if low >= high:
        raise InvalidRequest(f"{name}({low},{high}): low is not below high", field=field)
    if name == "loguniform":
        if low <= 0:
            raise InvalidRequest(f"loguniform({low},{high}): bounds must be above 0", field=field)
        return LogUniform(low=float(low), high=float(high))
    return Uniform(low=float(low), high=float(high))


def _arguments(inner: str, field: str) -> list[Any]:
    """The comma-separated arguments as YAML flow values (`[64, 32]`, `1e-4`, `relu`)."""
    if not inner.strip():
        return []
    try:
        parsed = yaml.safe_load(f"[{inner}]")
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"cannot read the arguments {inner.strip()!r}: "
                             f"{str(exc).splitlines()[0]}", field=field) from None
    assert isinstance(parsed, list)
    # YAML 1.1 reads `1e-4` as a string: numbers in scientific notation are numbers here.
    return [_number_or_self(v) for v in parsed]


def _number_or_self(value: Any) -> Any:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        # `nan`, `inf`, `infinity` are words here, never numbers: a non-finite option would be
        # stored as null and would not rebuild the same study.
        return number if math.isfinite(number) else value
    return value


def parse_param(text: str) -> Param:
    """`training.learning_rate=loguniform(1e-4,1e-2)` -> Param."""
    key, sep, dist = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidRequest(f"{text!r}: write KEY=DISTRIBUTION "
                             "(training.learning_rate=loguniform(1e-4,1e-2))", field="param")
    if not _KEY_RE.fullmatch(key):
        raise InvalidRequest(f"{key!r} is not a strategy key (dotted names: "
                             "model.architecture.dropout)", field="param")
    return Param(key=key, dist=parse_distribution(dist, key=key))


def check_params(params: Sequence[Param]) -> None:
    if not params:
        raise InvalidRequest("give at least one --param KEY=DISTRIBUTION", field="param")
    keys = [p.key for p in params]
    for key in keys:
        if keys.count(key) > 1:
            raise InvalidRequest(f"{key} is given twice", field=f"param {key}")
        clash = next((k for k in keys if k != key and k.startswith(f"{key}.")), None)
        if clash is not None:
            raise InvalidRequest(f"{key} and {clash} overlap: search one or the other",
                                 field=f"param {key}")


def split_objective(objective: str) -> tuple[str, str]:
    """`test.macro_f1` -> ("test", "macro_f1"); a bare `macro_f1` means `test.macro_f1`."""
    source, sep, metric = objective.partition(".")
    if not sep:
        source, metric = "test", objective
    if source not in OBJECTIVE_SOURCES or not metric or "." in metric:
        raise InvalidRequest(
            f"objective {objective!r}: use test.<metric> (the job's test metrics) or "
            "walkforward.<metric> (the mean over the walk-forward folds)", field="objective")
    return source, metric


def check_spec(spec: SweepSpec) -> None:
    """What the spec itself can be refused for (the strategy's verdict is sweep_check's)."""
    check_params(spec.params)
    split_objective(spec.objective)
    if spec.sampler == "grid":
        for param in spec.params:
            if isinstance(param.dist, LogUniform | Uniform):
                raise InvalidRequest(
                    f"the grid sampler needs finite choices: {param.key} is continuous "
                    "(use int(a,b) or choice(...))", field=f"param {param.key}")
        # Optuna's grid sampler builds every point in memory, whatever --trials says.
        if (size := grid_size(spec.params)) > MAX_GRID:
            raise InvalidRequest(f"the grid has {size:,} points, more than {MAX_GRID:,}: "
                                 "narrow the ranges or use the tpe or random sampler",
                                 field="sampler")


MAX_GRID: Final = 1_000_000


def grid_size(params: Sequence[Param]) -> int:
    size = 1
    for param in params:
        dist = param.dist
        size *= (len(dist.options) if isinstance(dist, Choice)
                 else dist.high - dist.low + 1 if isinstance(dist, IntRange) else 0)
    return size


# --- the sweep file ---------------------------------------------------------------------------


class SweepFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A YAML sweep file: the command line's options as keys; `params` maps each key to its
    distribution text (`training.learning_rate: loguniform(1e-4,1e-2)`)."""

    strategy: str
    params: dict[str, str]
    trials: int
    objective: str
    parallel: int = 1
    direction: str = "maximize"
    seeds: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    pool: str = "auto"
    epochs: int | None = None
    seed: int | None = None


def read_sweep_file(text: str, source: str) -> SweepFile:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{source}: not YAML: {str(exc).splitlines()[0]}",
                             field="file") from None
    if isinstance(raw, dict) and isinstance(raw.get("params"), dict):
        raw["params"] = {str(k): str(v) for k, v in raw["params"].items()}
    try:
        return msgspec.convert(raw, SweepFile)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{source}: {exc}", field="file") from None


# --- one trial's strategy ---------------------------------------------------------------------


def set_key(document: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted `key` in a strategy mapping (creating the mappings on the way)."""
    *parents, last = key.split(".")
    node = document
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[last] = value


def trial_strategy_name(base: str, sweep_id: str) -> str:
    """The trials' own lineage: a trainer refuses an inline strategy that takes a strategy
    file's name with other content (its models would move that file's latest pointer)."""
    return f"{base}-{sweep_id}"[:128]


def trial_yaml(base_yaml: str, values: Mapping[str, Any], *, name: str | None = None) -> str:
    """The base strategy with `values` (key -> value) set, and renamed to `name`."""
    document = yaml.safe_load(base_yaml)
    if not isinstance(document, dict):
        raise InvalidRequest("the strategy is not a YAML mapping", field="strategy")
    document = copy.deepcopy(document)
    for key, value in values.items():
        set_key(document, key, value)
    if name is not None:
        document["name"] = name
    return yaml.safe_dump(document, sort_keys=False)


def candidates(param: Param) -> list[Any]:
    """The values that stand for a distribution when checking it against the strategy: its
    extremes, or each choice."""
    dist = param.dist
    if isinstance(dist, Choice):
        return list(dist.options)
    return [dist.low, dist.high]


# --- ids and seeds ----------------------------------------------------------------------------


def new_sweep_id() -> str:
    return f"sw-{secrets.token_hex(5)}"


def new_sweep_seed() -> int:
    return secrets.randbelow(2**31)


def trial_seeds(sweep_seed: int, seeds: int) -> tuple[int, ...]:
    """The training seeds of every configuration: the same K seeds for all of them, so trials
    are compared on the same draws (derived from the sweep's seed, never random)."""
    return tuple((sweep_seed + k * _SEED_STRIDE) % 2**32 for k in range(seeds))


def choice_label(value: Any) -> str:
    """A choice as Optuna stores it (its categoricals are scalars: lists go as JSON text)."""
    return json.dumps(value, separators=(",", ":"))
