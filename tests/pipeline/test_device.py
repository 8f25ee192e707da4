"""DeviceManager: every branch through injected probes; the CPU path for real."""

from __future__ import annotations

import logging
from typing import TypedDict, Unpack

import pytest
import torch

from libs.pipeline.device import DeviceError, DeviceManager, DeviceProbes, cpu_device


class FakeProbes(TypedDict, total=False):
    """The knobs of `fake`, for the tests that pass them on as keywords."""

    cuda: bool
    count: int
    bf16: bool
    mps: bool
    cuda_raises: bool


def fake(
    *,
    cuda: bool = False,
    count: int = 1,
    bf16: bool = True,
    mps: bool = False,
    cuda_raises: bool = False,
) -> DeviceProbes:
    def cuda_available() -> bool:
        if cuda_raises:
            raise RuntimeError("CUDA driver initialization failed")
        return cuda

    return DeviceProbes(
        cuda_available=cuda_available,
        cuda_device_count=lambda: count if cuda else 0,
        cuda_name=lambda i: f"Fake GPU {i}",
        cuda_total_memory=lambda i: 80 * 2**30,
        cuda_capability=lambda i: (9, 0) if bf16 else (7, 5),
        cuda_bf16_supported=lambda: bf16,
        mps_available=lambda: mps,
        cpu_name=lambda: "Fake CPU",
    )


def manager(env: str | None = None, **kw: Unpack[FakeProbes]) -> DeviceManager:
    return DeviceManager(probes=fake(**kw), env={} if env is None else {"TRAINBUS_DEVICE": env})


def test_priority_cuda_then_mps_then_cpu() -> None:
    assert manager(cuda=True, mps=True).select().device == "cuda:0"
    assert manager(mps=True).select().device == "mps"
    assert manager().select().device == "cpu"


def test_cuda_capabilities_bf16_and_fp16() -> None:
    info = manager(cuda=True).select()
    assert info.type == "cuda" and info.name == "Fake GPU 0"
    assert info.capabilities.mixed_precision and info.capabilities.amp_dtype == "bfloat16"
    assert info.capabilities.total_memory_bytes == 80 * 2**30
    assert info.autocast_dtype == torch.bfloat16
    old = manager(cuda=True, bf16=False).select()
    assert old.capabilities.amp_dtype == "float16" and old.autocast_dtype == torch.float16


def test_mps_and_cpu_have_no_mixed_precision_or_memory() -> None:
    for info in (manager(mps=True).select(), manager().select()):
        assert not info.capabilities.mixed_precision
        assert info.capabilities.amp_dtype is None and info.capabilities.total_memory_bytes is None
        assert info.autocast_dtype is None


def test_probe_error_falls_back_to_cpu_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        info = manager(cuda_raises=True, mps=True).select()
    assert info.device == "cpu"
    assert "falling back to CPU" in caplog.text


@pytest.mark.parametrize(
    ("env", "kw", "device"),
    [
        ("cpu", {"cuda": True}, "cpu"),
        ("cuda", {"cuda": True}, "cuda:0"),
        ("cuda:1", {"cuda": True, "count": 2}, "cuda:1"),
        ("mps", {"mps": True}, "mps"),
        ("auto", {"mps": True}, "mps"),
        ("", {}, "cpu"),
        (" CUDA ", {"cuda": True}, "cuda:0"),
    ],
)
def test_override(env: str, kw: FakeProbes, device: str) -> None:
    assert manager(env, **kw).select().device == device


@pytest.mark.parametrize(
    ("env", "kw", "message"),
    [
        ("cuda", {}, "CUDA is not available"),
        ("cuda:2", {"cuda": True, "count": 2}, "2 CUDA device(s)"),
        ("mps", {}, "MPS is not available"),
        ("tpu", {}, "not a device"),
        ("cuda", {"cuda_raises": True}, "probing it failed"),
    ],
)
def test_override_absent_device_is_a_clear_error(
    env: str, kw: FakeProbes, message: str
) -> None:
    with pytest.raises(DeviceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        manager(env, **kw).select()


def test_explicit_request_beats_env() -> None:
    assert manager("cuda", cuda=False).select("cpu").device == "cpu"


def test_real_cpu_path() -> None:
    info = DeviceManager(env={"TRAINBUS_DEVICE": "cpu"}).select()
    assert info.device == "cpu" and info.type == "cpu" and info.name
    assert torch.zeros(2, device=info.torch_device).device.type == "cpu"
    assert cpu_device().device == "cpu"


def test_real_auto_matches_torch() -> None:
    info = DeviceManager(env={}).select()
    assert info.type == ("cuda" if torch.cuda.is_available() else info.type)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert info.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_capabilities() -> None:
    info = DeviceManager(env={"TRAINBUS_DEVICE": "cuda"}).select()
    assert info.capabilities.mixed_precision
    assert info.capabilities.total_memory_bytes and info.capabilities.total_memory_bytes > 0
