"""The reference platform's spellings in an id-keyed document: honoured, refused naming the
path, or accepted with a warning (what was ignored and why) that leaves the strategy and its
hash unchanged; `check_strategy` returns every problem at once; the grammar reference is
generated from the Structs and the committed file is up to date; the HTTP check route."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from libs.pipeline.strategy import (
    StrategyError,
    TripleBarrierLabels,
    check_strategy,
    parse_strategy,
    strategy_hash,
)
from libs.pipeline.strategy.docs import grammar_markdown
from services.backend.controllers.strategies import StrategyController
from services.backend.security import ApiSecurity
from services.cli.schema import GRAMMAR_FILE

ROOT = Path(__file__).resolve().parents[2]

BASE = """
name: s
training_data:
  symbols: {mode: single, symbol: EURUSD}
  timeframes: {mode: single, timeframe: 1h}
  %(data)s
indicators: {rsi_14: {type: rsi, period: 14}}
fuzzy_sets: {rsi_zone: {indicator: rsi_14, low: [0, 30, 50], high: [50, 70, 100]}}
nn_inputs: [{fuzzy_set: rsi_zone}]
model:
  type: mlp
  architecture: {hidden_layers: [8], %(arch)s}
  features: {lookback_periods: 1, %(features)s}
  %(model)s
training:
  epochs: 3
  %(training)s
"""


def doc(**parts: str) -> str:
    fill = {"data": "", "arch": "", "features": "", "model": "", "training": ""}
    return BASE % {**fill, **parts}


def paths(items: list) -> list[str]:
    return [item.path for item in items]


def test_plain_document_has_no_warnings() -> None:
    result = check_strategy(doc())
    assert result.config is not None and result.problems == [] and result.warnings == []


@pytest.mark.parametrize(("parts", "path", "words"), [
    ({"arch": "output_activation: softmax"}, "model.architecture.output_activation",
     "softmax is applied at prediction"),
    ({"training": "method: supervised"}, "training.method", "only method"),
    ({"features": "include_price_context: false"}, "model.features.include_price_context",
     "ignored"),
    ({"features": "scale_features: true"}, "model.features.scale_features",
     "scaled by its own normalization"),
    ({"model": "training: {progress_update_frequency: 10}"},
     "model.training.progress_update_frequency", "ignored"),
    ({"training": "labels: {source: triple_barrier, atr_period: 14}"},
     "training.labels.atr_period", "set vol_span"),
])
def test_accepted_with_a_warning_and_the_same_strategy(
    parts: dict[str, str], path: str, words: str
) -> None:
    result = check_strategy(doc(**parts))
    assert result.problems == []
    assert paths(result.warnings) == [path]
    assert words in result.warnings[0].message
    # The warning is not part of the strategy: same hash as without the key.
    plain = {k: ("labels: {source: triple_barrier}" if "triple_barrier" in v else "")
             for k, v in parts.items()}
    assert result.config is not None
    assert strategy_hash(result.config) == strategy_hash(parse_strategy(doc(**plain)))


@pytest.mark.parametrize(("parts", "path"), [
    ({"arch": "output_activation: sigmoid"}, "model.architecture.output_activation"),
    ({"training": "method: reinforcement"}, "training.method"),
    ({"features": "include_price_context: true"}, "model.features.include_price_context"),
    ({"features": "scale_features: maybe"}, "model.features.scale_features"),
    ({"model": "training: {epochs: 5}"}, "model.training.epochs"),
    ({"data": "date_range: {start: '2024-01-01', end: '2024-06-01'}\n  start_date: '2024-01-01'"},
     "training_data.date_range"),
    ({"data": "date_range: {start: '2024-01-01', finish: '2024-06-01'}"},
     "training_data.date_range.finish"),
    ({"training": "labels: {source: triple_barrier, cusum_threshold: 1.5}"},
     "training.labels.cusum_threshold"),
    ({"training": "labels: {source: triple_barrier, cusum_threshold: 0.01, "
                  "cusum_multiplier: 0.5}"}, "training.labels"),
    ({"training": "labels: {source: triple_barrier, profit_target_atr: 2, pt_multiplier: 2}"},
     "training.labels.profit_target_atr"),
    ({"training": "labels: {source: triple_barrier, stop_loss_atr: 1, vol_method: close}"},
     "training.labels.stop_loss_atr"),
    ({"training": "labels: {source: triple_barrier, compute_weights: 1}"},
     "training.labels.compute_weights"),
])
def test_refused_naming_the_path(parts: dict[str, str], path: str) -> None:
    result = check_strategy(doc(**parts))
    assert result.config is None
    assert path in paths(result.problems)
    with pytest.raises(StrategyError, match=path.replace(".", r"\.")):
        parse_strategy(doc(**parts))


def test_model_training_block_in_an_id_keyed_document_moves_to_training() -> None:
    text = doc(model="training: {learning_rate: 0.01, batch_size: 32, optimizer: sgd}",
               training="")
    config = parse_strategy(text)
    assert config.training.learning_rate == 0.01 and config.training.batch_size == 32
    assert config.training.optimizer == "sgd" and config.training.epochs == 3
    problems = check_strategy(doc(model="training: {epochs: 5}")).problems
    assert problems[0].message == "also set as training.epochs; keep one"


def test_date_range_is_the_training_window() -> None:
    config = parse_strategy(doc(data="date_range: {start: '2024-01-01', end: '2024-06-01'}"))
    assert config.training_data.start_date == "2024-01-01"
    assert config.training_data.end_date == "2024-06-01"


def test_triple_barrier_spellings_of_the_reference() -> None:
    config = parse_strategy(doc(training=(
        "labels: {source: triple_barrier, pt_multiplier: 2.5, sl_multiplier: 1.0, "
        "max_holding_period: 30, vol_span: 20, vol_method: close, compute_weights: false}")))
    labels = config.training.labels
    assert isinstance(labels, TripleBarrierLabels)
    assert (labels.pt_multiplier, labels.max_holding_period, labels.vol_method) == (
        2.5, 30, "close")
    assert labels.compute_weights is False and labels.cusum_threshold is None


def test_triple_barrier_atr_spellings_are_the_barrier_keys() -> None:
    result = check_strategy(doc(training=(
        "labels: {source: triple_barrier, profit_target_atr: 2.5, stop_loss_atr: 1.25, "
        "max_holding_bars: 24, compute_weights: true, cusum_multiplier: 0.5}")))
    assert result.problems == [] and result.warnings == []
    assert result.config is not None
    assert result.config.training.labels == TripleBarrierLabels(
        pt_multiplier=2.5, sl_multiplier=1.25, max_holding_period=24, compute_weights=True,
        cusum_multiplier=0.5)


def test_every_problem_at_once_with_hints() -> None:
    result = check_strategy(doc(arch="output_activation: tanh", training="method: rl\n  epoch: 4"))
    assert set(paths(result.problems)) >= {
        "model.architecture.output_activation", "training.method", "training.epoch"}
    unknown = next(p for p in result.problems if p.path == "training.epoch")
    assert unknown.hint == "did you mean epochs?"
    bad_yaml = check_strategy("a: [", source="x.yaml")
    assert bad_yaml.config is None and "invalid YAML" in bad_yaml.problems[0].message


def test_the_committed_grammar_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / GRAMMAR_FILE).read_text(encoding="utf-8")
    assert committed == grammar_markdown(), "run: trainbus schema export docs/schemas"


def test_the_grammar_reference_names_every_key() -> None:
    text = grammar_markdown()
    for key in ("`pt_multiplier`", "`vol_method`", "`lookback_periods`", "`history_required`",
                "`confidence_threshold`", "compute_weights", "date_range"):
        assert key in text


def test_http_check_route_needs_no_token_and_reports_problems_and_warnings() -> None:
    security = ApiSecurity(auth="token", token=None)  # every write refused
    app = Litestar(route_handlers=[StrategyController], **security.app_options(),
                   dependencies={"runtime": Provide(lambda: None, sync_to_thread=False)})
    with TestClient(app) as client:
        good = client.post("/api/v1/strategies/check",
                           json={"yaml": doc(training="method: supervised")})
        assert good.status_code == 200, good.text
        assert good.json() == {"ok": True, "problems": [], "warnings": [
            {"path": "training.method",
             "message": "supervised is the only method; the key changes nothing"}]}
        bad = client.post("/api/v1/strategies/check",
                          json={"yaml": doc(arch="output_activation: relu")}).json()
        assert bad["ok"] is False
        assert bad["problems"][0]["path"] == "model.architecture.output_activation"
        schema = client.get("/schema/openapi.json").json()
        assert "/api/v1/strategies/check" in schema["paths"]
