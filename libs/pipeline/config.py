"""Strategy config: the typed schema every pipeline step reads.

The canonical grammar is the id-keyed one (indicators keyed by id, fuzzy sets naming an
`indicator`, `nn_inputs`, a top-level `training` section). These Structs are the single source of
truth for validation, defaults and docs; `load_strategy`/`parse_strategy` (below) turn YAML of
either grammar into a `StrategyConfig`, with errors that name the source, the path of the bad key
and the reason (`s.yaml: training.epochs: expected int, got "ten"`), all problems at once.

Loading, in order: the YAML (a SafeLoader dialect: dates stay strings, `1e-3` is a float,
duplicate keys are errors, at most 32 aliases, 1 MiB, 100k nodes with aliases expanded, depth
32; NaN/inf anywhere refused) -> the list-style grammar migrated when `indicators` is a list ->
each section decoded -> cross-references checked (fuzzy set -> indicator output, nn_inputs ->
fuzzy sets and timeframes, feature-name collisions; indicator types and params by the registry).

The list-style grammar's settings are honoured or refused, never dropped:
- `model.training.*` moves to `training` (the same key in both places is an error);
- `model.features.lookback_periods` is the same setting in both grammars;
- no `nn_inputs`: every fuzzy set on every timeframe, in the order written;
- `model.architecture.output_activation: softmax` is what we do (logits trained, softmax at
  inference); any other value is refused;
- `model.features.include_price_context: true` is refused (raw price inputs are not supported);
- `model.features.scale_features` is accepted either way: inputs are fuzzy memberships, already
  bounded in [0, 1], and no scaler is fitted (the platform we descend from saved scaler=None);
- `model.training.progress_update_frequency` is accepted: progress is reported every batch and
  throttling is the caller's business;
- `training.method` must be `supervised`; `early_stopping.enabled: false` disables it;
- `labels.label_lookahead` is kept for compatibility; segment zigzag labels do not use it.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta, Struct

from libs.pipeline.indicator_specs import (
    IndicatorError,
    canonical_type,
    outputs_of,
    resolved_params,
)
from libs.pipeline.types import (
    STRATEGY_NAME_RE,
    TIMEFRAME_SECONDS,
    Seed,
    StrategyName,
    Symbol,
    Timeframe,
    is_strategy_name,
)

PositiveInt = Annotated[int, Meta(gt=0)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
# Upper bounds keep a hostile or mistyped strategy from asking for absurd work or memory
# (a 10^9-epoch run, a 10^6-wide layer, a million lags) while leaving real settings far inside.
Count = Annotated[int, Meta(gt=0, le=1_000_000)]
Bars = Annotated[int, Meta(gt=0, le=100_000)]
PositiveFloat = Annotated[float, Meta(gt=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]

# Sections that training does not read but that strategy files carry; they are kept verbatim and
# saved with the model (config.yaml) so nothing the author wrote is lost.
PASSTHROUGH_SECTIONS: tuple[str, ...] = (
    "decisions",
    "description",
    "hypothesis",
    "scope",
    "deployment",
    "risk_management",
    "backtesting",
    "version",
    "orchestrator",
)


class _Base(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Immutable, strict: an unknown key is an error naming its path."""


# --- indicators -------------------------------------------------------------------------------


class IndicatorConfig(_Base, frozen=True):
    """One indicator instance. `params` are validated against the registry in indicators.py."""

    type: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


# --- fuzzy sets -------------------------------------------------------------------------------


MEMBERSHIP_ARITY: dict[str, int] = {"triangular": 3, "trapezoidal": 4, "gaussian": 2}


class MembershipConfig(_Base, frozen=True):
    """triangular [a,b,c], trapezoidal [a,b,c,d], gaussian [mu, sigma]."""

    type: Literal["triangular", "trapezoidal", "gaussian"]
    parameters: tuple[float, ...]

    def __post_init__(self) -> None:
        arity = MEMBERSHIP_ARITY[self.type]
        params = self.parameters
        if len(params) != arity:
            raise ValueError(f"{self.type} needs {arity} parameters, got {len(params)}")
        if not all(math.isfinite(p) for p in params):
            raise ValueError(f"parameters must be finite numbers, got {list(params)}")
        if self.type == "gaussian":
            if params[1] <= 0:
                raise ValueError(f"gaussian sigma must be > 0, got {params[1]:g}")
        elif any(lo > hi for lo, hi in itertools.pairwise(params)):
            names = "a <= b <= c" if self.type == "triangular" else "a <= b <= c <= d"
            raise ValueError(f"{self.type} parameters must satisfy {names}, got {list(params)}")
        elif params[0] == params[-1]:
            raise ValueError(f"{self.type} has zero width: {list(params)}")


class FuzzySetConfig(_Base, frozen=True):
    """Memberships over one indicator output (`macd_12_26_9.histogram` for multi-output ones).

    `memberships` keeps the order written in YAML: it fixes the feature order.
    """

    indicator: str
    memberships: dict[str, MembershipConfig]


class NNInputConfig(_Base, frozen=True):
    fuzzy_set: str
    timeframes: Literal["all"] | list[Timeframe] = "all"


# --- model ------------------------------------------------------------------------------------


class ArchitectureConfig(_Base, frozen=True):
    hidden_layers: Annotated[
        tuple[Annotated[int, Meta(gt=0, le=65_536)], ...], Meta(min_length=1, max_length=32)
    ] = (64, 32)
    activation: Literal["relu", "tanh", "gelu", "leaky_relu"] = "relu"
    dropout: Annotated[float, Meta(ge=0, lt=1)] = 0.2


class ModelFeaturesConfig(_Base, frozen=True):
    """Lagged copies of every feature: `{name}_lag_{k}` for k in 1..lookback_periods."""

    lookback_periods: Annotated[int, Meta(ge=0, le=100)] = 0


class ModelConfig(_Base, frozen=True):
    type: Literal["mlp"] = "mlp"
    architecture: ArchitectureConfig = ArchitectureConfig()
    features: ModelFeaturesConfig = ModelFeaturesConfig()


# --- training ---------------------------------------------------------------------------------


class EarlyStoppingConfig(_Base, frozen=True):
    """Present means enabled. Restores the best epoch's weights at the end."""

    patience: Count = 10
    min_delta: Annotated[float, Meta(ge=0)] = 1e-4
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"


class StepLR(_Base, tag="step", tag_field="type", frozen=True):
    step_size: Count = 30
    gamma: PositiveFloat = 0.1


class ExponentialLR(_Base, tag="exponential", tag_field="type", frozen=True):
    gamma: PositiveFloat = 0.95


class ReduceOnPlateauLR(_Base, tag="reduce_on_plateau", tag_field="type", frozen=True):
    factor: Annotated[float, Meta(gt=0, lt=1)] = 0.5
    patience: Annotated[int, Meta(ge=0, le=1_000_000)] = 5
    min_lr: Annotated[float, Meta(ge=0)] = 0.0


class CosineLR(_Base, tag="cosine", tag_field="type", frozen=True):
    t_max: Count | None = None  # None: the run's epoch count
    eta_min: Annotated[float, Meta(ge=0)] = 0.0


LRSchedulerConfig = StepLR | ExponentialLR | ReduceOnPlateauLR | CosineLR


class ZigZagLabels(_Base, tag="zigzag", tag_field="source", frozen=True):
    """Segment labels: bars between two pivots take the direction of the next pivot."""

    zigzag_threshold: Annotated[float, Meta(gt=0, lt=1)] = 0.03  # fraction: 0.03 = 3 %
    label_lookahead: Bars = 20  # accepted for compatibility; segment labels ignore it


class TripleBarrierLabels(_Base, tag="triple_barrier", tag_field="source", frozen=True):
    pt_multiplier: PositiveFloat = 2.0
    sl_multiplier: PositiveFloat = 1.5
    max_holding_period: Bars = 50
    vol_span: Bars = 50
    vol_method: Literal["atr", "close"] = "atr"


class ForwardReturnLabels(_Base, tag="forward_return", tag_field="source", frozen=True):
    """Regression target (close[t+h] - close[t]) / close[t]."""

    horizon: Bars = 20


LabelsConfig = ZigZagLabels | TripleBarrierLabels | ForwardReturnLabels


class DataSplitConfig(_Base, frozen=True):
    train: Fraction = 0.7
    validation: Fraction = 0.15
    test: Fraction = 0.15

    def __post_init__(self) -> None:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:g}")
        if self.train <= 0:
            raise ValueError("train must be > 0")


class TrainingConfig(_Base, frozen=True):
    epochs: Annotated[int, Meta(gt=0, le=100_000)] = 100
    batch_size: Annotated[int, Meta(gt=0, le=1 << 20)] = 256
    learning_rate: PositiveFloat = 1e-3
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    weight_decay: Annotated[float, Meta(ge=0)] = 0.0
    momentum: Annotated[float, Meta(ge=0, lt=1)] = 0.9  # sgd and rmsprop only
    early_stopping: EarlyStoppingConfig | None = None
    lr_scheduler: LRSchedulerConfig | None = None
    gradient_clip: PositiveFloat | None = None
    class_weights: bool = False  # inverse-frequency weights in the classification loss
    labels: LabelsConfig = ZigZagLabels()
    data_split: DataSplitConfig = DataSplitConfig()
    seed: Seed = 42
    checkpoint_every: Annotated[int, Meta(ge=0, le=100_000)] = (
        0  # epochs between checkpoints handed to the hook; 0: never
    )


# --- training data ----------------------------------------------------------------------------

def _check_selection(
    what: str, mode: str, multi_mode: str, single: str | None, names: Sequence[str] | None
) -> None:
    """Shared rules of `symbols` and `timeframes`: one of the two keys, consistent with mode."""
    chosen = names if names is not None else ([single] if single is not None else [])
    if not chosen:
        key = "symbol" if what == "symbols" else "timeframe"
        raise ValueError(f"give {key} (mode single) or list (mode {multi_mode})")
    if names is not None and single is not None and single not in names:
        raise ValueError(f"{single!r} is not in list {names}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"duplicate {what} in {chosen}")
    if mode == "single" and len(chosen) > 1:
        raise ValueError(f"mode single but {len(chosen)} {what} listed; use mode: {multi_mode}")


class SymbolsConfig(_Base, frozen=True):
    mode: Literal["single", "multi_symbol"] = "single"
    symbol: Symbol | None = None
    names: list[Symbol] | None = msgspec.field(default=None, name="list")

    def __post_init__(self) -> None:
        _check_selection("symbols", self.mode, "multi_symbol", self.symbol, self.names)


class TimeframesConfig(_Base, frozen=True):
    mode: Literal["single", "multi_timeframe"] = "single"
    timeframe: Timeframe | None = None
    names: list[Timeframe] | None = msgspec.field(default=None, name="list")
    base_timeframe: Timeframe | None = None

    def __post_init__(self) -> None:
        _check_selection("timeframes", self.mode, "multi_timeframe", self.timeframe, self.names)
        chosen = self.names if self.names is not None else [self.timeframe]
        if self.base_timeframe is not None and self.base_timeframe not in chosen:
            raise ValueError(f"base_timeframe {self.base_timeframe} is not one of {chosen}")


def parse_date(text: str) -> datetime:
    """ISO date or datetime; naive means UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO date like 2024-01-31, got {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class TrainingDataConfig(_Base, frozen=True):
    symbols: SymbolsConfig
    timeframes: TimeframesConfig
    # Bars loaded before start_date so indicators are warmed up on the first training row.
    history_required: Annotated[int, Meta(ge=0, le=1_000_000)] = 200
    start_date: str | None = None
    end_date: str | None = None

    def __post_init__(self) -> None:
        start = parse_date(self.start_date) if self.start_date is not None else None
        end = parse_date(self.end_date) if self.end_date is not None else None
        if start is not None and end is not None and start >= end:
            raise ValueError(f"start_date {self.start_date} is not before end_date {self.end_date}")


# --- the strategy -----------------------------------------------------------------------------

class StrategyConfig(_Base, frozen=True):
    name: StrategyName
    indicators: dict[str, IndicatorConfig]
    fuzzy_sets: dict[str, FuzzySetConfig]
    nn_inputs: list[NNInputConfig]
    training_data: TrainingDataConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    # Non-training sections (decisions, hypothesis, ...) kept verbatim for the saved model.
    extras: dict[str, Any] = msgspec.field(default_factory=dict)


class StrategyError(ValueError):
    """Raised when a strategy cannot be loaded: the message names the path and the reason."""


def to_builtins(config: StrategyConfig) -> dict[str, Any]:
    """The resolved strategy as plain data (what is saved as the model's config.yaml)."""
    return msgspec.to_builtins(config)


# --- helpers the pipeline and the workers use -------------------------------------------------


def symbols_of(config: StrategyConfig) -> list[str]:
    """The strategy's symbols in the order written."""
    symbols = config.training_data.symbols
    return list(symbols.names) if symbols.names is not None else [str(symbols.symbol)]


def timeframes_of(config: StrategyConfig) -> list[str]:
    """The strategy's timeframes in the order written."""
    tfs = config.training_data.timeframes
    if tfs.names is not None:
        return list(tfs.names)
    assert tfs.timeframe is not None  # TimeframesConfig requires one of the two
    return [tfs.timeframe]


def base_timeframe(config: StrategyConfig, timeframes: list[str] | tuple[str, ...]) -> str:
    """The timeframe labels and rows live on: the configured base if loaded, else the shortest."""
    if not timeframes:
        raise ValueError("no timeframes")
    configured = config.training_data.timeframes.base_timeframe
    if configured is not None and configured in timeframes:
        return configured
    return min(timeframes, key=lambda tf: TIMEFRAME_SECONDS[tf])


def strategies_dir() -> Path:
    """`TRAINBUS_STRATEGIES_DIR`, default `./strategies`."""
    return _env_strategies_dir()


def _env_strategies_dir() -> Path:
    # Separate name: the loaders' `strategies_dir` parameter shadows the public function.
    return Path(os.environ.get("TRAINBUS_STRATEGIES_DIR", "strategies"))


def strategy_hash(config: StrategyConfig) -> str:
    """sha256 of the canonical JSON of the resolved strategy (defaults filled, grammar normalised).

    Key order is kept as written, not sorted: the order of memberships and nn_inputs fixes the
    feature order, so two files that differ only there really are different strategies.
    """
    return hashlib.sha256(msgspec.json.encode(config)).hexdigest()


def to_yaml_data(config: StrategyConfig) -> dict[str, Any]:
    """The resolved strategy in the id-keyed YAML grammar (params and memberships inline)."""
    data: dict[str, Any] = {
        "name": config.name,
        "indicators": {
            ind_id: {"type": ind.type, **ind.params} for ind_id, ind in config.indicators.items()
        },
        "fuzzy_sets": {
            fs_id: {
                "indicator": fs.indicator,
                **{
                    m_name: {"type": m.type, "parameters": list(m.parameters)}
                    for m_name, m in fs.memberships.items()
                },
            }
            for fs_id, fs in config.fuzzy_sets.items()
        },
        "nn_inputs": msgspec.to_builtins(config.nn_inputs),
        "training_data": msgspec.to_builtins(config.training_data),
        "model": msgspec.to_builtins(config.model),
        "training": msgspec.to_builtins(config.training),
    }
    data.update(config.extras)
    return data


def dump_yaml(config: StrategyConfig) -> str:
    """The resolved strategy, extras included, as YAML that `parse_strategy` reads back equal."""
    return yaml.dump(
        to_yaml_data(config),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
    )


# --- loading: limits and the YAML dialect ----------------------------------------------------

MAX_STRATEGY_BYTES = 1 << 20  # a real strategy is a few KiB
MAX_YAML_ALIASES = 32  # anchors are handy for shared memberships; bombs need many more
MAX_YAML_NODES = 100_000  # counted with aliases expanded: what every later step would walk
MAX_YAML_DEPTH = 32
# Weights between hidden layers. Each width may be up to 65536, so without a cap on the product
# one strategy (`hidden_layers: [65536, 65536]`: 17 GB of float32) exhausts every trainer it is
# handed to, one after the other. Real strategies have well under 100k.
MAX_HIDDEN_WEIGHTS = 20_000_000

# Indicator, fuzzy-set and membership ids end up in column and feature names.
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

_TOP_LEVEL = ("name", "indicators", "fuzzy_sets", "nn_inputs", "training_data", "model", "training")

_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# YAML 1.1 (PyYAML) reads `1e-3` as a string because it wants a dot; strategy authors write
# learning rates that way, so accept exponents without a dot.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _YamlLimitError(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader with: no timestamp typing (dates stay strings), `1e-3` floats, duplicate keys
    refused (PyYAML silently keeps the last), and a cap on aliases against expansion bombs."""

    yaml_implicit_resolvers = {  # noqa: RUF012 (PyYAML's class-level registry)
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_FLOAT_TAG, _TIMESTAMP_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _YamlLimitError(f"more than {MAX_YAML_ALIASES} YAML aliases")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                    key_node, yaml.ScalarNode
                ):
                    continue
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """Quotes every string our loader would read as a float (`"1e-3"`), and dates as usual."""

    yaml_implicit_resolvers = {  # noqa: RUF012
        first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
        for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
    }


_Dumper.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


# --- loading: error reporting -----------------------------------------------------------------

PathT = tuple[str | int, ...]


def _fmt(path: PathT) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out or "(top level)"


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: PathT, message: str) -> None:
        self.items.append(f"{_fmt(path)}: {message}")

    def raise_if_any(self, source: str) -> None:
        if len(self.items) == 1:
            raise StrategyError(f"{source}: {self.items[0]}")
        if self.items:
            raise StrategyError(
                f"{source}: {len(self.items)} problems:\n  " + "\n  ".join(self.items)
            )

    def add_validation(self, exc: msgspec.ValidationError, path: PathT, raw: Any, typ: Any) -> None:
        """msgspec's `Expected int, got str - at $.a.b` as `path.a.b: expected int, got "x"`."""
        text = str(exc)
        sub: list[str | int] = []
        match = re.search(r" - at `(key` in `)?\$([^`]*)`$", text)
        if match:
            text = text[: match.start()]
            for key, index in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", match.group(2)):
                sub.append(key if key else (int(index) if index.isdigit() else "..."))
        if (m := re.match(r"Object contains unknown field `(.*)`$", text)) is not None:
            keys = _keys_at(typ, sub, raw)
            hint = f"; expected one of: {', '.join(keys)}" if keys else ""
            self.add((*path, *sub, m.group(1)), f"unknown key{hint}")
            return
        if (m := re.match(r"Object missing required field `(.*)`$", text)) is not None:
            self.add((*path, *sub, m.group(1)), "required key missing")
            return
        message = text.replace("`", "")
        message = message[:1].lower() + message[1:]
        found, value = _lookup(raw, sub)
        if message.startswith("expected") and found:
            message = re.sub(r", got \w+$", "", message) + f", got {_show(value)}"
        if message.startswith(("invalid enum value", "invalid value")):
            allowed = _literal_at(typ, sub, raw) or _tags_at(typ, sub[:-1], raw)
            if allowed:
                message += f"; expected one of: {', '.join(map(str, allowed))}"
        self.add((*path, *sub), message)


def _lookup(raw: Any, sub: list[str | int]) -> tuple[bool, Any]:
    for seg in sub:
        in_dict = isinstance(raw, dict) and seg in raw
        in_list = isinstance(raw, list) and isinstance(seg, int) and seg < len(raw)
        if not (in_dict or in_list):
            return False, None
        raw = raw[seg]
    return True, raw


def _type_at(typ: Any, sub: list[str | int], raw: Any) -> Any:
    """Walk msgspec's type info along `sub`, picking union members by the raw tag value."""
    info: Any = msgspec.inspect.type_info(typ)
    for seg in [*sub, None]:
        while isinstance(info, msgspec.inspect.UnionType):
            members: list[Any] = [
                t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)
            ]
            structs = [t for t in members if isinstance(t, msgspec.inspect.StructType)]
            if len(structs) > 1 and isinstance(raw, dict):
                tag_field = structs[0].tag_field
                chosen = [t for t in structs if raw.get(tag_field) == t.tag]
                members = chosen or structs[:1]
            info = members[0] if members else None
        if seg is None or info is None:
            break
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == seg), None)
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
            info = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type
        else:
            return None
        _, raw = _lookup(raw, [seg])
    return info


def _keys_at(typ: Any, sub: list[str | int], raw: Any) -> list[str]:
    info = _type_at(typ, sub, _lookup(raw, [])[1])
    if isinstance(info, msgspec.inspect.StructType):
        return sorted(f.encode_name for f in info.fields)
    return []


def _literal_at(typ: Any, sub: list[str | int], raw: Any) -> list[Any]:
    info = _type_at(typ, sub, raw)
    if isinstance(info, msgspec.inspect.LiteralType):
        return list(info.values)
    return []


def _tags_at(typ: Any, sub: list[str | int], raw: Any) -> list[str]:
    """The tags of a tagged union at `sub` (labels `source`, lr_scheduler `type`)."""
    info: Any = msgspec.inspect.type_info(typ)
    for seg in sub:
        if isinstance(info, msgspec.inspect.UnionType):
            info = next((t for t in info.types if isinstance(t, msgspec.inspect.StructType)), None)
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == seg), None)
        elif isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        else:
            return []
    if isinstance(info, msgspec.inspect.UnionType):
        return [str(t.tag) for t in info.types if isinstance(t, msgspec.inspect.StructType)]
    return []


def _decode(value: Any, typ: Any, path: PathT, problems: _Problems) -> Any:
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        problems.add_validation(exc, path, value, typ)
        return None


# --- loading: the steps ------------------------------------------------------------------------


def _load_yaml(text: str, source: str) -> Any:
    if len(text) > MAX_STRATEGY_BYTES:
        raise StrategyError(f"{source}: larger than {MAX_STRATEGY_BYTES} bytes")
    try:
        stream = io.StringIO(text)
        stream.name = source  # PyYAML names it in error marks
        # Our SafeLoader subclass (limits, duplicate keys): it builds no objects.
        return yaml.load(stream, Loader=_Loader)  # noqa: TID251
    except _YamlLimitError as exc:
        raise StrategyError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise StrategyError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise StrategyError(f"{source}: YAML nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # PyYAML's constructors: an int of 4300+ digits
        raise StrategyError(f"{source}: a YAML value cannot be read: {str(exc)[:200]}") from None


def _check_tree(data: Any, source: str, problems: _Problems) -> None:
    """Bounded walk (aliases expanded) that refuses bombs, NaN/inf and non-plain values."""
    stack: list[tuple[Any, PathT]] = [(data, ())]
    nodes = 0
    while stack:
        value, path = stack.pop()
        nodes += 1
        if nodes > MAX_YAML_NODES:
            raise StrategyError(f"{source}: more than {MAX_YAML_NODES} YAML nodes (alias bomb?)")
        if len(path) > MAX_YAML_DEPTH:
            raise StrategyError(
                f"{source}: {_fmt(path[:4])}...: nested deeper than {MAX_YAML_DEPTH}"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    problems.add((*path, str(key)), f"keys must be strings, got {_show(key)}")
                    continue
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                problems.add(path, f"numbers must be finite, got {value!r}")
        elif value is not None and not isinstance(value, str | int | bool):
            problems.add(path, f"unsupported YAML value of type {type(value).__name__}")


def _mapping(value: Any, path: PathT, problems: _Problems) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    problems.add(path, f"expected a mapping, got {_show(value)}")
    return None


def _migrate_legacy(raw: dict[str, Any], problems: _Problems) -> dict[str, Any]:
    """The list-style grammar (indicators as a list with `name`, fuzzy sets keyed by indicator,
    settings under `model.training`) rewritten into the id-keyed one. Paths in errors raised
    here are the file's own; later errors use the migrated paths."""
    out = dict(raw)
    indicators: dict[str, Any] = {}
    for i, item in enumerate(raw["indicators"]):
        item = _mapping(item, ("indicators", i), problems)
        if item is None:
            continue
        item = dict(item)
        name = item.pop("name", None)
        type_name = item.pop("type", None) or name
        ind_id = item.pop("feature_id", None) or name
        if not isinstance(type_name, str) or not isinstance(ind_id, str):
            problems.add(("indicators", i), "needs `name` (the indicator type)")
            continue
        if ind_id in indicators:
            problems.add(("indicators", i), f"duplicate indicator {ind_id!r}; add a feature_id")
            continue
        indicators[ind_id] = {"type": type_name, **item}
    out["indicators"] = indicators

    fuzzy = _mapping(raw.get("fuzzy_sets", {}), ("fuzzy_sets",), problems) or {}
    out["fuzzy_sets"] = {
        fs_id: (
            {"indicator": fs_id, **spec}
            if isinstance(spec, dict) and "indicator" not in spec
            else spec
        )
        for fs_id, spec in fuzzy.items()
    }
    if "nn_inputs" not in raw:
        # Era A used every fuzzy set on every timeframe; we keep that, in the order written.
        out["nn_inputs"] = [{"fuzzy_set": fs_id, "timeframes": "all"} for fs_id in fuzzy]

    model = dict(_mapping(raw.get("model", {}), ("model",), problems) or {})
    model_training = _mapping(model.pop("training", {}), ("model", "training"), problems) or {}
    model_training = dict(model_training)
    # Progress is reported every batch; throttling is the caller's business, so the old cadence
    # setting has nothing to change. Accepted (validated) so old files load.
    cadence = model_training.pop("progress_update_frequency", 1)
    if isinstance(cadence, bool) or not isinstance(cadence, int) or cadence < 1:
        problems.add(("model", "training", "progress_update_frequency"), "expected int >= 1")
    if isinstance(model.get("architecture"), dict):
        arch = dict(model["architecture"])
        # Logits out, softmax only at inference: `softmax` is what we do anyway.
        activation = arch.pop("output_activation", "softmax")
        if activation != "softmax":
            problems.add(
                ("model", "architecture", "output_activation"),
                f"only softmax is supported (applied at inference), got {_show(activation)}",
            )
        model["architecture"] = arch
    if isinstance(model.get("features"), dict):
        features = dict(model["features"])
        if features.pop("include_price_context", False) is not False:
            problems.add(
                ("model", "features", "include_price_context"),
                "raw price inputs are not supported yet; remove it or set it to false",
            )
        # Fuzzy memberships are already bounded in [0, 1]; no scaler is fitted (the platform we
        # descend from saved scaler=None for these models too), so true and false both hold.
        scale = features.pop("scale_features", False)
        if not isinstance(scale, bool):
            problems.add(("model", "features", "scale_features"), "expected true or false")
        model["features"] = features
    out["model"] = model

    training = dict(_mapping(raw.get("training", {}), ("training",), problems) or {})
    method = training.pop("method", "supervised")
    if method != "supervised":
        problems.add(("training", "method"), f"only supervised is supported, got {_show(method)}")
    for key, value in model_training.items():
        if key in training:
            problems.add(("model", "training", key), f"also set as training.{key}; keep one")
        training[key] = value
    out["training"] = training
    return out


def _normalise_common(raw: dict[str, Any]) -> None:
    """Small spellings both grammars allow, rewritten in place before decoding."""
    training = raw.get("training")
    if isinstance(training, dict):
        training = raw["training"] = dict(training)
        labels = training.get("labels")
        if isinstance(labels, dict) and "source" not in labels:
            training["labels"] = {"source": "zigzag", **labels}
        stopping = training.get("early_stopping")
        if isinstance(stopping, bool):
            training["early_stopping"] = {} if stopping else None
        elif isinstance(stopping, dict) and "enabled" in stopping:
            # Older files wrote `enabled:`; presence used to enable regardless. Honour it.
            stopping = dict(stopping)
            enabled = stopping.pop("enabled")
            training["early_stopping"] = (
                stopping
                if enabled is True
                else (None if enabled is False else {"enabled": enabled})
            )
    data = raw.get("training_data")
    if isinstance(data, dict):
        data = raw["training_data"] = dict(data)
        for key in ("symbols", "timeframes"):
            section = data.get(key)
            # `symbols: {symbols: [...]}` is an old alias of `list`.
            if isinstance(section, dict) and key in section and "list" not in section:
                section = dict(section)
                section["list"] = section.pop(key)
                data[key] = section


_UNSUPPORTED_MODELS = ("lstm", "gru", "transformer", "cnn")


def _build(raw: dict[str, Any], source: str, problems: _Problems) -> StrategyConfig | None:
    extras: dict[str, Any] = {}
    for key in raw:
        if key in PASSTHROUGH_SECTIONS:
            extras[key] = raw[key]
        elif key not in _TOP_LEVEL:
            problems.add(
                (key,),
                "unknown section; expected one of: "
                + ", ".join((*_TOP_LEVEL, *PASSTHROUGH_SECTIONS)),
            )

    name = None
    if "name" not in raw:
        problems.add(("name",), "required key missing")
    else:
        name = _decode(raw["name"], StrategyName, ("name",), problems)

    indicators: dict[str, IndicatorConfig] = {}
    for ind_id, spec in (
        _mapping(raw.get("indicators", {}), ("indicators",), problems) or {}
    ).items():
        path: PathT = ("indicators", ind_id)
        if not _ID_RE.match(ind_id):
            problems.add(path, "ids must match [A-Za-z][A-Za-z0-9_]*")
            continue
        spec = _mapping(spec, path, problems)
        if spec is None:
            continue
        params = dict(spec)
        type_name = params.pop("type", None)
        if not isinstance(type_name, str):
            problems.add((*path, "type"), "required: the indicator type (e.g. rsi)")
            continue
        try:
            cfg = IndicatorConfig(type=canonical_type(type_name), params=params)
            # Defaults written out: the saved strategy says exactly what was computed.
            cfg = IndicatorConfig(type=cfg.type, params=resolved_params(cfg))
        except IndicatorError as exc:
            problems.add(path, str(exc))
            continue
        indicators[ind_id] = cfg
    if not indicators and "indicators" not in raw:
        problems.add(("indicators",), "required key missing")

    fuzzy_sets: dict[str, FuzzySetConfig] = {}
    for fs_id, spec in (
        _mapping(raw.get("fuzzy_sets", {}), ("fuzzy_sets",), problems) or {}
    ).items():
        path = ("fuzzy_sets", fs_id)
        if not _ID_RE.match(fs_id):
            problems.add(path, "ids must match [A-Za-z][A-Za-z0-9_]*")
            continue
        spec = _mapping(spec, path, problems)
        if spec is None:
            continue
        memberships: dict[str, MembershipConfig] = {}
        for m_name, m_spec in spec.items():
            if m_name == "indicator":
                continue
            m_path = (*path, m_name)
            if not _ID_RE.match(m_name):
                problems.add(m_path, "membership names must match [A-Za-z][A-Za-z0-9_]*")
                continue
            if isinstance(m_spec, list):
                if len(m_spec) != 3:
                    problems.add(
                        m_path,
                        f"a bare list is triangular [a, b, c], got {len(m_spec)} numbers; "
                        "write {type: trapezoidal|gaussian, parameters: [...]} for the others",
                    )
                    continue
                m_spec = {"type": "triangular", "parameters": m_spec}
            membership = _decode(m_spec, MembershipConfig, m_path, problems)
            if membership is not None:
                memberships[m_name] = membership
        indicator = spec.get("indicator")
        if not isinstance(indicator, str):
            problems.add((*path, "indicator"), "required: the indicator id it reads")
            continue
        if not spec.keys() - {"indicator"}:
            problems.add(path, "no memberships")
        fuzzy_sets[fs_id] = FuzzySetConfig(indicator=indicator, memberships=memberships)

    nn_inputs: list[NNInputConfig] = []
    raw_inputs = raw.get("nn_inputs")
    if raw_inputs is None:
        problems.add(("nn_inputs",), "required key missing")
    elif not isinstance(raw_inputs, list):
        problems.add(("nn_inputs",), f"expected a list, got {_show(raw_inputs)}")
    else:
        for i, item in enumerate(raw_inputs):
            if isinstance(item, dict) and "raw_indicator" in item:
                problems.add(
                    ("nn_inputs", i, "raw_indicator"), "raw indicator inputs are not supported yet"
                )
                continue
            decoded = _decode(item, NNInputConfig, ("nn_inputs", i), problems)
            if decoded is not None:
                nn_inputs.append(decoded)

    training_data = None
    if "training_data" not in raw:
        problems.add(("training_data",), "required key missing")
    else:
        training_data = _decode(
            raw["training_data"], TrainingDataConfig, ("training_data",), problems
        )

    model = ModelConfig()
    if "model" in raw:
        model_raw = raw["model"]
        model_type = model_raw.get("type") if isinstance(model_raw, dict) else None
        if isinstance(model_type, str) and model_type.lower() in _UNSUPPORTED_MODELS:
            problems.add(("model", "type"), f"{model_type!r} is not supported yet (only mlp)")
        else:
            model = _decode(model_raw, ModelConfig, ("model",), problems) or model

    training = TrainingConfig()
    if "training" in raw:
        training = _decode(raw["training"], TrainingConfig, ("training",), problems) or training

    if problems.items or name is None or training_data is None:
        return None
    config = StrategyConfig(
        name=name,
        indicators=indicators,
        fuzzy_sets=fuzzy_sets,
        nn_inputs=nn_inputs,
        training_data=training_data,
        model=model,
        training=training,
        extras=extras,
    )
    _cross_check(config, problems)
    return config


def _cross_check(config: StrategyConfig, problems: _Problems) -> None:
    """References between sections: fuzzy set -> indicator output, nn_input -> fuzzy set/TFs."""
    for fs_id, fs in config.fuzzy_sets.items():
        path: PathT = ("fuzzy_sets", fs_id, "indicator")
        ind_id, _, output = fs.indicator.partition(".")
        indicator = config.indicators.get(ind_id)
        if indicator is None:
            problems.add(
                path,
                f"unknown indicator {ind_id!r}; "
                f"defined: {', '.join(config.indicators) or '(none)'}",
            )
            continue
        outputs = outputs_of(indicator)
        if output and not outputs:
            problems.add(path, f"{ind_id} has a single output; refer to it as {ind_id!r}")
        elif output and output not in outputs:
            problems.add(path, f"{ind_id} has no output {output!r}; outputs: {', '.join(outputs)}")

    timeframes = timeframes_of(config)
    seen: set[str] = set()
    for i, nn in enumerate(config.nn_inputs):
        if nn.fuzzy_set not in config.fuzzy_sets:
            problems.add(
                ("nn_inputs", i, "fuzzy_set"),
                f"unknown fuzzy set {nn.fuzzy_set!r}; defined: "
                f"{', '.join(config.fuzzy_sets) or '(none)'}",
            )
        if nn.fuzzy_set in seen:
            problems.add(("nn_inputs", i, "fuzzy_set"), f"{nn.fuzzy_set!r} is listed twice")
        seen.add(nn.fuzzy_set)
        if nn.timeframes != "all":
            missing = [tf for tf in nn.timeframes if tf not in timeframes]
            if missing:
                problems.add(
                    ("nn_inputs", i, "timeframes"),
                    f"{', '.join(missing)} not in training_data.timeframes "
                    f"({', '.join(timeframes)})",
                )
            if len(set(nn.timeframes)) != len(nn.timeframes):
                problems.add(("nn_inputs", i, "timeframes"), "duplicate timeframes")
    if not config.nn_inputs:
        problems.add(("nn_inputs",), "empty: the model needs at least one input")
    if problems.items:
        return
    names = _feature_names_unlagged(config, timeframes)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.add(
            ("fuzzy_sets",),
            f"feature names collide: {', '.join(duplicates)} (rename a fuzzy set or membership)",
        )


def _feature_names_unlagged(config: StrategyConfig, timeframes: list[str]) -> list[str]:
    names: list[str] = []
    for nn in config.nn_inputs:
        tfs = timeframes if nn.timeframes == "all" else nn.timeframes
        memberships = config.fuzzy_sets[nn.fuzzy_set].memberships
        names.extend(f"{tf}_{nn.fuzzy_set}_{m}" for tf in tfs for m in memberships)
    return names


def parse_strategy(yaml_text: str, *, source: str = "<string>") -> StrategyConfig:
    """A strategy from YAML text in either grammar; StrategyError names the source and paths."""
    raw = _load_yaml(yaml_text, source)
    if not isinstance(raw, dict):
        raise StrategyError(f"{source}: a strategy is a YAML mapping, got {_show(raw)}")
    problems = _Problems()
    _check_tree(raw, source, problems)
    problems.raise_if_any(source)
    if isinstance(raw.get("indicators"), list):
        raw = _migrate_legacy(raw, problems)
    _normalise_common(raw)
    config = _build(raw, source, problems)
    if config is not None:
        _check_model_size(config, problems)
    problems.raise_if_any(source)
    assert config is not None  # _build returns None only alongside problems
    return config


def _check_model_size(config: StrategyConfig, problems: _Problems) -> None:
    layers = config.model.architecture.hidden_layers
    weights = sum(a * b for a, b in itertools.pairwise(layers))
    if weights > MAX_HIDDEN_WEIGHTS:
        problems.add(
            ("model", "architecture", "hidden_layers"),
            f"{weights:,} weights between hidden layers, more than the limit of "
            f"{MAX_HIDDEN_WEIGHTS:,} (the model would exhaust a trainer's memory)",
        )


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
    base = strategies_dir if strategies_dir is not None else _env_strategies_dir()
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
