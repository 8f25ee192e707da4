"""Declaring the JetStream objects in code, idempotently, and refusing dangerous ones.

`ensure_jetstream` creates what is missing and checks what exists:
- the stream: a dangerous difference (work-queue/interest retention, memory storage, delete or
  purge allowed, sealed, no-ack) is an error, because it silently loses commands or history;
  safe differences (subjects, limits, dedupe window, direct get) are updated in place;
- one durable pull consumer per pool, single filter each (a multi-filter consumer is ~30x
  slower): mutable fields (ack_wait, max_deliver) are updated, immutable ones (filter, ack
  policy, push/pull) are an error. Consumers are never deleted and recreated: a recreated
  consumer with the default deliver policy re-sends every old command;
- KV `<prefix>_jobs`, KV `<prefix>_workers` (TTL + limit markers), object store
  `<prefix>_models`, KV `<prefix>_aliases` (the model registry's aliases), created when missing;
- the logs stream `<STREAM>_LOGS` (`<prefix>.log.<job>`: the trainers' log lines of each job,
  `trainbus logs`), created when missing: a stream of its own because log lines are many,
  lossy and worth days, not for ever, while the event log keeps every event and is replayed
  from the start (lines there would slow every replay and the audit). Bounded per job
  (`LOG_LINES_PER_JOB`, the oldest dropped first) and in total (a 16th of the event log's
  max bytes, at most `LOG_MAX_AGE`). Best effort: a user that may not create it gets a warning,
  and jobs run without their lines; the trainers leave it to the setup's owner
  (`ensure_jetstream(logs=False)`).

`open_jetstream` only attaches (for read-only tools such as the audit) and raises
`SetupMissing` instead of creating anything; a missing aliases bucket (a setup from before the
model registry) leaves `bus.aliases` None instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final, TypeVar

import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from libs.events.bus import Bus
from libs.events.durability import default_replicas, server_cluster
from libs.events.errors import ConsumerDrift, DangerousStreamConfig, SetupError, SetupMissing
from libs.events.subjects import POOLS

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

MAX_MSG_SIZE: Final = 1024 * 1024  # the server's default max payload
LOG_LINES_PER_JOB: Final = 5000
LOG_MAX_AGE: Final = 14 * 86400.0
LOG_MAX_LINE: Final = 8 * 1024  # bytes of one stored line (the publisher trims to it)
_T = TypeVar("_T")


def replicas_wanted(bus: Bus, have: int) -> int:
    """What an existing stream or bucket with `have` replicas should have: TRAINBUS_REPLICAS
    when set (up or down), else never fewer than now. A client whose server reports no
    cluster (a leaf node, `no_advertise`, routes not up yet) must not shrink the cluster's."""
    if bus.config.replicas is not None:
        return bus.config.replicas
    return max(have, replicas_of(bus))


def replicas_of(bus: Bus) -> int:
    """The replicas of the stream, the buckets and the object store: TRAINBUS_REPLICAS, else
    3 on a cluster of three or more servers (as the connected server reports it), else 1."""
    if bus.config.replicas is not None:
        return bus.config.replicas
    return default_replicas(server_cluster(bus)[1])


def stream_config(bus: Bus) -> StreamConfig:
    """The stream as trainbus wants it."""
    cfg, names = bus.config, bus.names
    return StreamConfig(
        name=names.stream,
        description="trainbus commands and job events (the log)",
        subjects=names.stream_subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=cfg.stream_max_age,
        max_bytes=cfg.stream_max_bytes,
        max_msg_size=MAX_MSG_SIZE,
        discard=DiscardPolicy.OLD,
        duplicate_window=cfg.duplicate_window,
        num_replicas=replicas_of(bus),
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
    )


def logs_stream_config(bus: Bus) -> StreamConfig:
    """The logs stream (see the module docstring)."""
    names = bus.names
    return StreamConfig(
        name=names.logs_stream,
        description="trainbus: each job's trainer log lines (trainbus logs), kept with limits",
        subjects=[names.log_subjects],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=LOG_MAX_AGE,
        max_bytes=max(1024 * 1024, bus.config.stream_max_bytes // 16),
        max_msgs_per_subject=LOG_LINES_PER_JOB,
        max_msg_size=LOG_MAX_LINE + 1024,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas_of(bus),
        allow_direct=True,
    )


def pool_consumer_config(bus: Bus, pool: str) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=bus.names.consumer(pool),
        description=f"hands out {pool!r} train commands, one per fetch",
        filter_subject=bus.names.train_subject(pool),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=bus.config.ack_wait,
        max_deliver=consumer_deliveries(bus.config.max_deliver, bus.config.max_handbacks),
    )


def consumer_deliveries(max_deliver: int, max_handbacks: int) -> int:
    """A pool consumer's `max_deliver`: the attempts, the give-up delivery (config.py) and
    room for the hand-backs, which spend no attempt but are deliveries all the same."""
    return max_deliver + 1 + max_handbacks


def delivery_limits(deliveries: int, max_deliver: int, max_handbacks: int) -> tuple[int, int]:
    """(attempts that may run, hand-backs that spend none) under a consumer that delivers a
    command `deliveries` times (<= 0: unlimited), for a worker configured with `max_deliver`
    and `max_handbacks`. The server's number wins (with role users the backend sets the
    consumers up, maybe with other settings), split the worker's way when it fits: never
    more attempts than the consumer allows minus the give-up delivery, and only the
    deliveries left over as room for hand-backs, so the give-up delivery always comes."""
    if deliveries <= 0:
        return max_deliver, max_handbacks
    attempts = max(1, min(max_deliver, deliveries - 1))
    return attempts, max(0, deliveries - 1 - attempts)


def dangerous_differences(existing: StreamConfig) -> list[str]:
    """Why an existing stream cannot be used as the log (empty when it can)."""
    problems = []
    if existing.retention != RetentionPolicy.LIMITS:
        problems.append(f"retention is {_value(existing.retention)} (commands would be "
                        "removed once consumed; the log must keep them for audit): use limits")
    if existing.storage != StorageType.FILE:
        problems.append(f"storage is {_value(existing.storage)} (lost on restart): use file")
    if not existing.deny_delete:
        problems.append("deny_delete is off (messages can be deleted from the log)")
    if not existing.deny_purge:
        problems.append("deny_purge is off (the log can be purged)")
    if existing.sealed:
        problems.append("the stream is sealed (nothing can be published)")
    if existing.no_ack:
        problems.append("no_ack is on (publishes are not confirmed)")
    return problems


# A cluster electing a JetStream meta leader (a node just died) answers the API with timeouts
# or 503 for a few seconds: setup waits that out rather than failing a process at start.
SETUP_RETRY_FOR: Final = 30.0


async def ensure_jetstream(bus: Bus, *, logs: bool = True,
                           retry_for: float = SETUP_RETRY_FOR) -> Bus:
    """Create or check the stream, the pool consumers, the KV buckets and the object store;
    sets `bus.jobs`, `bus.workers`, `bus.models`, `bus.aliases`. Safe to call at every start.
    JetStream unavailable for a moment (a meta leader election) is retried for `retry_for`
    seconds; a refusal (SetupError: a denied create names who may) is not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    while True:
        try:
            await _ensure_stream(bus)
            for pool in POOLS:
                await _ensure_pool_consumer(bus, pool)
            await _ensure_buckets(bus)
            if logs:  # the trainers leave it to the setup's owner (they may not create streams)
                await _ensure_logs_stream(bus)
            return bus
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                nats.js.errors.ServiceUnavailableError) as exc:
            if loop.time() >= deadline:
                raise
            log.warning("JetStream is not answering (%s); retrying the setup",
                        type(exc).__name__)
            await asyncio.sleep(0.5)


async def _ensure_logs_stream(bus: Bus) -> None:
    desired = logs_stream_config(bus)
    try:
        await bus.js.stream_info(bus.names.logs_stream)
        return  # its limits are its own business: never a reason to stop a start
    except nats.js.errors.NotFoundError:
        pass
    try:
        await bus.js.add_stream(desired)
    except (nats.errors.TimeoutError, nats.js.errors.APIError) as exc:
        log.warning("no logs stream %s (%s): jobs run without their log lines",
                    bus.names.logs_stream,
                    getattr(exc, "description", None) or type(exc).__name__)
        return
    log.info("created stream %s", bus.names.logs_stream)


async def open_jetstream(bus: Bus) -> Bus:
    """Attach to existing objects without creating anything."""
    try:
        await bus.js.stream_info(bus.names.stream)
    except nats.js.errors.NotFoundError:
        raise SetupMissing(f"stream {bus.names.stream} does not exist (nothing was ever "
                           "published; start the stack or run its setup first)") from None
    bus.jobs = await _attach_kv(bus, bus.names.jobs_bucket)
    bus.workers = await _attach_kv(bus, bus.names.workers_bucket)
    try:
        bus.models = await bus.js.object_store(bus.names.models_bucket)
    except nats.js.errors.BucketNotFoundError:
        raise SetupMissing(f"object store {bus.names.models_bucket} does not exist") from None
    try:
        bus.aliases = await bus.js.key_value(bus.names.aliases_bucket)
    except nats.js.errors.BucketNotFoundError:
        bus.aliases = None  # set up before the model registry existed: no alias was ever set
    return bus


async def _attach_kv(bus: Bus, bucket: str) -> KeyValue:
    try:
        return await bus.js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        raise SetupMissing(f"KV bucket {bucket} does not exist") from None


async def _ensure_stream(bus: Bus) -> None:
    desired = stream_config(bus)
    try:
        info = await bus.js.stream_info(bus.names.stream)
    except nats.js.errors.NotFoundError:
        await _create(bus, f"stream {desired.name}", bus.js.add_stream(desired))
        log.info("created stream %s", desired.name)
        return
    existing = info.config
    problems = dangerous_differences(existing)
    if problems:
        raise DangerousStreamConfig(
            f"stream {bus.names.stream} exists with a dangerous configuration: "
            + "; ".join(problems)
        )
    changes = _safe_differences(existing, desired)
    have = existing.num_replicas or 1
    if (wanted := replicas_wanted(bus, have)) != have:
        changes.append(f"replicas {have} -> {wanted}")
    if changes:
        updated = dataclasses.replace(
            existing,
            subjects=desired.subjects,
            max_age=desired.max_age,
            max_bytes=desired.max_bytes,
            max_msg_size=desired.max_msg_size,
            duplicate_window=desired.duplicate_window,
            allow_direct=desired.allow_direct,
            discard=desired.discard,
            num_replicas=replicas_wanted(bus, existing.num_replicas or 1),
        )
        try:
            await bus.js.update_stream(updated)
        except nats.js.errors.APIError as exc:
            raise SetupError(f"cannot update stream {bus.names.stream} "
                             f"({', '.join(changes)}): {exc.description}") from None
        except nats.errors.TimeoutError:
            _not_updated(bus, f"stream {bus.names.stream}", changes)
            return
        log.warning("updated stream %s: %s", bus.names.stream, ", ".join(changes))


def _safe_differences(existing: StreamConfig, desired: StreamConfig) -> list[str]:
    changes = []
    if sorted(existing.subjects or []) != sorted(desired.subjects or []):
        changes.append(f"subjects {existing.subjects} -> {desired.subjects}")
    for name in ("max_age", "duplicate_window"):
        old, new = getattr(existing, name) or 0.0, getattr(desired, name) or 0.0
        if abs(old - new) > 1e-3:
            changes.append(f"{name} {old:g}s -> {new:g}s")
    for name in ("max_bytes", "max_msg_size"):
        if (getattr(existing, name) or -1) != (getattr(desired, name) or -1):
            changes.append(f"{name} {getattr(existing, name)} -> {getattr(desired, name)}")
    if bool(existing.allow_direct) != bool(desired.allow_direct):
        changes.append(f"allow_direct -> {desired.allow_direct}")
    if existing.discard != desired.discard:
        changes.append(f"discard -> {_value(desired.discard)}")
    return changes


async def scale_replicas(bus: Bus) -> None:
    """The buckets and the object store scaled to the replicas wanted now (a store moved to a
    cluster, TRAINBUS_REPLICAS changed), as `ensure_jetstream` does for the stream. Run by
    the setup's owner (the backend, `trainbus up`) after `ensure_jetstream`: other roles may
    not update streams (the server would answer them with nothing)."""
    for stream in bus.names.bucket_streams:
        try:
            existing = (await bus.js.stream_info(stream)).config
        except nats.js.errors.NotFoundError:
            continue
        have = existing.num_replicas or 1
        wanted = replicas_wanted(bus, have)
        if have == wanted:
            continue
        change = [f"replicas {have} -> {wanted}"]
        try:
            await bus.js.update_stream(dataclasses.replace(existing, num_replicas=wanted))
        except nats.js.errors.APIError as exc:
            log.warning("cannot change %s's replicas %d -> %d: %s", stream, have, wanted,
                        exc.description)
            continue
        except nats.errors.TimeoutError:
            _not_updated(bus, f"stream {stream}", change)
            continue
        log.warning("updated %s: %s", stream, change[0])


async def _ensure_pool_consumer(bus: Bus, pool: str) -> None:
    desired = pool_consumer_config(bus, pool)
    name = bus.names.consumer(pool)
    try:
        info = await bus.js.consumer_info(bus.names.stream, name)
    except nats.js.errors.NotFoundError:
        await _create(bus, f"consumer {name}", bus.js.add_consumer(bus.names.stream, desired))
        log.info("created consumer %s on %s", name, desired.filter_subject)
        return
    existing = info.config
    drift = []
    if existing.filter_subject != desired.filter_subject or existing.filter_subjects:
        drift.append(f"filter {existing.filter_subjects or existing.filter_subject!r} "
                     f"!= {desired.filter_subject!r}")
    if existing.ack_policy != desired.ack_policy:
        drift.append(f"ack policy {_value(existing.ack_policy)} != explicit")
    if existing.deliver_subject:
        drift.append("it is a push consumer; pools need pull consumers")
    if drift:
        raise ConsumerDrift(
            f"consumer {name} on {bus.names.stream} drifted: {'; '.join(drift)}. It cannot be "
            "fixed in place; deleting and recreating it would re-send old commands, so fix it "
            "by hand (e.g. recreate it with a start sequence after the last handled command)"
        )
    if (existing.ack_wait or 0) != desired.ack_wait or existing.max_deliver != desired.max_deliver:
        # Only mutable fields change; everything else is sent back as the server has it.
        updated = dataclasses.replace(
            existing, ack_wait=desired.ack_wait, max_deliver=desired.max_deliver
        )
        change = (f"ack_wait {existing.ack_wait}s -> {desired.ack_wait}s, max_deliver "
                  f"{existing.max_deliver} -> {desired.max_deliver}")
        try:
            await bus.js.add_consumer(bus.names.stream, updated)
        except nats.errors.TimeoutError:
            _not_updated(bus, f"consumer {name}", [change])
            return
        log.warning(
            "updated consumer %s: ack_wait %ss -> %ss, max_deliver %s -> %s",
            name, existing.ack_wait, desired.ack_wait, existing.max_deliver, desired.max_deliver,
        )


async def _ensure_buckets(bus: Bus) -> None:
    cfg, names, replicas = bus.config, bus.names, replicas_of(bus)
    bus.jobs = await _key_value(bus, KeyValueConfig(
        bucket=names.jobs_bucket,
        description="job state projected from the log (one key per job)",
        history=1, storage=StorageType.FILE, replicas=replicas,
    ))
    bus.workers = await _key_value(bus, KeyValueConfig(
        bucket=names.workers_bucket,
        description="worker heartbeats: kind, pool, device, current job",
        history=1, ttl=cfg.workers_ttl,
        # Without limit markers a watcher sees nothing when a key expires.
        limit_marker_ttl=cfg.workers_marker_ttl,
        storage=StorageType.FILE, replicas=replicas,
    ))
    status = await bus.workers.status()
    if status.ttl is not None and abs(status.ttl - cfg.workers_ttl) > 1e-3:
        log.warning("KV %s has ttl %ss, config says %ss (left as is)",
                    names.workers_bucket, status.ttl, cfg.workers_ttl)
    try:
        bus.models = await bus.js.object_store(names.models_bucket)
    except nats.js.errors.BucketNotFoundError:
        models = ObjectStoreConfig(
            description="trained models and checkpoints",
            storage=StorageType.FILE,
            replicas=replicas,
        )
        # The bucket name must be positional: create_object_store(config=...) drops it.
        bus.models = await _create(bus, f"object store {names.models_bucket}",
                                   bus.js.create_object_store(names.models_bucket, config=models))
    bus.aliases = await _key_value(bus, KeyValueConfig(
        bucket=names.aliases_bucket,
        description="model aliases (<strategy>.<alias> -> version); every change is also "
                    "an event on the log",
        history=1, storage=StorageType.FILE, replicas=replicas,
    ))
    # The operator's list of trusted signing keys (libs/events/trust.py). History 5: an
    # untrust stays visible beside the trust it undid.
    await _key_value(bus, KeyValueConfig(
        bucket=names.trusted_bucket,
        description="trusted trainer keys (nkey public key -> name, trusted_at, by)",
        history=5, storage=StorageType.FILE, replicas=replicas,
    ))


async def _key_value(bus: Bus, config: KeyValueConfig) -> KeyValue:
    """The bucket as it is, or created with `config` when missing."""
    try:
        return await bus.js.key_value(config.bucket)
    except nats.js.errors.BucketNotFoundError:
        return await _create(bus, f"KV bucket {config.bucket}", bus.js.create_key_value(config))


# With role users (deploy/nats-roles.conf) only the backend and admin may create or change the
# JetStream objects. The server answers a request the user may not make with nothing (and logs
# a permissions violation), so a trainer or client sees a timeout: creating is then an error
# that says who can, and a safe update (limits, ack_wait) is skipped with a warning; the worker
# runtime reads the consumer's real ack_wait and max_deliver from the server anyway.


async def _create(bus: Bus, what: str, request: Awaitable[_T]) -> _T:
    try:
        return await request
    except nats.errors.TimeoutError:
        raise SetupMissing(
            f"{what} does not exist and NATS user {bus.config.user or '(anonymous)'!r} could "
            "not create it (no answer: most likely not permitted; with role users the backend "
            "sets JetStream up, so start it first)"
        ) from None


def _not_updated(bus: Bus, what: str, changes: list[str]) -> None:
    log.warning(
        "%s differs from this process's settings (%s) but was not updated (no answer: NATS "
        "user %r is most likely not permitted; the backend owns the setup); using it as it is",
        what, ", ".join(changes), bus.config.user or "(anonymous)",
    )


def _value(enum_or_str: object) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str))
