"""`training.loss`: focal and (weighted) cross-entropy for classes, Huber and MSE for returns;
the focal loss checked against its formula and against cross-entropy at gamma 0; a loss that
does not fit the labels is a strategy error naming the key."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest
import torch
from torch import nn

from libs.pipeline.storage.models import weights_sha256
from libs.pipeline.strategy import StrategyConfig, StrategyError, TrainingConfig, parse_strategy
from libs.pipeline.tasks import (
    CLASSIFICATION,
    REGRESSION,
    FocalLoss,
    class_weights,
    sample_weighted_loss,
)
from libs.pipeline.trainer import train

from .conftest import TINY_STRATEGY_YAML, fresh_model


def logits_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(64, 3, generator=generator), torch.randint(0, 3, (64,),
                                                                  generator=generator)


def test_focal_at_gamma_zero_is_cross_entropy_weighted_or_not() -> None:
    logits, target = logits_and_targets()
    weight = class_weights(target, 3)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, target),
                               nn.CrossEntropyLoss()(logits, target))
    torch.testing.assert_close(FocalLoss(gamma=0.0, weight=weight)(logits, target),
                               nn.CrossEntropyLoss(weight=weight)(logits, target))


def test_focal_follows_its_formula_and_weighs_easy_rows_less() -> None:
    logits, target = logits_and_targets()
    p = torch.softmax(logits, dim=1)[torch.arange(64), target].double()
    expected = (-(1 - p) ** 2 * torch.log(p)).mean()
    focal = FocalLoss(gamma=2.0)(logits, target)
    torch.testing.assert_close(focal.double(), expected, rtol=1e-5, atol=1e-7)
    assert focal < nn.CrossEntropyLoss()(logits, target)


def test_the_task_builds_the_loss_the_strategy_names() -> None:
    _, target = logits_and_targets()
    assert isinstance(CLASSIFICATION.train_loss(weighted=False, y_train=target, num_classes=3),
                      nn.CrossEntropyLoss)
    focal = CLASSIFICATION.train_loss(weighted=True, y_train=target, num_classes=3,
                                      loss="focal", focal_gamma=1.5)
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.5 and focal.weight is not None
    assert isinstance(REGRESSION.train_loss(weighted=False, y_train=target, num_classes=1,
                                            loss="mse"), nn.MSELoss)
    huber = REGRESSION.train_loss(weighted=False, y_train=target, num_classes=1,
                                  huber_delta=0.05)
    assert isinstance(huber, nn.HuberLoss) and huber.delta == 0.05


def run(strategy: StrategyConfig, splits: Any, **training: Any) -> str:
    cfg = msgspec.structs.replace(strategy.training, epochs=2, **training)
    assert isinstance(cfg, TrainingConfig)
    model = fresh_model(strategy, splits.x_train.shape[1])
    train(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, cfg)
    return weights_sha256(model.state_dict())


def test_training_with_focal_loss_is_reproducible_and_not_cross_entropy(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    focal = run(tiny_strategy, tiny_splits, loss="focal", focal_gamma=2.0)
    assert focal == run(tiny_strategy, tiny_splits, loss="focal", focal_gamma=2.0)
    assert focal != run(tiny_strategy, tiny_splits, loss="cross_entropy")
    weighted = run(tiny_strategy, tiny_splits, loss="focal", class_weights=True)
    assert weighted != focal


@pytest.mark.parametrize(
    ("labels", "loss", "message"),
    [
        ("{source: zigzag, zigzag_threshold: 0.01}", "mse",
         "training.loss: mse does not fit a classification: use cross_entropy or focal"),
        ("{source: forward_return, horizon: 5}", "focal",
         "training.loss: focal does not fit a regression (forward_return labels): use huber or "
         "mse"),
        ("{source: zigzag, zigzag_threshold: 0.01}", "hinge", "training.loss"),
    ],
)
def test_a_loss_that_does_not_fit_the_labels_is_refused(
    labels: str, loss: str, message: str
) -> None:
    text = TINY_STRATEGY_YAML.replace("{source: zigzag, zigzag_threshold: 0.01}", labels)
    text = text.replace("  seed: 11", f"  seed: 11\n  loss: {loss}")
    with pytest.raises(StrategyError) as caught:
        parse_strategy(text)
    assert message in str(caught.value)


def test_mse_trains_a_regression(tiny_strategy: StrategyConfig) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    y = (0.01 * x[:, 0] + rng.normal(0, 1e-3, 600)).astype(np.float32)
    cfg = msgspec.structs.replace(tiny_strategy.training, epochs=3, loss="mse",
                                  learning_rate=0.01)
    from libs.pipeline.model import build_model

    model = build_model(4, 1, tiny_strategy.model)
    out = train(model, x[:500], y[:500], x[500:], y[500:], cfg, regression=True)
    assert out.history[-1].train_loss < out.history[0].train_loss


# --- per-row sample weights (labels.sample_weights) -------------------------------------------


def _losses() -> list[tuple[str, nn.Module]]:
    _, target = logits_and_targets()
    weight = class_weights(target, 3)
    return [
        ("cross_entropy", nn.CrossEntropyLoss()),
        ("cross_entropy_weighted", nn.CrossEntropyLoss(weight=weight)),
        ("focal", FocalLoss(gamma=2.0)),
        ("focal_weighted", FocalLoss(gamma=1.5, weight=weight)),
        ("huber", nn.HuberLoss(delta=0.01)),
        ("mse", nn.MSELoss()),
    ]


def _batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    logits, target = logits_and_targets()
    if name in ("huber", "mse"):
        generator = torch.Generator().manual_seed(1)
        return logits[:, 0] * 0.01, torch.randn(64, generator=generator) * 0.01
    return logits, target


@pytest.mark.parametrize(("name", "loss_fn"), _losses())
def test_without_sample_weights_the_loss_is_the_same_bit_for_bit(
    name: str, loss_fn: nn.Module
) -> None:
    out, target = _batch(name)
    assert torch.equal(sample_weighted_loss(loss_fn, out, target), loss_fn(out, target))
    ones = torch.ones(len(target))
    torch.testing.assert_close(sample_weighted_loss(loss_fn, out, target, ones),
                               loss_fn(out, target))


@pytest.mark.parametrize(("name", "loss_fn"), _losses())
def test_a_weight_of_two_is_the_row_twice(name: str, loss_fn: nn.Module) -> None:
    """Sample weights compose with class weights as repeated rows would."""
    out, target = _batch(name)
    repeats = torch.tensor([1, 2, 3] * 21 + [1])
    weighted = sample_weighted_loss(loss_fn, out, target, repeats.to(torch.float32))
    repeated = loss_fn(out.repeat_interleave(repeats, dim=0), target.repeat_interleave(repeats))
    torch.testing.assert_close(weighted, repeated)


def test_weighted_cross_entropy_by_its_formula() -> None:
    logits, target = logits_and_targets()
    cw = class_weights(target, 3)
    sw = torch.linspace(0.2, 2.0, 64)
    rows = -torch.log_softmax(logits.double(), dim=1)[torch.arange(64), target]
    scale = sw.double() * cw.double()[target]
    expected = (rows * scale).sum() / scale.sum()
    loss = sample_weighted_loss(nn.CrossEntropyLoss(weight=cw), logits, target, sw)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(loss, nn.CrossEntropyLoss(weight=cw)(logits, target))


def test_sample_weights_steer_the_gradient() -> None:
    logits, target = logits_and_targets()
    logits.requires_grad_(True)
    weight = torch.zeros(64)
    weight[:8] = 1.0
    sample_weighted_loss(nn.CrossEntropyLoss(), logits, target, weight).backward()
    assert logits.grad is not None
    assert logits.grad[8:].abs().sum() == 0 and logits.grad[:8].abs().sum() > 0
