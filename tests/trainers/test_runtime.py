"""The worker runtime's coordination on a real server, with a fast fake runner.

Fencing (a zombie stops), drain (checkpoint + nak, another worker resumes), failure categories
(only infrastructure is retried, the last delivery reports `failed` itself), idempotent
starts, the heartbeat, and `has_live_host_trainer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js.api import ConsumerInfo

from libs.events.bus import Bus, publish, publish_cancel, publish_command, publish_event
from libs.events.errors import FencedOut
from libs.events.fold import fold_all
from libs.events.heartbeat import (
    WorkerHeartbeat,
    has_live_host_trainer,
    put_heartbeat,
    read_workers,
)
from libs.events.log import read_log
from libs.events.schema import AcceptedEvent, CancelCommand, CompletedEvent, FailedEvent, encode
from libs.events.setup import ensure_jetstream
from libs.events.worker.runtime import WorkerRuntime, WorkerSettings
from tests.harness.bus import open_bus, trainer_bus_config
from tests.harness.nats_server import NatsServer
from tests.harness.polling import eventually, wait_until
from tests.trainers.conftest import JobEvents, command, object_names
from tests.trainers.fakes import FakeRunner, fake_failure

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def fake_worker(
    bus: Bus, runner: FakeRunner, kind: str = "container", **settings: Any
) -> AsyncIterator[tuple[WorkerRuntime, asyncio.Event]]:
    stop = asyncio.Event()
    runtime = WorkerRuntime(bus, WorkerSettings.for_kind(kind, **settings), runner)  # type: ignore[arg-type]
    task = asyncio.create_task(runtime.run(stop))
    await runtime.wait_ready()
    try:
        yield runtime, stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def settled(info: ConsumerInfo, *, seq: int) -> bool:
    """The consumer holds nothing pending and has acknowledged (or terminated) up to `seq`:
    that delivery is settled for good (a nak keeps a message pending until redelivered)."""
    return info.num_ack_pending == 0 and info.ack_floor is not None and \
        (info.ack_floor.stream_seq or 0) >= seq


async def log_states(bus: Bus) -> dict[str, Any]:
    messages: list[Any] = []
    await read_log(bus.js, bus.names, messages.append)
    return fold_all(messages)


async def test_a_fenced_out_worker_stops_and_publishes_nothing_more(
    nats_server_module: NatsServer, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        runner = FakeRunner(epochs=50, batches=10, batch_seconds=0.01)
        async with JobEvents(bus, "zombie") as events, fake_worker(bus, runner) as (runtime, _):
            await publish_command(bus, command("zombie"))
            await events.wait_for("epoch")
            # Another worker claims the job (as after a lease expiry), fenced correctly.
            last = events.items[-1].seq
            await publish_event(bus, AcceptedEvent(
                job_id="zombie", attempt=2, worker_id="usurper", time=time.time(),
                worker_kind="host"), n=0, expected_last_subject_seq=last)
            # Check the worker gave the job up at once and wrote nothing after the claim.
            await wait_until(lambda: not runtime.running_jobs, "the zombie attempt's end",
                             timeout=4, interval=0.02)
            assert runtime.running_jobs == []
            await events.wait_until(
                lambda: any(s.event.worker_id == "usurper" for s in events.items), "the claim")
            usurped = next(i for i, s in enumerate(events.items) if s.event.worker_id == "usurper")
            # The attempt's task has ended (its done callback took it off `running_jobs`), and
            # with it every publish it made: the stream's last event of the job is the claim.
            last_stored = await bus.js.get_last_msg(
                bus.names.stream, bus.names.job_events("zombie"), direct=True)
            assert last_stored.seq == events.items[usurped].seq, events.kinds[usurped:]
            assert len(events.items) == usurped + 1, events.kinds[usurped:]
            assert "fenced out: job zombie now owned by another worker" in caplog.text
            assert not [n for n in await object_names(bus) if n.startswith("models/")]


async def test_drain_hands_the_job_back_with_a_checkpoint_and_another_worker_resumes(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        first = FakeRunner(epochs=6, batches=20, batch_seconds=0.01)
        async with JobEvents(bus, "drained") as events:
            async with fake_worker(bus, first):
                await publish_command(bus, command("drained"))
                await events.wait_for("epoch")
            # The first worker stopped mid-job: a checkpoint, its hand-back, nothing terminal.
            checkpoints = events.of("checkpoint")
            assert checkpoints and events.kinds[-2:] == ["checkpoint", "released"], events.kinds
            mid = checkpoints[-1]
            second = FakeRunner(epochs=6, batches=20, batch_seconds=0.0)
            async with fake_worker(bus, second, kind="host"):
                done = await events.wait_for("completed", "failed")
            assert isinstance(done, CompletedEvent)
        # Check the second worker resumed exactly where the drain left off.
        assert second.runs[0]["resume"]["epoch"] == mid.epoch
        resumed = events.of("resumed")[0]
        assert (resumed.from_epoch, resumed.checkpoint) == (mid.epoch, mid.object_name)
        accepted = events.of("accepted")
        assert [a.attempt for a in accepted] == [1, 2]
        assert accepted[1].worker_kind == "host"
        # Check the fold agrees and the checkpoints were cleaned up after completion.
        state = (await log_states(bus))["drained"]
        assert (state.status, state.attempt, state.handed_back) == ("completed", 2, 1)
        assert [m.epoch for m in state.history] == [1, 2, 3, 4, 5, 6]
        names = await object_names(bus)
        assert not [n for n in names if n.startswith("checkpoints/drained/")], names


async def test_only_infrastructure_failures_are_retried_and_the_last_delivery_reports_failed(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    config = trainer_bus_config(nats_server_module, unique_prefix, max_deliver=2)
    async with open_bus(config) as bus:
        runner = FakeRunner(fail_with=fake_failure("infrastructure", "disk on fire"))
        async with JobEvents(bus, "infra") as events, fake_worker(bus, runner):
            await publish_command(bus, command("infra"))
            failed = await events.wait_for("failed", timeout=30)
        assert isinstance(failed, FailedEvent)
        assert (failed.category, failed.attempt) == ("infrastructure", 2)
        assert "disk on fire" in failed.reason
        assert [a.attempt for a in events.of("accepted")] == [1, 2]
        assert len(runner.runs) == 2

        for category in ("bad_input", "data"):
            runner = FakeRunner(fail_with=fake_failure(category, f"{category} problem"))
            async with JobEvents(bus, f"f-{category}") as events, fake_worker(bus, runner):
                receipt = await publish_command(bus, command(f"f-{category}"))
                failed = await events.wait_for("failed")
                # The command is settled for good (terminated), and nothing was redelivered.
                pool = await eventually(
                    lambda: bus.js.consumer_info(bus.names.stream, bus.names.consumer("any")),
                    functools.partial(settled, seq=receipt.seq), what="the command settled")
                assert pool.num_redelivered == 0 and pool.num_pending == 0, pool
            assert (failed.category, failed.attempt) == (category, 1)
            assert len(runner.runs) == 1  # terminated, never redelivered


async def test_a_job_whose_last_attempt_died_is_failed_on_the_give_up_delivery(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    # One attempt may run; the consumer allows one delivery more, for the give-up.
    config = trainer_bus_config(nats_server_module, unique_prefix, max_deliver=1, ack_wait=1.0)
    async with open_bus(config) as bus:
        await ensure_jetstream(bus)
        info = await bus.js.consumer_info(bus.names.stream, bus.names.consumer("any"))
        assert info.config.max_deliver == 2 + config.max_handbacks  # + room for hand-backs
        async with JobEvents(bus, "ghost") as events:
            await publish_command(bus, command("ghost"))
            # A worker takes the job and dies without a word (no ack, no event).
            dead = await bus.js.pull_subscribe_bind(durable=bus.names.consumer("any"),
                                                    stream=bus.names.stream)
            [taken] = await dead.fetch(batch=1, timeout=10)
            assert taken.metadata.num_delivered == 1
            await dead.unsubscribe()
            runner = FakeRunner()
            async with fake_worker(bus, runner):
                failed = await events.wait_for("failed", timeout=30)
        # Check the give-up ran nothing and says why, as a final infrastructure failure.
        assert isinstance(failed, FailedEvent)
        assert (failed.category, failed.attempt, failed.retryable) == ("infrastructure", 2, False)
        assert "no result after 1 attempts" in failed.reason
        assert runner.runs == []
        assert (await log_states(bus))["ghost"].status == "failed"


async def test_a_bug_in_the_runner_is_failed_code_and_the_worker_keeps_serving(
    nats_server_module: NatsServer, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        runner = FakeRunner(fail_with=ZeroDivisionError("oops"))
        async with fake_worker(bus, runner):
            async with JobEvents(bus, "bug") as events:
                await publish_command(bus, command("bug"))
                failed = await events.wait_for("failed")
            assert failed.category == "code" and "ZeroDivisionError" in failed.reason
            assert "Traceback" in caplog.text
            runner.fail_with = None
            async with JobEvents(bus, "after-bug") as events:
                await publish_command(bus, command("after-bug"))
                assert isinstance(await events.wait_for("completed", "failed"), CompletedEvent)


async def test_a_second_start_of_a_finished_job_is_acked_without_running(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        runner = FakeRunner(epochs=1, batches=2)
        async with JobEvents(bus, "once") as events, fake_worker(bus, runner):
            await publish_command(bus, command("once"))
            await events.wait_for("completed")
            # The same job id again, past the dedupe window (another msg id): not run again.
            await publish(bus, f"{unique_prefix}.cmd.train.any", encode(command("once")),
                          msg_id="train:once-again")
            await publish_command(bus, command("marker"))
            async with JobEvents(bus, "marker") as marker:
                await marker.wait_for("completed")
        assert [r["job"] for r in runner.runs] == ["once", "marker"]
        assert events.kinds.count("accepted") == 1 and events.kinds.count("completed") == 1


async def test_heartbeats_show_live_workers_and_has_live_host_trainer(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        assert await read_workers(bus) == [] and not await has_live_host_trainer(bus)
        async with fake_worker(bus, FakeRunner(), kind="container", worker_id="c-1"):
            # Check: a container trainer alone is not a host trainer.
            workers = await read_workers(bus)
            assert [(w.worker_id, w.kind, w.pools) for w in workers] == [
                ("c-1", "container", ["container", "any"])]
            assert workers[0].device == "fake" and workers[0].capabilities == {"fake": True}
            assert not await has_live_host_trainer(bus)
            async with fake_worker(bus, FakeRunner(), kind="host", worker_id="h-1"):
                assert await has_live_host_trainer(bus)
            # Check: a host trainer that stopped is gone at once (its key is deleted).
            assert not await has_live_host_trainer(bus)
        # Check: a heartbeat older than the TTL (a frozen or dead writer) is not live.
        stale = WorkerHeartbeat(worker_id="h-old", kind="host", pools=["host", "any"],
                                host="box", pid=1, device="cuda:0", started_at=0.0,
                                updated_at=time.time() - 60)
        await put_heartbeat(bus, stale)
        assert not await has_live_host_trainer(bus)
        assert await read_workers(bus, now=stale.updated_at + 1) != []


async def test_a_fenced_publish_is_refused_for_a_stale_writer(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    # The layer under the runtime's zombie handling: the server refuses a stale chain.
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        first = await publish_event(bus, AcceptedEvent(
            job_id="f", attempt=1, worker_id="a", time=time.time(), worker_kind="host"),
            n=0, expected_last_subject_seq=0)
        await publish_event(bus, AcceptedEvent(
            job_id="f", attempt=2, worker_id="b", time=time.time(), worker_kind="host"),
            n=0, expected_last_subject_seq=first.seq)
        with pytest.raises(FencedOut):
            await publish_event(bus, AcceptedEvent(
                job_id="f", attempt=1, worker_id="a", time=time.time(), worker_kind="host"),
                n=1, expected_last_subject_seq=first.seq)


async def test_a_cancel_missed_while_disconnected_is_found_in_the_log_after_reconnecting(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        runner = FakeRunner(epochs=200, batches=10, batch_seconds=0.01)
        async with JobEvents(bus, "missed") as events, fake_worker(bus, runner) as (runtime, _):
            await publish_command(bus, command("missed"))
            await events.wait_for("epoch")
            # Simulate the core cancel message being lost: drop the job's cancel subscription.
            (attempt,) = runtime._jobs.values()
            assert attempt._cancel_sub is not None
            await attempt._cancel_sub.unsubscribe()
            await publish_cancel(bus, "missed", CancelCommand(reason="sent while away"))
            # A round trip on the attempt's connection: whatever the server sent it before the
            # PONG (the cancel, had the subscription been there) has been handed out.
            await bus.nc.flush()
            assert not attempt.stop.is_cancelled()  # nobody heard it
            assert "cancelled" not in events.kinds
            await bus._reconnected()  # what nats-py calls after a reconnect
            done = await events.wait_for("cancelled", "completed", timeout=10)
        assert type(done).__name__ == "CancelledEvent" and done.reason == "sent while away"
