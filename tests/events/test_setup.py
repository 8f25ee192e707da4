"""JetStream setup: idempotent, checks what exists, refuses what loses data."""

from __future__ import annotations

import dataclasses

import pytest
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from libs.events.bus import connect
from libs.events.errors import ConsumerDrift, DangerousStreamConfig, SetupMissing
from libs.events.setup import ensure_jetstream, open_jetstream, stream_config
from libs.events.subjects import POOLS
from tests.harness.bus import bus_config
from tests.harness.nats_server import NatsServer

pytestmark = pytest.mark.anyio


async def test_setup_is_idempotent_and_declares_everything(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    bus = await connect(bus_config(nats_server_module, unique_prefix, ack_wait=60))
    try:
        with pytest.raises(SetupMissing):
            await open_jetstream(bus)
        await ensure_jetstream(bus)
        await ensure_jetstream(bus)  # again: no error, nothing recreated
        info = await bus.js.stream_info(bus.names.stream)
        config = info.config
        assert config.retention == RetentionPolicy.LIMITS and config.storage == StorageType.FILE
        assert config.deny_delete and config.deny_purge and config.allow_direct
        assert config.subjects == bus.names.stream_subjects
        assert config.max_age and config.max_bytes and config.duplicate_window == 120
        for pool in POOLS:
            consumer = await bus.js.consumer_info(bus.names.stream, bus.names.consumer(pool))
            assert consumer.config.filter_subject == bus.names.train_subject(pool)
            assert consumer.config.ack_policy == AckPolicy.EXPLICIT
            # max_deliver 4 attempts + the give-up delivery + 10 hand-backs
            assert (consumer.config.ack_wait, consumer.config.max_deliver) == (60, 15)
        assert bus.jobs is not None and bus.workers is not None and bus.models is not None
        status = await bus.workers.status()
        assert (status.ttl, status.marker_ttl) == (15, 5)
        await open_jetstream(bus)  # attaching works once it exists
    finally:
        await bus.close()


async def test_mutable_consumer_fields_are_updated_in_place(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    bus = await connect(bus_config(nats_server_module, unique_prefix, ack_wait=60))
    try:
        await ensure_jetstream(bus)
        before = await bus.js.consumer_info(bus.names.stream, "pool-any")
        changed = dataclasses.replace(bus, config=dataclasses.replace(
            bus.config, ack_wait=90, max_deliver=5, max_handbacks=2))
        await ensure_jetstream(changed)
        after = await bus.js.consumer_info(bus.names.stream, "pool-any")
        assert (after.config.ack_wait, after.config.max_deliver) == (90, 8)
        assert after.created == before.created  # the same consumer, not a recreated one
    finally:
        await bus.close()


async def test_a_drifted_consumer_is_an_error_not_a_recreate(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    bus = await connect(bus_config(nats_server_module, unique_prefix))
    try:
        await bus.js.add_stream(stream_config(bus))
        await bus.js.add_consumer(bus.names.stream, ConsumerConfig(
            durable_name="pool-host", filter_subject=bus.names.train_subject("host"),
            ack_policy=AckPolicy.ALL))
        with pytest.raises(ConsumerDrift, match="pool-host"):
            await ensure_jetstream(bus)
    finally:
        await bus.close()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"retention": RetentionPolicy.WORK_QUEUE}, "retention"),
        ({"storage": StorageType.MEMORY}, "storage"),
        ({"deny_delete": False}, "deny_delete"),
        ({"deny_purge": False}, "deny_purge"),
    ],
)
async def test_a_dangerous_existing_stream_is_refused_at_start(
    nats_server_module: NatsServer, unique_prefix: str, change: dict[str, object], words: str
) -> None:
    bus = await connect(bus_config(nats_server_module, unique_prefix))
    try:
        base = {"name": bus.names.stream, "subjects": bus.names.stream_subjects,
                "retention": RetentionPolicy.LIMITS, "storage": StorageType.FILE,
                "deny_delete": True, "deny_purge": True}
        await bus.js.add_stream(StreamConfig(**{**base, **change}))  # type: ignore[arg-type]
        with pytest.raises(DangerousStreamConfig, match=words):
            await ensure_jetstream(bus)
    finally:
        await bus.close()


async def test_safe_stream_differences_are_updated(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    bus = await connect(bus_config(nats_server_module, unique_prefix))
    try:
        # Someone created it with a catch-all subject (unknown pools would be stored).
        await bus.js.add_stream(StreamConfig(
            name=bus.names.stream, subjects=[f"{unique_prefix}.cmd.>", f"{unique_prefix}.evt.>"],
            retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, deny_delete=True,
            deny_purge=True, duplicate_window=30))
        await ensure_jetstream(bus)
        config = (await bus.js.stream_info(bus.names.stream)).config
        assert config.subjects == bus.names.stream_subjects
        assert config.duplicate_window == 120 and config.allow_direct
    finally:
        await bus.close()
