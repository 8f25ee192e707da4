"""Models and checkpoints in the object store `<prefix>_models`: names, put, fetch.

Names carry the job id and the attempt, so two attempts of one job (a live worker and a
zombie it fenced out) never write the same object, and one can delete its own object without
touching the other's:

    models/<strategy>/<job_id>.a<attempt>.tar.gz        a trained model (ModelStorage archive)
    checkpoints/<job_id>/a<attempt>-e<epoch>[-b<batch>] a resumable training checkpoint

The log says which object is current: `completed.model.object_name` for a model, the job's last
`checkpoint` event for a checkpoint. Reads use the fast chunk reader (`get_object_bytes`, digest
checked), never the stock quadratic `get`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

import nats.errors
import nats.js.errors

from libs.events.errors import ObjectStoreError
from libs.events.objects import StoredObject, get_object_bytes, put_object_bytes

if TYPE_CHECKING:
    from libs.events.bus import Bus
    from libs.events.schema import ModelRef

MODELS_PREFIX: Final = "models"
CHECKPOINTS_PREFIX: Final = "checkpoints"


def model_object_name(strategy: str, job_id: str, attempt: int) -> str:
    return f"{MODELS_PREFIX}/{strategy}/{job_id}.a{attempt}.tar.gz"


def checkpoint_object_name(job_id: str, attempt: int, epoch: int, batch: int = 0) -> str:
    suffix = f"-b{batch}" if batch else ""
    return f"{CHECKPOINTS_PREFIX}/{job_id}/a{attempt}-e{epoch}{suffix}"


async def put_bytes(bus: Bus, name: str, data: bytes, *, description: str) -> StoredObject:
    """Store `data` under `name`. Raises ObjectStoreError (NATS errors included)."""
    try:
        return await put_object_bytes(
            bus.js, bus.names.models_bucket, name, data, description=description
        )
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise ObjectStoreError(f"cannot store {name!r}: {type(exc).__name__}: {exc}") from exc


async def get_bytes(
    bus: Bus, name: str, *, timeout: float = 60.0, sha256: str | None = None,
    sha256_from: str = "the expected one",
) -> bytes:
    """Raises ObjectNotFound, ObjectDigestMismatch or ObjectStoreError."""
    try:
        return await get_object_bytes(bus.js, bus.names.models_bucket, name, timeout=timeout,
                                      sha256=sha256, sha256_from=sha256_from)
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        raise ObjectStoreError(f"cannot read {name!r}: {type(exc).__name__}: {exc}") from exc


async def delete_object(bus: Bus, name: str) -> bool:
    """Delete `name`; False when it was not there. Raises ObjectStoreError on other failures."""
    try:
        store = await bus.js.object_store(bus.names.models_bucket)
        await store.delete(name)
    except nats.js.errors.NotFoundError:
        return False
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        raise ObjectStoreError(f"cannot delete {name!r}: {exc}") from exc
    return True


async def delete_quietly(bus: Bus, name: str) -> None:
    """Best-effort cleanup (a leftover object costs space, never correctness)."""
    with contextlib.suppress(ObjectStoreError):
        await delete_object(bus, name)


async def fetch_model(bus: Bus, ref: ModelRef, *, timeout: float = 120.0) -> bytes:
    """The model archive a `completed` event names (`ref.object_name`), read with the fast
    chunk reader and checked against the object's digest and the event's SHA-256 (one hash of
    the bytes for both). Load it with
    `libs.pipeline.storage.ModelStorage(...).load_archive(data)` (in memory) or
    `.from_archive(data)` (install into a models dir); `services.trainers.pipeline_runner` has both
    as `load_model_archive` / `install_model_archive`."""
    if not ref.object_name:
        raise ObjectStoreError(f"model {ref.strategy} {ref.version} has no object store copy")
    return await get_bytes(bus, ref.object_name, timeout=timeout, sha256=ref.sha256 or None,
                           sha256_from="the completed event")
