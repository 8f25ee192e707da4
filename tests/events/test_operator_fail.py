"""An operator ends a stuck job (`trainbus jobs fail`): an `operator_failed` event in the log,
accepted by the fold from no claimant; refused for a job a live worker holds unless forced, for
a finished job, and when a worker writes to the job while the operator looks. Real
nats-server, real projector, the real CLI entry point."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from libs.events.audit import audit, replay, timeline
from libs.events.bus import Bus, publish_command, publish_event
from libs.events.errors import JobAlreadyFinished
from libs.events.fold import fold
from libs.events.heartbeat import WorkerHeartbeat, put_heartbeat
from libs.events.log import read_log
from libs.events.operator import JobHeld, fail_job
from libs.events.projector import Projector, load_projection
from libs.events.schema import OPERATOR_WORKER_ID, OperatorFailedEvent
from services.cli.main import main as trainbus
from tests.events.builders import make_event, msg, train_command
from tests.harness.nats_server import NatsServer

pytestmark = pytest.mark.anyio


async def stuck_job(bus: Bus, job_id: str) -> int:
    """A job claimed by w1 that then went silent (its worker died): stream seq of its claim."""
    await publish_command(bus, train_command(job_id))
    claim = await publish_event(bus, make_event("accepted", job_id, worker_id="w1"), n=0,
                                expected_last_subject_seq=0)
    return claim.seq


async def live_worker(bus: Bus, running: list[str]) -> None:
    now = time.time()
    await put_heartbeat(bus, WorkerHeartbeat(
        worker_id="w1", kind="container", pools=["container"], host="box", pid=1, device="cpu",
        running=running, started_at=now, updated_at=now))


def cli(*argv: str) -> int:
    return trainbus(list(argv))


@pytest.fixture
def nats_env(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", nats_server.url)
    monkeypatch.delenv("TRAINBUS_SUBJECT_PREFIX", raising=False)


async def test_cli_fails_a_stuck_job_and_the_log_says_the_operator_did(
    bus: Bus, nats_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Projector(bus) as projector:
        await projector.wait_for(await stuck_job(bus, "stuck-1"))
        code = await asyncio.to_thread(cli, "jobs", "fail", "stuck-1", "--reason",
                                       "worker w1 died on box", "--json")
        assert code == 0, capsys.readouterr().err
        accepted = json.loads(capsys.readouterr().out)
        assert accepted["status"] == "failed" and accepted["forced"] is False
        await projector.wait_for(accepted["seq"])

    state = (await load_projection(bus.js, bus.names.jobs_bucket)).states["stuck-1"]
    assert state.status == "failed" and state.last_seq == accepted["seq"]
    assert state.error is not None
    assert (state.error.category, state.error.reason) == ("operator", "worker w1 died on box")
    stored: list[Any] = []
    await read_log(bus.js, bus.names, stored.append)
    event = stored[-1].body
    assert isinstance(event, OperatorFailedEvent)
    assert (event.worker_id, event.by, event.attempt, event.forced) == (
        OPERATOR_WORKER_ID, "cli", 1, False)
    assert stored[-1].subject == "trainbus.evt.stuck-1.operator_failed"
    assert (await audit(bus)).ok  # the projection is the fold of the log
    entries = await timeline(bus, "stuck-1")
    assert entries[-1].applied and "failed by operator cli: worker w1 died" in entries[-1].text


async def test_a_job_a_live_worker_holds_is_refused_unless_forced(
    bus: Bus, nats_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    claim = await stuck_job(bus, "held-1")
    await live_worker(bus, running=["held-1"])
    code = await asyncio.to_thread(cli, "jobs", "fail", "held-1", "--reason", "looks stuck")
    assert code == 1
    err = capsys.readouterr().err
    assert "held by live worker w1" in err and "force" in err
    assert (await replay(bus))["held-1"].last_seq == claim  # nothing was published

    assert await asyncio.to_thread(cli, "jobs", "fail", "held-1", "--reason", "wedged",
                                   "--force") == 0
    assert "forced: w1 still listed it" in capsys.readouterr().out
    state = (await replay(bus))["held-1"]
    assert state.status == "failed" and state.error is not None
    assert state.error.category == "operator"

    # Finished now: a second fail is refused, nothing more is stored.
    assert await asyncio.to_thread(cli, "jobs", "fail", "held-1", "--reason", "again") == 1
    assert "already failed" in capsys.readouterr().err
    with pytest.raises(JobAlreadyFinished):
        await fail_job(bus, "held-1", reason="again", by="test", force=True)


async def test_a_worker_heartbeat_not_listing_the_job_does_not_hold_it(bus: Bus) -> None:
    await stuck_job(bus, "orphan-1")
    await live_worker(bus, running=["another-job"])  # w1 is alive but lost this job
    accepted = await fail_job(bus, "orphan-1", reason="lost by w1", by="test")
    assert not accepted.forced and accepted.held_by is None
    assert (await replay(bus))["orphan-1"].status == "failed"


async def test_a_worker_writing_while_the_operator_looks_makes_the_fail_refused(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fence: the job's last event is read before the heartbeats; a worker that writes in
    between (here: while the heartbeats are read) wins, and the operator must look again."""
    import libs.events.operator as operator

    claim = await stuck_job(bus, "racing-1")
    real_read_workers = operator.read_workers

    async def worker_writes_meanwhile(bus: Bus) -> list[WorkerHeartbeat]:
        await publish_event(bus, make_event("progress", "racing-1", worker_id="w1"), n=1,
                            expected_last_subject_seq=claim)
        return await real_read_workers(bus)

    monkeypatch.setattr(operator, "read_workers", worker_writes_meanwhile)
    with pytest.raises(JobHeld, match="changed while it was being failed"):
        await fail_job(bus, "racing-1", reason="stuck?", by="test")
    assert (await replay(bus))["racing-1"].status == "running"


async def test_a_queued_job_nobody_claimed_can_be_failed(bus: Bus) -> None:
    await publish_command(bus, train_command("queued-1"))
    accepted = await fail_job(bus, "queued-1", reason="never going to run", by="test")
    state = (await replay(bus))["queued-1"]
    assert state.status == "failed" and state.last_seq == accepted.seq


def test_the_fold_accepts_an_operators_fail_only_with_the_operator_id() -> None:
    state = fold(None, msg(1, train_command("job-a")))
    state = fold(state, msg(2, make_event("accepted", "job-a", worker_id="w1")))
    assert state is not None and state.status == "running"
    ended = OperatorFailedEvent(job_id="job-a", attempt=1, worker_id=OPERATOR_WORKER_ID,
                                time=1.0, reason="stuck")
    failed = fold(state, msg(3, ended))
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and failed.error.category == "operator"
    # A worker wearing the operator's kind but not its id changes nothing.
    posing = OperatorFailedEvent(job_id="job-a", attempt=1, worker_id="w1", time=1.0,
                                 reason="forged")
    assert fold(state, msg(3, posing)) is state
