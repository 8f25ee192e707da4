"""A projector that cannot be blinded: a stored position it cannot trust (a forged or garbled
`_checkpoint`, a job state beyond the stream's end) is rebuilt from the log, loudly, never
skipped to. Real nats-server, real projector."""

from __future__ import annotations

import logging

import msgspec
import pytest

from libs.events.audit import audit, replay
from libs.events.bus import Bus, publish_command
from libs.events.projector import (
    Checkpoint,
    Projection,
    Projector,
    load_projection,
    position_problems,
)
from libs.events.subjects import CHECKPOINT_KEY
from tests.events.builders import publish_all, scenario, train_command

pytestmark = pytest.mark.anyio
FORGED_SEQ = 999_999_999


async def projection(bus: Bus) -> Projection:
    return await load_projection(bus.js, bus.names.jobs_bucket)


async def forge(bus: Bus, key: str, value: bytes) -> None:
    assert bus.jobs is not None
    await bus.jobs.put(key, value)


def forged_checkpoint(bus: Bus, seq: int = FORGED_SEQ) -> bytes:
    return msgspec.json.encode(Checkpoint(seq=seq, stream=bus.names.stream, time=0.0))


# --- the finding ----------------------------------------------------------------------------


async def test_a_forged_checkpoint_is_rebuilt_from_the_log_and_new_jobs_stay_visible(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    last = await publish_all(bus.js, scenario(bus.names, 20))
    async with Projector(bus) as projector:
        await projector.wait_for(last)
        assert projector.rebuilt_at is None  # a trusted position: a plain resume

    # The attack: one KV put, then a projector restart.
    await forge(bus, CHECKPOINT_KEY, forged_checkpoint(bus))
    with caplog.at_level(logging.WARNING, logger="libs.events.projector"):
        async with Projector(bus) as projector:
            receipt = await publish_command(bus, train_command("after-forgery"))
            await projector.wait_for(receipt.seq)
            assert projector.rebuilt_at is not None
            assert projector.rebuild_reason is not None
            assert f"sequence {FORGED_SEQ}, beyond the stream's last sequence {last}" in (
                projector.rebuild_reason)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{CHECKPOINT_KEY} is at sequence {FORGED_SEQ}" in w and "rebuilding" in w
               for w in warnings), warnings
    stored = await projection(bus)
    assert stored.states["after-forgery"].status == "queued"  # the new job is visible
    assert stored.checkpoint == receipt.seq  # the forged position is gone
    assert stored.states == await replay(bus)
    assert (await audit(bus)).ok


async def test_an_undecodable_checkpoint_and_forged_states_are_rebuilt_and_orphans_deleted(
    bus: Bus,
) -> None:
    last = await publish_all(bus.js, scenario(bus.names, 5))
    async with Projector(bus) as projector:
        await projector.wait_for(last)
    genuine = await replay(bus)
    victim = sorted(genuine)[0]
    # A state far ahead of the stream (the fold would ignore every later message of that job),
    # a job the log never created, and a checkpoint that is not one.
    ahead = msgspec.structs.replace(genuine[victim], status="completed", last_seq=FORGED_SEQ)
    await forge(bus, victim, msgspec.json.encode(ahead))
    await forge(bus, "ghost-job", msgspec.json.encode(
        msgspec.structs.replace(genuine[victim], job_id="ghost-job")))
    await forge(bus, CHECKPOINT_KEY, b"\x00 not a checkpoint")

    async with Projector(bus) as projector:
        await projector.wait_for(last)
        reason = projector.rebuild_reason or ""
    assert f"{CHECKPOINT_KEY} does not decode" in reason
    assert f"1 job state(s) beyond the stream's last sequence {last}: {victim}" in reason
    stored = await projection(bus)
    assert stored.states == genuine  # the victim is back, the ghost is deleted
    assert not stored.unreadable and stored.checkpoint == last


async def test_a_checkpoint_of_another_stream_is_not_trusted(bus: Bus) -> None:
    receipt = await publish_command(bus, train_command("only-job"))
    await forge(bus, CHECKPOINT_KEY, msgspec.json.encode(
        Checkpoint(seq=receipt.seq, stream="SOMETHING_ELSE", time=0.0)))
    async with Projector(bus) as projector:
        await projector.wait_for(receipt.seq)
        assert "counts stream 'SOMETHING_ELSE'" in (projector.rebuild_reason or "")
    assert (await projection(bus)).states["only-job"].status == "queued"


async def test_an_empty_log_with_a_forged_checkpoint_gets_its_checkpoint_reset(bus: Bus) -> None:
    """Nothing to replay: the rebuild must still replace the stored position."""
    await forge(bus, CHECKPOINT_KEY, forged_checkpoint(bus))
    async with Projector(bus) as projector:
        await projector.wait_for(0)
        assert projector.rebuilt_at is not None
    stored = await projection(bus)
    assert stored.checkpoint == 0 and position_problems(
        stored, stream=bus.names.stream, last_seq=0) == []


# --- the check itself (pure) ----------------------------------------------------------------


def test_position_problems_accepts_a_checkpoint_at_or_below_the_end() -> None:
    for checkpoint in (0, 7, 10):
        stored = Projection(states={}, unreadable={}, checkpoint=checkpoint,
                            checkpoint_stream="TRAINBUS")
        assert position_problems(stored, stream="TRAINBUS", last_seq=10) == []
    beyond = Projection(states={}, unreadable={}, checkpoint=11, checkpoint_stream="TRAINBUS")
    assert position_problems(beyond, stream="TRAINBUS", last_seq=10) == [
        "_checkpoint is at sequence 11, beyond the stream's last sequence 10"]


async def test_a_stream_behind_the_projector_after_a_reconnect_makes_it_rebuild(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    """What the reconnect hook runs: the stream was recreated (a server that lost its store),
    so this projector's position lies beyond it; it restarts from the log, not from there."""
    from libs.events.setup import ensure_jetstream

    async with Projector(bus) as projector:
        last = await publish_all(bus.js, scenario(bus.names, 3))
        await projector.wait_for(last)
        await bus.js.delete_stream(bus.names.stream)
        await ensure_jetstream(bus)
        with caplog.at_level(logging.WARNING, logger="libs.events.projector"):
            await projector.check_resumed()
        assert any("after a reconnect" in r.getMessage() for r in caplog.records)
        receipt = await publish_command(bus, train_command("after-reset"))
        assert receipt.seq == 1
        await projector.wait_for(receipt.seq)
        assert projector.rebuilt_at is not None
    stored = await projection(bus)
    assert set(stored.states) == {"after-reset"} and stored.checkpoint == 1
