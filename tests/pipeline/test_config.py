"""Strategy config: both grammars, error messages that name the path, hostile input, lookup."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from libs.pipeline.strategy import (
    MAX_STRATEGY_BYTES,
    EarlyStoppingConfig,
    ForwardReturnLabels,
    StepLR,
    StrategyConfig,
    StrategyError,
    TripleBarrierLabels,
    ZigZagLabels,
    base_timeframe,
    dump_yaml,
    load_strategy,
    load_strategy_by_name,
    parse_strategy,
    strategies_dir,
    strategy_hash,
    symbols_of,
    timeframes_of,
)

SHIPPED = ("rsi_macd_zigzag", "multi_tf_trend", "multi_symbol_triple_barrier", "legacy_v2_example")

MINIMAL = """
name: tiny
training_data:
  symbols: {mode: single, symbol: EURUSD}
  timeframes: {mode: single, timeframe: 1h}
indicators:
  rsi_14: {type: rsi, period: 14}
  macd_12_26_9: {type: macd}
fuzzy_sets:
  rsi_zone:
    indicator: rsi_14
    low: [0, 30, 50]
    high: [50, 70, 100]
  macd_sig:
    indicator: macd_12_26_9.histogram
    up: {type: gaussian, parameters: [0.001, 0.0005]}
nn_inputs:
  - {fuzzy_set: rsi_zone, timeframes: all}
  - {fuzzy_set: macd_sig, timeframes: [1h]}
"""


def error_of(text: str, source: str = "s.yaml") -> str:
    with pytest.raises(StrategyError) as info:
        parse_strategy(text, source=source)
    return str(info.value)


def with_training(extra: str) -> str:
    return MINIMAL + "training:\n" + "".join(f"  {line}\n" for line in extra.splitlines())


# --- the canonical grammar -------------------------------------------------------------------


def test_minimal_strategy_gets_documented_defaults() -> None:
    cfg = parse_strategy(MINIMAL)
    assert cfg.name == "tiny"
    assert cfg.training.epochs == 100 and cfg.training.batch_size == 256
    assert cfg.training.labels == ZigZagLabels()
    assert cfg.model.architecture.hidden_layers == (64, 32)
    # Defaults of indicator parameters are written out, so the saved strategy is explicit.
    assert cfg.indicators["macd_12_26_9"].params == {
        "fast_period": 12,
        "slow_period": 26,
        "signal_period": 9,
        "source": "close",
    }
    # A bare list is a triangular membership; memberships keep the order written.
    rsi_zone = cfg.fuzzy_sets["rsi_zone"]
    assert list(rsi_zone.memberships) == ["low", "high"]
    assert rsi_zone.memberships["low"].type == "triangular"
    assert rsi_zone.memberships["low"].parameters == (0.0, 30.0, 50.0)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_strategies_load_and_round_trip(strategies_dir: Path, name: str) -> None:
    cfg = load_strategy(name, strategies_dir)
    # dump_yaml is what is saved with a model: it must read back to the same config.
    again = parse_strategy(dump_yaml(cfg))
    assert again == cfg
    assert strategy_hash(again) == strategy_hash(cfg)


def test_hash_is_stable_and_changes_with_content() -> None:
    first, second = parse_strategy(MINIMAL), parse_strategy(MINIMAL)
    assert strategy_hash(first) == strategy_hash(second)
    assert len(strategy_hash(first)) == 64
    changed = parse_strategy(MINIMAL.replace("low: [0, 30, 50]", "low: [0, 31, 50]"))
    assert strategy_hash(changed) != strategy_hash(first)
    # Writing a default explicitly is the same strategy.
    explicit = parse_strategy(MINIMAL.replace("{type: rsi, period: 14}", "{type: rsi}"))
    assert strategy_hash(explicit) == strategy_hash(first)


def test_training_section_is_fully_decoded() -> None:
    cfg = parse_strategy(
        with_training(
            "epochs: 5\n"
            "batch_size: 64\n"
            "learning_rate: 1e-3\n"  # YAML 1.1 would make this a string; we read a float
            "optimizer: sgd\n"
            "weight_decay: 0.01\n"
            "early_stopping: {patience: 3, monitor: val_accuracy}\n"
            "lr_scheduler: {type: step, step_size: 2, gamma: 0.5}\n"
            "gradient_clip: 1.0\n"
            "labels: {source: triple_barrier, pt_multiplier: 1.5, max_holding_period: 10}\n"
            "data_split: {train: 0.6, validation: 0.2, test: 0.2}\n"
            "seed: 3"
        )
    )
    t = cfg.training
    assert (t.epochs, t.batch_size, t.learning_rate, t.optimizer) == (5, 64, 0.001, "sgd")
    assert t.early_stopping == EarlyStoppingConfig(patience=3, monitor="val_accuracy")
    assert t.lr_scheduler == StepLR(step_size=2, gamma=0.5)
    assert t.labels == TripleBarrierLabels(pt_multiplier=1.5, max_holding_period=10)
    assert (t.data_split.train, t.data_split.test, t.seed) == (0.6, 0.2, 3)


def test_small_spellings_are_normalised() -> None:
    cfg = parse_strategy(
        with_training("labels: {zigzag_threshold: 0.05}\nearly_stopping: {enabled: false}")
    )
    assert cfg.training.labels == ZigZagLabels(zigzag_threshold=0.05)  # source defaults to zigzag
    assert cfg.training.early_stopping is None  # enabled: false is honoured, not ignored
    cfg = parse_strategy(with_training("early_stopping: {enabled: true, patience: 2}"))
    assert cfg.training.early_stopping == EarlyStoppingConfig(patience=2)
    cfg = parse_strategy(with_training("labels: {source: forward_return, horizon: 5}"))
    assert cfg.training.labels == ForwardReturnLabels(horizon=5)


def test_dates_stay_strings_and_are_checked() -> None:
    text = MINIMAL.replace(
        "timeframe: 1h}", "timeframe: 1h}\n  start_date: 2020-01-01\n  end_date: 2020-06-30"
    )
    cfg = parse_strategy(text)
    assert cfg.training_data.start_date == "2020-01-01"
    bad = text.replace("2020-06-30", "2019-06-30")
    assert "training_data: start_date 2020-01-01 is not before end_date 2019-06-30" in error_of(bad)
    assert "expected an ISO date" in error_of(text.replace("2020-06-30", "June"))


def test_passthrough_sections_are_kept_as_extras() -> None:
    cfg = parse_strategy(MINIMAL + "hypothesis: RSI extremes revert\nversion: '3.0'\n")
    assert cfg.extras == {"hypothesis": "RSI extremes revert", "version": "3.0"}
    assert "hypothesis: RSI extremes revert" in dump_yaml(cfg)


def test_trading_sections_are_typed_and_round_trip() -> None:
    cfg = parse_strategy(MINIMAL + "decisions: {confidence_threshold: 0.6, short_selling: false}\n"
                         "backtesting: {transaction_costs: 0.0002, execution: next_close}\n"
                         "risk_management: {position_size: 0.5, stop_loss: {value: 0.01}}\n")
    assert cfg.extras == {}
    assert cfg.decisions.confidence_threshold == 0.6 and not cfg.decisions.short_selling
    assert cfg.backtesting.execution == "next_close"
    assert parse_strategy(dump_yaml(cfg)) == cfg


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("decisions: {filters: {volume_filter: true}}",
         "decisions.filters: volume_filter: true is not supported"),
        ("decisions: {output_format: regression}",
         "decisions.output_format: regression does not fit"),
        ("decisions: {hold_mode: keep}", "decisions.hold_mode: unknown key"),
        ("risk_management: {trailing_stop: 0.01}",
         "risk_management.trailing_stop: unknown key"),
        ("risk_management: {position_size: 2}", "risk_management.position_size"),
        ("backtesting: {start_date: tomorrow}", "backtesting: expected an ISO date"),
    ],
)
def test_trading_keys_that_would_be_ignored_are_refused(section: str, message: str) -> None:
    with pytest.raises(StrategyError) as caught:
        parse_strategy(MINIMAL + section + "\n")
    assert message in str(caught.value), str(caught.value)


def test_indicator_type_aliases_are_canonical() -> None:
    text = MINIMAL.replace(
        "macd_12_26_9: {type: macd}", "macd_12_26_9: {type: macd}\n  bb: {type: BollingerBands}"
    )
    assert parse_strategy(text).indicators["bb"].type == "bbands"


# --- errors name the source, the path and the reason ------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("name: tiny", "name: ../evil", "name: expected str matching regex"),
        (
            "{type: rsi, period: 14}",
            "{type: rsx}",
            "indicators.rsi_14: unknown indicator type 'rsx'; valid types: ad, adx, aroon",
        ),
        (
            "{type: rsi, period: 14}",
            "{type: rsi, periods: 14}",
            "indicators.rsi_14: unknown parameter 'periods' for rsi; "
            "valid parameters: period, source",
        ),
        (
            "{type: rsi, period: 14}",
            "{type: rsi, period: 1}",
            "indicators.rsi_14: rsi: period must be >= 2, got 1",
        ),
        (
            "{type: rsi, period: 14}",
            "{type: rsi, period: true}",
            "period must be a number, got True",
        ),
        (
            "{type: rsi, period: 14}",
            "{type: rsi, period: 14.5}",
            "period must be an integer, got 14.5",
        ),
        (
            "{type: rsi, period: 14}",
            "{type: rsi, source: price}",
            "source must be one of open, high",
        ),
        ("{type: rsi, period: 14}", "{period: 14}", "indicators.rsi_14.type: required"),
        (
            "macd_12_26_9: {type: macd}",
            "macd_12_26_9: {type: macd, fast_period: 30}",
            "fast_period (30) must be smaller than slow_period (26)",
        ),
        ("rsi_14: {type", "rsi.14: {type", "indicators.rsi.14: ids must match"),
        (
            "indicator: rsi_14",
            "indicator: rsi_99",
            "fuzzy_sets.rsi_zone.indicator: unknown indicator 'rsi_99'; "
            "defined: rsi_14, macd_12_26_9",
        ),
        (
            "indicator: rsi_14",
            "indicator: rsi_14.value",
            "fuzzy_sets.rsi_zone.indicator: rsi_14 has a single output; refer to it as 'rsi_14'",
        ),
        (
            "macd_12_26_9.histogram",
            "macd_12_26_9.hist",
            "fuzzy_sets.macd_sig.indicator: macd_12_26_9 has no output 'hist'; "
            "outputs: line, signal, histogram",
        ),
        (
            "low: [0, 30, 50]",
            "low: [0, 60, 50]",
            "fuzzy_sets.rsi_zone.low: triangular parameters must satisfy a <= b <= c, got [0.0, "
            "60.0, 50.0]",
        ),
        (
            "low: [0, 30, 50]",
            "low: [0, 30, 50, 60]",
            "fuzzy_sets.rsi_zone.low: a bare list is triangular [a, b, c], got 4 numbers",
        ),
        (
            "low: [0, 30, 50]",
            "low: [30, 30, 30]",
            "fuzzy_sets.rsi_zone.low: triangular has zero width",
        ),
        (
            "low: [0, 30, 50]",
            "low: {type: trapezoidal, parameters: [0, 10, 5, 20]}",
            "a <= b <= c <= d",
        ),
        (
            "low: [0, 30, 50]",
            "low: {type: trapezoidal, parameters: [0, 10]}",
            "fuzzy_sets.rsi_zone.low: trapezoidal needs 4 parameters, got 2",
        ),
        (
            "low: [0, 30, 50]",
            "low: {type: sigmoid, parameters: [0, 10]}",
            "fuzzy_sets.rsi_zone.low.type: invalid enum value 'sigmoid'; "
            "expected one of: gaussian, trapezoidal, triangular",
        ),
        (
            "[0.001, 0.0005]",
            "[0.001, 0]",
            "fuzzy_sets.macd_sig.up: gaussian sigma must be > 0, got 0",
        ),
        ("[0.001, 0.0005]", "[0.001, -1]", "gaussian sigma must be > 0, got -1"),
        (
            "[0.001, 0.0005]",
            "[.nan, 0.0005]",
            "fuzzy_sets.macd_sig.up.parameters[0]: numbers must be finite, got nan",
        ),
        (
            "[0.001, 0.0005]",
            "[.inf, 0.0005]",
            "fuzzy_sets.macd_sig.up.parameters[0]: numbers must be finite, got inf",
        ),
        (
            "fuzzy_set: rsi_zone,",
            "fuzzy_set: rsi_zon,",
            "nn_inputs[0].fuzzy_set: unknown fuzzy set 'rsi_zon'; defined: rsi_zone, macd_sig",
        ),
        (
            "timeframes: [1h]",
            "timeframes: [4h]",
            "nn_inputs[1].timeframes: 4h not in training_data.timeframes (1h)",
        ),
        (
            "timeframes: [1h]",
            "timeframes: [2h]",
            "nn_inputs[1].timeframes[0]: invalid enum value '2h'",
        ),
        (
            "fuzzy_set: macd_sig,",
            "fuzzy_set: rsi_zone,",
            "nn_inputs[1].fuzzy_set: 'rsi_zone' is listed twice",
        ),
        (
            "- {fuzzy_set: rsi_zone, timeframes: all}",
            "- {raw_indicator: rsi_99}",
            "nn_inputs[0].raw_indicator: unknown indicator 'rsi_99'",
        ),
        (
            "symbol: EURUSD}",
            "symbol: ../../etc}",
            "training_data.symbols.symbol: expected str matching regex",
        ),
        (
            "symbol: EURUSD}",
            "symbol: EURUSD, list: [EURUSD, GBPUSD]}",
            "training_data.symbols: mode single but 2 symbols listed; use mode: multi_symbol",
        ),
        (
            "{mode: single, symbol: EURUSD}",
            "{mode: multi_symbol}",
            "training_data.symbols: give symbol (mode single) or list (mode multi_symbol)",
        ),
        (
            "timeframe: 1h}",
            "timeframe: 1h, base_timeframe: 4h}",
            "training_data.timeframes: base_timeframe 4h is not one of ['1h']",
        ),
    ],
)
def test_bad_values_are_reported_with_path(old: str, new: str, message: str) -> None:
    assert old in MINIMAL
    assert error_of(MINIMAL.replace(old, new)).startswith("s.yaml: ")
    assert message in error_of(MINIMAL.replace(old, new))


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ("epochs: ten", 's.yaml: training.epochs: expected int, got "ten"'),
        ("epochs: -5", "s.yaml: training.epochs: expected int >= 1, got -5"),
        ("epochs: 1000000000", "s.yaml: training.epochs: expected int <= 100000, got 1000000000"),
        ("batch_size: 100000000", "training.batch_size: expected int <= 1048576"),
        ("labels: {source: triple_barrier, max_holding_period: 10000000}", "<= 100000"),
        ("epochs: 1.5", "s.yaml: training.epochs: expected int, got 1.5"),
        ("learning_rate: .inf", "s.yaml: training.learning_rate: numbers must be finite, got inf"),
        ("learning_rate: 0", "s.yaml: training.learning_rate: expected float > 0.0, got 0"),
        (
            "optimizer: adamax",
            "s.yaml: training.optimizer: invalid enum value 'adamax'; "
            "expected one of: adam, adamw, rmsprop, sgd",
        ),
        (
            "labels: {source: zz}",
            "s.yaml: training.labels.source: invalid value 'zz'; "
            "expected one of: zigzag, triple_barrier, forward_return",
        ),
        (
            "labels: {zigzag_threshold: 1.5}",
            "s.yaml: training.labels.zigzag_threshold: expected float < 1.0, got 1.5",
        ),
        (
            "labels: {source: zigzag, foo: 1}",
            "s.yaml: training.labels.foo: unknown key; "
            "expected one of: label_lookahead, zigzag_threshold",
        ),
        (
            "lr_scheduler: {type: linear}",
            "training.lr_scheduler.type: invalid value 'linear'; "
            "expected one of: step, exponential, reduce_on_plateau, cosine",
        ),
        (
            "data_split: {train: 0.7, validation: 0.2, test: 0.2}",
            "s.yaml: training.data_split: train + validation + test must be 1.0, got 1.1",
        ),
        (
            "early_stopping: {patience: 0}",
            "training.early_stopping.patience: expected int >= 1, got 0",
        ),
        (
            "epoch: 5",
            "s.yaml: training.epoch: unknown key; expected one of: batch_size, checkpoint_every",
        ),
    ],
)
def test_training_errors_name_the_field(training: str, message: str) -> None:
    assert message in error_of(with_training(training))


def test_unknown_and_unsupported_keys_are_errors() -> None:
    assert "s.yaml: foo: unknown section; expected one of: name, indicators" in error_of(
        MINIMAL + "foo: 1\n"
    )
    text = MINIMAL + "model:\n  type: mlp\n  architecture: {hiden_layers: [8]}\n"
    assert (
        "model.architecture.hiden_layers: unknown key; expected one of: activation, "
        "bidirectional, dropout, hidden_layers, hidden_size, num_layers, sequence_length"
        in error_of(text)
    )
    assert (
        error_of(MINIMAL + "model: {type: transformer}\n")
        == "s.yaml: model.type: 'transformer' is not supported yet (mlp, lstm and gru are)"
    )
    assert error_of(MINIMAL.replace("name: tiny\n", "")) == "s.yaml: name: required key missing"
    assert "nn_inputs: required key missing" in error_of(MINIMAL.split("nn_inputs:")[0])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "{features: {lookback_periods: 1000}}",
            "model.features.lookback_periods: expected int <= 100",
        ),
        (
            "{architecture: {hidden_layers: []}}",
            "model.architecture.hidden_layers: expected array of length >= 1",
        ),
        ("{architecture: {hidden_layers: [10000000]}}", "hidden_layers[0]: expected int <= 65536"),
        (
            "{architecture: {dropout: 1.0}}",
            "model.architecture.dropout: expected float < 1.0, got 1.0",
        ),
    ],
)
def test_absurd_model_sizes_are_refused(model: str, message: str) -> None:
    assert message in error_of(MINIMAL + f"model: {model}\n")


def test_several_problems_are_reported_together() -> None:
    message = error_of(MINIMAL + "foo: 1\nbar: 2\n")
    assert message.startswith("s.yaml: 2 problems:")
    assert "\n  foo: unknown section" in message and "\n  bar: unknown section" in message


def test_feature_name_collisions_are_refused() -> None:
    text = MINIMAL.replace(
        "fuzzy_sets:\n",
        "fuzzy_sets:\n  a_b: {indicator: rsi_14, c: [0, 1, 2]}\n"
        "  a: {indicator: rsi_14, b_c: [0, 1, 2]}\n",
    ).replace("nn_inputs:\n", "nn_inputs:\n  - {fuzzy_set: a_b}\n  - {fuzzy_set: a}\n")
    assert "feature names collide: 1h_a_b_c" in error_of(text)


# --- hostile YAML ---------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_fast() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 8)]
    started = time.perf_counter()
    assert "more than 100000 YAML nodes" in error_of("\n".join(levels))
    assert time.perf_counter() - started < 2.0
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * 40) + "]\n"
    assert "more than 32 YAML aliases" in error_of(many)


def test_merge_key_bomb_is_refused() -> None:
    lines = ["m0: &m0 {k0: 1, k1: 2}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}" for i in range(1, 40)]
    assert "YAML aliases" in error_of("\n".join(lines))


def test_a_few_anchors_are_fine() -> None:
    text = MINIMAL.replace("low: [0, 30, 50]", "low: &low [0, 30, 50]").replace(
        "high: [50, 70, 100]", "high: [50, 70, 100]\n    also_low: *low"
    )
    assert list(parse_strategy(text).fuzzy_sets["rsi_zone"].memberships) == [
        "low",
        "high",
        "also_low",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 600 + "]" * 600, "nested too deeply"),
        ("a: " + "[" * 40 + "1" + "]" * 40, "nested deeper than 32"),
        ("x" * (MAX_STRATEGY_BYTES + 1), "larger than 1048576 bytes"),
        ("- 1\n- 2\n", "a strategy is a YAML mapping, got [1, 2]"),
        ("", "a strategy is a YAML mapping, got null"),
        ("a: [1, 2", "invalid YAML"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
        ("? [a, b]\n: 1\n", "invalid YAML"),
        ("1: x\n", "1: keys must be strings, got 1"),
        ("name: !!python/object:os.system ls\n", "invalid YAML"),
        ("name: !!binary aGVsbG8=\n", "name: unsupported YAML value of type bytes"),
    ],
)
def test_hostile_documents(text: str, message: str) -> None:
    assert message in error_of(text)


def test_duplicate_key_error_names_the_source_line() -> None:
    message = error_of(with_training("epochs: 5\nepochs: 6"), source="strategies/x.yaml")
    assert "duplicate key 'epochs'\n  in \"strategies/x.yaml\", line" in message


# --- the list-style grammar -------------------------------------------------------------------


def test_legacy_grammar_migrates(strategies_dir: Path) -> None:
    cfg = load_strategy("legacy_v2_example", strategies_dir)
    # indicators: list -> keyed by name; fuzzy sets keyed by indicator name read that indicator
    assert list(cfg.indicators) == ["rsi", "macd"]
    assert cfg.indicators["rsi"].params["period"] == 14
    assert cfg.fuzzy_sets["macd"].indicator == "macd"  # the bare id is MACD's main line
    # no nn_inputs: every fuzzy set on every timeframe, in the order written
    assert [(n.fuzzy_set, n.timeframes) for n in cfg.nn_inputs] == [("rsi", "all"), ("macd", "all")]
    # model.training -> training, merged with training.labels/data_split
    t = cfg.training
    assert (t.epochs, t.batch_size, t.weight_decay) == (100, 32, 0.0001)
    assert t.early_stopping == EarlyStoppingConfig(
        patience=10, monitor="val_loss", min_delta=0.0001
    )
    assert t.labels == ZigZagLabels(zigzag_threshold=0.03, label_lookahead=20)
    assert cfg.model.features.lookback_periods == 2
    assert cfg.model.architecture.hidden_layers == (50, 25)
    assert symbols_of(cfg) == ["EURUSD", "GBPUSD"] and timeframes_of(cfg) == ["1h", "4h"]
    assert set(cfg.extras) == {
        "version",
        "description",
        "hypothesis",
        "scope",
        "deployment",
    }
    # The trading sections are typed and honoured by the backtest, not kept aside.
    assert cfg.decisions.confidence_threshold == 0.6 and cfg.decisions.position_awareness
    assert cfg.decisions.filters.min_signal_separation == 4
    assert cfg.risk_management.position_size == 0.02
    assert cfg.risk_management.stop_loss is not None
    assert cfg.risk_management.stop_loss.value == 0.02
    assert cfg.backtesting.transaction_costs == 0.001


LEGACY = """
name: old
training_data:
  symbols: {mode: single, symbol: EURUSD}
  timeframes: {mode: single, timeframe: 1h}
indicators:
  - {name: rsi, period: 14}
fuzzy_sets:
  rsi:
    low: {type: triangular, parameters: [0, 30, 50]}
model:
  type: mlp
  architecture: {hidden_layers: [8], output_activation: softmax}
  features: {lookback_periods: 1, include_price_context: false, scale_features: false}
  training: {epochs: 3, progress_update_frequency: 10}
training:
  method: supervised
  labels: {source: zigzag, zigzag_threshold: 0.02}
"""


def test_legacy_feature_id_and_type() -> None:
    cfg = parse_strategy(
        LEGACY.replace(
            "- {name: rsi, period: 14}",
            "- {name: rsi, feature_id: rsi_fast, period: 7}\n  - {name: rsi, period: 14}",
        ).replace("  rsi:\n", "  rsi_fast:\n    fast: [0, 50, 100]\n  rsi:\n")
    )
    assert list(cfg.indicators) == ["rsi_fast", "rsi"]
    assert cfg.indicators["rsi_fast"].params["period"] == 7
    assert cfg.fuzzy_sets["rsi_fast"].indicator == "rsi_fast"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "output_activation: softmax",
            "output_activation: sigmoid",
            "model.architecture.output_activation: only softmax is supported",
        ),
        (
            "include_price_context: false",
            "include_price_context: true",
            "model.features.include_price_context: raw price inputs are not supported yet",
        ),
        (
            "scale_features: false",
            "scale_features: maybe",
            "model.features.scale_features: expected true or false",
        ),
        (
            "method: supervised",
            "method: reinforcement",
            "training.method: only supervised is supported",
        ),
        (
            "{epochs: 3, progress_update_frequency: 10}",
            "{epochs: 3, seed: 1}\n  seed_x: 1",
            "model.seed_x: unknown key",
        ),
        (
            "progress_update_frequency: 10",
            "progress_update_frequency: 0",
            "model.training.progress_update_frequency: expected int >= 1",
        ),
        (
            "labels: {source: zigzag, zigzag_threshold: 0.02}",
            "labels: {}\n  epochs: 4",
            "model.training.epochs: also set as training.epochs; keep one",
        ),
        (
            "- {name: rsi, period: 14}",
            "- {name: rsi, period: 14}\n  - {name: rsi, period: 7}",
            "indicators[1]: duplicate indicator 'rsi'; add a feature_id",
        ),
        ("- {name: rsi, period: 14}", "- {period: 14}", "indicators[0]: needs `name`"),
        ("- {name: rsi, period: 14}", "- 5", "indicators[0]: expected a mapping, got 5"),
    ],
)
def test_legacy_settings_are_honoured_or_rejected(old: str, new: str, message: str) -> None:
    assert old in LEGACY
    assert message in error_of(LEGACY.replace(old, new))


def test_legacy_scale_features_true_is_accepted() -> None:
    # Memberships are already in [0, 1]; no scaler is fitted (documented in config.py).
    cfg = parse_strategy(LEGACY.replace("scale_features: false", "scale_features: true"))
    assert cfg.training.epochs == 3


# --- lookup -----------------------------------------------------------------------------------


def test_load_by_name_and_path(strategies_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.yml").write_text(MINIMAL)
    assert load_strategy("mine", tmp_path).name == "tiny"
    assert load_strategy(str(tmp_path / "mine.yml")).name == "tiny"
    assert load_strategy_by_name("rsi_macd_zigzag", strategies_dir).name == "rsi_macd_zigzag"


def test_strategies_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRAINBUS_STRATEGIES_DIR", raising=False)
    assert strategies_dir() == Path("strategies")
    (tmp_path / "envy.yaml").write_text(MINIMAL)
    monkeypatch.setenv("TRAINBUS_STRATEGIES_DIR", str(tmp_path))
    assert strategies_dir() == tmp_path
    assert load_strategy("envy").name == "tiny"


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "x" * 200, "a b", "-x"])
def test_hostile_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match="invalid strategy name"):
        load_strategy_by_name(name, tmp_path)


def test_paths_are_for_shell_users_only(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(MINIMAL)
    with pytest.raises(StrategyError, match="invalid strategy name"):
        load_strategy_by_name(str(tmp_path / "x.yaml"), tmp_path)
    with pytest.raises(StrategyError, match="neither a strategy name"):
        load_strategy("/etc/passwd")
    with pytest.raises(StrategyError, match="no such strategy file"):
        load_strategy(str(tmp_path / "absent.yaml"))


def test_not_found_lists_what_exists(strategies_dir: Path) -> None:
    with pytest.raises(
        StrategyError, match=r"strategy 'nope' not found in .*available: .*rsi_macd_zigzag"
    ):
        load_strategy("nope", strategies_dir)


def test_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(MINIMAL)
    inside = tmp_path / "strategies"
    inside.mkdir()
    os.symlink(outside, inside / "escape.yaml")
    with pytest.raises(StrategyError, match="resolves outside"):
        load_strategy("escape", inside)


def test_oversized_and_binary_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text("# " + "x" * MAX_STRATEGY_BYTES)
    with pytest.raises(StrategyError, match="larger than"):
        load_strategy("big", tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StrategyError, match="not UTF-8"):
        load_strategy("bin", tmp_path)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(with_training("epochs: ten"))
    with pytest.raises(StrategyError) as info:
        load_strategy("bad", tmp_path)
    assert str(info.value) == f'{tmp_path / "bad.yaml"}: training.epochs: expected int, got "ten"'


# --- helpers --------------------------------------------------------------------------------


def test_symbols_timeframes_and_base(
    load_example: Callable[[str], StrategyConfig],
) -> None:
    multi_tf: StrategyConfig = load_example("multi_tf_trend")
    assert timeframes_of(multi_tf) == ["1h", "4h", "1d"]
    assert base_timeframe(multi_tf, ["1h", "4h", "1d"]) == "1h"
    # The configured base is used only when loaded; otherwise the shortest timeframe.
    assert base_timeframe(multi_tf, ["1d", "4h"]) == "4h"
    multi_symbol: StrategyConfig = load_example("multi_symbol_triple_barrier")
    assert symbols_of(multi_symbol) == ["EURUSD", "GBPUSD"]
    assert symbols_of(parse_strategy(MINIMAL)) == ["EURUSD"]
    with pytest.raises(ValueError, match="no timeframes"):
        base_timeframe(multi_tf, [])


def test_the_exported_strategy_schema_is_up_to_date_and_describes_the_canonical_form() -> None:
    """docs/schemas/strategy.json is `trainbus schema export docs/schemas`; every example
    strategy, once loaded, is a document of that schema (its own JSON round-trips through it)."""
    import msgspec

    from libs.events.jsonschema import encode_schema
    from libs.pipeline.strategy import StrategyConfig, json_schema, load_strategy

    root = Path(__file__).resolve().parents[2]
    assert (root / "docs" / "schemas" / "strategy.json").read_bytes() == encode_schema(
        json_schema()
    ), "regenerate with: trainbus schema export docs/schemas"
    for path in sorted((root / "strategies").glob("*.yaml")):
        config = load_strategy(str(path))
        canonical = msgspec.json.decode(msgspec.json.encode(config))
        assert msgspec.convert(canonical, StrategyConfig) == config, path.name
