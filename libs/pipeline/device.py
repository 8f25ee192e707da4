"""DeviceManager: pick the torch device (CUDA > MPS > CPU) and describe what it can do.

`TRAINBUS_DEVICE` overrides the choice (`auto`, `cpu`, `cuda`, `cuda:N`, `mps`); asking for a
device that is not there is an error that says what is available, never a silent CPU fallback.
In auto mode a probe that raises (broken driver, half-installed CUDA) falls back to CPU with a
warning: a worker should still come up and train on CPU.

Every hardware question goes through `DeviceProbes`, so tests can fake any machine without
patching torch internals.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec
import torch

log = logging.getLogger(__name__)

DeviceType = Literal["cuda", "mps", "cpu"]
ENV_VAR = "TRAINBUS_DEVICE"
_OVERRIDE = re.compile(r"^(auto|cpu|mps|cuda(?::(\d+))?)$")


class DeviceError(ValueError):
    """Raised when the requested device is malformed or not present on this machine."""


class DeviceCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    mixed_precision: bool = False
    amp_dtype: Literal["bfloat16", "float16"] | None = None  # autocast dtype when mixed_precision
    total_memory_bytes: int | None = None  # CUDA only
    compute_capability: str | None = None  # CUDA only, e.g. "9.0"


class DeviceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the trainer runs on; msgspec so workers can put it into heartbeats and events."""

    device: str  # torch device string: "cpu", "cuda:0", "mps"
    type: DeviceType
    name: str
    capabilities: DeviceCapabilities = DeviceCapabilities()

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype when mixed precision is on, else None (full fp32)."""
        if not self.capabilities.mixed_precision or self.capabilities.amp_dtype is None:
            return None
        return torch.bfloat16 if self.capabilities.amp_dtype == "bfloat16" else torch.float16


def _cpu_name() -> str:
    import platform

    return platform.processor() or platform.machine() or "cpu"


@dataclass(frozen=True)
class DeviceProbes:
    """The hardware questions, injectable. Defaults ask torch."""

    cuda_available: Callable[[], bool] = torch.cuda.is_available
    cuda_device_count: Callable[[], int] = torch.cuda.device_count
    cuda_name: Callable[[int], str] = torch.cuda.get_device_name
    cuda_total_memory: Callable[[int], int] = lambda i: (
        torch.cuda.get_device_properties(i).total_memory
    )
    cuda_capability: Callable[[int], tuple[int, int]] = torch.cuda.get_device_capability
    cuda_bf16_supported: Callable[[], bool] = torch.cuda.is_bf16_supported
    mps_available: Callable[[], bool] = lambda: bool(
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    )
    cpu_name: Callable[[], str] = _cpu_name


CPU_INFO_NAME = "cpu"


class DeviceManager:
    """Resolve the device once per call of `select()`; cheap enough to call per job."""

    def __init__(
        self,
        *,
        probes: DeviceProbes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.probes = probes or DeviceProbes()
        self._env = os.environ if env is None else env

    def requested(self) -> str:
        value = self._env.get(ENV_VAR, "").strip().lower()
        return value or "auto"

    def select(self, requested: str | None = None) -> DeviceInfo:
        """The device to train on: `requested` (or TRAINBUS_DEVICE, or auto)."""
        want = (requested or self.requested()).strip().lower()
        match = _OVERRIDE.match(want)
        if match is None:
            raise DeviceError(
                f"{ENV_VAR}={want!r} is not a device: use auto, cpu, cuda, cuda:N or mps"
            )
        if want == "auto":
            return self._auto()
        if want == "cpu":
            return self._cpu()
        if want == "mps":
            if not self._probe_for_override("mps", self.probes.mps_available):
                raise DeviceError(f"{ENV_VAR}=mps but MPS is not available on this machine")
            return self._mps()
        # cuda / cuda:N
        index = int(match.group(2)) if match.group(2) is not None else 0
        if not self._probe_for_override("cuda", self.probes.cuda_available):
            raise DeviceError(f"{ENV_VAR}={want} but CUDA is not available on this machine")
        count = self._probe_for_override("cuda", self.probes.cuda_device_count)
        if index >= count:
            raise DeviceError(
                f"{ENV_VAR}={want} but this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1})"
            )
        try:
            return self._cuda(index)
        except Exception as exc:
            raise DeviceError(
                f"{ENV_VAR}={want} but probing it failed: {type(exc).__name__}: {exc}"
            ) from exc

    # --- auto: CUDA > MPS > CPU, a probe error falls through to CPU ---------------------------

    def _auto(self) -> DeviceInfo:
        try:
            if self.probes.cuda_available() and self.probes.cuda_device_count() > 0:
                return self._cuda(0)
            if self.probes.mps_available():
                return self._mps()
        except Exception as exc:  # any driver/probe failure: train on CPU rather than not at all
            log.warning(
                "device probe failed (%s: %s); falling back to CPU", type(exc).__name__, exc
            )
            return self._cpu()
        return self._cpu()

    def _probe_for_override(self, what: str, probe: Callable[[], object]) -> int:
        try:
            return int(probe())  # type: ignore[call-overload]
        except Exception as exc:
            raise DeviceError(
                f"{ENV_VAR} asks for {what} but probing it failed: {type(exc).__name__}: {exc}"
            ) from exc

    # --- builders ----------------------------------------------------------------------------

    def _cpu(self) -> DeviceInfo:
        try:
            name = self.probes.cpu_name()
        except Exception:
            name = CPU_INFO_NAME
        return DeviceInfo(device="cpu", type="cpu", name=name)

    def _mps(self) -> DeviceInfo:
        # Mixed precision stays off on MPS: autocast there is incomplete and GradScaler
        # unsupported in the torch versions we pin.
        return DeviceInfo(device="mps", type="mps", name="Apple MPS")

    def _cuda(self, index: int) -> DeviceInfo:
        name = self.probes.cuda_name(index)
        memory = self.probes.cuda_total_memory(index)
        major, minor = self.probes.cuda_capability(index)
        # bf16 needs no loss scaling; fp16 (pre-Ampere) does, the trainer adds a GradScaler.
        bf16 = bool(self.probes.cuda_bf16_supported())
        caps = DeviceCapabilities(
            mixed_precision=True,
            amp_dtype="bfloat16" if bf16 else "float16",
            total_memory_bytes=int(memory),
            compute_capability=f"{major}.{minor}",
        )
        return DeviceInfo(device=f"cuda:{index}", type="cuda", name=name, capabilities=caps)


def cpu_device() -> DeviceInfo:
    """The CPU DeviceInfo without probing anything (tests, benches, inference)."""
    return DeviceManager(env={})._cpu()
