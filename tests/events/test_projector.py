"""The projector runner on a real server: raw CLI commands, malformed input, crashes."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from libs.events.audit import audit, replay
from libs.events.bus import Bus, connect
from libs.events.errors import BusUnavailable
from libs.events.fold import JobState
from libs.events.projector import Projector, decode_state, load_projection
from libs.events.schema import MAX_COMMAND_BYTES, RejectedEvent, decode_event
from tests.events.builders import publish_all, scenario
from tests.events.rawnats import raw_publish, raw_request
from tests.harness.bus import bus_config, open_bus
from tests.harness.nats_server import NatsServer
from tests.harness.polling import eventually

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


async def kv_state(bus: Bus, job_id: str) -> JobState:
    assert bus.jobs is not None
    entry = await bus.jobs.get(job_id)
    assert entry.value is not None
    return decode_state(entry.value)


async def kv_states(bus: Bus) -> dict[str, JobState]:
    assert bus.jobs is not None
    return (await load_projection(bus.js, bus.names.jobs_bucket)).states


# --- the nats CLI path ------------------------------------------------------------------------


async def test_a_command_sent_with_the_raw_protocol_is_stored_decoded_and_projected(
    bus: Bus, nats_server: NatsServer
) -> None:
    async with Projector(bus) as projector:
        # `nats req trainbus.cmd.train.host '{...}'`
        body = (b'{"job_id":"demo-1","strategy":"rsi_mlp","symbols":["EURUSD","GBPUSD"],'
                b'"timeframes":["1h"],"start":"2024-01-01","end":"2024-06-30","seed":7,'
                b'"requested_by":"cli-user"}')
        ack = json.loads(await raw_request(nats_server.url, "trainbus.cmd.train.host", body))
        assert ack == {"stream": "TRAINBUS", "seq": 1}
        # `nats req trainbus.cmd.train.any '{...}' -H Nats-Msg-Id:train:demo-2` twice: one stored
        body2 = b'{"strategy":"rsi_mlp","symbols":["EURUSD"],"timeframes":["4h"]}'
        first = json.loads(await raw_request(nats_server.url, "trainbus.cmd.train.any", body2,
                                             {"Nats-Msg-Id": "train:demo-2"}))
        dup = json.loads(await raw_request(nats_server.url, "trainbus.cmd.train.any", body2,
                                           {"Nats-Msg-Id": "train:demo-2"}))
        assert dup == {**first, "duplicate": True}
        # No job id at all: job-<seq>, learnt from the ack. Plain `nats pub` for the cancel.
        third = json.loads(await raw_request(nats_server.url, "trainbus.cmd.train.any", body2))
        await raw_publish(nats_server.url, "trainbus.cmd.cancel.demo-1", b"")
        await projector.wait_for(third["seq"] + 1)

    demo1 = await kv_state(bus, "demo-1")
    assert (demo1.status, demo1.pool, demo1.symbols, demo1.seed) == (
        "cancelled", "host", ("EURUSD", "GBPUSD"), 7)
    assert (demo1.requested_by, demo1.start, demo1.command_seq) == ("cli-user", "2024-01-01", 1)
    assert (await kv_state(bus, "demo-2")).timeframes == ("4h",)
    assert (await kv_state(bus, f"job-{third['seq']}")).status == "queued"


# --- malformed input ----------------------------------------------------------------------------

GOOD = b'{"strategy":"rsi_mlp","symbols":["EURUSD"],"timeframes":["1h"]'

MALFORMED = {
    # msg id (-> job id), payload, expected field, words in the reason
    "bad-json": (b"this is not json", None, "not valid JSON"),
    "bad-types": (b'{"strategy":"rsi_mlp","symbols":"EURUSD","timeframes":["1h"]}', "symbols",
                  "Expected `array`"),
    "bad-command": (GOOD + b',"type":"explode"}', "type", "Invalid value 'explode'"),
    "bad-field": (GOOD + b',"epoch_count":5}', "epoch_count", "unknown field"),
    "bad-size": (GOOD + b',"strategy_yaml":"' + b"x" * MAX_COMMAND_BYTES + b'"}', None,
                 "limit"),
    "bad-id": (b'{"job_id":"x.>","strategy":"rsi_mlp","symbols":["E"],"timeframes":["1h"]}',
               "job_id", "regex"),
}


async def test_malformed_commands_become_rejected_and_the_projector_keeps_running(
    bus: Bus, nats_server: NatsServer
) -> None:
    async with Projector(bus) as projector:
        seqs = {}
        for key, (payload, _, _) in MALFORMED.items():
            ack = json.loads(await raw_request(nats_server.url, "trainbus.cmd.train.any",
                                               payload, {"Nats-Msg-Id": f"train:{key}"}))
            seqs[key] = ack["seq"]
        # A hostile id without a usable msg id lands on job-<seq>.
        hostile = json.loads(await raw_request(
            nats_server.url, "trainbus.cmd.train.any",
            b'{"job_id":"a b","strategy":"s","symbols":["E"],"timeframes":["1h"]}'))
        # Junk on an event subject and on a cancel subject with a hostile token.
        await raw_publish(nats_server.url, "trainbus.evt.ghost.epoch", b"\x00\xff")
        await raw_publish(nats_server.url, "trainbus.cmd.cancel.a:b", b"")
        good = json.loads(await raw_request(nats_server.url, "trainbus.cmd.train.any",
                                            GOOD + b',"job_id":"after-1"}'))
        await projector.wait_for(good["seq"])

        for key, (_, field, words) in MALFORMED.items():
            state = await kv_state(bus, key)
            assert state.status == "rejected", key
            assert state.error is not None and words in state.error.reason, (key, state.error)
            assert state.error.field == field, key
            # ...and a `rejected` event, for whoever watches trainbus.evt.<job>.>
            event = await eventually(
                functools.partial(_last_event, bus, key), lambda e: e is not None)
            assert isinstance(event, RejectedEvent) and event.command_seq == seqs[key]
            assert words in event.reason
        assert (await kv_state(bus, f"job-{hostile['seq']}")).status == "rejected"
        assert (await kv_state(bus, "after-1")).status == "queued"  # still running
        assert projector.applied_seq >= good["seq"]


async def _last_event(bus: Bus, job_id: str) -> object:
    from nats.js.errors import NotFoundError

    try:
        raw = await bus.js.get_last_msg(bus.names.stream, bus.names.job_events(job_id))
    except NotFoundError:
        return None
    return decode_event(raw.data or b"")


# --- crashes ----------------------------------------------------------------------------------


def _spawn_projector(server: NatsServer) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.events.projector_process", server.url, "trainbus"],
        cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


async def test_projector_killed_mid_stream_resumes_to_a_clean_replay(
    bus: Bus, nats_server: NatsServer
) -> None:
    messages = scenario(bus.names, 400)
    last = await publish_all(bus.js, messages)
    proc = await asyncio.to_thread(_spawn_projector, nats_server)
    try:
        # Let it write some states, then SIGKILL it while it is still catching up.
        await eventually(lambda: _checkpoint(bus), lambda c: c > 0, timeout=15, interval=0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    crashed_at = await _checkpoint(bus)
    assert 0 < crashed_at < last, "the crash should happen mid-stream"

    async with Projector(bus) as projector:
        await projector.wait_for(last, timeout=20)
    assert await kv_states(bus) == await replay(bus)
    report = await audit(bus)
    assert report.ok, report.differences
    assert report.jobs == 400


async def _checkpoint(bus: Bus) -> int:
    assert bus.jobs is not None
    return (await load_projection(bus.js, bus.names.jobs_bucket)).checkpoint


async def test_server_kill_9_loses_nothing_and_the_projection_catches_up(
    nats_server: NatsServer,
) -> None:
    async with open_bus(bus_config(nats_server, reconnect_time_wait=0.1)) as bus:
        projector = Projector(bus)
        await projector.start()
        messages = scenario(bus.names, 60, seed=11)
        try:
            await publish_all(bus.js, messages[:300])
            await projector.wait_for(300)
            nats_server.kill()
            await asyncio.sleep(0.3)
            nats_server.start()
            # Everything acknowledged before the crash is still there.
            info = await eventually(lambda: bus.js.stream_info(bus.names.stream),
                                    lambda i: i is not None)
            assert info.state.last_seq == 300
            last = await publish_all(bus.js, messages[300:])
            assert last == len(messages)
            await projector.wait_for(last, timeout=20)
        finally:
            await projector.stop()
        assert await kv_states(bus) == await replay(bus)
        assert (await audit(bus)).ok


async def test_connecting_to_a_stopped_server_is_a_clear_error(nats_server: NatsServer) -> None:
    nats_server.stop()
    with pytest.raises(BusUnavailable, match="connection refused"):
        await connect(bus_config(nats_server))


async def test_reading_a_whole_bucket_never_ends_early(bus: Bus) -> None:
    """Regression: nats-py's watchall() can signal "initial values done" before any value
    when the server pushed them all already; the projector would start from nothing."""
    from libs.events.projector import put_many, read_bucket

    values = {f"k{i:04d}": b"x" * 100 for i in range(1500)}
    await put_many(bus.js, bus.names.jobs_bucket, values)
    for _ in range(10):
        assert len(await read_bucket(bus.js, bus.names.jobs_bucket)) == 1500
    assert bus.jobs is not None
    await bus.jobs.delete("k0000")
    assert "k0000" not in await read_bucket(bus.js, bus.names.jobs_bucket)


async def test_an_internal_error_stops_the_projector_instead_of_skipping(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    import libs.events.projector as projector_module
    from libs.events.bus import publish_command
    from libs.events.errors import ReplayError
    from tests.events.builders import train_command

    def broken(state: object, message: object) -> None:
        raise RuntimeError("a bug in the fold")

    monkeypatch.setattr(projector_module, "fold", broken)
    await publish_command(bus, train_command("x1"))
    with pytest.raises(ReplayError, match="a bug in the fold"):
        await asyncio.wait_for(Projector(bus).run(asyncio.Event()), timeout=10)
    assert await _checkpoint(bus) == 0  # the message was not skipped: a restart retries it
