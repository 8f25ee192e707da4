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
listing, reading the JSON files, building and reading archives, removing a version directory;
no model is ever built. Both edges use it: the HTTP API (/api/v1/models, the report pages) and
`trainbus models`. The aliases, the leaderboard's sort and deletion rules are the registry's
(libs/events/registry.py); `compare_models` (the side-by-side rows) and `sort_models` are
here, pure functions of what the catalog read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
from msgspec import Struct

from libs.events.errors import (
    InvalidRequest,
    ModelAmbiguous,
    ModelNotFound,
    ObjectNotFound,
    ObjectStoreError,
)
from libs.events.fold import JobState
from libs.events.follow import state_folded_from_log
from libs.events.models import fetch_model
from libs.events.projector import load_projection
from libs.events.schema import ModelRef
from libs.events.subjects import is_valid_job_id
from libs.pipeline.headline import headline as headline_metrics
from libs.pipeline.storage.layout import (
    METADATA_FILE,
    METRICS_FILE,
    ModelLayout,
    default_models_dir,
    parse_version_dir,
)
from libs.pipeline.storage.layout import (
    ModelRef as LocalModel,  # a version directory (the bus's ModelRef names the object too)
)
from libs.pipeline.types import is_strategy_name

if TYPE_CHECKING:
    from libs.events.bus import Bus

__all__ = ["Archive", "CompareRow", "Comparison", "ModelCatalog", "ModelDetail", "ModelInfo",
           "compare_models", "headline_metrics", "sort_models"]


class ModelInfo(Struct, frozen=True, kw_only=True):
    """One trained model. `version` is `<timeframe>_v<N>` as in the model storage layout;
    `download` is the HTTP API's path to its archive. `test_metrics` holds the flat headline
    numbers (libs/pipeline/evaluate.py `headline`: scores, `baseline_*`, `lift_*`, `backtest_*`,
    `buy_and_hold_*`); `aliases` the registry's aliases pointing at this version (filled in by
    libs/events/registry.py; empty when NATS was not asked)."""

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
    aliases: list[str] = []

    @property
    def name(self) -> str:
        return f"{self.strategy}/{self.version}"


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
    def __init__(self, bus: Bus | None, models_dir: Path | None = None) -> None:
        self.bus = bus
        self.models_dir = models_dir if models_dir is not None else default_models_dir()

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

    async def find(self, strategy: str, version: str) -> ModelInfo:
        """The model `<strategy>/<version>` (`version` may be the id of the job that trained
        it). Raises ModelNotFound."""
        return await self._find(strategy, version)

    async def latest(self, strategy: str) -> ModelInfo:
        """The newest version of the strategy: the highest `<tf>_v<N>` (as the `<tf>_latest`
        pointer); with several timeframes, the one of those created last. Raises
        ModelNotFound."""
        tops: dict[str | None, ModelInfo] = {}
        for info in await self.models(strategy=strategy):
            key = (version_number(info.version), info.created_at or 0.0)
            top = tops.get(info.timeframe)
            if top is None or key > (version_number(top.version), top.created_at or 0.0):
                tops[info.timeframe] = info
        if not tops:
            raise ModelNotFound(f"no model of strategy {strategy!r}", field="strategy")
        return max(tops.values(), key=lambda m: (m.created_at or 0.0, version_number(m.version)))

    async def remove_local(self, info: ModelInfo) -> bool:
        """Remove the model's version directory (False when it has none here) and keep the
        `<tf>_latest` pointer at the highest version left (removed with the last one). The
        directory is first renamed to a hidden name, so no reader sees half of it."""
        return await asyncio.to_thread(_remove_local, self.models_dir, info)

    # --- internals ----------------------------------------------------------------------------

    async def _find(self, strategy: str, version: str) -> ModelInfo:
        models = await self.models(strategy=strategy)
        for info in models:
            if info.job_id == version:
                return info
        same = [info for info in models if info.version == version]
        jobs = sorted({info.job_id for info in same if info.job_id})
        if len(jobs) > 1:
            raise ModelAmbiguous(
                f"{strategy}/{version} names {len(jobs)} models, trained by jobs "
                f"{', '.join(jobs)} on machines that number their versions apart: name one "
                f"by its job id ({strategy}/{jobs[0]})", field="version")
        if same:
            return same[0]
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
        state = await state_folded_from_log(self.bus, job_id)
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
            test = test if isinstance(test, dict) else {}
            found[(strategy_dir.name, version_dir.name)] = ModelInfo(
                strategy=strategy_dir.name,
                version=version_dir.name,
                timeframe=parsed[0],
                local=True,
                local_path=str(version_dir),
                created_at=meta_path.stat().st_mtime,
                test_metrics={**{k: v for k, v in test.items()
                                 if isinstance(v, int | float) or v is None},
                              **headline_metrics(test)},
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


def version_number(version: str) -> int:
    """N of `<tf>_v<N>` (0 for anything else)."""
    parsed = parse_version_dir(version)
    return parsed[1] if parsed else 0


def _remove_local(base: Path, info: ModelInfo) -> bool:
    if not info.local or not info.local_path:
        return False
    path = Path(info.local_path)
    parsed = parse_version_dir(path.name)
    strategy_dir = (base / info.strategy).resolve()
    if parsed is None or path.resolve().parent != strategy_dir:
        raise ModelNotFound(f"model {info.name}: {path} is not a version directory under "
                            f"{base}")
    if not path.is_dir():
        return False
    doomed = path.with_name(f".{path.name}.deleting.{uuid.uuid4().hex}")
    os.replace(path, doomed)  # atomic: listings skip hidden names (layout.parse_version_dir)
    shutil.rmtree(doomed, ignore_errors=True)
    layout = ModelLayout(base)
    timeframe = parsed[0]
    if layout.list_versions(info.strategy, timeframe):
        layout._update_latest(info.strategy, timeframe)  # the pointer follows what is left
    else:
        with contextlib.suppress(FileNotFoundError):
            (strategy_dir / f"{timeframe}_latest").unlink()
    return True


def _section(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# --- the leaderboard: sort keys -----------------------------------------------------------------

SORT_KEYS: Final = (
    "macro_f1", "accuracy", "weighted_f1", "loss", "rmse", "mae", "direction_accuracy",
    "backtest_net_return", "backtest_sharpe", "backtest_max_drawdown", "backtest_trades",
    "buy_and_hold_net_return", "buy_and_hold_sharpe", "backtest_lift_vs_buy_and_hold",
    "samples", "created_at",
)
# Per-baseline keys: `baseline_<name>_<metric>` and `lift_<metric>_vs_<name>`.
_PER_BASELINE_KEY: Final = re.compile(
    r"^(baseline_[a-z0-9_]+_(accuracy|macro_f1|rmse|direction_accuracy)"
    r"|lift_(accuracy|macro_f1|rmse|direction_accuracy)_vs_[a-z0-9_]+)$"
)
SortOrder = Literal["desc", "asc"]


def check_sort_key(key: str) -> str:
    """`key` when models can be sorted by it; InvalidRequest naming the field `sort` else."""
    if key in SORT_KEYS or _PER_BASELINE_KEY.fullmatch(key):
        return key
    raise InvalidRequest(
        f"cannot sort by {key[:60]!r}: use one of {', '.join(SORT_KEYS)}, "
        "baseline_<name>_<metric> or lift_<metric>_vs_<name>", field="sort",
    )


def sort_models(models: Sequence[ModelInfo], key: str, order: SortOrder = "desc"
                ) -> list[ModelInfo]:
    """The models by one headline number (`created_at`: by age); models without it last, in
    their listed order. Raises InvalidRequest (field `sort`/`order`) for what cannot sort."""
    check_sort_key(key)
    if order not in ("desc", "asc"):
        raise InvalidRequest(f"order {str(order)[:20]!r}: use desc or asc", field="order")

    def value(model: ModelInfo) -> float | None:
        return _finite(model.created_at if key == "created_at" else model.test_metrics.get(key))

    present = [m for m in models if value(m) is not None]
    missing = [m for m in models if value(m) is None]
    present.sort(key=lambda m: value(m) or 0.0, reverse=order == "desc")  # stable: ties keep order
    return present + missing


# --- compare: the side-by-side rows -------------------------------------------------------------

Better = Literal["higher", "lower", "smaller_magnitude"]


class CompareRow(Struct, frozen=True, kw_only=True):
    """One row of a comparison: one value per model (in the comparison's order). `spread` is
    the ± of a mean (walk-forward std); `best` the indices of the best values by `better`
    (none when fewer than two models have one, or for rows that are context, not a score)."""

    key: str
    label: str
    values: list[float | str | None]
    spread: list[float | None] | None = None
    better: Better | None = None
    best: list[int] = []


class Comparison(Struct, frozen=True, kw_only=True):
    """Models side by side: `refs` as asked, `models` what they resolved to
    (`<strategy>/<version>`), `rows` the metrics."""

    refs: list[str]
    models: list[str]
    rows: list[CompareRow]


_SCORE_ROWS: Final[tuple[tuple[str, str, Better], ...]] = (
    ("macro_f1", "test macro F1", "higher"),
    ("accuracy", "test accuracy", "higher"),
    ("weighted_f1", "test weighted F1", "higher"),
    ("direction_accuracy", "test direction accuracy", "higher"),
    ("rmse", "test RMSE", "lower"),
    ("mae", "test MAE", "lower"),
)
_LIFT_METRICS: Final = (("macro_f1", "macro F1"), ("accuracy", "accuracy"),
                        ("direction_accuracy", "direction accuracy"), ("rmse", "RMSE"))
# Backtest rows: (key, label, better); None: context, not a score (more trades is not better,
# and buy and hold is the market, the same for every model on the same window).
_BACKTEST_ROWS: Final[tuple[tuple[str, str, Better | None], ...]] = (
    ("backtest_net_return", "backtest net return", "higher"),
    ("backtest_sharpe", "backtest Sharpe", "higher"),
    ("backtest_max_drawdown", "backtest max drawdown", "smaller_magnitude"),
    ("backtest_trades", "backtest trades", None),
    ("buy_and_hold_net_return", "buy & hold net return", None),
)


def _best(values: Sequence[float | str | None], better: Better | None) -> list[int]:
    numbers = [(i, v) for i, v in enumerate(values) if isinstance(v, int | float)]
    if better is None or len(numbers) < 2:
        return []
    if better == "higher":
        target = max(v for _, v in numbers)
    elif better == "lower":
        target = min(v for _, v in numbers)
    else:
        target = min(abs(v) for _, v in numbers)
        return [i for i, v in numbers if math.isclose(abs(v), target, rel_tol=1e-12,
                                                      abs_tol=1e-15)]
    return [i for i, v in numbers if math.isclose(v, target, rel_tol=1e-12, abs_tol=1e-15)]


def _walk_forward(metrics: Mapping[str, Any], key: str) -> tuple[float | None, float | None]:
    summary = _section(_section(metrics.get("walk_forward")).get("summary"))
    entry = _section(summary.get(key))
    return _finite(entry.get("mean")), _finite(entry.get("std"))


def _day(text: Any) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        return text[:10]


def data_window(metadata: Mapping[str, Any]) -> str | None:
    """`<first day> .. <last day>` of the bars a model was trained and tested on: the
    requested window when one was given, else the span of every symbol's usable bars."""
    window = _section(metadata.get("data_window"))
    ranges = [r for r in _section(window.get("time_ranges")).values()
              if isinstance(r, list | tuple) and len(r) == 2]
    start = _day(window.get("start")) or min((d for r in ranges if (d := _day(r[0]))),
                                             default=None)
    end = _day(window.get("end")) or max((d for r in ranges if (d := _day(r[1]))), default=None)
    if start is None and end is None:
        return None
    return f"{start or '?'} .. {end or '?'}"


def compare_models(refs: Sequence[str], details: Sequence[ModelDetail]) -> Comparison:
    """The side-by-side rows of `details` (one per ref, in order): scores, lift vs each
    baseline, walk-forward macro F1 mean ± std, the backtest, then what the models were
    trained on (data window, strategy hash, seed) and their aliases."""
    heads = [{**d.model.test_metrics, **headline_metrics(_section(d.metrics.get("test")))}
             for d in details]
    rows: list[CompareRow] = []

    def numeric(key: str, label: str, better: Better | None) -> None:
        values: list[float | str | None] = [_finite(h.get(key)) for h in heads]
        if any(v is not None for v in values):
            rows.append(CompareRow(key=key, label=label, values=values, better=better,
                                   best=_best(values, better)))

    for key, label, better in _SCORE_ROWS:
        numeric(key, label, better)
    baselines: list[str] = []
    for head in heads:
        for key in head:
            if key.startswith("lift_") and "_vs_" in key:
                name = key.split("_vs_", 1)[1]
                if name not in baselines:
                    baselines.append(name)
    for name in baselines:
        for metric, label in _LIFT_METRICS:
            numeric(f"lift_{metric}_vs_{name}",
                    f"{label} lift vs {name.replace('_', ' ')}", "higher")
    means, stds = zip(*(_walk_forward(d.metrics, "macro_f1") for d in details), strict=True)
    if any(m is not None for m in means):
        rows.append(CompareRow(key="walk_forward_macro_f1", label="walk-forward macro F1",
                               values=list(means), spread=list(stds), better="higher",
                               best=_best(list(means), "higher")))
    for key, label, maybe_better in _BACKTEST_ROWS:
        numeric(key, label, maybe_better)

    def text(key: str, label: str, values: list[float | str | None]) -> None:
        rows.append(CompareRow(key=key, label=label, values=values))

    text("data_window", "data window", [data_window(d.metadata) for d in details])
    text("strategy_hash", "strategy hash",
         [str(h)[:12] if (h := d.metadata.get("strategy_hash")) else None for d in details])
    text("seed", "seed", [s if isinstance(s := d.metadata.get("seed"), int) else None
                          for d in details])
    text("aliases", "aliases", [", ".join(d.model.aliases) or None for d in details])
    return Comparison(refs=list(refs), models=[d.model.name for d in details], rows=rows)
