"""LSTM and GRU models: a window of bars in, logits out (softmax only at inference).

As the reference platform builds them: input scaling per step, a batch-first recurrent stack
(dropout between stacked layers), the last time step's output -> dropout -> Linear to the
outputs. Input (batch, sequence_length, features), the windows of libs/pipeline/windows.py.

Parameter names are persisted in model.safetensors: `input_scaler.shift|scale`,
`rnn.weight_ih_l{k}` ... (torch's own names, `_reverse` for the backward direction) and
`output.weight|bias`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from libs.pipeline.normalization import InputScaler
from libs.pipeline.strategy import ArchitectureConfig

RecurrentKind = Literal["lstm", "gru"]
_GATES: dict[str, int] = {"lstm": 4, "gru": 3}


class RecurrentModel(nn.Module):
    """InputScaler -> nn.LSTM / nn.GRU (batch_first) -> last step -> dropout -> Linear."""

    def __init__(
        self,
        kind: RecurrentKind,
        input_dim: int,
        num_outputs: int,
        *,
        sequence_length: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.2,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if kind not in _GATES:
            raise ValueError(f"unknown recurrent model {kind!r}: use lstm or gru")
        if input_dim <= 0:
            raise ValueError(f"input_dim must be > 0, got {input_dim}")
        if num_outputs <= 0:
            raise ValueError(f"num_outputs must be > 0, got {num_outputs}")
        self.kind = kind
        self.input_dim = input_dim  # per step
        self.num_outputs = num_outputs
        self.sequence_length = sequence_length
        self.input_scaler = InputScaler(input_dim)  # buffers only: draws nothing from the RNG
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        # torch applies `dropout` after every layer but the last; with one layer it only warns.
        self.rnn = rnn(input_dim, hidden_size, num_layers=num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        self.output = nn.Linear(hidden_size * (2 if bidirectional else 1), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"a {self.kind} reads (batch, steps, features), got {tuple(x.shape)}")
        out, _ = self.rnn(self.input_scaler(x))
        last = out[:, -1]
        if self.rnn.bidirectional:
            # The backward direction has read the whole window only at the FIRST step; at the
            # last it has seen one bar. Each direction's full-window state, side by side.
            half = self.rnn.hidden_size
            last = torch.cat((out[:, -1, :half], out[:, 0, half:]), dim=1)
        if self.drop is not None:
            last = self.drop(last)
        return self.output(last)


def build_recurrent(
    kind: RecurrentKind, input_dim: int, num_outputs: int, arch: ArchitectureConfig
) -> RecurrentModel:
    """The strategy's recurrent model. Initialisation draws from torch's global RNG."""
    if arch.sequence_length is None:
        raise ValueError(f"model.architecture.sequence_length: required for a {kind} model")
    return RecurrentModel(
        kind, input_dim, num_outputs, sequence_length=arch.sequence_length,
        hidden_size=arch.hidden_size, num_layers=arch.num_layers, dropout=arch.dropout,
        bidirectional=arch.bidirectional,
    )


def recurrent_parameter_count(
    kind: RecurrentKind, input_dim: int, num_outputs: int, arch: ArchitectureConfig
) -> int:
    """The parameters `build_recurrent` would make, counted without building it: per layer
    and direction, gates x hidden x (inputs + hidden) weights and two biases of gates x hidden;
    then the output layer."""
    gates, hidden = _GATES[kind], arch.hidden_size
    directions = 2 if arch.bidirectional else 1
    total = 0
    for layer in range(arch.num_layers):
        inputs = input_dim if layer == 0 else hidden * directions
        total += directions * gates * hidden * (inputs + hidden + 2)
    return total + (hidden * directions + 1) * num_outputs
