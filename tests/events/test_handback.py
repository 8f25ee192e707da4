"""A drain hands the job back without spending an attempt (issue 16 item 8).

First the fold's rule for `released` (claimant only, at most once per attempt, counted in
`handed_back`), then a real nats-server with the real worker runtime (the fast fake runner of
tests/trainers/fakes.py) drained again and again, a crash-style redelivery beside drains, and
drains past the hand-back room (TRAINBUS_MAX_HANDBACKS).
"""

from __future__ import annotations

from typing import Any

import pytest

from libs.events.bus import Bus, publish_cancel, publish_command
from libs.events.config import BusConfig
from libs.events.errors import BusConfigError
from libs.events.fold import JobState, fold, foreign_events, is_foreign
from libs.events.log import LogMessage, read_log
from libs.events.models import get_bytes
from libs.events.schema import CancelCommand, CompletedEvent, FailedEvent
from libs.events.setup import consumer_deliveries, delivery_limits
from tests.events.builders import cancel, make_event, msg, train_command
from tests.harness.bus import open_bus, trainer_bus_config
from tests.harness.nats_server import NatsServer
from tests.trainers.conftest import JobEvents, command
from tests.trainers.fakes import FakeRunner
from tests.trainers.test_runtime import fake_worker, log_states

# --- the fold -----------------------------------------------------------------------------------


def log_of(*bodies: object) -> list[LogMessage]:
    return [msg(seq, body) for seq, body in enumerate(bodies, start=1)]


def final(messages: list[LogMessage]) -> JobState:
    state: JobState | None = None
    for message in messages:
        state = fold(state, message)
    assert state is not None
    return state


def claim(attempt: int, worker: str = "") -> Any:
    return make_event("accepted", attempt=attempt, worker_id=worker or f"w{attempt}")


def release(attempt: int, worker: str = "") -> Any:
    return make_event("released", attempt=attempt, worker_id=worker or f"w{attempt}")


def test_the_claimants_release_queues_the_job_again_and_counts_a_hand_back() -> None:
    state = final(log_of(train_command(), claim(1), make_event("epoch", epoch=1),
                         make_event("checkpoint", epoch=1), release(1)))
    assert (state.status, state.worker, state.attempt, state.handed_back) == (
        "queued", None, 1, 1)
    # What the job did is kept for the next attempt and the dashboard.
    assert state.checkpoint == "ckpt/job-a/1" and [m.epoch for m in state.history] == [1]
    # The next delivery claims it; attempts keep growing (fencing orders by them).
    again = final(log_of(train_command(), claim(1), release(1), claim(2), release(2),
                         claim(3), make_event("completed", attempt=3, worker_id="w3")))
    assert (again.status, again.attempt, again.handed_back, again.worker) == (
        "completed", 3, 2, "w3")


def test_a_release_by_anyone_but_the_claimant_changes_nothing_and_is_foreign() -> None:
    running = (train_command(), claim(1))
    for forged in (release(1, worker="forger"), release(2, worker="w1"), release(0)):
        messages = log_of(*running, forged)
        assert final(messages) == final(log_of(*running)), forged
        assert foreign_events(messages) == {"job-a": [3]}, forged
    # A job nobody claimed cannot be released either.
    queued = log_of(train_command(), release(1))
    assert final(queued).handed_back == 0 and foreign_events(queued) == {"job-a": [2]}


def test_a_release_counts_once_per_attempt_and_the_released_worker_writes_nothing_more() -> None:
    once = log_of(train_command(), claim(1), release(1))
    twice = log_of(train_command(), claim(1), release(1), release(1))
    assert final(twice) == final(once) and final(twice).handed_back == 1
    assert foreign_events(twice) == {"job-a": [4]}
    # Anything the released attempt still sends is no longer the claimant's.
    for kind in ("progress", "epoch", "checkpoint", "completed", "failed", "cancelled"):
        late = make_event(kind, attempt=1, worker_id="w1")
        assert is_foreign(final(once), msg(4, late)), kind


def test_a_cancel_of_a_released_job_cancels_it_at_once_and_the_workers_record_is_not_foreign(
) -> None:
    released = (train_command(), claim(1), release(1), cancel("enough"))
    state = final(log_of(*released))
    assert (state.status, state.cancel_reason) == ("cancelled", "enough")
    record = make_event("cancelled", attempt=2, worker_id="w2", reason="enough")
    assert not is_foreign(state, msg(5, record))


def test_a_job_released_while_cancelling_stays_cancelling_until_the_next_claimant_ends_it(
) -> None:
    state = final(log_of(train_command(), claim(1), cancel("stop"), release(1)))
    assert (state.status, state.worker, state.handed_back) == ("cancelling", None, 1)
    ended = final(log_of(train_command(), claim(1), cancel("stop"), release(1), claim(2),
                         make_event("cancelled", attempt=2, worker_id="w2")))
    assert (ended.status, ended.cancel_reason) == ("cancelled", "stop")


def test_a_job_claimed_before_is_never_rejected() -> None:
    messages = log_of(train_command(), claim(1), release(1), make_event("rejected", attempt=0))
    assert final(messages).status == "queued" and foreign_events(messages) == {"job-a": [4]}


def test_the_consumers_have_room_for_the_hand_backs_and_the_worker_splits_it() -> None:
    assert consumer_deliveries(4, 10) == 15
    assert delivery_limits(15, 4, 10) == (4, 10)
    assert delivery_limits(-1, 4, 10) == (4, 10)  # unlimited: the worker's own settings
    # A consumer set up with fewer deliveries (an older setup, another process's settings):
    # never more attempts than it allows, the rest is the hand-back room.
    assert delivery_limits(5, 4, 10) == (4, 0)
    assert delivery_limits(3, 4, 10) == (2, 0)
    assert delivery_limits(20, 4, 10) == (4, 15)


def test_the_hand_back_room_is_a_setting() -> None:
    assert BusConfig().max_handbacks == 10
    assert BusConfig.from_env({"TRAINBUS_MAX_HANDBACKS": "0"}).max_handbacks == 0
    with pytest.raises(BusConfigError, match="max_handbacks"):
        BusConfig(max_handbacks=-1)
    with pytest.raises(BusConfigError, match="TRAINBUS_MAX_HANDBACKS"):
        BusConfig.from_env({"TRAINBUS_MAX_HANDBACKS": "many"})


# --- a real server, the real worker runtime -----------------------------------------------------


async def drain_once(bus: Bus, events: JobEvents, attempt: int, *, ends: str = "released"
                     ) -> None:
    """A worker takes delivery `attempt`, trains an epoch of it and is stopped (a drain),
    which ends with an event of kind `ends` of that attempt ("": none, a plain nak)."""
    runner = FakeRunner(epochs=500, batches=10, batch_seconds=0.005)
    async with fake_worker(bus, runner):
        await events.wait_until(
            lambda: any(e.attempt == attempt for e in events.of("epoch")),
            f"an epoch of attempt {attempt}")
    # The worker has stopped: its drain (and the nak) is done.
    if ends:
        await events.wait_until(lambda: any(e.attempt == attempt for e in events.of(ends)),
                                f"the {ends} of attempt {attempt}")


@pytest.mark.anyio
async def test_four_drains_in_a_row_spend_no_attempt_and_the_job_completes(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    # max_deliver 4: before, the fourth drain failed the job ("shut down during the last
    # allowed delivery"); now each one hands it back.
    config = trainer_bus_config(nats_server_module, unique_prefix, max_deliver=4)
    async with open_bus(config) as bus, JobEvents(bus, "drains") as events:
        await publish_command(bus, command("drains"))
        for attempt in (1, 2, 3, 4):
            await drain_once(bus, events, attempt)
        released = events.of("released")
        assert [(r.attempt, r.reason) for r in released] == [
            (1, "drain"), (2, "drain"), (3, "drain"), (4, "drain")]
        state = (await log_states(bus))["drains"]
        assert (state.status, state.attempt, state.handed_back) == ("queued", 4, 4)
        async with fake_worker(bus, FakeRunner(epochs=3, batches=2, batch_seconds=0.0)):
            done = await events.wait_for("completed", "failed")
        assert isinstance(done, CompletedEvent) and done.attempt == 5
        assert [a.attempt for a in events.of("accepted")] == [1, 2, 3, 4, 5]
        # Each hand-back names the checkpoint it left, and the next attempt resumed from it.
        assert [r.checkpoint for r in events.of("resumed")] == [r.checkpoint for r in released]
        assert all(r.checkpoint for r in released)
        state = (await log_states(bus))["drains"]
        assert (state.status, state.attempt, state.handed_back) == ("completed", 5, 4)


@pytest.mark.anyio
async def test_a_drain_between_two_epochs_keeps_the_checkpoint_it_hands_back(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    # Stopped before the first batch of epoch 2, the drain's checkpoint is the position of
    # epoch 1's own (same object name): storing it again must not delete it as a stale one
    # (it once did, and the next attempt started over: one CI run in many).
    config = trainer_bus_config(nats_server_module, unique_prefix)
    async with open_bus(config) as bus, JobEvents(bus, "between") as events:
        await publish_command(bus, command("between"))
        held = FakeRunner(epochs=3, batches=2, batch_seconds=0.0, hold_after_epoch=1)
        async with fake_worker(bus, held):
            await events.wait_until(lambda: events.of("checkpoint"), "epoch 1's checkpoint")
        await events.wait_until(lambda: events.of("released"), "the hand-back")
        (released,) = events.of("released")
        assert released.checkpoint == events.of("checkpoint")[-1].object_name
        assert await get_bytes(bus, released.checkpoint) == b'{"epoch": 1, "batch": 0}'
        runner = FakeRunner(epochs=3, batches=2, batch_seconds=0.0)
        async with fake_worker(bus, runner):
            done = await events.wait_for("completed", "failed")
        assert isinstance(done, CompletedEvent) and done.attempt == 2
        assert [(r.from_epoch, r.checkpoint) for r in events.of("resumed")] == [
            (1, released.checkpoint)]
        assert runner.runs[-1]["resume"] == {"epoch": 1, "batch": 0}


@pytest.mark.anyio
async def test_a_crash_still_spends_an_attempt_beside_drains_that_do_not(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    config = trainer_bus_config(nats_server_module, unique_prefix, max_deliver=2, ack_wait=1.0)
    async with open_bus(config) as bus, JobEvents(bus, "crashy") as events:
        await publish_command(bus, command("crashy"))
        await drain_once(bus, events, 1)
        # Deliveries 2 and 3 are taken by workers that die without a word (no ack, no event).
        dead = await bus.js.pull_subscribe_bind(durable=bus.names.consumer("any"),
                                                stream=bus.names.stream)
        for delivery in (2, 3):
            [taken] = await dead.fetch(batch=1, timeout=10)
            assert taken.metadata.num_delivered == delivery
        await dead.unsubscribe()
        # Check: two crashes spent both attempts (the drain spent none), so delivery 4 is the
        # give-up one: it runs nothing and records why.
        runner = FakeRunner()
        async with fake_worker(bus, runner):
            failed = await events.wait_for("failed", timeout=30)
        assert isinstance(failed, FailedEvent)
        assert (failed.category, failed.attempt) == ("infrastructure", 4)
        assert "no result after 2 attempts" in failed.reason
        assert runner.runs == []
        state = (await log_states(bus))["crashy"]
        assert (state.status, state.attempt, state.handed_back) == ("failed", 4, 1)


@pytest.mark.anyio
async def test_drains_past_the_hand_back_room_spend_attempts_and_then_fail_naming_it(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    config = trainer_bus_config(nats_server_module, unique_prefix, max_deliver=2,
                                max_handbacks=1)
    async with open_bus(config) as bus, JobEvents(bus, "restless") as events:
        info = await bus.js.consumer_info(bus.names.stream, bus.names.consumer("any"))
        assert info.config.max_deliver == 2 + 1 + 1  # attempts, give-up, hand-backs
        await publish_command(bus, command("restless"))
        await drain_once(bus, events, 1)  # handed back: the one hand-back of the room
        await drain_once(bus, events, 2, ends="")  # no room left: spends attempt 1 of 2
        await drain_once(bus, events, 3, ends="failed")  # spends attempt 2 of 2, the last
        failed = events.of("failed")[0]
        assert isinstance(failed, FailedEvent)
        assert (failed.category, failed.attempt) == ("infrastructure", 3)
        assert "last allowed delivery (2 attempt(s))" in failed.reason
        assert "TRAINBUS_MAX_HANDBACKS" in failed.reason
        assert [r.attempt for r in events.of("released")] == [1]
        state = (await log_states(bus))["restless"]
        assert (state.status, state.attempt, state.handed_back) == ("failed", 3, 1)


@pytest.mark.anyio
async def test_a_job_cancelled_while_handed_back_is_not_claimed_again(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    config = trainer_bus_config(nats_server_module, unique_prefix)
    async with open_bus(config) as bus, JobEvents(bus, "parked") as events:
        await publish_command(bus, command("parked"))
        await drain_once(bus, events, 1)
        await publish_cancel(bus, "parked", CancelCommand(reason="not any more"))
        runner = FakeRunner()
        async with fake_worker(bus, runner):
            record = await events.wait_for("cancelled")
        # Check: the fold cancelled it at the cancel (nobody held it); the next delivery ran
        # nothing, claimed nothing, and its record of the cancel is not foreign.
        assert (record.attempt, record.reason) == (2, "not any more")
        assert runner.runs == [] and [a.attempt for a in events.of("accepted")] == [1]
        messages: list[LogMessage] = []
        await read_log(bus.js, bus.names, messages.append)
        assert foreign_events(messages) == {}
        state = (await log_states(bus))["parked"]
        assert (state.status, state.attempt, state.handed_back) == ("cancelled", 1, 1)
