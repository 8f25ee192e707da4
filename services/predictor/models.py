"""Which model a reference names, and that model loaded, cached.

A reference is `<strategy>/<tf>_v<N>`, `<strategy>/latest`, `<strategy>/<job_id>` or
`<strategy>@<alias>`, resolved by the model registry (libs/events/registry.py, the same
resolution as `trainbus predict` and the model routes; an expired alias is refused). A version
directory in this machine's models dir answers `<tf>_v<N>` at once, without the bus. A model
this disk lacks comes from the object store: its archive is fetched, its SHA-256 checked against
the one its job recorded, and it is loaded from the bytes (and, when `install` is set, installed
into the models dir for the next start, its files stamped with the model's creation time so
that `latest` still means the newest model trained). Anything resolved through the registry is
refused with ModelUntrusted (403) when the operator trusts some trainer keys and none of them
signed the model's job (libs/events/trust.py); a version directory already on this disk is this
machine's own and answers without that check (a fetched model was checked before install).

Loading builds the network (torch): it runs in a worker thread, never in the event loop. Loaded
models are kept in a small LRU keyed by the version directory and the digest of its manifest
(a directory rewritten with other weights is another key), or by the archive's SHA-256; two
requests for a model being loaded wait for the same load.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from libs.events import registry
from libs.events.catalog import ModelInfo
from libs.events.errors import (
    ModelNotFound,
    ObjectDigestMismatch,
    ObjectNotFound,
    ObjectStoreError,
)
from libs.events.models import fetch_model
from libs.events.schema import ModelRef
from libs.pipeline.storage.layout import (
    METADATA_FILE,
    ArchiveError,
    FeatureMismatchError,
    IntegrityError,
    ModelLayout,
    ModelNotFoundError,
    StorageError,
    parse_version_dir,
)
from services.predictor.errors import ModelUnusable
from services.predictor.messages import ServedModel

if TYPE_CHECKING:
    from libs.events.bus import Bus
    from libs.pipeline.storage.models import LoadedModel, ModelStorage

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE: Final = 4

# The bus for catalog lookups: raises (the backend's Unavailable) when NATS is unreachable.
BusProvider = Callable[[], Awaitable["Bus"]]


@dataclass(frozen=True, slots=True)
class Served:
    """A loaded model and how the replies name it."""

    loaded: LoadedModel
    summary: ServedModel


@dataclass(frozen=True, slots=True)
class _Local:
    strategy: str
    timeframe: str
    version: int
    path: Path
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Remote:
    info: ModelInfo


class ModelSource:
    """Resolves references and hands out loaded models (see the module docstring)."""

    def __init__(
        self,
        models_dir: Path,
        *,
        bus: BusProvider | None,
        install: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.layout = ModelLayout(models_dir)  # torch-free: naming and listing
        self._storage: ModelStorage | None = None  # torch: loading (imported on first use)
        self.models_dir = models_dir
        self._bus = bus
        self.install = install
        self.cache_size = max(1, cache_size)
        self._cache: OrderedDict[tuple[str, ...], Served] = OrderedDict()
        self._loading: dict[tuple[str, ...], asyncio.Task[Served]] = {}

    # --- the public face ----------------------------------------------------------------------

    async def get(self, ref: str) -> Served:
        """The model `ref` names, loaded. Raises ModelNotFound (404), ModelUnusable (409),
        InvalidRequest (a malformed reference), the registry's alias refusals (AliasNotFound,
        ModelExpired), or the bus provider's error."""
        target = await self._locate(ref)
        if isinstance(target, _Local):
            metadata = await asyncio.to_thread(_read_bytes, target.path / METADATA_FILE)
            if metadata is None:
                raise ModelNotFound(f"no model {ref}", field="version")
            key: tuple[str, ...] = ("disk", str(target.path), _sha256(metadata))
            served = await self._cached(key, lambda: self._load_local(target))
        else:
            info = target.info
            key = ("archive", info.sha256 or f"{info.strategy}/{info.job_id}/{info.version}")
            served = await self._cached(key, lambda: self._load_remote(info))
        return Served(served.loaded, msgspec.structs.replace(served.summary, ref=ref))

    @property
    def storage(self) -> ModelStorage:
        if self._storage is None:
            from libs.pipeline.storage.models import ModelStorage

            self._storage = ModelStorage(self.models_dir)
        return self._storage

    def cached(self) -> list[str]:
        """The cached models, most recently used last (for logs and tests)."""
        return [s.summary.strategy + "/" + s.summary.version for s in self._cache.values()]

    # --- which model ------------------------------------------------------------------------

    async def _locate(self, ref: str) -> _Local | _Remote:
        strategy, name, is_alias = registry.split_ref(ref)
        parsed = None if is_alias else parse_version_dir(name)
        if parsed is not None:  # this machine's version directory answers first
            path = self.layout.version_dir(strategy, *parsed)
            if await asyncio.to_thread(path.is_dir):
                return _Local(strategy, parsed[0], parsed[1], path)
        bus, unavailable = await self._bus_for(ref, required=is_alias)
        try:
            resolved = await registry.resolve_ref(bus, ref, self.models_dir)
        except ModelNotFound:
            if unavailable is not None:  # not here; the bus may know it, but cannot be asked
                raise unavailable from None
            raise
        local = _local_of(resolved.model)
        return local if local is not None else _Remote(resolved.model)

    async def _bus_for(self, ref: str, *, required: bool) -> tuple[Bus | None, Exception | None]:
        """(the bus for the registry, None) when it is available. Unavailable: its error when
        `required` (an alias), else (None, the error): this machine's models only."""
        if self._bus is None:
            return None, None
        try:
            return await self._bus(), None
        except Exception as exc:
            if required:
                raise
            log.warning("%s: the bus is unavailable (%s), looking at this machine's models only",
                        ref, exc)
            return None, exc

    # --- loading ------------------------------------------------------------------------------

    async def _cached(self, key: tuple[str, ...], load: Callable[[], Coroutine[Any, Any, Served]]
                      ) -> Served:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(load(), name=f"load-model-{key[-1][:12]}")
            self._loading[key] = task
            task.add_done_callback(lambda _t: self._loading.pop(key, None))
        served = await asyncio.shield(task)
        self._remember(key, served)
        return served

    def _remember(self, key: tuple[str, ...], served: Served) -> None:
        self._cache[key] = served
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _load_local(self, target: _Local) -> Served:
        try:
            # In the thread: the first use imports torch and the pipeline, which must not stall
            # the event loop.
            served = await asyncio.to_thread(lambda: _served(
                self.storage.load(target.strategy, target.version, target.timeframe), "disk",
                target.job_id))
        except ModelNotFoundError as exc:
            raise ModelNotFound(str(exc), field="version") from None
        except (FeatureMismatchError, IntegrityError) as exc:
            raise ModelUnusable(str(exc)) from None
        log.info("loaded %s from %s", served.summary.ref, target.path)
        return served

    async def _load_remote(self, info: ModelInfo) -> Served:
        assert self._bus is not None
        bus = await self._bus()
        name = f"{info.strategy}/{info.version}"
        if not info.object_name:
            raise ModelNotFound(f"model {name} is not on this machine and has no object store "
                                "copy", field="version")
        ref = ModelRef(strategy=info.strategy, version=info.version,
                       object_name=info.object_name, sha256=info.sha256)
        try:
            data = await fetch_model(bus, ref)  # checked: the object's digest, the job's SHA-256
        except ObjectNotFound:
            raise ModelNotFound(f"model {name}: object {info.object_name} is gone",
                                field="version") from None
        except ObjectDigestMismatch as exc:
            raise ModelUnusable(f"model {name}: {exc}") from None
        except ObjectStoreError as exc:
            raise ModelNotFound(f"model {name}: the object store cannot give it: {exc}",
                                field="version") from None
        try:
            served = await asyncio.to_thread(lambda: _served(
                self.storage.load_archive(data), "object store", info.job_id))
        except (FeatureMismatchError, IntegrityError, ArchiveError) as exc:
            raise ModelUnusable(str(exc)) from None
        log.info("loaded %s from the object store (%s, sha256 %s)", served.summary.ref,
                 info.object_name, info.sha256[:12] if info.sha256 else "not recorded by its job")
        if self.install:
            await self._install(data, served)
        return served

    async def _install(self, data: bytes, served: Served) -> None:
        """Best effort: a models dir that cannot be written only costs a fetch next start."""
        loaded = served.loaded
        try:
            ref = await asyncio.to_thread(lambda: self.storage.from_archive(data))
        except (StorageError, OSError) as exc:
            log.warning("could not install %s into %s: %s", loaded.ref.name, self.models_dir, exc)
            return
        log.info("installed %s as %s", loaded.ref.name, ref.path)
        await asyncio.to_thread(_stamp, Path(ref.path), loaded.metadata.get("created_at"))
        metadata = await asyncio.to_thread(_read_bytes, Path(ref.path) / METADATA_FILE)
        if metadata is not None and (ref.timeframe, ref.version) == (loaded.ref.timeframe,
                                                                      loaded.ref.version):
            # The same model under its own number: its disk key answers without a reload.
            self._remember(("disk", ref.path, _sha256(metadata)),
                           Served(loaded, msgspec.structs.replace(served.summary, source="disk")))


def _local_of(info: ModelInfo) -> _Local | None:
    if not (info.local and info.local_path):
        return None
    path = Path(info.local_path)
    parsed = parse_version_dir(path.name)
    return _Local(info.strategy, parsed[0], parsed[1], path, info.job_id) if parsed else None


def _served(loaded: LoadedModel, source: Literal["disk", "object store"],
            job_id: str | None) -> Served:
    from libs.pipeline.predict import model_symbols

    ref = loaded.ref
    return Served(loaded, ServedModel(
        ref=ref.name,
        strategy=ref.strategy,
        version=f"{ref.timeframe}_v{ref.version}",
        timeframe=ref.timeframe,
        symbols=model_symbols(loaded),
        output="regression" if loaded.regression else "classification",
        weights_sha256=loaded.metadata.get("weights_sha256"),
        source=source,
        job_id=job_id or loaded.metadata.get("job_id"),
    ))


def _stamp(path: Path, created_at: object) -> None:
    """Give an installed version directory's files the model's creation time: the catalog
    dates a model on disk by its files, and `latest` is the newest model trained, not the one
    installed last."""
    if not isinstance(created_at, str):
        return
    try:
        moment = datetime.fromisoformat(created_at).timestamp()
    except ValueError:
        return
    for file in path.iterdir():
        with contextlib.suppress(OSError):
            os.utime(file, (moment, moment))


def _read_bytes(path: Path) -> bytes | None:
    with contextlib.suppress(OSError):
        return path.read_bytes()
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
