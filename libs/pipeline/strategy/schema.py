"""The typed strategy: every Struct the pipeline steps read, defined once.

These Structs are the single source of truth for validation, defaults and docs: the canonical
(wire) shape of a strategy is what `msgspec.json.schema(StrategyConfig)` describes, exported to
docs/schemas/strategy.json. Authors may write sugar on top (indicator parameters inline, a bare
list for a triangular set, memberships beside `indicator`, the older list grammar): normalise.py
and build.py bring a document to this shape, naming the path of every problem.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from libs.pipeline.types import TIMEFRAME_SECONDS, Seed, StrategyName, Symbol, Timeframe

Count = Annotated[int, Meta(gt=0, le=1_000_000)]
Bars = Annotated[int, Meta(gt=0, le=100_000)]
PositiveFloat = Annotated[float, Meta(gt=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]

# Sections that training does not read but that strategy files carry; they are kept verbatim and
# saved with the model (config.yaml) so nothing the author wrote is lost.
PASSTHROUGH_SECTIONS: tuple[str, ...] = (
    "description",
    "hypothesis",
    "scope",
    "deployment",
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
    # The `context_data` series it is computed on (its `name`); unset: the traded symbol's bars.
    data_source: str | None = None


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
    """One model input on each of its timeframes: a fuzzy set's memberships (features
    `{tf}_{fuzzy_set}_{membership}`, already in [0, 1]) or one raw indicator column, an id or
    `id.output` (feature `{tf}_{raw_indicator}`), which the model normalizes with statistics
    fitted on the training slice only and saved with its weights: `zscore` (the default;
    (x - mean) / std), `minmax` ((x - min) / (max - min)) or `none`."""

    fuzzy_set: str | None = None
    raw_indicator: str | None = None
    timeframes: Literal["all"] | list[Timeframe] = "all"
    # Unset: zscore for a raw_indicator; a fuzzy_set takes only none (memberships are in [0, 1]).
    normalization: Literal["minmax", "zscore", "none"] | None = None

    def __post_init__(self) -> None:
        if (self.fuzzy_set is None) == (self.raw_indicator is None):
            given = "both" if self.fuzzy_set is not None else "neither"
            raise ValueError(f"give exactly one of fuzzy_set or raw_indicator, got {given}")
        if self.fuzzy_set is not None and self.normalization not in (None, "none"):
            raise ValueError(
                f"normalization {self.normalization} applies to raw_indicator inputs only: "
                "fuzzy memberships are already in [0, 1]; drop it or write none"
            )

    @property
    def resolved_normalization(self) -> str:
        """What the model does to this input: `none` for memberships, zscore by default."""
        if self.normalization is not None:
            return self.normalization
        return "zscore" if self.raw_indicator is not None else "none"


# --- model ------------------------------------------------------------------------------------


RECURRENT_MODELS: tuple[str, ...] = ("lstm", "gru")
# The architecture keys each model type reads; a key of the other kind is an error naming it
# (strategy/build.py), never silently ignored.
MLP_ARCHITECTURE_KEYS: tuple[str, ...] = ("hidden_layers", "activation")
RECURRENT_ARCHITECTURE_KEYS: tuple[str, ...] = (
    "sequence_length", "hidden_size", "num_layers", "bidirectional"
)


class ArchitectureConfig(_Base, frozen=True):
    """The network's shape. mlp reads hidden_layers, activation, dropout; lstm and gru read
    sequence_length (required: the base bars each prediction sees, its own included),
    hidden_size, num_layers, bidirectional, dropout (between stacked layers and before the
    output layer). One Struct for all types, so `strategy.model.architecture.<field>` reads
    the same everywhere."""

    hidden_layers: Annotated[
        tuple[Annotated[int, Meta(gt=0, le=65_536)], ...], Meta(min_length=1, max_length=32)
    ] = (64, 32)
    activation: Literal["relu", "tanh", "gelu", "leaky_relu"] = "relu"
    dropout: Annotated[float, Meta(ge=0, lt=1)] = 0.2
    sequence_length: Annotated[int, Meta(ge=2, le=1000)] | None = None
    hidden_size: Annotated[int, Meta(gt=0, le=4096)] = 64
    num_layers: Annotated[int, Meta(ge=1, le=16)] = 2
    bidirectional: bool = False


class ModelFeaturesConfig(_Base, frozen=True):
    """Lagged copies of every feature: `{name}_lag_{k}` for k in 1..lookback_periods (mlp
    only: a recurrent model's lookback is its sequence_length)."""

    lookback_periods: Annotated[int, Meta(ge=0, le=100)] = 0


class ModelConfig(_Base, frozen=True):
    """`type` picks the network; `model_problem` (checked by strategy/build.py, which names the
    path) says when the settings do not fit it."""

    type: Literal["mlp", "lstm", "gru"] = "mlp"
    architecture: ArchitectureConfig = ArchitectureConfig()
    features: ModelFeaturesConfig = ModelFeaturesConfig()


def model_problem(model: ModelConfig) -> tuple[tuple[str, ...], str] | None:
    """(path under `model`, reason) of the first inconsistency between type and settings."""
    recurrent = model.type in RECURRENT_MODELS
    if recurrent and model.architecture.sequence_length is None:
        return ("architecture", "sequence_length"), (
            f"required for a {model.type} model: the number of consecutive bars each "
            "prediction reads, e.g. 20")
    if recurrent and model.features.lookback_periods:
        return ("features", "lookback_periods"), (
            f"not used by a {model.type} model: its lookback is "
            "model.architecture.sequence_length; remove lookback_periods")
    if not recurrent and model.architecture.sequence_length is not None:
        return ("architecture", "sequence_length"), (
            "only lstm and gru models read a sequence; an mlp reads "
            "model.features.lookback_periods")
    return None


def model_builtins(model: ModelConfig) -> dict[str, Any]:
    """The model section as plain data, with only the architecture keys its type reads (what
    config.yaml saves and the strategy hash covers: an mlp's hash is what it was before
    recurrent models existed)."""
    data = msgspec.to_builtins(model)
    foreign = MLP_ARCHITECTURE_KEYS if is_recurrent(model) else RECURRENT_ARCHITECTURE_KEYS
    data["architecture"] = {k: v for k, v in data["architecture"].items() if k not in foreign}
    return data


def is_recurrent(model: ModelConfig) -> bool:
    return model.type in RECURRENT_MODELS


def sequence_length_of(model: ModelConfig) -> int | None:
    """The bars per input window of a recurrent model; None for an mlp."""
    return model.architecture.sequence_length if is_recurrent(model) else None


def lags_of(model: ModelConfig) -> int:
    """Past bars each row's features need besides its own: the lagged copies of an mlp, the
    rest of the window of a recurrent model (the feature matrix's lag machinery serves both)."""
    length = sequence_length_of(model)
    return length - 1 if length is not None else model.features.lookback_periods


# --- training ---------------------------------------------------------------------------------


class EarlyStoppingConfig(_Base, frozen=True):
    """Present means enabled. Restores the best epoch's weights at the end.

    `min_delta` is the smallest improvement that counts, scale-aware: a fraction of the best
    loss so far for `val_loss` (1e-4 = 0.01 %, the same for a cross-entropy near 1 and a Huber
    loss near 1e-5), accuracy points for `val_accuracy`."""

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
    """Barriers at `pt`/`sl` multiples of the bar's volatility, expiry after
    `max_holding_period` bars.

    CUSUM event filter (off when neither key is set): only bars where a symmetric CUSUM of log
    returns crosses its threshold get a label. `cusum_threshold` is a fixed threshold in
    log-return units; `cusum_multiplier` scales the EWMA volatility of log returns (span
    `vol_span`) known at each bar (the reference platform writes 0.5). Give one of the two.
    `compute_weights`: López de Prado's uniqueness weights per label (labels.sample_weights)."""

    pt_multiplier: PositiveFloat = 2.0
    sl_multiplier: PositiveFloat = 1.5
    max_holding_period: Bars = 50
    vol_span: Bars = 50
    vol_method: Literal["atr", "close"] = "atr"
    cusum_threshold: Annotated[float, Meta(gt=0, lt=1)] | None = None
    cusum_multiplier: Annotated[float, Meta(gt=0, le=100)] | None = None
    compute_weights: bool = False

    def __post_init__(self) -> None:
        if self.cusum_threshold is not None and self.cusum_multiplier is not None:
            raise ValueError("cusum_threshold and cusum_multiplier are both set: give one "
                             "(a fixed threshold, or a multiple of the volatility)")


class ContextLabels(_Base, tag="context", tag_field="source", frozen=True):
    """Trend context over the next `horizon` bars: the forward return above
    `bullish_threshold` is BUY (0), below `bearish_threshold` SELL (2), else HOLD (1)."""

    horizon: Bars = 5
    bullish_threshold: Annotated[float, Meta(gt=-1, lt=1)] = 0.005
    bearish_threshold: Annotated[float, Meta(gt=-1, lt=1)] = -0.005

    def __post_init__(self) -> None:
        if not self.bearish_threshold < self.bullish_threshold:
            raise ValueError(f"bearish_threshold ({self.bearish_threshold:g}) must be below "
                             f"bullish_threshold ({self.bullish_threshold:g})")


class RegimeLabels(_Base, tag="regime", tag_field="source", frozen=True):
    """Market regime (4 classes, not trade signals): 0 trending-up, 1 trending-down,
    2 ranging, 3 volatile. A macro and a micro zigzag, their thresholds `*_atr_mult` times the
    median ATR (`atr_period`) as a fraction of price over the last `vol_lookback` bars; a macro
    leg is trending when its micro pivots progress (higher lows up, lower highs down) in at
    least `progression_tolerance` of their pairs, else ranging; volatile overrides both when
    the realized volatility of the next `atr_period` returns exceeds `vol_crisis_threshold`
    times that of the last `vol_lookback`."""

    macro_atr_mult: Annotated[float, Meta(gt=0, le=100)] = 3.0
    micro_atr_mult: Annotated[float, Meta(gt=0, le=100)] = 1.0
    atr_period: Annotated[int, Meta(ge=2, le=10_000)] = 14
    vol_lookback: Annotated[int, Meta(ge=2, le=100_000)] = 120
    vol_crisis_threshold: Annotated[float, Meta(gt=0, le=100)] = 2.0
    progression_tolerance: Fraction = 0.5

    def __post_init__(self) -> None:
        if not self.micro_atr_mult < self.macro_atr_mult:
            raise ValueError(f"micro_atr_mult ({self.micro_atr_mult:g}) must be below "
                             f"macro_atr_mult ({self.macro_atr_mult:g})")


class ForwardReturnLabels(_Base, tag="forward_return", tag_field="source", frozen=True):
    """Regression target (close[t+h] - close[t]) / close[t]."""

    horizon: Bars = 20


LabelsConfig = (
    ZigZagLabels | TripleBarrierLabels | ForwardReturnLabels | ContextLabels | RegimeLabels
)


class DataSplitConfig(_Base, frozen=True):
    """Shares of one time axis shared by every symbol (libs/pipeline/splits.py). `embargo`: bars
    dropped at the start of the validation and test slices (default: the label's look-ahead,
    `label_embargo`); rows whose label reads prices past their slice are purged as well."""

    train: Fraction = 0.7
    validation: Fraction = 0.15
    test: Fraction = 0.15
    embargo: Annotated[int, Meta(ge=0, le=100_000)] | None = None

    def __post_init__(self) -> None:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:g}")
        if self.train <= 0:
            raise ValueError("train must be > 0")
        if self.test <= 0:
            raise ValueError("test must be > 0: without a test slice a model has no "
                             "out-of-sample figures")


class WalkForwardConfig(_Base, frozen=True):
    """Walk-forward evaluation before the final model: the time axis is cut into `folds` + 1
    equal blocks; fold k tests on block k after training on blocks 0..k-1 (`expanding`) or on
    block k-1 alone (`rolling`), its tail kept for validation in the data_split's proportion."""

    folds: Annotated[int, Meta(ge=2, le=50)] = 4
    mode: Literal["expanding", "rolling"] = "expanding"


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
    # The training loss: classification `cross_entropy` (the default) or `focal` (down-weights
    # the easy rows by (1 - p)^focal_gamma); regression `huber` (the default, huber_delta) or
    # `mse`. Validation and test losses stay cross-entropy / Huber, comparable across runs.
    loss: Literal["cross_entropy", "focal", "huber", "mse"] | None = None
    focal_gamma: Annotated[float, Meta(ge=0, le=10)] = 2.0
    huber_delta: PositiveFloat | None = None  # None: 0.01, for returns of ~1e-3
    labels: LabelsConfig = ZigZagLabels()
    data_split: DataSplitConfig = DataSplitConfig()
    walk_forward: WalkForwardConfig | None = None
    seed: Seed = 42
    checkpoint_every: Annotated[int, Meta(ge=0, le=100_000)] = (
        0  # epochs between checkpoints handed to the hook; 0: never
    )


def label_embargo(labels: LabelsConfig) -> int:
    """The default embargo in bars: how far the label looks ahead (zigzag: `label_lookahead`;
    regime: `vol_lookback`, about a macro leg's length; rows whose label reads further are
    purged by label_known_at anyway)."""
    if isinstance(labels, TripleBarrierLabels):
        return labels.max_holding_period
    if isinstance(labels, ForwardReturnLabels | ContextLabels):
        return labels.horizon
    if isinstance(labels, RegimeLabels):
        return labels.vol_lookback
    return labels.label_lookahead


def embargo_of(training: TrainingConfig) -> int:
    embargo = training.data_split.embargo
    return label_embargo(training.labels) if embargo is None else embargo


# --- decisions, backtesting, risk management: how the backtest trades the signals -------------


class SignalFilters(_Base, frozen=True):
    min_signal_separation: Annotated[int, Meta(ge=0, le=100_000)] = 0  # bars between changes
    volume_filter: bool = False

    def __post_init__(self) -> None:
        if self.volume_filter:
            raise ValueError("volume_filter: true is not supported: the backtest trades every "
                             "signal whatever the volume; set it to false")


class DecisionsConfig(_Base, frozen=True):
    """How a prediction becomes a position. BUY is long; SELL is short (`short_selling: true`)
    or only closes a long; HOLD is flat, or keeps the current position with
    `position_awareness: true`; a class whose probability is under `confidence_threshold` is
    HOLD (classification only)."""

    output_format: Literal["classification", "regression"] | None = None  # must fit the labels
    num_classes: Literal[3, 4] | None = None  # 4: regime labels only (checked in build.py)
    confidence_threshold: Fraction = 0.0
    position_awareness: bool = False
    short_selling: bool = True
    filters: SignalFilters = SignalFilters()


class BacktestingConfig(_Base, frozen=True):
    """The costs-aware backtest of the test slice and of every walk-forward fold.
    `transaction_costs` and `slippage` are fractions of the traded notional per unit of
    turnover (default 1 bp in all); fills on the bar after the signal (`execution`); the
    dates, when given, narrow the traded rows inside the test slice."""

    start_date: str | None = None
    end_date: str | None = None
    initial_capital: PositiveFloat = 100_000.0
    transaction_costs: Annotated[float, Meta(ge=0, lt=1)] = 0.0001
    slippage: Annotated[float, Meta(ge=0, lt=1)] = 0.0
    execution: Literal["next_open", "next_close"] = "next_open"

    def __post_init__(self) -> None:
        for value in (self.start_date, self.end_date):
            if value is not None:
                parse_date(value)


class StopConfig(_Base, frozen=True):
    value: Annotated[float, Meta(gt=0, lt=1)]  # fraction of the entry price
    type: Literal["percentage"] = "percentage"


class RiskManagementConfig(_Base, frozen=True):
    """Position sizing and exits of the backtest: `position_size` is the exposure per symbol
    (a fraction of its capital); stops exit at their level on the bar that crosses it;
    `max_portfolio_risk` caps position_size x stop distance (size scaled down to fit)."""

    position_size: Annotated[float, Meta(gt=0, le=1)] = 1.0
    stop_loss: StopConfig | None = None
    take_profit: StopConfig | None = None
    max_portfolio_risk: Annotated[float, Meta(gt=0, le=1)] | None = None


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


# --- context data -----------------------------------------------------------------------------

# Providers served from the local price files (libs/pipeline/context.py); `ib` reads the file an
# import from the broker would have written (trainbus never calls a broker).
LOCAL_CONTEXT_PROVIDERS: tuple[str, ...] = ("local", "file", "ib")


class ContextDataConfig(_Base, frozen=True):
    """An external series indicators may read (`data_source: <name>`): the local price file of
    `symbol` at `timeframe`, from its first bar. Each base row sees the latest context bar
    closed by the row's close, held until the next one closes (`forward_fill`): never a bar
    that closes later. Providers that need the network are refused: import the series first
    (`trainbus data import`) and write `provider: local`."""

    provider: Literal["local", "file", "ib"]
    symbol: Symbol
    timeframe: Timeframe
    # How indicators name it (default: the symbol).
    name: Annotated[str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)] | None = None
    # The reference platform's label of the instrument (FOREX, STK, ...): informational.
    instrument_type: str | None = None
    alignment: Literal["forward_fill"] = "forward_fill"

    @property
    def source_name(self) -> str:
        """What `indicators.<id>.data_source` writes to read this series."""
        return self.name if self.name is not None else self.symbol


# --- the strategy -----------------------------------------------------------------------------

class StrategyConfig(_Base, frozen=True):
    name: StrategyName
    indicators: dict[str, IndicatorConfig]
    fuzzy_sets: dict[str, FuzzySetConfig]
    nn_inputs: list[NNInputConfig]
    training_data: TrainingDataConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    decisions: DecisionsConfig = DecisionsConfig()
    backtesting: BacktestingConfig = BacktestingConfig()
    risk_management: RiskManagementConfig = RiskManagementConfig()
    # External series (local price files) that indicators read with `data_source`.
    context_data: list[ContextDataConfig] = msgspec.field(default_factory=list)
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


def strategy_hash(config: StrategyConfig) -> str:
    """sha256 of the canonical JSON of the resolved strategy (defaults filled, grammar normalised).

    Key order is kept as written, not sorted: the order of memberships and nn_inputs fixes the
    feature order, so two files that differ only there really are different strategies.
    """
    data = msgspec.to_builtins(config)
    data["model"] = model_builtins(config.model)
    return hashlib.sha256(msgspec.json.encode(data)).hexdigest()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the canonical strategy document (docs/schemas/strategy.json)."""
    schema = msgspec.json.schema(StrategyConfig)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "strategy (canonical form)",
        "description": (
            "A strategy after normalisation: what every step reads and what a model saves as its "
            "config.yaml. Files may also write indicator parameters inline ({type: rsi, "
            "period: 14}), memberships beside `indicator` (a bare [a, b, c] is triangular) and "
            "the older list grammar; trainbus brings them to this shape first."
        ),
        **schema,
    }
