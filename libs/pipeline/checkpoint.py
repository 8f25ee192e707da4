"""Training state that survives a process: `Checkpoint` and its pickle-free byte format.

A checkpoint is everything the trainer needs to continue as if it had never stopped: weights,
optimizer/scheduler/grad-scaler state, the epoch (and, when taken on cancel, the batch inside the
epoch), history, early-stopping bookkeeping with a deep copy of the best weights, and every RNG
state (torch CPU/CUDA, numpy, python, and the dedicated shuffle generator). Resuming from one
ends with bit-identical weights to an uninterrupted run on the same device type.

Byte format: one safetensors blob. Tensors are stored as tensors under namespaced keys
(`model/...`, `best/...`, `optim/N`, `sched/N`, `rng/...`); everything else is one JSON document
in the safetensors header metadata, with tensors replaced by `{"__t__": key}` references. Loading
parses JSON and raw tensor bytes only; nothing can execute code (no pickle, no torch.load).
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from libs.pipeline.progress import EpochRecord

FORMAT = "trainbus-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "trainbus_checkpoint"


class CheckpointError(ValueError):
    """Raised when bytes are not a checkpoint we can read, or do not fit the model resumed."""


@dataclass(kw_only=True)
class RngState:
    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor]  # one per visible CUDA device; empty when CUDA is unused
    numpy: dict[str, Any]  # np.random legacy state as JSON-able data
    python: list[Any]  # random.getstate() as JSON-able data
    # The shuffle generator's state *before* drawing the permutation of the in-progress epoch
    # (at an epoch boundary: before the next epoch's), so a resume re-draws the same order.
    shuffle: torch.Tensor


@dataclass(kw_only=True)
class Checkpoint:
    """Everything needed to resume. Tensors are CPU copies owned by the checkpoint."""

    epoch: int  # epochs fully completed
    batch_in_epoch: int = 0  # batches done in epoch `epoch + 1` (only a checkpoint on cancel)
    total_epochs: int
    seed: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any] | None = None
    scaler_state: dict[str, Any] | None = None
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    best_state: dict[str, torch.Tensor] | None = None  # deep copy of the best epoch's weights
    epochs_without_improvement: int = 0
    rng: RngState
    # Partial-epoch running sums (batch_in_epoch > 0), so the resumed epoch reports the same
    # train loss/accuracy as an uninterrupted one.
    partial_loss_sum: float = 0.0
    partial_correct: float = 0.0
    partial_seen: int = 0
    partial_duration: float = 0.0
    elapsed: float = 0.0  # training seconds spent before this checkpoint
    meta: dict[str, Any] = field(default_factory=dict)  # caller's tags (job id, strategy hash)


# --- RNG capture ------------------------------------------------------------------------------


def capture_rng(shuffle: torch.Generator, *, shuffle_state: torch.Tensor | None = None) -> RngState:
    """Snapshot every RNG the run draws from (global torch for dropout, the shuffle generator)."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # legacy=True always gives the tuple form
    py_version, py_internal, py_gauss = random.getstate()
    cuda = (
        [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else []
    )
    return RngState(
        torch_cpu=torch.get_rng_state().clone(),
        torch_cuda=cuda,
        numpy={
            "kind": str(np_state[0]),
            "key": [int(v) for v in np_state[1]],
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        python=[py_version, list(py_internal), py_gauss],
        shuffle=(shuffle_state if shuffle_state is not None else shuffle.get_state()).clone(),
    )


def restore_rng(rng: RngState, shuffle: torch.Generator) -> None:
    torch.set_rng_state(rng.torch_cpu)
    if rng.torch_cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng.torch_cuda)
    n = rng.numpy
    np.random.set_state(
        (
            n["kind"],
            np.asarray(n["key"], dtype=np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = rng.python
    random.setstate((version, tuple(internal), gauss))
    shuffle.set_state(rng.shuffle)


def cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor cloned onto the CPU (state dicts, optimizer state)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(cpu_copy(v) for v in obj)
    return obj


# --- structure <-> (JSON, tensors) ------------------------------------------------------------


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able structure with tensors pulled out into `tensors` under `prefix/N` keys."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}/{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"__t__": key}
    if isinstance(obj, bool | int | float | str) or obj is None:
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, prefix, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, prefix, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _flatten(v, prefix, tensors) for k, v in obj.items()}
        # int keys (optimizer state is keyed by parameter index) must come back as ints.
        return {
            "__dict__": [
                [_flatten(k, prefix, tensors), _flatten(v, prefix, tensors)] for k, v in obj.items()
            ]
        }
    raise CheckpointError(f"cannot store {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__t__" in obj:
            key = obj["__t__"]
            if key not in tensors:
                raise CheckpointError(f"checkpoint references a missing tensor {key!r}")
            return tensors[key]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    return obj


def _tensor_dict(
    state: dict[str, torch.Tensor], prefix: str, out: dict[str, torch.Tensor]
) -> list[str]:
    names = []
    for name, tensor in state.items():
        out[f"{prefix}/{name}"] = tensor.detach().to("cpu").contiguous()
        names.append(name)
    return names


def checkpoint_to_bytes(cp: Checkpoint) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": cp.epoch,
        "batch_in_epoch": cp.batch_in_epoch,
        "total_epochs": cp.total_epochs,
        "seed": cp.seed,
        "model_state": _tensor_dict(cp.model_state, "model", tensors),
        "optimizer_state": _flatten(cp.optimizer_state, "optim", tensors),
        "scheduler_state": _flatten(cp.scheduler_state, "sched", tensors),
        "scaler_state": _flatten(cp.scaler_state, "scaler", tensors),
        "history": msgspec.to_builtins(cp.history),
        "best_epoch": cp.best_epoch,
        "best_metric": cp.best_metric,
        "best_state": None
        if cp.best_state is None
        else _tensor_dict(cp.best_state, "best", tensors),
        "epochs_without_improvement": cp.epochs_without_improvement,
        "rng": {
            "numpy": cp.rng.numpy,
            "python": cp.rng.python,
            "cuda": len(cp.rng.torch_cuda),
        },
        "partial": [cp.partial_loss_sum, cp.partial_correct, cp.partial_seen, cp.partial_duration],
        "elapsed": cp.elapsed,
        "meta": cp.meta,
    }
    tensors["rng/torch_cpu"] = cp.rng.torch_cpu.contiguous()
    tensors["rng/shuffle"] = cp.rng.shuffle.contiguous()
    for i, state in enumerate(cp.rng.torch_cuda):
        tensors[f"rng/cuda/{i}"] = state.contiguous()
    # Stdlib json (not msgspec) because scheduler state holds inf (ReduceLROnPlateau's `best`),
    # which msgspec would turn into null; Python's json round-trips Infinity/NaN exactly.
    header = json.dumps(doc, allow_nan=True, separators=(",", ":"))
    return st_save(tensors, metadata={_META_KEY: header})


def _read_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise CheckpointError("not a checkpoint: too short")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8 or size > 100 * 1024 * 1024:
        raise CheckpointError("not a checkpoint: bad safetensors header size")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError as exc:
        raise CheckpointError(f"not a checkpoint: unreadable header ({exc})") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or _META_KEY not in meta:
        raise CheckpointError("not a trainbus checkpoint (no checkpoint metadata)")
    return meta


def checkpoint_from_bytes(data: bytes) -> Checkpoint:
    doc = json.loads(_read_metadata(data)[_META_KEY])
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"unsupported checkpoint format {doc.get('format')!r} v{doc.get('format_version')!r}"
        )
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"checkpoint tensors unreadable: {exc}") from exc

    def named(prefix: str, names: list[str]) -> dict[str, torch.Tensor]:
        try:
            return {n: tensors[f"{prefix}/{n}"] for n in names}
        except KeyError as exc:
            raise CheckpointError(f"checkpoint is missing tensor {exc}") from exc

    try:
        loss_sum, correct, seen, duration = doc["partial"]
        rng = RngState(
            torch_cpu=tensors["rng/torch_cpu"],
            torch_cuda=[tensors[f"rng/cuda/{i}"] for i in range(doc["rng"]["cuda"])],
            numpy=doc["rng"]["numpy"],
            python=doc["rng"]["python"],
            shuffle=tensors["rng/shuffle"],
        )
        return Checkpoint(
            epoch=doc["epoch"],
            batch_in_epoch=doc["batch_in_epoch"],
            total_epochs=doc["total_epochs"],
            seed=doc["seed"],
            model_state=named("model", doc["model_state"]),
            optimizer_state=_unflatten(doc["optimizer_state"], tensors),
            scheduler_state=_unflatten(doc["scheduler_state"], tensors),
            scaler_state=_unflatten(doc["scaler_state"], tensors),
            history=msgspec.convert(doc["history"], list[EpochRecord]),
            best_epoch=doc["best_epoch"],
            best_metric=doc["best_metric"],
            best_state=None if doc["best_state"] is None else named("best", doc["best_state"]),
            epochs_without_improvement=doc["epochs_without_improvement"],
            rng=rng,
            partial_loss_sum=loss_sum,
            partial_correct=correct,
            partial_seen=seen,
            partial_duration=duration,
            elapsed=doc["elapsed"],
            meta=doc["meta"],
        )
    except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
        raise CheckpointError(f"malformed checkpoint: {type(exc).__name__}: {exc}") from exc
