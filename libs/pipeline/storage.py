"""ModelStorage: trained models on disk, as one directory per version, and as one archive.

Layout (base = `TRAINBUS_MODELS_DIR`, default `./models`):

    <base>/<strategy>/<tf>_v<N>/model.safetensors   weights (CPU tensors; safetensors, no pickle)
                                config.yaml         the resolved strategy, extras included
                                features.json       ordered feature names, timeframes, lags, outputs
                                metrics.json        history + test metrics
                                metadata.json       reproducibility manifest + sha256 of each file
                                report.html         curves, confusion matrix, manifest (a view:
                                                    not hashed, not archived; report.py)
    <base>/<strategy>/<tf>_latest                   pointer: a small JSON file {"version": N, ...}

The `_latest` pointer is a regular file, not a symlink: symlinks need privileges on Windows and
do not survive every archive or object store. Readers treat it as a hint and fall back to
scanning the `_vN` directories.

Atomicity: a save writes everything into a hidden temp directory beside the final one, fsyncs,
then renames it to `<tf>_v<N>`. A rename onto an existing (non-empty) directory fails on every
OS, so the loser of a race simply retries with N+1: two concurrent saves (threads or processes)
never share a directory, and nobody ever sees a half-written version.

Loading parses JSON/YAML and safetensors only, verifies every file against the sha256 in
metadata.json (a changed file is refused), and refuses a model whose feature list differs from
what its config builds today. Nothing on the load path can execute code.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from libs.pipeline import config as strategy_config
from libs.pipeline.config import StrategyConfig
from libs.pipeline.model import build_model, parameter_count
from libs.pipeline.report import REPORT_FILE, render_report
from libs.pipeline.types import TIMEFRAMES, is_strategy_name

ENV_VAR = "TRAINBUS_MODELS_DIR"
FORMAT = "trainbus-model"
FORMAT_VERSION = 1

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
FEATURES_FILE = "features.json"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
HASHED_FILES: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE, FEATURES_FILE, METRICS_FILE)
ALL_FILES: tuple[str, ...] = (*HASHED_FILES, METADATA_FILE)
# report.html (libs/pipeline/report.py) is also written into every version directory: a view
# rendered from metadata.json + metrics.json, so it is not hashed (it shows the hashes), not
# archived, and re-rendered whenever an archive is installed.

log = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^(?P<tf>[0-9]+[a-z])_v(?P<n>[1-9][0-9]{0,8})$")


class StorageError(Exception):
    """Root of the storage errors."""


class ModelNotFoundError(StorageError, LookupError):
    """Raised when no saved model matches the strategy/timeframe/version asked for."""


class IntegrityError(StorageError):
    """Raised when a model's files do not match the sha256 recorded in its metadata.json."""


class FeatureMismatchError(StorageError):
    """Raised when a model's features differ from what its config builds, or from the input."""


class ArchiveError(StorageError):
    """Raised when archive bytes are malformed, oversized, or try to escape their directory."""


class ModelRef(msgspec.Struct, frozen=True, kw_only=True):
    strategy: str
    timeframe: str
    version: int
    path: str  # the version directory ("" for a model loaded from archive bytes only)

    @property
    def name(self) -> str:
        return f"{self.strategy}/{self.timeframe}_v{self.version}"


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


def default_models_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or "models")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A hash of the weights themselves (names, dtypes, shapes, bytes), format-independent."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _json_bytes(obj: Any) -> bytes:
    # msgspec writes NaN/inf as null: metrics.json stays valid JSON even if a loss diverged.
    return msgspec.json.format(msgspec.json.encode(obj), indent=2) + b"\n"


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


def _check_name(strategy: str) -> str:
    if not is_strategy_name(strategy):
        raise ModelNotFoundError(f"not a strategy name: {strategy!r}")
    return strategy


def _check_timeframe(timeframe: str) -> str:
    if timeframe not in TIMEFRAMES:
        raise ModelNotFoundError(f"not a timeframe: {timeframe!r} (one of {', '.join(TIMEFRAMES)})")
    return timeframe


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes the rename durable on POSIX; Windows cannot open directories.
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


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


def _verify_hashes(files: Mapping[str, bytes], metadata: Mapping[str, Any], where: str) -> None:
    listed = metadata.get("files")
    if not isinstance(listed, dict):
        raise IntegrityError(f"{where}: metadata.json has no file hashes")
    for name in HASHED_FILES:
        entry = listed.get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise IntegrityError(f"{where}: metadata.json does not list {name}")
        if name not in files:
            raise IntegrityError(f"{where}: {name} is missing")
        if sha256_bytes(files[name]) != entry["sha256"]:
            raise IntegrityError(
                f"{where}: {name} was modified (sha256 differs from metadata.json)"
            )


def _expected_feature_names(cfg: StrategyConfig, timeframes: Sequence[str]) -> list[str]:
    from libs.pipeline import features as features_mod

    return list(features_mod.feature_names(cfg, list(timeframes)))


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
    _verify_hashes(files, metadata, where)

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
        model.load_state_dict(state, strict=True)
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


# --- storage ----------------------------------------------------------------------------------


class ModelStorage:
    """Versioned model directories under `base_dir` (default: $TRAINBUS_MODELS_DIR or ./models)."""

    max_archive_bytes: int = 1 << 30  # compressed input
    max_file_bytes: int = 1 << 30  # one member, uncompressed
    max_total_bytes: int = 2 << 30  # all members, uncompressed
    max_members: int = 16

    def __init__(self, base_dir: Path | str | None = None) -> None:
        self.base_dir = Path(base_dir) if base_dir is not None else default_models_dir()

    # --- naming -------------------------------------------------------------------------------

    def strategy_dir(self, strategy: str) -> Path:
        return self.base_dir / _check_name(strategy)

    def version_dir(self, strategy: str, timeframe: str, version: int) -> Path:
        return self.strategy_dir(strategy) / f"{_check_timeframe(timeframe)}_v{int(version)}"

    def _pointer(self, strategy: str, timeframe: str) -> Path:
        return self.strategy_dir(strategy) / f"{timeframe}_latest"

    def list_versions(self, strategy: str, timeframe: str | None = None) -> list[ModelRef]:
        """Complete saved versions, oldest first (temp dirs are hidden and never listed)."""
        root = self.strategy_dir(strategy)
        refs = []
        if root.is_dir():
            for entry in root.iterdir():
                m = _VERSION_DIR.match(entry.name)
                if m and entry.is_dir() and (timeframe is None or m["tf"] == timeframe):
                    refs.append(
                        ModelRef(
                            strategy=strategy,
                            timeframe=m["tf"],
                            version=int(m["n"]),
                            path=str(entry),
                        )
                    )
        return sorted(refs, key=lambda r: (r.timeframe, r.version))

    def resolve(
        self, strategy: str, version: int | str | None = None, timeframe: str | None = None
    ) -> ModelRef:
        """The ModelRef for version N, or the latest (None / 'latest')."""
        if timeframe is None:
            tfs = sorted({r.timeframe for r in self.list_versions(strategy)})
            if not tfs:
                raise ModelNotFoundError(
                    f"no saved model for strategy {strategy!r} in {self.base_dir}"
                )
            if len(tfs) > 1:
                raise ModelNotFoundError(
                    f"strategy {strategy!r} has models for several timeframes ({', '.join(tfs)}): "
                    "say which one"
                )
            timeframe = tfs[0]
        _check_timeframe(timeframe)
        if version is None or version == "latest":
            number = self._latest_version(strategy, timeframe)
            if number is None:
                raise ModelNotFoundError(
                    f"no saved model {strategy}/{timeframe} in {self.base_dir}"
                )
        else:
            try:
                number = int(version)
            except ValueError as exc:
                raise ModelNotFoundError(f"not a version: {version!r}") from exc
        path = self.version_dir(strategy, timeframe, number)
        if not path.is_dir():
            raise ModelNotFoundError(f"no saved model {strategy}/{timeframe}_v{number}")
        return ModelRef(strategy=strategy, timeframe=timeframe, version=number, path=str(path))

    def _scan_latest(self, strategy: str, timeframe: str) -> int | None:
        versions = [r.version for r in self.list_versions(strategy, timeframe)]
        return max(versions) if versions else None

    def _latest_version(self, strategy: str, timeframe: str) -> int | None:
        try:
            pointed = int(json.loads(self._pointer(strategy, timeframe).read_bytes())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            pointed = None  # missing or damaged pointer: the directories are the truth
        if pointed is not None and self.version_dir(strategy, timeframe, pointed).is_dir():
            return pointed
        return self._scan_latest(strategy, timeframe)

    def _update_latest(self, strategy: str, timeframe: str) -> None:
        """Point `<tf>_latest` at the highest version, converging under concurrent saves.

        Write, re-scan, rewrite if a newer version appeared meanwhile: the last writer always
        confirms after writing, so the pointer ends at the maximum.
        """
        pointer = self._pointer(strategy, timeframe)
        written = None
        for _ in range(100):
            newest = self._scan_latest(strategy, timeframe)
            if newest is None or newest == written:
                return
            tmp = pointer.with_name(f".{pointer.name}.{uuid.uuid4().hex}")
            tmp.write_bytes(_json_bytes({"version": newest, "path": f"{timeframe}_v{newest}"}))
            os.replace(tmp, pointer)  # atomic on POSIX and Windows
            written = newest

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
        _check_timeframe(timeframe)
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        num_outputs = int(getattr(model, "num_outputs", 0) or state["output.weight"].shape[0])
        regression = num_outputs == 1
        files: dict[str, bytes] = {
            MODEL_FILE: st_save(state, metadata={"format": "pt"}),
            CONFIG_FILE: strategy_config.dump_yaml(strategy).encode(),
            FEATURES_FILE: _json_bytes(
                {
                    "feature_names": list(feature_names),
                    "feature_count": len(feature_names),
                    "timeframes": list(timeframes),
                    "base_timeframe": timeframe,
                    "lookback_periods": strategy.model.features.lookback_periods,
                    "output_type": "regression" if regression else "classification",
                    "num_outputs": num_outputs,
                    "class_names": [] if regression else ["BUY", "HOLD", "SELL"][:num_outputs],
                    "requires_scaling": False,  # fuzzy memberships are already in [0, 1]
                }
            ),
            METRICS_FILE: _json_bytes(metrics),
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
                "hidden_layers": list(strategy.model.architecture.hidden_layers),
                "activation": strategy.model.architecture.activation,
                "dropout": strategy.model.architecture.dropout,
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
        files[METADATA_FILE] = _json_bytes(manifest)
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
                _write_file(tmp / name, data)
            _fsync_dir(tmp)
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
                _fsync_dir(strategy_dir)
                break
            else:  # pragma: no cover - would need 10k concurrent savers
                raise StorageError(f"could not allocate a version for {strategy}/{timeframe}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._update_latest(strategy, timeframe)
        return ModelRef(strategy=strategy, timeframe=timeframe, version=candidate, path=str(final))

    # --- load ---------------------------------------------------------------------------------

    def read_files(self, ref: ModelRef) -> dict[str, bytes]:
        path = (
            Path(ref.path)
            if ref.path
            else self.version_dir(ref.strategy, ref.timeframe, ref.version)
        )
        files = {}
        for name in ALL_FILES:
            with contextlib.suppress(FileNotFoundError):
                files[name] = (path / name).read_bytes()
        return files

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

    # --- archives (bytes for an object store) -------------------------------------------------

    def to_archive(self, ref: ModelRef) -> bytes:
        """The version directory as a deterministic .tar.gz (`<strategy>/<tf>_v<N>/<file>`)."""
        files = self.read_files(ref)
        missing = [n for n in ALL_FILES if n not in files]
        if missing:
            raise IntegrityError(f"{ref.name}: cannot archive, missing {missing}")
        buf = io.BytesIO()
        # mtime=0 everywhere: the same model always gives the same bytes (dedupe, hashing).
        with (
            gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in ALL_FILES:
                data = files[name]
                info = tarfile.TarInfo(f"{ref.strategy}/{ref.timeframe}_v{ref.version}/{name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def _read_archive(self, data: bytes) -> tuple[ModelRef, dict[str, bytes]]:
        """Parse and check an archive in memory. Only regular files with the expected names
        under one `<strategy>/<tf>_v<N>/` are accepted; links, devices, absolute or `..` paths,
        unknown names, duplicates and oversized members are refused before anything is written."""
        if len(data) > self.max_archive_bytes:
            raise ArchiveError(f"archive is {len(data)} bytes, more than {self.max_archive_bytes}")
        files: dict[str, bytes] = {}
        prefix: tuple[str, str, int] | None = None
        total = 0
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for count, member in enumerate(tar, start=1):
                    if count > self.max_members:
                        raise ArchiveError(f"archive has more than {self.max_members} members")
                    if not member.isreg():
                        raise ArchiveError(f"archive member {member.name!r} is not a regular file")
                    parts = member.name.split("/")
                    if (
                        len(parts) != 3
                        or member.name.startswith("/")
                        or "\\" in member.name
                        or any(p in ("", ".", "..") for p in parts)
                    ):
                        raise ArchiveError(f"archive member {member.name!r} has a bad path")
                    strategy, version_dir, name = parts
                    m = _VERSION_DIR.match(version_dir)
                    if not is_strategy_name(strategy) or m is None or m["tf"] not in TIMEFRAMES:
                        raise ArchiveError(f"archive member {member.name!r} has a bad path")
                    here = (strategy, m["tf"], int(m["n"]))
                    if prefix is None:
                        prefix = here
                    elif here != prefix:
                        raise ArchiveError("archive holds more than one model directory")
                    if name not in ALL_FILES or name in files:
                        raise ArchiveError(f"archive member {member.name!r} is unexpected")
                    if member.size > self.max_file_bytes:
                        raise ArchiveError(f"archive member {member.name!r} is too large")
                    total += member.size
                    if total > self.max_total_bytes:
                        raise ArchiveError("archive expands to more than the size cap")
                    fh = tar.extractfile(member)
                    assert fh is not None  # isreg() members always have data
                    files[name] = fh.read(self.max_file_bytes + 1)
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ArchiveError(f"not a model archive: {exc}") from exc
        if prefix is None:
            raise ArchiveError("archive is empty")
        strategy, timeframe, version = prefix
        missing = [n for n in ALL_FILES if n not in files]
        if missing:
            raise ArchiveError(f"archive is missing {missing}")
        ref = ModelRef(strategy=strategy, timeframe=timeframe, version=version, path="")
        try:
            metadata = json.loads(files[METADATA_FILE])
        except ValueError as exc:
            raise IntegrityError(f"{ref.name}: metadata.json is not JSON ({exc})") from exc
        _verify_hashes(files, metadata, ref.name)
        if metadata.get("strategy") != strategy or metadata.get("timeframe") != timeframe:
            raise ArchiveError(f"archive path {ref.name} disagrees with its metadata.json")
        return ref, files

    def load_archive(self, data: bytes, *, verify_features: bool = True) -> LoadedModel:
        """A LoadedModel straight from archive bytes, without touching the disk."""
        ref, files = self._read_archive(data)
        return _build_loaded(files, ref, verify_features=verify_features)

    def from_archive(self, data: bytes) -> ModelRef:
        """Install an archive here. Keeps its version number when free; an identical model
        already installed under that number is reused; otherwise the next free number is taken."""
        src, files = self._read_archive(data)
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


@torch.no_grad()
def predict(loaded: LoadedModel, features: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """Class probabilities (n, classes) for a classifier, predicted returns (n,) for regression.

    `features` columns must be in `loaded.feature_names` order. Softmax happens here only: the
    model itself emits logits.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(loaded.feature_names):
        raise FeatureMismatchError(
            f"expected (rows, {len(loaded.feature_names)}) features, got {tuple(x.shape)}"
        )
    model = loaded.model
    model.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(x))
    outs = []
    for start in range(0, len(tensor), chunk):
        out = model(tensor[start : start + chunk]).float()
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
