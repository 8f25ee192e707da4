"""Reading a sweep's search space (libs/events/sweep_spec.py) and checking it against the
strategy grammar (libs/pipeline/sweep_check.py): every refusal names the key at fault."""

from __future__ import annotations

import msgspec
import pytest

from libs.events.errors import InvalidRequest
from libs.events.sweep_schema import Choice, IntRange, LogUniform, SweepSpec, Uniform
from libs.events.sweep_spec import (
    candidates,
    check_params,
    check_spec,
    parse_distribution,
    parse_param,
    read_sweep_file,
    split_objective,
    trial_seeds,
    trial_yaml,
)
from libs.pipeline.sweep_check import Candidate, check_candidates, check_objective
from tests.harness.strategies import strategy_yaml

BASE = strategy_yaml("tiny", epochs=3)


def test_distributions_are_read_from_their_call_syntax() -> None:
    assert parse_distribution("loguniform(1e-4,1e-2)") == LogUniform(low=1e-4, high=1e-2)
    assert parse_distribution("uniform(0.1, 0.5)") == Uniform(low=0.1, high=0.5)
    assert parse_distribution("int(8,64)") == IntRange(low=8, high=64)
    assert parse_distribution("choice([32],[64,32])") == Choice(options=([32], [64, 32]))
    assert parse_distribution("choice(relu, tanh)") == Choice(options=("relu", "tanh"))
    param = parse_param("model.architecture.dropout=uniform(0,0.5)")
    assert (param.key, candidates(param)) == ("model.architecture.dropout", [0.0, 0.5])


@pytest.mark.parametrize(("text", "message"), [
    ("normal(0,1)", "is not a distribution"),
    ("loguniform(0,1)", "bounds must be above 0"),
    ("uniform(2,1)", "low is not below high"),
    ("int(1.5,3)", "takes integers"),
    ("int(5,3)", "low is above high"),
    ("uniform(a,b)", "takes two numbers"),
    ("uniform(1)", "takes two bounds"),
    ("choice()", "at least one option"),
])
def test_a_bad_distribution_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_param(f"training.learning_rate={text}")
    assert message in raised.value.detail
    assert raised.value.field == "param training.learning_rate"


def test_bad_params_and_objectives_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="KEY=DISTRIBUTION"):
        parse_param("training.learning_rate")
    with pytest.raises(InvalidRequest, match="not a strategy key"):
        parse_param("training..lr=uniform(0,1)")
    with pytest.raises(InvalidRequest, match="at least one"):
        check_params([])
    with pytest.raises(InvalidRequest, match="given twice"):
        check_params([parse_param("a.b=int(1,2)"), parse_param("a.b=int(1,3)")])
    with pytest.raises(InvalidRequest, match="overlap"):
        check_params([parse_param("a.b=int(1,2)"), parse_param("a.b.c=int(1,3)")])
    assert split_objective("macro_f1") == ("test", "macro_f1")
    assert split_objective("walkforward.macro_f1") == ("walkforward", "macro_f1")
    with pytest.raises(InvalidRequest) as raised:
        split_objective("train.loss")
    assert raised.value.field == "objective"


def test_each_key_is_checked_against_the_strategy_grammar() -> None:
    def problems(text: str) -> list[str]:
        param = parse_param(text)
        return [str(p) for p in check_candidates([
            Candidate(param.key, v, trial_yaml(BASE, {param.key: v}, name="tiny-x"))
            for v in candidates(param)])]

    assert problems("training.learning_rate=loguniform(1e-4,1e-2)") == []
    assert problems("model.architecture.hidden_layers=choice([32],[64,32])") == []
    unknown = problems("training.learnin_rate=loguniform(1e-4,1e-2)")
    assert len(unknown) == 1 and "unknown key" in unknown[0]  # once, not once per extreme
    assert unknown[0].startswith("training.learnin_rate: ")
    wrong_type = problems("training.batch_size=uniform(16,64)")
    assert wrong_type and "expected int" in wrong_type[0]
    assert "expected array" in problems("model.architecture.hidden_layers=choice([8],7)")[0]
    assert "expected int >= 1" in problems("training.epochs=int(0,3)")[0]


def test_the_objective_must_be_one_the_trials_report() -> None:
    assert check_objective(BASE, "test", "macro_f1") is None
    assert check_objective(BASE, "test", "baseline_majority_accuracy") is None
    rmse = check_objective(BASE, "test", "rmse")
    assert rmse is not None and rmse.key == "objective" and "reports accuracy" in rmse.message
    walk = check_objective(BASE, "walkforward", "macro_f1")
    assert walk is not None and "no training.walk_forward" in walk.message


def test_a_trial_is_the_base_strategy_with_the_values_set_and_its_own_name() -> None:
    import yaml

    document = yaml.safe_load(trial_yaml(BASE, {"training.learning_rate": 0.02,
                                                "model.architecture.hidden_layers": [64, 32]},
                                         name="tiny-sw-1"))
    assert document["name"] == "tiny-sw-1"
    assert document["training"]["learning_rate"] == 0.02
    assert document["model"]["architecture"] == {"hidden_layers": [64, 32],
                                                 "activation": "relu", "dropout": 0.2}


def test_seeds_are_derived_from_the_sweep_seed() -> None:
    assert trial_seeds(5, 3) == trial_seeds(5, 3)
    assert len(set(trial_seeds(5, 3))) == 3 and trial_seeds(5, 1) == (5,)


def test_a_sweep_file_names_its_bad_key() -> None:
    good = read_sweep_file("strategy: tiny\ntrials: 3\nobjective: test.accuracy\nparams:\n"
                           "  training.learning_rate: loguniform(1e-4,1e-2)\n", "s.yaml")
    assert good.params == {"training.learning_rate": "loguniform(1e-4,1e-2)"}
    with pytest.raises(InvalidRequest, match="trails"):
        read_sweep_file("strategy: tiny\ntrails: 3\nobjective: x\nparams: {}\n", "s.yaml")


def test_a_grid_too_large_to_build_is_refused() -> None:
    """Optuna's grid sampler builds every point in memory, whatever the trial budget."""
    params = (parse_param("training.epochs=int(1,100000)"),
              parse_param("training.batch_size=int(1,100000)"))
    spec = SweepSpec(strategy="s", strategy_yaml="name: s", symbols=("EURUSD",),
                     timeframes=("1h",), params=params, trials=5, objective="test.macro_f1",
                     sampler="grid")
    with pytest.raises(InvalidRequest, match="10,000,000,000 points") as raised:
        check_spec(spec)
    assert raised.value.field == "sampler"
    check_spec(msgspec.structs.replace(spec, sampler="random"))  # not built: fine
