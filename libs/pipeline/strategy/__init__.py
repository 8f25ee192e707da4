"""The strategy: YAML documents to the typed config every pipeline step reads.

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
- no `nn_inputs`: every fuzzy set on every timeframe, in the order written;
- `model.features.lookback_periods` is the same setting in both grammars;
- `early_stopping.enabled: false` disables it;
- `labels.label_lookahead` is kept for compatibility; segment zigzag labels do not use it.

In either grammar, the reference platform's other spellings (`model.training`,
`output_activation`, `include_price_context`, `scale_features`, `training.method`,
`training_data.date_range`, triple-barrier `profit_target_atr`/`stop_loss_atr`/
`max_holding_bars`/`atr_period`) are honoured, refused, or accepted
with a warning saying what was ignored and why (normalise.py `normalise_settings`);
`check_strategy` returns the warnings beside the problems.

Modules: schema (the Structs), dialect (the YAML dialect), problems (paths and messages),
normalise (grammars to the canonical one), build (sections to Structs, cross-checks), files
(names inside the strategies directory). This package imports neither TA-Lib nor pandas.
"""

from libs.pipeline.strategy.build import (
    MAX_HIDDEN_WEIGHTS,
    StrategyCheck,
    check_strategy,
    parse_strategy,
)
from libs.pipeline.strategy.dialect import (
    MAX_STRATEGY_BYTES,
    MAX_YAML_ALIASES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    Loader,
    dump_yaml,
    to_yaml_data,
)
from libs.pipeline.strategy.files import (
    check_strategy_by_name,
    check_strategy_file,
    load_strategy,
    load_strategy_by_name,
    resolve_strategy_path,
    strategies_dir,
    strategy_files,
)
from libs.pipeline.strategy.problems import Issue
from libs.pipeline.strategy.schema import (
    MEMBERSHIP_ARITY,
    PASSTHROUGH_SECTIONS,
    ArchitectureConfig,
    BacktestingConfig,
    ContextDataConfig,
    ContextLabels,
    CosineLR,
    DataSplitConfig,
    DecisionsConfig,
    EarlyStoppingConfig,
    ExponentialLR,
    ForwardReturnLabels,
    FuzzySetConfig,
    IndicatorConfig,
    LabelsConfig,
    LRSchedulerConfig,
    MembershipConfig,
    ModelConfig,
    ModelFeaturesConfig,
    NNInputConfig,
    ReduceOnPlateauLR,
    RegimeLabels,
    RiskManagementConfig,
    SignalFilters,
    StepLR,
    StopConfig,
    StrategyConfig,
    StrategyError,
    SymbolsConfig,
    TimeframesConfig,
    TrainingConfig,
    TrainingDataConfig,
    TripleBarrierLabels,
    WalkForwardConfig,
    ZigZagLabels,
    base_timeframe,
    embargo_of,
    is_recurrent,
    json_schema,
    label_embargo,
    lags_of,
    parse_date,
    sequence_length_of,
    strategy_hash,
    symbols_of,
    timeframes_of,
    to_builtins,
)

__all__ = [
    "MAX_HIDDEN_WEIGHTS",
    "MAX_STRATEGY_BYTES",
    "MAX_YAML_ALIASES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "MEMBERSHIP_ARITY",
    "PASSTHROUGH_SECTIONS",
    "ArchitectureConfig",
    "BacktestingConfig",
    "ContextDataConfig",
    "ContextLabels",
    "CosineLR",
    "DataSplitConfig",
    "DecisionsConfig",
    "EarlyStoppingConfig",
    "ExponentialLR",
    "ForwardReturnLabels",
    "FuzzySetConfig",
    "IndicatorConfig",
    "Issue",
    "LRSchedulerConfig",
    "LabelsConfig",
    "Loader",
    "MembershipConfig",
    "ModelConfig",
    "ModelFeaturesConfig",
    "NNInputConfig",
    "ReduceOnPlateauLR",
    "RegimeLabels",
    "RiskManagementConfig",
    "SignalFilters",
    "StepLR",
    "StopConfig",
    "StrategyCheck",
    "StrategyConfig",
    "StrategyError",
    "SymbolsConfig",
    "TimeframesConfig",
    "TrainingConfig",
    "TrainingDataConfig",
    "TripleBarrierLabels",
    "WalkForwardConfig",
    "ZigZagLabels",
    "base_timeframe",
    "check_strategy",
    "check_strategy_by_name",
    "check_strategy_file",
    "dump_yaml",
    "embargo_of",
    "is_recurrent",
    "json_schema",
    "label_embargo",
    "lags_of",
    "load_strategy",
    "load_strategy_by_name",
    "parse_date",
    "parse_strategy",
    "resolve_strategy_path",
    "sequence_length_of",
    "strategies_dir",
    "strategy_files",
    "strategy_hash",
    "symbols_of",
    "timeframes_of",
    "to_builtins",
    "to_yaml_data",
]
