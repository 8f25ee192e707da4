"""The MLP: feature vector in, logits out (softmax only at inference, in storage.predict).

Parameter names are persisted in model.safetensors, so they are explicit and stable:
`hidden.{i}.weight|bias` and `output.weight|bias`, whatever the activation or dropout, and the
input normalization's buffers `input_scaler.shift|scale` (libs/pipeline/normalization.py; a
model saved before them loads with an identity scaler).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from libs.pipeline.normalization import InputScaler
from libs.pipeline.strategy import ArchitectureConfig, ModelConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Module):
    """Input scaling, then Linear -> activation -> dropout per hidden layer, then a Linear to
    `num_outputs`. The scaler is the identity (and free) until `fit_scaler` fits it."""

    def __init__(
        self,
        input_dim: int,
        num_outputs: int,
        hidden_layers: tuple[int, ...] | list[int] = (64, 32),
        activation: str = "relu",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if input_dim <= 0:
            raise ValueError(f"input_dim must be > 0, got {input_dim}")
        if num_outputs <= 0:
            raise ValueError(f"num_outputs must be > 0, got {num_outputs}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}: use one of {sorted(_ACTIVATIONS)}"
            )
        self.input_dim = input_dim
        self.num_outputs = num_outputs
        # Buffers only, no parameters: building it draws nothing from the RNG, so the weights
        # of a seeded model are what they were before scaling existed.
        self.input_scaler = InputScaler(input_dim)
        widths = [input_dim, *hidden_layers]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.output = nn.Linear(widths[-1], num_outputs)
        self.act = _ACTIVATIONS[activation]()
        # p == 0 skips the module call entirely (one fewer op per layer per step).
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_scaler(x)
        for layer in self.hidden:
            x = self.act(layer(x))
            if self.drop is not None:
                x = self.drop(x)
        return self.output(x)


def build_model(
    input_dim: int, num_outputs: int, model_cfg: ModelConfig | ArchitectureConfig
) -> nn.Module:
    """The strategy's model. Initialisation draws from torch's global RNG: seed it first."""
    arch = model_cfg.architecture if isinstance(model_cfg, ModelConfig) else model_cfg
    if isinstance(model_cfg, ModelConfig) and model_cfg.type != "mlp":
        from libs.pipeline.recurrent import build_recurrent  # lstm, gru: (batch, steps, features)

        return build_recurrent(model_cfg.type, input_dim, num_outputs, arch)
    return MLP(
        input_dim=input_dim,
        num_outputs=num_outputs,
        hidden_layers=tuple(arch.hidden_layers),
        activation=arch.activation,
        dropout=arch.dropout,
    )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
