"""Worker heartbeats in KV `<prefix>_workers`: who is serving, where, on what, doing what.

One key per worker (its id), re-put every few seconds by the worker runtime. The bucket has a
TTL and limit markers (setup.py), so a worker that dies without a goodbye vanishes after the
TTL and watchers see a PURGE marker. A worker that stops cleanly deletes its key at once.

Readers (`read_workers`, `has_live_host_trainer`) use the same ordered last-per-subject read as
the projector (`read_bucket`), which skips delete/purge markers; a heartbeat older than the
bucket TTL (a clock-skewed or frozen writer) is not live either.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
from msgspec import Struct

from libs.events.projector import read_bucket
from libs.events.schema import decode_stored

if TYPE_CHECKING:
    from libs.events.bus import Bus

HEARTBEAT_VERSION: Final = "1"
WorkerKindName = Literal["container", "host"]
_KEY_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_=-]")


class SessionView(Struct, frozen=True, kw_only=True):
    """The host trainer's view of its current (or last) job, shown in its heartbeat."""

    job_id: str | None = None
    status: str = "idle"  # idle | running | completed | failed | cancelled
    epoch: int | None = None
    total_epochs: int | None = None
    metrics: dict[str, float | None] = {}


class WorkerHeartbeat(Struct, frozen=True, kw_only=True):
    """One worker as it last described itself. Times are Unix epoch seconds."""

    worker_id: str
    kind: WorkerKindName
    pools: list[str]
    host: str
    pid: int
    device: str
    capabilities: dict[str, Any] = {}
    capacity: int = 1
    running: list[str] = []
    session: dict[str, Any] | None = None
    started_at: float
    updated_at: float
    version: str = HEARTBEAT_VERSION
    # The public key the worker signs its events with (libs/events/signing.py; None: unsigned).
    # Announced only: whether it is trusted is the operator's trusted-workers bucket.
    signer: str | None = None


_decoder: Final = msgspec.json.Decoder(WorkerHeartbeat)
_encoder: Final = msgspec.json.Encoder()


def heartbeat_key(worker_id: str) -> str:
    """A KV key for a worker id (KV keys allow fewer characters than ids may hold)."""
    return _KEY_UNSAFE.sub("_", worker_id)[:200] or "worker"


def encode_heartbeat(beat: WorkerHeartbeat) -> bytes:
    return _encoder.encode(beat)


def decode_heartbeat(raw: bytes) -> WorkerHeartbeat:
    """Raises msgspec errors when `raw` is not a heartbeat."""
    return decode_stored(_decoder, raw)


async def put_heartbeat(bus: Bus, beat: WorkerHeartbeat) -> None:
    if bus.workers is None:
        raise RuntimeError("bus.workers is not set: call ensure_jetstream first")
    if bus.signer is not None and beat.signer is None:
        beat = msgspec.structs.replace(beat, signer=bus.signer.public_key)
    await bus.workers.put(heartbeat_key(beat.worker_id), encode_heartbeat(beat))


async def delete_heartbeat(bus: Bus, worker_id: str) -> None:
    if bus.workers is None:
        return
    await bus.workers.delete(heartbeat_key(worker_id))


async def read_workers(bus: Bus, *, now: float | None = None) -> list[WorkerHeartbeat]:
    """Live heartbeats in KV `<prefix>_workers`, sorted by worker id. Entries that do not
    decode, and heartbeats older than the bucket TTL, are left out."""
    values = await read_bucket(bus.js, bus.names.workers_bucket)
    moment = time.time() if now is None else now
    horizon = bus.config.workers_ttl
    beats: list[WorkerHeartbeat] = []
    for raw in values.values():
        try:
            beat = decode_heartbeat(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if moment - beat.updated_at <= horizon:
            beats.append(beat)
    return sorted(beats, key=lambda b: b.worker_id)


async def has_live_host_trainer(bus: Bus) -> bool:
    """True when at least one host trainer heartbeat is live (routing of pool `auto`)."""
    return any(beat.kind == "host" for beat in await read_workers(bus))
