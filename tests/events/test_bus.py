"""Connection, publishing (dedupe, fencing, retry across a server crash), object store."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from libs.events.bus import (
    READ_BUFFER_BYTES,
    Bus,
    connect,
    publish,
    publish_cancel,
    publish_command,
    publish_event,
)
from libs.events.config import BusConfig, redact_url
from libs.events.errors import (
    BusConfigError,
    BusUnavailable,
    FencedOut,
    ObjectDigestMismatch,
    ObjectNotFound,
    PublishRefused,
)
from libs.events.objects import get_object_bytes, put_object_bytes
from libs.events.schema import CancelCommand, decode_event
from libs.events.subjects import Names
from tests.events.builders import make_event, train_command
from tests.harness.bus import bus_config, open_bus
from tests.harness.nats_server import NatsServer, free_port

pytestmark = pytest.mark.anyio


# --- connection -------------------------------------------------------------------------------


async def test_unreachable_nats_fails_fast_with_one_clear_line() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(BusUnavailable) as caught:
        await connect(BusConfig(urls=(f"nats://127.0.0.1:{port}",)))
    assert time.monotonic() - started < 5.0
    assert str(caught.value) == f"cannot reach NATS at nats://127.0.0.1:{port}: connection refused"


def test_config_from_env_and_secrets_stay_hidden(tmp_path: Path) -> None:
    config = BusConfig.from_env({
        "NATS_URL": "nats://alice:s3cret@h1:4222, nats://h2:4222",
        "NATS_USER": "alice",
        "NATS_PASSWORD": "s3cret",
        "TRAINBUS_SUBJECT_PREFIX": "tb",
        "TRAINBUS_ACK_WAIT": "90",
        "TRAINBUS_MAX_DELIVER": "5",
    })
    assert config.urls == ("nats://alice:s3cret@h1:4222", "nats://h2:4222")
    assert (config.ack_wait, config.max_deliver, config.names.stream) == (90.0, 5, "TB")
    assert "s3cret" not in repr(config) and "s3cret" not in config.display_urls
    assert redact_url("nats://tok@h:1") == "nats://***@h:1"
    with pytest.raises(BusConfigError, match="TRAINBUS_ACK_WAIT"):
        BusConfig.from_env({"TRAINBUS_ACK_WAIT": "soon"})
    with pytest.raises(BusConfigError, match="creds_file"):
        BusConfig.from_env({"NATS_CREDS": str(tmp_path / "missing.creds")})


# --- dedupe -----------------------------------------------------------------------------------


async def test_a_retried_command_is_stored_once(bus: Bus) -> None:
    first = await publish_command(bus, train_command("dedupe-1"))
    again = await publish_command(bus, train_command("dedupe-1"))
    assert (again.seq, again.duplicate, first.duplicate) == (first.seq, True, False)
    # Namespaced ids: the cancel of the same job is not mistaken for a duplicate.
    cancel = await publish_cancel(bus, "dedupe-1", CancelCommand(reason="x"))
    assert not cancel.duplicate and cancel.seq == first.seq + 1


async def test_idempotency_key_without_job_id_names_the_job(bus: Bus) -> None:
    one = await publish_command(bus, train_command(None, idempotency_key="nightly-2024-06-01"))
    two = await publish_command(bus, train_command(None, idempotency_key="nightly-2024-06-01"))
    assert one.job_id == two.job_id == "nightly-2024-06-01" and two.duplicate
    odd = await publish_command(bus, train_command(None, idempotency_key="has:colon"))
    assert odd.job_id == f"job-{odd.seq}"
    fresh = await publish_command(bus, train_command(None))
    assert fresh.job_id.startswith("run-")


async def test_a_command_to_an_unknown_pool_is_refused_by_the_stream(bus: Bus) -> None:
    with pytest.raises(nats.errors.NoRespondersError):  # no stream takes that subject
        await bus.nc.request("trainbus.cmd.train.gpu", b"{}", timeout=2)
    with pytest.raises(BusConfigError):
        await publish_command(bus, train_command("p1"), pool="gpu")


# --- fencing ----------------------------------------------------------------------------------


async def test_fencing_keeps_a_stale_worker_out(bus: Bus) -> None:
    await publish_command(bus, train_command("fence-1"))
    claim1 = await publish_event(bus, make_event("accepted", "fence-1", attempt=1), n=0,
                                 expected_last_subject_seq=0)
    # Its ack was lost and it retries with the same msg id: recognised as its own, not fenced.
    retry = await publish_event(bus, make_event("accepted", "fence-1", attempt=1), n=0,
                                expected_last_subject_seq=0)
    assert (retry.seq, retry.duplicate) == (claim1.seq, True)
    # Worker 2 takes over after the lease expired (it saw worker 1's claim as the last event).
    claim2 = await publish_event(bus, make_event("accepted", "fence-1", attempt=2), n=0,
                                 expected_last_subject_seq=claim1.seq)
    # Worker 1 wakes up and carries on from its own last sequence: refused.
    with pytest.raises(FencedOut):
        await publish_event(bus, make_event("completed", "fence-1", attempt=1), n=1,
                            expected_last_subject_seq=claim1.seq)
    # A late second claim of a fresh job (someone claimed it first) is refused too.
    with pytest.raises(FencedOut):
        await publish_event(bus, make_event("accepted", "fence-1", attempt=3), n=0,
                            expected_last_subject_seq=0)
    done = await publish_event(bus, make_event("completed", "fence-1", attempt=2), n=1,
                               expected_last_subject_seq=claim2.seq)
    assert done.seq == claim2.seq + 1


async def test_other_refusals_are_not_retried(bus: Bus) -> None:
    # A subject of stream TRAINBUS published by a bus that expects stream OTHER: 10060.
    confused = dataclasses.replace(bus, names=Names("other"))
    started = time.monotonic()
    with pytest.raises(PublishRefused, match="expected stream does not match"):
        await publish(confused, "trainbus.evt.j1.phase", b"{}", msg_id="m1")
    assert time.monotonic() - started < 1.0


# --- server crash -----------------------------------------------------------------------------


async def test_no_acknowledged_message_is_lost_across_kill_9(nats_server: NatsServer) -> None:
    async with open_bus(bus_config(nats_server, reconnect_time_wait=0.1)) as bus:
        acked: dict[str, int] = {}
        stop = asyncio.Event()
        progressed = asyncio.Condition()  # notified after each acknowledged publish

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                event = make_event("progress", "crash-1", attempt=1, batch=n)
                receipt = await publish_event(bus, event, n=n)
                acked[f"evt:crash-1:1:{n}"] = receipt.seq
                n += 1
                async with progressed:
                    progressed.notify_all()

        task = asyncio.create_task(writer())

        async def until_acked(count: int) -> None:
            async with progressed:
                try:
                    await asyncio.wait_for(progressed.wait_for(lambda: len(acked) >= count), 60)
                except TimeoutError:
                    raise AssertionError(f"{len(acked)} of {count} publishes acked; "
                                         f"writer: {task!r}") from None

        try:
            await until_acked(200)
            nats_server.kill()
            await asyncio.sleep(0.5)  # publishes now wait and retry
            nats_server.start()
            await until_acked(len(acked) + 200)
            stop.set()
            await asyncio.wait_for(task, timeout=30)
        finally:
            stop.set()
            task.cancel()

        info = await bus.js.stream_info(bus.names.stream)
        # Every acknowledged message is stored at the sequence its ack named, with its msg id.
        for msg_id, seq in acked.items():
            stored = await bus.js.get_msg(bus.names.stream, seq)
            assert stored.headers is not None and stored.headers["Nats-Msg-Id"] == msg_id
            assert decode_event(stored.data or b"").job_id == "crash-1"
        # ...and the retries across the outage stored nothing twice.
        assert info.state.messages == len(acked) == len(set(acked.values()))


# --- object store -----------------------------------------------------------------------------


async def test_the_client_reads_its_socket_a_mebibyte_at_a_time(bus: Bus) -> None:
    """nats-py's 32 KiB reads (its asyncio reader's limit too) made a model fetch ~1,600 reads;
    libs/events/bus.py raises them. Read off the live connection, so a nats-py that stops
    using the constant fails here."""
    transport: Any = bus.nc._transport
    assert transport._io_reader._limit == READ_BUFFER_BYTES == 1 << 20


async def test_object_round_trip_with_digest_check(bus: Bus) -> None:
    bucket = bus.names.models_bucket
    payload = bytes(range(256)) * 4096 * 3 + b"tail"  # 3 MiB + 4: many 128 KiB chunks
    stored = await put_object_bytes(bus.js, bucket, "models/rsi/1h_v1.safetensors", payload)
    assert stored.size == len(payload)
    assert await get_object_bytes(bus.js, bucket, "models/rsi/1h_v1.safetensors") == payload
    # the caller's own digest is checked by the same hash
    assert await get_object_bytes(bus.js, bucket, "models/rsi/1h_v1.safetensors",
                                  sha256=stored.sha256) == payload
    with pytest.raises(ObjectDigestMismatch, match="differs from the job's record"):
        await get_object_bytes(bus.js, bucket, "models/rsi/1h_v1.safetensors",
                               sha256="0" * 64, sha256_from="the job's record")
    await put_object_bytes(bus.js, bucket, "empty", b"")
    assert await get_object_bytes(bus.js, bucket, "empty") == b""
    with pytest.raises(ObjectNotFound):
        await get_object_bytes(bus.js, bucket, "nope")

    # Tamper: append a junk chunk to the stored object's chunk subject.
    store = await bus.js.object_store(bucket)
    info = await store.get_info("models/rsi/1h_v1.safetensors")
    await bus.js.publish(f"$O.{bucket}.C.{info.nuid}", b"junk")
    with pytest.raises(ObjectDigestMismatch):
        await get_object_bytes(bus.js, bucket, "models/rsi/1h_v1.safetensors")
    assert stored.sha256 == hashlib.sha256(payload).hexdigest()
