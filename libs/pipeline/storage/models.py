"""ModelStorage: the model storage with weights (torch, safetensors): save a trained model as a
version directory, load it for inference, install an archive, predict. Layout, naming, the
manifest check and the archive codec are the torch-free libs/pipeline/storage/layout.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from libs.pipeline import strategy as strategy_config
from libs.pipeline.labels import class_names
from libs.pipeline.model import build_model, parameter_count
from libs.pipeline.normalization import (
    InputScaler,
    feature_normalizations,
    scaler_summary,
    with_identity_scalers,
)
from libs.pipeline.report import REPORT_FILE, render_report
from libs.pipeline.storage.layout import (
    CONFIG_FILE,
    FEATURES_FILE,
    FORMAT,
    FORMAT_VERSION,
    HASHED_FILES,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_FILE,
    ArchiveError,
    FeatureMismatchError,
    IntegrityError,
    ModelLayout,
    ModelNotFoundError,
    ModelRef,
    StorageError,
    check_timeframe,
    fsync_dir,
    json_bytes,
    sha256_bytes,
    verify_hashes,
    write_file,
)
from libs.pipeline.strategy import StrategyConfig
from libs.pipeline.windows import Windows, step_names

log = logging.getLogger(__name__)

__all__ = [
    "ArchiveError",
    "FeatureMismatchError",
    "IntegrityError",
    "LoadedModel",
    "ModelNotFoundError",
    "ModelRef",
    "ModelStorage",
    "StorageError",
    "predict",
    "weights_sha256",
]


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    """A model ready for inference: eval mode, CPU, plus everything saved beside it."""

    model: nn.Module
    feature_names: list[str]
    config: StrategyConfig
    metadata: dict[str, Any]
    metrics: dict[str, Any]
    features: dict[str, Any]
    ref: ModelRef

    @property
    def regression(self) -> bool:
        return self.features.get("output_type") == "regression"


# --- helpers ----------------------------------------------------------------------------------


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A hash of the weights themselves (names, dtypes, shapes, bytes), format-independent."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from importlib import metadata

    def version_of(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    import platform

    return {
        "trainbus": version_of("trainbus"),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "pandas": version_of("pandas"),
        "TA-Lib": version_of("TA-Lib"),
        "safetensors": version_of("safetensors"),
        "msgspec": version_of("msgspec"),
    }


def _with_report(files: Mapping[str, bytes]) -> Mapping[str, bytes]:
    """`files` plus report.html. A model is never lost for want of its report."""
    try:
        page = render_report(json.loads(files[METADATA_FILE]), json.loads(files[METRICS_FILE]))
    except Exception:  # a view only: log it, save the model
        log.warning("could not render %s; saving the model without it", REPORT_FILE,
                    exc_info=True)
        return files
    return {**files, REPORT_FILE: page.encode()}


# --- building a LoadedModel from file bytes (shared by disk and archive paths) ---------------


def _expected_feature_names(cfg: StrategyConfig, timeframes: Sequence[str]) -> list[str]:
    from libs.pipeline import features as features_mod

    names = features_mod.feature_names(cfg, list(timeframes))
    length = strategy_config.sequence_length_of(cfg.model)
    # A recurrent model is saved with its per-step names: its lags are the window's steps.
    return list(names if length is None else step_names(names, length))


def _build_loaded(
    files: Mapping[str, bytes], ref: ModelRef, *, verify_features: bool = True
) -> LoadedModel:
    where = ref.name
    try:
        metadata = json.loads(files[METADATA_FILE])
    except KeyError as exc:
        raise IntegrityError(f"{where}: metadata.json is missing") from exc
    except ValueError as exc:
        raise IntegrityError(f"{where}: metadata.json is not JSON ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise IntegrityError(f"{where}: not a trainbus model (format {metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise IntegrityError(f"{where}: unsupported model format v{metadata.get('format_version')}")
    verify_hashes(files, metadata, where)

    features = json.loads(files[FEATURES_FILE])
    metrics = json.loads(files[METRICS_FILE])
    try:
        cfg = strategy_config.parse_strategy(
            files[CONFIG_FILE].decode(), source=f"{where}/{CONFIG_FILE}"
        )
    except ValueError as exc:  # StrategyError: the saved config no longer parses
        raise FeatureMismatchError(f"{where}: saved config.yaml does not load: {exc}") from exc

    names = list(features.get("feature_names", []))
    if verify_features:
        try:
            expected = _expected_feature_names(cfg, features.get("timeframes") or [ref.timeframe])
        except ValueError as exc:
            raise FeatureMismatchError(f"{where}: cannot rebuild its feature list: {exc}") from exc
        if expected != names:
            missing = [n for n in expected if n not in names][:5]
            extra = [n for n in names if n not in expected][:5]
            raise FeatureMismatchError(
                f"{where}: saved features ({len(names)}) differ from what its config builds "
                f"({len(expected)}); missing {missing}, unexpected {extra}"
                + ("; same names, different order" if not missing and not extra else "")
            )

    state = st_load(files[MODEL_FILE])
    model = build_model(len(names), int(features["num_outputs"]), cfg.model)
    try:
        model.load_state_dict(with_identity_scalers(state, model), strict=True)
    except RuntimeError as exc:
        raise FeatureMismatchError(
            f"{where}: weights do not fit the config's model: {exc}"
        ) from exc
    model.eval()
    return LoadedModel(
        model=model,
        feature_names=names,
        config=cfg,
        metadata=metadata,
        metrics=metrics,
        features=features,
        ref=ref,
    )


def _normalization_entry(
    model: nn.Module, strategy: StrategyConfig, names: Sequence[str], timeframes: Sequence[str]
) -> dict[str, Any]:
    """features.json's `requires_scaling` and, when true, `normalization`: per feature name its
    method and the fitted shift and scale the model applies (its input_scaler buffers)."""
    scaler = getattr(model, "input_scaler", None)
    if not isinstance(scaler, InputScaler):
        return {"requires_scaling": False}
    # A recurrent model scales each step: its scaler covers the unlagged features, which
    # come first in feature order.
    width = int(scaler.shift.shape[0])
    methods = feature_normalizations(strategy, list(timeframes))[:width]
    if all(m == "none" for m in methods):
        return {"requires_scaling": False}
    summary = scaler_summary(scaler, methods)
    return {
        "requires_scaling": True,
        "normalization": {
            name: entry
            for name, entry in zip(names[:width], summary["features"], strict=True)
            if entry["method"] != "none"
        },
    }


def _architecture_entry(model: strategy_config.ModelConfig) -> dict[str, Any]:
    """The manifest's architecture keys: the ones this model type reads."""
    arch = model.architecture
    if strategy_config.is_recurrent(model):
        return {"sequence_length": arch.sequence_length, "hidden_size": arch.hidden_size,
                "num_layers": arch.num_layers, "bidirectional": arch.bidirectional,
                "dropout": arch.dropout}
    return {"hidden_layers": list(arch.hidden_layers), "activation": arch.activation,
            "dropout": arch.dropout}


# --- storage ----------------------------------------------------------------------------------


class ModelStorage(ModelLayout):
    """Versioned model directories under `base_dir` (default: $TRAINBUS_MODELS_DIR or ./models),
    with the weights: save, load, archives in and out."""

    # --- save ---------------------------------------------------------------------------------

    def save(
        self,
        model: nn.Module,
        strategy: StrategyConfig,
        *,
        timeframe: str,
        feature_names: Sequence[str],
        timeframes: Sequence[str],
        symbols: Sequence[str],
        metrics: Mapping[str, Any],
        seed: int,
        device: str,
        data_window: Mapping[str, Any] | None = None,
        data_fingerprint: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelRef:
        """Write a new version atomically and return its ref. Weights are saved as CPU tensors."""
        check_timeframe(timeframe)
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        num_outputs = int(getattr(model, "num_outputs", 0) or state["output.weight"].shape[0])
        regression = num_outputs == 1
        files: dict[str, bytes] = {
            MODEL_FILE: st_save(state, metadata={"format": "pt"}),
            CONFIG_FILE: strategy_config.dump_yaml(strategy).encode(),
            FEATURES_FILE: json_bytes(
                {
                    "feature_names": list(feature_names),
                    "feature_count": len(feature_names),
                    "timeframes": list(timeframes),
                    "base_timeframe": timeframe,
                    "lookback_periods": strategy.model.features.lookback_periods,
                    "output_type": "regression" if regression else "classification",
                    "num_outputs": num_outputs,
                    "class_names": list(class_names(strategy.training.labels))[:num_outputs]
                    if not regression else [],
                    # Raw indicator inputs are scaled by the model itself (its input_scaler
                    # buffers); fuzzy memberships are already in [0, 1].
                    **_normalization_entry(model, strategy, feature_names, timeframes),
                }
            ),
            METRICS_FILE: json_bytes(metrics),
        }
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "strategy": strategy.name,
            "strategy_hash": strategy_config.strategy_hash(strategy),
            "timeframe": timeframe,
            "symbols": list(symbols),
            "timeframes": list(timeframes),
            "data_window": dict(data_window or {}),
            "data_fingerprint": data_fingerprint,
            "seed": seed,
            "device": device,
            "model": {
                "type": strategy.model.type,
                "input_dim": len(feature_names),
                "num_outputs": num_outputs,
                **_architecture_entry(strategy.model),
                "parameters": parameter_count(model),
            },
            "weights_sha256": weights_sha256(state),
            "versions": _versions(),
            "created_at": datetime.now(UTC).isoformat(),
            **dict(extra or {}),
            "files": {
                name: {"sha256": sha256_bytes(data), "bytes": len(data)}
                for name, data in files.items()
            },
        }
        files[METADATA_FILE] = json_bytes(manifest)
        ref = self._install(strategy.name, timeframe, files, version=None)
        return ref

    def _install(
        self, strategy: str, timeframe: str, files: Mapping[str, bytes], *, version: int | None
    ) -> ModelRef:
        """Write files into a temp dir, then rename it to the first free `<tf>_v<N>`.

        `version` tries that number first (archive import keeps the source's number if free).
        """
        strategy_dir = self.strategy_dir(strategy)
        strategy_dir.mkdir(parents=True, exist_ok=True)
        tmp = strategy_dir / f".tmp-{timeframe}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for name, data in _with_report(files).items():
                write_file(tmp / name, data)
            fsync_dir(tmp)
            candidate = version
            for _ in range(10_000):
                if candidate is None:
                    latest = self._scan_latest(strategy, timeframe)
                    candidate = (latest or 0) + 1
                final = self.version_dir(strategy, timeframe, candidate)
                try:
                    # Fails if `final` exists with content (EEXIST/ENOTEMPTY on POSIX,
                    # FileExistsError on Windows): someone else took N; try the next one.
                    os.rename(tmp, final)
                except OSError:
                    if not final.exists():
                        raise
                    candidate = None
                    continue
                fsync_dir(strategy_dir)
                break
            else:  # pragma: no cover - would need 10k concurrent savers
                raise StorageError(f"could not allocate a version for {strategy}/{timeframe}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._update_latest(strategy, timeframe)
        return ModelRef(strategy=strategy, timeframe=timeframe, version=candidate, path=str(final))

    def load(
        self,
        strategy: str,
        version: int | str | None = None,
        timeframe: str | None = None,
        *,
        verify_features: bool = True,
    ) -> LoadedModel:
        """A model ready for inference (eval, CPU). Raises ModelNotFoundError, IntegrityError
        (a file changed since save), FeatureMismatchError (features differ from the config's)."""
        ref = self.resolve(strategy, version, timeframe)
        return _build_loaded(self.read_files(ref), ref, verify_features=verify_features)

    def load_archive(self, data: bytes, *, verify_features: bool = True) -> LoadedModel:
        """A LoadedModel straight from archive bytes, without touching the disk."""
        ref, files = self.read_archive(data)
        return _build_loaded(files, ref, verify_features=verify_features)

    def from_archive(self, data: bytes) -> ModelRef:
        """Install an archive here. Keeps its version number when free; an identical model
        already installed under that number is reused; otherwise the next free number is taken."""
        src, files = self.read_archive(data)
        existing = self.version_dir(src.strategy, src.timeframe, src.version)
        if existing.is_dir():
            have = self.read_files(
                ModelRef(
                    strategy=src.strategy,
                    timeframe=src.timeframe,
                    version=src.version,
                    path=str(existing),
                )
            )
            if all(have.get(n) == files[n] for n in HASHED_FILES):
                return ModelRef(
                    strategy=src.strategy,
                    timeframe=src.timeframe,
                    version=src.version,
                    path=str(existing),
                )
            return self._install(src.strategy, src.timeframe, files, version=None)
        return self._install(src.strategy, src.timeframe, files, version=src.version)


# --- inference --------------------------------------------------------------------------------


# torch's CPU matrix product takes another kernel for a handful of rows (up to 10, measured on
# these machines), whose sums round differently: the last bar predicted alone came out 1 ulp
# from the same bar in a prediction of the whole file. Padding a short batch of rows to this
# many keeps each row's output the same however many rows are asked for (measured here from 1
# to 129 rows at any offset). Windows (recurrent models) showed no such difference: unpadded.
_MIN_ROWS: Final = 64


def _forward_padded(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    rows = len(batch)
    if rows < _MIN_ROWS and batch.ndim == 2:
        batch = torch.cat([batch, batch.new_zeros((_MIN_ROWS - rows, *batch.shape[1:]))])
    return model(batch)[:rows].float()


@torch.no_grad()
def predict(
    loaded: LoadedModel, features: np.ndarray | Windows, *, chunk: int = 65536
) -> np.ndarray:
    """Class probabilities (n, classes) for a classifier, predicted returns (n,) for regression.

    `features` columns must be in `loaded.feature_names` order: rows (n, features), or for a
    recurrent model its windows (libs/pipeline/windows.py, or an (n, steps, features) array).
    Softmax happens here only: the model itself emits logits.
    """
    steps = getattr(loaded.model, "sequence_length", None)
    features_width = len(loaded.feature_names)
    tensor: torch.Tensor | Windows
    if isinstance(features, Windows):
        tensor = features
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(np.asarray(features, dtype=np.float32)))
    expected = (steps, features_width) if steps is not None else (features_width,)
    if tuple(tensor.shape[1:]) != expected:
        want = f"(rows, {', '.join(map(str, expected))})"
        raise FeatureMismatchError(f"expected {want} features, got {tuple(tensor.shape)}")
    model = loaded.model
    model.eval()
    outs = []
    for start in range(0, len(tensor), chunk):
        out = _forward_padded(model, tensor[start : start + chunk])
        outs.append(out.squeeze(-1) if loaded.regression else torch.softmax(out, dim=1))
    if not outs:
        width = () if loaded.regression else (int(loaded.features["num_outputs"]),)
        return np.zeros((0, *width), dtype=np.float32)
    return torch.cat(outs).numpy()


__all__ = [
    "ArchiveError",
    "FeatureMismatchError",
    "IntegrityError",
    "LoadedModel",
    "ModelNotFoundError",
    "ModelRef",
    "ModelStorage",
    "StorageError",
    "predict",
    "weights_sha256",
]
