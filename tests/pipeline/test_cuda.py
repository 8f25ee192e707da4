"""The CUDA path on a real GPU: mixed precision (bf16 autocast, fp16 with loss scaling),
repeatable weights, resume equal to the uninterrupted run, and the whole pipeline on the GPU.

Skipped on machines without CUDA (CI has none); the CPU path of all of this is tested for real
in test_trainer.py and test_pipeline.py. Run on a GPU with:
`python -m pytest tests/pipeline/test_cuda.py tests/pipeline/test_device.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import torch

from libs.pipeline.cancel import CancelToken, TrainingCancelled
from libs.pipeline.checkpoint import Checkpoint, checkpoint_from_bytes, checkpoint_to_bytes
from libs.pipeline.device import DeviceInfo, DeviceManager
from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
from libs.pipeline.progress import ProgressUpdate
from libs.pipeline.storage.models import ModelStorage, predict, weights_sha256
from libs.pipeline.strategy import StrategyConfig

from .conftest import fresh_model, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def cuda(amp_dtype: str | None = "auto") -> DeviceInfo:
    """The GPU as DeviceManager describes it; amp_dtype overrides its autocast choice."""
    info = DeviceManager(env={"TRAINBUS_DEVICE": "cuda"}).select()
    if amp_dtype == "auto":
        return info
    capabilities = msgspec.structs.replace(
        info.capabilities, mixed_precision=amp_dtype is not None, amp_dtype=amp_dtype
    )
    return msgspec.structs.replace(info, capabilities=capabilities)


def train_on(
    device: DeviceInfo, strategy: StrategyConfig, splits: Any, **kwargs: Any
) -> tuple[torch.nn.Module, Any]:
    return run(strategy, splits, device=device, **kwargs)


def test_the_gpu_is_chosen_with_mixed_precision() -> None:
    info = DeviceManager(env={}).select()
    assert info.type == "cuda" and info.device == "cuda:0"
    assert info.capabilities.mixed_precision and info.autocast_dtype is not None
    if torch.cuda.is_bf16_supported():
        assert info.autocast_dtype == torch.bfloat16  # no loss scaling needed


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16", None])
def test_training_on_the_gpu_is_finite_and_repeatable(
    amp_dtype: str | None, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    device = cuda(amp_dtype)
    first, outcome = train_on(device, tiny_strategy, tiny_splits)
    second, _ = train_on(device, tiny_strategy, tiny_splits)
    # Check: it trained on the GPU, learned something, and every number is finite
    assert next(first.parameters()).device.type == "cuda"
    assert all(np.isfinite(h.train_loss) and np.isfinite(h.val_loss) for h in outcome.history)
    assert outcome.history[-1].train_loss < outcome.history[0].train_loss * 1.05
    assert all(torch.isfinite(p).all() for p in first.parameters())
    # Check: the same seed gives the same weights on the same GPU (deterministic kernels)
    assert weights_sha256(first.state_dict()) == weights_sha256(second.state_dict())


def test_gpu_weights_stay_close_to_cpu_weights_in_full_precision(
    tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    # Without dropout: its masks come from the GPU's RNG there and the CPU's here, and differ.
    architecture = msgspec.structs.replace(tiny_strategy.model.architecture, dropout=0.0)
    model_cfg = msgspec.structs.replace(tiny_strategy.model, architecture=architecture)
    strategy = msgspec.structs.replace(tiny_strategy, model=model_cfg)
    gpu, _ = train_on(cuda(None), strategy, tiny_splits)
    cpu, _ = train_on(DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}).select(), strategy, tiny_splits)
    for (name, a), b in zip(gpu.state_dict().items(), cpu.state_dict().values(), strict=True):
        # Different kernels sum in different orders; three epochs of Adam keep them close.
        assert torch.allclose(a.cpu(), b, atol=1e-3), name


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_resume_on_the_gpu_ends_with_the_uninterrupted_weights(
    amp_dtype: str, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    """The checkpoint carries the CUDA RNG (dropout) and, for fp16, the loss scaler."""
    device = cuda(amp_dtype)
    full, _ = train_on(device, tiny_strategy, tiny_splits)

    token = CancelToken()

    def trip(update: ProgressUpdate) -> None:
        if update.kind == "batch" and update.epoch == 2 and update.batch == 5:
            token.cancel("test")

    with pytest.raises(TrainingCancelled) as info:
        train_on(
            device,
            tiny_strategy,
            tiny_splits,
            progress_callback=trip,
            cancel_token=token,
            checkpoint_callback=lambda cp: None,
        )
    assert isinstance(info.value.checkpoint, Checkpoint)
    cp = checkpoint_from_bytes(checkpoint_to_bytes(info.value.checkpoint))
    other = fresh_model(tiny_strategy, tiny_splits.x_train.shape[1], seed=999)
    torch.cuda.manual_seed_all(999)  # disturb the GPU's RNG too: resume must restore it
    resumed, _ = train_on(device, tiny_strategy, tiny_splits, model=other, resume_from=cp)
    assert weights_sha256(resumed.state_dict()) == weights_sha256(full.state_dict())


def test_the_pipeline_runs_on_the_gpu_and_saves_a_model_that_loads_on_cpu(
    tiny_data_dir: Path, tiny_strategies_dir: Path, tmp_path: Path
) -> None:
    pipeline = TrainingPipeline(
        data_dir=tiny_data_dir,
        strategies_dir=tiny_strategies_dir,
        storage=ModelStorage(tmp_path / "models"),
        device_manager=DeviceManager(env={"TRAINBUS_DEVICE": "cuda"}),
    )
    result = pipeline.run(TrainingRequest(strategy="tiny"))
    again = pipeline.run(TrainingRequest(strategy="tiny"))
    assert result.device.type == "cuda" and result.device.capabilities.mixed_precision
    assert result.weights_sha256 == again.weights_sha256
    assert 0.0 <= result.test_metrics["accuracy"] <= 1.0
    loaded = pipeline.storage.load("tiny")  # weights saved from the GPU, loaded on the CPU
    assert next(iter(loaded.model.parameters())).device.type == "cpu"
    assert predict(loaded, np.zeros((2, len(result.feature_names)), np.float32)).shape == (2, 3)
