"""Trained models, wherever they are: the local model storage and the bus.

A model trained through the bus is named by its job's `completed` event (strategy,
`<tf>_v<N>`, the trainer's local path, the object-store copy and its SHA-256). A model can also
sit only on this machine's disk (`trainbus pipeline run`). The catalog merges both:

- listing: completed jobs (from KV) plus the version directories under the models dir;
- a model is addressed as `<strategy>/<version>` (`1h_v3`), or `<strategy>/<job_id>` when two
  trainers on different machines produced the same version number (each has its own disk);
- download: the archive built from the local directory when it is the same model (archives
  are deterministic, so the SHA-256 in the event decides), else the object-store copy.

Everything here goes through the torch-free storage layout (libs/pipeline/storage/layout.py):
listing, reading the JSON files, building and reading archives; no model is ever built. Both
edges use it: the HTTP API (/api/v1/models, the report pages) and `trainbus models`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Struct

from libs.events.errors import ModelNotFound, ObjectNotFound, ObjectStoreError
from libs.events.fold import JobState, fold_all
from libs.events.follow import read_job_log, state_from_log
from libs.events.models import fetch_model
from libs.events.projector import load_projection
from libs.events.schema import ModelRef
from libs.events.subjects import is_valid_job_id
from libs.pipeline.storage.layout import (
    METADATA_FILE,
    METRICS_FILE,
    ModelLayout,
    parse_version_dir,
)
from libs.pipeline.storage.layout import (
    ModelRef as LocalModel,  # a version directory (the bus's ModelRef names the object too)
)
from libs.pipeline.types import is_strategy_name

if TYPE_CHECKING:
    from libs.events.bus import Bus

__all__ = ["Archive", "ModelCatalog", "ModelDetail", "ModelInfo"]


class ModelInfo(Struct, frozen=True, kw_only=True):
    """One trained model. `version` is `<timeframe>_v<N>` as in the model storage layout;
    `download` is the HTTP API's path to its archive."""

    strategy: str
    version: str
    timeframe: str | None = None
    job_id: str | None = None
    local: bool = False
    local_path: str | None = None
    object_name: str | None = None
    sha256: str | None = None
    created_at: float | None = None
    test_metrics: dict[str, Any] = {}
    download: str = ""


class ModelDetail(Struct, frozen=True, kw_only=True):
    model: ModelInfo
    metadata: dict[str, Any] = {}
    metrics: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Archive:
    filename: str
    data: bytes
    source: str  # "disk" or "object store"


class ModelCatalog:
    def __init__(self, bus: Bus | None, models_dir: Path) -> None:
        self.bus = bus
        self.models_dir = models_dir

    async def models(self, *, strategy: str | None = None) -> list[ModelInfo]:
        """Newest first: bus models by completion time, then local-only ones by mtime."""
        from_jobs = await self._from_jobs()
        local = await asyncio.to_thread(_scan_local, self.models_dir)
        merged: list[ModelInfo] = []
        seen_local: set[str] = set()
        for info in from_jobs:
            disk = local.get((info.strategy, info.version))
            if disk is not None and _same_path(disk.local_path, info.local_path):
                seen_local.add(f"{info.strategy}/{info.version}")
                info = _with(info, local=True, local_path=disk.local_path)
            merged.append(info)
        for (name, version), info in sorted(local.items(), key=lambda kv: -(kv[1].created_at or 0)):
            if f"{name}/{version}" not in seen_local:
                merged.append(info)
        if strategy is not None:
            merged = [m for m in merged if m.strategy == strategy]
        return merged

    async def get(self, strategy: str, version: str) -> ModelDetail:
        info = await self._find(strategy, version)
        metadata: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        if info.local and info.local_path:
            metadata, metrics = await asyncio.to_thread(_read_local_json, Path(info.local_path))
        elif info.object_name:
            files = await self._archive_json(info)
            metadata, metrics = files
        return ModelDetail(model=info, metadata=metadata, metrics=metrics)

    async def archive(self, strategy: str, version: str) -> Archive:
        info = await self._find(strategy, version)
        filename = f"{info.strategy}-{info.version}.tar.gz"
        if info.local and info.local_path:
            data = await asyncio.to_thread(_local_archive, info)
            if info.sha256 is None or _sha256(data) == info.sha256:
                return Archive(filename, data, "disk")
        if info.object_name and self.bus is not None:
            data = await self._fetch(info)
            return Archive(filename, data, "object store")
        raise ModelNotFound(f"model {strategy}/{version} has no readable copy here")

    # --- internals ----------------------------------------------------------------------------

    async def _find(self, strategy: str, version: str) -> ModelInfo:
        for info in await self.models(strategy=strategy):
            if version in (info.version, info.job_id):
                return info
        logged = await self._from_log(version)
        if logged is not None and logged.strategy == strategy:
            return logged
        raise ModelNotFound(f"no model {strategy}/{version}", field="version")

    async def _from_log(self, job_id: str) -> ModelInfo | None:
        """The model of a job the projection has not caught up with yet, from the job's log
        folded as the projector folds it: the live stream (follow.py) folds the log itself, so
        a page can ask for a model a flush before the projector has written the job."""
        if self.bus is None or not is_valid_job_id(job_id):
            return None
        queued = await state_from_log(self.bus, job_id)
        if queued is None:
            return None
        log = await read_job_log(self.bus, job_id, command_seq=queued.command_seq)
        state = fold_all(log).get(job_id)
        if state is None or state.status != "completed" or state.model is None:
            return None
        return _from_job(state)

    async def _from_jobs(self) -> list[ModelInfo]:
        if self.bus is None or self.bus.jobs is None:
            return []
        projection = await load_projection(self.bus.js, self.bus.names.jobs_bucket)
        done = [s for s in projection.states.values() if s.status == "completed" and s.model]
        done.sort(key=lambda s: (s.finished_at or 0.0, s.last_seq), reverse=True)
        return [_from_job(s) for s in done]

    async def _fetch(self, info: ModelInfo) -> bytes:
        assert self.bus is not None
        ref = ModelRef(strategy=info.strategy, version=info.version,
                       object_name=info.object_name, sha256=info.sha256)
        try:
            return await fetch_model(self.bus, ref)
        except ObjectNotFound:
            raise ModelNotFound(
                f"model {info.strategy}/{info.version}: object {info.object_name} is gone"
            ) from None
        except ObjectStoreError as exc:
            raise ModelNotFound(f"model {info.strategy}/{info.version}: {exc}") from None

    async def _archive_json(self, info: ModelInfo) -> tuple[dict[str, Any], dict[str, Any]]:
        data = await self._fetch(info)
        return await asyncio.to_thread(_json_from_archive, data)


def _from_job(state: JobState) -> ModelInfo:
    model = state.model
    assert model is not None
    parsed = parse_version_dir(model.version)
    return ModelInfo(
        strategy=model.strategy,
        version=model.version,
        timeframe=parsed[0] if parsed else None,
        job_id=state.job_id,
        local=False,
        local_path=model.local_path,
        object_name=model.object_name,
        sha256=model.sha256,
        created_at=state.finished_at,
        test_metrics=dict(state.test_metrics),
        download=f"/api/v1/models/{model.strategy}/{state.job_id}/download",
    )


def _scan_local(base: Path) -> dict[tuple[str, str], ModelInfo]:
    found: dict[tuple[str, str], ModelInfo] = {}
    if not base.is_dir():
        return found
    for strategy_dir in base.iterdir():
        if not strategy_dir.is_dir() or not is_strategy_name(strategy_dir.name):
            continue
        for version_dir in strategy_dir.iterdir():
            parsed = parse_version_dir(version_dir.name)
            meta_path = version_dir / METADATA_FILE
            if parsed is None or not meta_path.is_file():
                continue  # temp dirs of a save in progress have no final name
            metrics: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                metrics = json.loads((version_dir / METRICS_FILE).read_text())
            test = metrics.get("test") if isinstance(metrics, dict) else None
            found[(strategy_dir.name, version_dir.name)] = ModelInfo(
                strategy=strategy_dir.name,
                version=version_dir.name,
                timeframe=parsed[0],
                local=True,
                local_path=str(version_dir),
                created_at=meta_path.stat().st_mtime,
                test_metrics={k: v for k, v in (test or {}).items()
                              if isinstance(v, int | float) or v is None},
                download=f"/api/v1/models/{strategy_dir.name}/{version_dir.name}/download",
            )
    return found


def _read_local_json(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    def read(name: str) -> dict[str, Any]:
        try:
            value = json.loads((path / name).read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    return read(METADATA_FILE), read(METRICS_FILE)


def _json_from_archive(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    _, files = ModelLayout(Path(".")).read_archive(data)  # checked: hashes, paths, sizes
    metadata, metrics = json.loads(files[METADATA_FILE]), json.loads(files[METRICS_FILE])
    return (metadata if isinstance(metadata, dict) else {},
            metrics if isinstance(metrics, dict) else {})


def _local_archive(info: ModelInfo) -> bytes:
    assert info.local_path is not None
    path = Path(info.local_path)
    parsed = parse_version_dir(path.name)
    assert parsed is not None
    ref = LocalModel(strategy=info.strategy, timeframe=parsed[0], version=parsed[1],
                     path=str(path))
    return ModelLayout(path.parent.parent).to_archive(ref)


def _same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _with(info: ModelInfo, **changes: Any) -> ModelInfo:
    return msgspec.structs.replace(info, **changes)
