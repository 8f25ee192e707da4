"""Strategy config: the typed schema every pipeline step reads.

The canonical grammar is the id-keyed one (indicators keyed by id, fuzzy sets naming an
`indicator`, `nn_inputs`, a top-level `training` section). These Structs are the single source of
truth for validation, defaults and docs; `load_strategy`/`parse_strategy` (below) turn YAML of
either grammar into a `StrategyConfig`, with errors that name the path of the bad key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Timeframe = Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]
TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w")

PositiveInt = Annotated[int, Meta(gt=0)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
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


class IndicatorConfig(_Base):
    """One indicator instance. `params` are validated against the registry in indicators.py."""

    type: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


# --- fuzzy sets -------------------------------------------------------------------------------


class MembershipConfig(_Base):
    """triangular [a,b,c], trapezoidal [a,b,c,d], gaussian [mu, sigma]."""

    type: Literal["triangular", "trapezoidal", "gaussian"]
    parameters: tuple[float, ...]


class FuzzySetConfig(_Base):
    """Memberships over one indicator output (`macd_12_26_9.histogram` for multi-output ones).

    `memberships` keeps the order written in YAML: it fixes the feature order.
    """

    indicator: str
    memberships: dict[str, MembershipConfig]


class NNInputConfig(_Base):
    fuzzy_set: str
    timeframes: Literal["all"] | list[Timeframe] = "all"


# --- model ------------------------------------------------------------------------------------


class ArchitectureConfig(_Base):
    hidden_layers: tuple[PositiveInt, ...] = (64, 32)
    activation: Literal["relu", "tanh", "gelu", "leaky_relu"] = "relu"
    dropout: Annotated[float, Meta(ge=0, lt=1)] = 0.2


class ModelFeaturesConfig(_Base):
    """Lagged copies of every feature: `{name}_lag_{k}` for k in 1..lookback_periods."""

    lookback_periods: NonNegativeInt = 0


class ModelConfig(_Base):
    type: Literal["mlp"] = "mlp"
    architecture: ArchitectureConfig = ArchitectureConfig()
    features: ModelFeaturesConfig = ModelFeaturesConfig()


# --- training ---------------------------------------------------------------------------------


class EarlyStoppingConfig(_Base):
    """Present means enabled. Restores the best epoch's weights at the end."""

    patience: PositiveInt = 10
    min_delta: Annotated[float, Meta(ge=0)] = 1e-4
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"


class StepLR(_Base, tag="step", tag_field="type"):
    step_size: PositiveInt = 30
    gamma: PositiveFloat = 0.1


class ExponentialLR(_Base, tag="exponential", tag_field="type"):
    gamma: PositiveFloat = 0.95


class ReduceOnPlateauLR(_Base, tag="reduce_on_plateau", tag_field="type"):
    factor: Annotated[float, Meta(gt=0, lt=1)] = 0.5
    patience: NonNegativeInt = 5
    min_lr: Annotated[float, Meta(ge=0)] = 0.0


class CosineLR(_Base, tag="cosine", tag_field="type"):
    t_max: PositiveInt | None = None  # None: the run's epoch count
    eta_min: Annotated[float, Meta(ge=0)] = 0.0


LRSchedulerConfig = StepLR | ExponentialLR | ReduceOnPlateauLR | CosineLR


class ZigZagLabels(_Base, tag="zigzag", tag_field="source"):
    """Segment labels: bars between two pivots take the direction of the next pivot."""

    zigzag_threshold: PositiveFloat = 0.03
    label_lookahead: PositiveInt = 20  # accepted for compatibility; segment labels ignore it


class TripleBarrierLabels(_Base, tag="triple_barrier", tag_field="source"):
    pt_multiplier: PositiveFloat = 2.0
    sl_multiplier: PositiveFloat = 1.5
    max_holding_period: PositiveInt = 50
    vol_span: PositiveInt = 50
    vol_method: Literal["atr", "close"] = "atr"


class ForwardReturnLabels(_Base, tag="forward_return", tag_field="source"):
    """Regression target (close[t+h] - close[t]) / close[t]."""

    horizon: PositiveInt = 20


LabelsConfig = ZigZagLabels | TripleBarrierLabels | ForwardReturnLabels


class DataSplitConfig(_Base):
    train: Fraction = 0.7
    validation: Fraction = 0.15
    test: Fraction = 0.15

    def __post_init__(self) -> None:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:g}")
        if self.train <= 0:
            raise ValueError("train must be > 0")


class TrainingConfig(_Base):
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 256
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
    seed: int = 42
    checkpoint_every: NonNegativeInt = 0  # epochs between checkpoints handed to the hook; 0: never


# --- training data ----------------------------------------------------------------------------

Symbol = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}$")]


class SymbolsConfig(_Base):
    mode: Literal["single", "multi_symbol"] = "single"
    symbol: Symbol | None = None
    names: list[Symbol] | None = msgspec.field(default=None, name="list")


class TimeframesConfig(_Base):
    mode: Literal["single", "multi_timeframe"] = "single"
    timeframe: Timeframe | None = None
    names: list[Timeframe] | None = msgspec.field(default=None, name="list")
    base_timeframe: Timeframe | None = None


class TrainingDataConfig(_Base):
    symbols: SymbolsConfig
    timeframes: TimeframesConfig
    history_required: Annotated[int, Meta(ge=0)] = 200
    start_date: str | None = None
    end_date: str | None = None


# --- the strategy -----------------------------------------------------------------------------

StrategyName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=128)]


class StrategyConfig(_Base):
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
