"""Input normalization fitted on the training rows and saved inside the model.

A raw indicator column (`nn_inputs: [{raw_indicator: rsi_14, normalization: zscore}]`) lives on
its own scale (RSI 0..100, an ATR of 1e-3); the model sees `(x - shift) / scale` instead, with
`shift`/`scale` fitted on the training slice only (validation and test statistics would leak
the future into the features). The statistics are buffers of an `InputScaler` module, the
model's first layer, so model.safetensors carries them with the weights and a checkpoint
restores them with the weights: whoever runs the model normalizes exactly as training did.

Fuzzy memberships are already in [0, 1]: their method is always `none` (shift 0, scale 1), and a
scaler with every column `none` is skipped in `forward`, so fuzzy-only models compute exactly
what they did before scaling existed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from libs.pipeline.features import feature_names, input_columns
from libs.pipeline.strategy import StrategyConfig
from libs.pipeline.windows import Windows

METHODS: tuple[str, ...] = ("minmax", "zscore", "none")


class InputScaler(nn.Module):
    """(x - shift) / scale on the last dimension; identity until fitted. Buffers `shift`
    and `scale` (float32, shape (n_features,)) live in the state dict, so they are saved in
    model.safetensors with the weights and restored with them (checkpoints too)."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        if n_features <= 0:
            raise ValueError(f"n_features must be > 0, got {n_features}")
        self.register_buffer("shift", torch.zeros(n_features, dtype=torch.float32))
        self.register_buffer("scale", torch.ones(n_features, dtype=torch.float32))
        # An identity scaler costs nothing: forward returns x untouched (bit for bit).
        self.active = False
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def refresh(self) -> None:
        """Recompute whether the buffers do anything (after they were written)."""
        self.active = bool(torch.any(self.shift != 0) or torch.any(self.scale != 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return (x - self.shift) / self.scale


def _refresh_after_load(module: nn.Module, incompatible: Any) -> None:
    if isinstance(module, InputScaler):
        module.refresh()


def column_statistics(rows: np.ndarray, methods: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) per column of `rows` (n, n_features), ignoring NaN: zscore is (mean,
    std), minmax (min, max - min), none (0, 1). A constant or empty column gets scale 1 (a
    division by ~0 would blow a feature that carries no information up into noise)."""
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(methods):
        raise ValueError(f"rows must be (n, {len(methods)}), got {x.shape}")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown normalization {unknown}: use one of {', '.join(METHODS)}")
    chosen = np.asarray(methods)
    shift = np.zeros(x.shape[1])
    scale = np.ones(x.shape[1])
    for method, stat_shift, stat_scale in (
        ("zscore", np.nanmean, np.nanstd),
        ("minmax", np.nanmin, _nan_range),
    ):
        cols = np.flatnonzero(chosen == method)
        if not len(cols):
            continue
        part = x[:, cols]
        seen = ~np.all(np.isnan(part), axis=0)  # all-NaN columns keep identity (no warning)
        shift[cols[seen]] = stat_shift(part[:, seen], axis=0)
        scale[cols[seen]] = stat_scale(part[:, seen], axis=0)
    flat = ~np.isfinite(scale) | (scale <= np.finfo(np.float32).tiny)
    scale[flat] = 1.0
    shift[~np.isfinite(shift)] = 0.0
    return shift.astype(np.float32), scale.astype(np.float32)


def _nan_range(x: np.ndarray, axis: int) -> np.ndarray:
    return np.asarray(np.nanmax(x, axis=axis) - np.nanmin(x, axis=axis))


def fit_scaler(scaler: InputScaler, rows: np.ndarray, methods: Sequence[str]) -> dict[str, Any]:
    """Fit on training rows (n, n_features); methods[j] in minmax|zscore|none; NaN-safe;
    a constant column gets scale 1; returns a JSON-able summary (per feature: method, shift,
    scale)."""
    n_features = int(scaler.shift.shape[0])
    if len(methods) != n_features:
        raise ValueError(f"{len(methods)} methods for a scaler of {n_features} features")
    shift, scale = column_statistics(rows, methods)
    with torch.no_grad():
        scaler.shift.copy_(torch.from_numpy(shift))
        scaler.scale.copy_(torch.from_numpy(scale))
    scaler.refresh()
    return scaler_summary(scaler, methods, fitted_rows=int(np.asarray(rows).shape[0]))


def scaler_summary(
    scaler: InputScaler, methods: Sequence[str], *, fitted_rows: int | None = None
) -> dict[str, Any]:
    """What the scaler does, JSON-able: per feature position its method, shift and scale."""
    shift = scaler.shift.detach().cpu().tolist()
    scale = scaler.scale.detach().cpu().tolist()
    summary: dict[str, Any] = {
        "requires_scaling": any(m != "none" for m in methods),
        "features": [
            {"method": m, "shift": a, "scale": b}
            for m, a, b in zip(methods, shift, scale, strict=True)
        ],
    }
    if fitted_rows is not None:
        summary["fitted_rows"] = fitted_rows
    return summary


def feature_normalizations(
    strategy: StrategyConfig, timeframes: Sequence[str]
) -> tuple[str, ...]:
    """One method per name of `feature_names(strategy, timeframes)`: fuzzy memberships `none`,
    raw indicators their `normalization`; lag copies take their base column's method."""
    base = tuple(column.normalization for column in input_columns(strategy, timeframes))
    copies = len(feature_names(strategy, timeframes)) // max(len(base), 1)  # the base + its lags
    return base * copies


def with_identity_scalers(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
    """`state` plus, for each InputScaler of `model` whose buffers it lacks (a model saved
    before input scaling existed), the identity buffers: such a model was trained on unscaled
    inputs, so the identity is exactly what it computed. Anything else missing stays missing
    (a strict load still reports it)."""
    out = dict(state)
    for prefix, module in model.named_modules():
        if not isinstance(module, InputScaler):
            continue
        keys = {name: f"{prefix}.{name}" if prefix else name for name in ("shift", "scale")}
        if not any(key in out for key in keys.values()):
            out.update({key: getattr(module, name).detach().clone() for name, key in keys.items()})
    return out


def fit_model_scaler(
    model: nn.Module,
    x_train: np.ndarray | Windows,
    strategy: StrategyConfig,
    names: Sequence[str],
) -> dict[str, Any] | None:
    """Fit `model.input_scaler` (when it has one) on the training inputs `x_train` whose
    columns are `names`; the summary, or None for a model without a scaler. Row-major rows
    (n, features) are fitted as they are; a scaler narrower than them on their own unlagged
    columns, which come first. Sequence windows (a recurrent model scales each step) are
    fitted on the per-step bars the training windows read (`Windows.step_rows`)."""
    scaler = getattr(model, "input_scaler", None)
    if not isinstance(scaler, InputScaler):
        return None
    width = int(scaler.shift.shape[0])
    rows = x_train.step_rows() if isinstance(x_train, Windows) else x_train[:, :width]
    methods = normalizations_of_names(strategy, names)[:width]
    return fit_scaler(scaler, rows, methods)


def normalizations_of_names(strategy: StrategyConfig, names: Sequence[str]) -> tuple[str, ...]:
    """`feature_normalizations` for a run known by its feature names only. The methods depend
    on which timeframes were loaded, not on their order (one nn_input has one method on all
    its timeframes), and every loaded timeframe that `timeframes: all` reads shows up as a
    name prefix (`{tf}_...`; timeframes have no underscore). `names` may be the unlagged
    prefix only (a recurrent model's per-step names)."""
    timeframes = sorted({name.split("_", 1)[0] for name in names})
    methods = feature_normalizations(strategy, timeframes)
    # All the names, or a recurrent model's per-step ones: the unlagged prefix.
    if not names or len(names) > len(methods) or len(methods) % len(names):
        raise ValueError(
            f"{len(names)} feature names but the strategy makes {len(methods)} on "
            f"{', '.join(timeframes)}"
        )
    return methods[: len(names)]
