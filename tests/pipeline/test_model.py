"""The MLP: shapes, logits out, stable parameter names, config wiring."""

from __future__ import annotations

import pytest
import torch

from libs.pipeline.model import MLP, build_model, parameter_count
from libs.pipeline.strategy import ArchitectureConfig, ModelConfig


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "leaky_relu"])
def test_forward_gives_logits_of_the_right_shape(activation: str) -> None:
    torch.manual_seed(0)
    model = MLP(12, 3, (8, 4), activation=activation, dropout=0.1)
    out = model(torch.rand(5, 12))
    assert out.shape == (5, 3)
    # logits, not probabilities: rows do not sum to one
    assert not torch.allclose(out.sum(dim=1), torch.ones(5))


def test_regression_has_one_output() -> None:
    assert MLP(4, 1, (3,))(torch.rand(2, 4)).shape == (2, 1)


def test_parameter_names_are_stable_whatever_the_dropout() -> None:
    names = [
        "input_scaler.shift",  # buffers: the training slice's normalization (identity here)
        "input_scaler.scale",
        "hidden.0.weight",
        "hidden.0.bias",
        "hidden.1.weight",
        "hidden.1.bias",
        "output.weight",
        "output.bias",
    ]
    assert list(MLP(6, 3, (5, 4), dropout=0.0).state_dict()) == names
    assert list(MLP(6, 3, (5, 4), dropout=0.5).state_dict()) == names


def test_build_model_reads_the_architecture() -> None:
    cfg = ModelConfig(
        architecture=ArchitectureConfig(hidden_layers=(7,), activation="tanh", dropout=0.0)
    )
    model = build_model(10, 3, cfg)
    assert isinstance(model.act, torch.nn.Tanh) and model.drop is None
    assert parameter_count(model) == 10 * 7 + 7 + 7 * 3 + 3
    assert build_model(10, 3, cfg.architecture).hidden[0].out_features == 7


def test_dropout_only_in_train_mode() -> None:
    model = MLP(6, 3, (64,), dropout=0.5)
    x = torch.rand(3, 6)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_seeded_init_is_reproducible() -> None:
    torch.manual_seed(7)
    a = MLP(6, 3, (5,)).state_dict()
    torch.manual_seed(7)
    b = MLP(6, 3, (5,)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dim": 0}, "input_dim"),
        ({"num_outputs": 0}, "num_outputs"),
        ({"activation": "sigmoid"}, "unknown activation"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"input_dim": 4, "num_outputs": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        MLP(**args)
