"""Only the claimant writes a job (issue 16): forged events, garbage and early cancels.

Each finding is reproduced first as the pure fold sees it, then against a real nats-server
with a real worker runtime (the fast fake runner of tests/trainers/fakes.py) while an
anonymous client (its own connection, no bus) publishes on the job's subjects.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from nats.aio.client import Client

from libs.events.bus import publish_cancel, publish_command
from libs.events.fold import (
    JobState,
    counts,
    fold,
    foreign_events,
    is_finished,
    is_foreign,
)
from libs.events.log import LogMessage, Unreadable
from libs.events.schema import (
    CancelCommand,
    CompletedEvent,
    FailedEvent,
    ModelRef,
    encode,
)
from tests.events.builders import cancel, make_event, malformed, msg, train_command
from tests.harness.bus import log_messages, open_bus, trainer_bus_config
from tests.harness.nats_server import NatsServer
from tests.trainers.conftest import JobEvents, command
from tests.trainers.fakes import FakeRunner
from tests.trainers.test_runtime import fake_worker, log_states

# --- the fold -----------------------------------------------------------------------------------


def log_of(*bodies: object) -> list[LogMessage]:
    return [msg(seq, body) for seq, body in enumerate(bodies, start=1)]


def final(messages: list[LogMessage]) -> JobState | None:
    state: JobState | None = None
    for message in messages:
        state = fold(state, message)
    return state


RUNNING = (train_command(), make_event("accepted", attempt=1, worker_id="w1"),
           make_event("progress", attempt=1, worker_id="w1"))


def test_a_completed_event_of_another_worker_with_the_right_attempt_changes_nothing() -> None:
    forged = make_event("completed", attempt=1, worker_id="forger")
    messages = log_of(*RUNNING, forged)
    state = final(messages)
    assert state is not None and state.status == "running" and state.worker == "w1"
    assert foreign_events(messages) == {"job-a": [4]}
    # The claimant still finishes it, with its own model.
    own = make_event("completed", attempt=1, worker_id="w1",
                     model=ModelRef(strategy="rsi_mlp", version="1h_v7"))
    done = final(log_of(*RUNNING, forged, own))
    assert done is not None and done.status == "completed"
    assert done.model is not None and done.model.version == "1h_v7"


def test_progress_epochs_and_failures_of_anyone_but_the_claimant_change_nothing() -> None:
    for kind in ("progress", "epoch", "checkpoint", "phase", "failed", "cancelled", "resumed"):
        forged = log_of(*RUNNING, make_event(kind, attempt=1, worker_id="forger"))
        assert final(forged) == final(log_of(*RUNNING)), kind
        assert foreign_events(forged) == {"job-a": [4]}, kind
    # Another attempt and worker: also ignored (and the worker must not read it as an end).
    other = log_of(*RUNNING, make_event("failed", attempt=7, worker_id="forger"))
    state = final(other)
    assert state is not None and not is_finished(state)
    assert foreign_events(other) == {"job-a": [4]}


def test_garbage_and_events_of_a_job_not_in_the_log_are_foreign() -> None:
    messages = [
        msg(1, make_event("accepted"), job_id="ghost"),
        *log_of(*RUNNING)[:3],
        msg(5, Unreadable(reason="undecodable garbage event")),
    ]
    messages = sorted(messages, key=lambda m: m.seq)
    assert foreign_events(messages) == {"ghost": [1], "job-a": [5]}


def test_a_healthy_log_has_no_foreign_events() -> None:
    run = log_of(*RUNNING, make_event("epoch", attempt=1, worker_id="w1"),
                 make_event("accepted", attempt=2, worker_id="w2"),
                 make_event("resumed", attempt=2, worker_id="w2"),
                 make_event("completed", attempt=2, worker_id="w2"))
    rejected = [msg(1, malformed(), job_id="bad"),
                msg(2, make_event("rejected", job_id="bad", attempt=0, command_seq=1),
                    job_id="bad")]
    cancelled_queued = log_of(train_command(), cancel("not needed"),
                              make_event("cancelled", attempt=1, worker_id="w1"))
    assert foreign_events(run) == {}
    assert foreign_events(rejected) == {}
    assert foreign_events(cancelled_queued) == {}
    state = final(run)
    assert state is not None and state.status == "completed" and state.worker == "w2"


def test_a_cancel_before_the_train_command_cancels_nothing() -> None:
    messages = log_of(cancel("sent early"), train_command(),
                      make_event("accepted", attempt=1, worker_id="w1"))
    state = final(messages)
    assert state is not None and state.status == "running" and state.cancel_reason is None
    assert foreign_events(messages) == {}  # a command, not an event: the audit's other check
    # After the command a cancel applies.
    late = final(log_of(train_command(), cancel("sent late")))
    assert late is not None and late.status == "cancelled"


def test_counts_is_the_writers_test_of_whether_it_still_owns_the_job() -> None:
    state = final(log_of(*RUNNING))
    assert state is not None
    assert counts(state, make_event("progress", attempt=1, worker_id="w1"))
    assert not counts(state, make_event("progress", attempt=1, worker_id="forger"))
    assert counts(state, make_event("accepted", attempt=2, worker_id="w2"))
    claimed = final(log_of(*RUNNING, make_event("accepted", attempt=2, worker_id="w2")))
    assert claimed is not None
    assert not counts(claimed, make_event("progress", attempt=1, worker_id="w1"))
    assert is_foreign(claimed, msg(9, make_event("progress", attempt=1, worker_id="w1")))


# --- a real server ------------------------------------------------------------------------------

async def forge(client: Client, subject: str, payload: bytes) -> int:
    """Publish through JetStream (the stream stores it); the stored sequence."""
    ack = await client.jetstream().publish(subject, payload)
    return int(ack.seq)


def forged_event(cls: Any, job_id: str, attempt: int, **fields: Any) -> bytes:
    return encode(cls(job_id=job_id, attempt=attempt, worker_id="forger", time=time.time(),
                      **fields))


@pytest.mark.anyio
async def test_a_worker_keeps_and_completes_its_job_while_its_subjects_are_forged(
    nats_server_module: NatsServer, unique_prefix: str, forger: Client
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        runner = FakeRunner(epochs=4, batches=10, batch_seconds=0.02)
        job = "forged"
        async with JobEvents(bus, job) as events, fake_worker(bus, runner) as (runtime, _):
            await publish_command(bus, command(job))
            accepted = await events.wait_for("accepted")
            await events.wait_for("progress")
            subject = bus.names.event_subject
            forged = [
                await forge(forger, subject(job, "garbage"), b"garbage"),
                # The finding: the right attempt, the forger's own worker id.
                await forge(forger, subject(job, "completed"), forged_event(
                    CompletedEvent, job, accepted.attempt,
                    model=ModelRef(strategy="evil", version="1h_v666"))),
                # Another attempt and worker: read as "already finished" by the old worker.
                await forge(forger, subject(job, "failed"), forged_event(
                    FailedEvent, job, accepted.attempt + 5, reason="forged", category="code")),
            ]
            own = runtime.settings.worker_id
            done = await events.wait_until(
                lambda: next((s.event for s in events.items if s.event.worker_id == own
                              and s.kind in ("completed", "failed", "cancelled")), None),
                "the worker's own end of the job")
        # Check the worker finished its job: one run, its own model, nothing fenced.
        assert isinstance(done, CompletedEvent) and done.model.strategy == "fake"
        assert len(runner.runs) == 1
        state = (await log_states(bus))[job]
        assert state.status == "completed" and state.worker == runtime.settings.worker_id
        assert state.model is not None and state.model.strategy == "fake"
        # Check the log's foreign messages are exactly the forged ones.
        assert foreign_events(await log_messages(bus)) == {job: forged}


@pytest.mark.anyio
async def test_a_forged_failed_does_not_make_the_next_worker_drop_a_live_job(
    nats_server_module: NatsServer, unique_prefix: str, forger: Client
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        job = "wedge"
        async with JobEvents(bus, job) as events:
            first = FakeRunner(epochs=6, batches=10, batch_seconds=0.02)
            async with fake_worker(bus, first):
                await publish_command(bus, command(job))
                await events.wait_for("checkpoint")
            # The first worker drained (checkpoint + nak); the job waits for a redelivery.
            await forge(forger, bus.names.event_subject(job, "failed"), forged_event(
                FailedEvent, job, 9, reason="forged", category="code"))
            second = FakeRunner(epochs=6, batches=10, batch_seconds=0.0)
            async with fake_worker(bus, second, kind="host") as (runtime, _):
                await events.wait_until(
                    lambda: any(s.kind == "completed" for s in events.items),
                    "the job's completion by the second worker")
        # Check the second worker resumed the job instead of acking it as "already finished".
        assert len(second.runs) == 1 and second.runs[0]["resume"]["epoch"] >= 1
        state = (await log_states(bus))[job]
        assert state.status == "completed" and state.attempt == 2
        assert state.worker == runtime.settings.worker_id


@pytest.mark.anyio
async def test_a_cancel_sent_before_the_job_exists_does_not_cancel_it(
    nats_server_module: NatsServer, unique_prefix: str, forger: Client
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        job = "predictable"
        await publish_cancel(bus, job, CancelCommand(reason="pre-emptive", requested_by="mallory"))
        runner = FakeRunner(epochs=2, batches=3, batch_seconds=0.0)
        async with JobEvents(bus, job) as events, fake_worker(bus, runner):
            await publish_command(bus, command(job))
            done = await events.wait_until(
                lambda: next((s.event for s in events.items
                              if s.kind in ("completed", "cancelled")), None),
                "the job's end")
        assert isinstance(done, CompletedEvent)
        assert len(runner.runs) == 1
        state = (await log_states(bus))[job]
        assert state.status == "completed" and state.cancel_reason is None
        # A cancel after the command still applies.
        slow = FakeRunner(epochs=50, batches=10, batch_seconds=0.02)
        async with JobEvents(bus, "later") as events, fake_worker(bus, slow):
            await publish_command(bus, command("later"))
            await events.wait_for("progress")
            await publish_cancel(bus, "later", CancelCommand(reason="now", requested_by="bob"))
            await events.wait_for("cancelled", "completed")
        assert (await log_states(bus))["later"].status == "cancelled"


@pytest.mark.anyio
async def test_garbage_stored_before_a_job_exists_neither_skips_nor_wedges_it(
    nats_server_module: NatsServer, unique_prefix: str, forger: Client
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        # Job ids are predictable: garbage and a forged end wait on the ids' subjects (a
        # forged *claim* planted there still reads as a second start: see docs/reliability.md).
        for job in ("early", "doomed"):
            await forge(forger, bus.names.event_subject(job, "accepted"), b"garbage")
            await forge(forger, bus.names.event_subject(job, "failed"), forged_event(
                FailedEvent, job, 1, reason="forged", category="code"))
        runner = FakeRunner(epochs=2, batches=3, batch_seconds=0.0)
        async with JobEvents(bus, "early") as early, JobEvents(bus, "doomed") as doomed, \
                fake_worker(bus, runner) as (runtime, _):
            await publish_command(bus, command("early"))
            await publish_command(bus, command("doomed", strategy="unknown"))
            own = runtime.settings.worker_id
            await early.wait_until(lambda: any(s.kind == "completed" and s.event.worker_id == own
                                               for s in early.items), "the job's completion")
            await doomed.wait_until(lambda: any(s.kind == "rejected" for s in doomed.items),
                                    "the rejection")
        # Check the first delivery ran (not "a second start of a known job") and the bad one
        # was rejected past the garbage (not left queued for ever).
        assert [run["job"] for run in runner.runs] == ["early"]
        states = await log_states(bus)
        assert states["early"].status == "completed" and states["early"].worker == own
        assert states["doomed"].status == "rejected"
        assert states["doomed"].error is not None
        assert states["doomed"].error.category == "unknown_strategy"
