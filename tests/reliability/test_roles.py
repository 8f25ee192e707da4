"""Roles on a real nats-server started with the shipped config (deploy/nats-server.conf +
deploy/nats-roles.conf): every denial the issue names, checked at the server (its permissions
violation) and in the stream (nothing stored), and every role's legitimate work done under its
own user with no violation at all.

A publish to a denied subject gets no answer: nats-py reports the server's
`Permissions Violation` to the error callback and a request (or `js.publish`) times out. The
checks below wait for that report, then look at the stream/bucket through the admin user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import ConsumerConfig

from libs.events.audit import audit
from libs.events.bus import Bus, connect, publish_cancel, publish_command, publish_event
from libs.events.errors import BusUnavailable, ObjectStoreError, PublishError
from libs.events.follow import read_job_log
from libs.events.models import fetch_model, put_bytes
from libs.events.objects import put_object_bytes
from libs.events.schema import CompletedEvent, ModelRef, TrainCommand
from libs.events.setup import ensure_jetstream, open_jetstream
from libs.events.worker.runtime import WorkerRuntime
from services.trainers.container import serve as container_serve
from services.trainers.pipeline_runner import load_model_archive
from tests.harness.polling import Started, wait_job_state, wait_until
from tests.reliability.cluster import ROLES, RoleServer, Workspace, make_workspace

pytestmark = pytest.mark.anyio

STREAM = "TRAINBUS"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("roles-ws"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RoleServer]:
    with RoleServer(tmp_path) as server:
        yield server


@pytest.fixture
async def admin(server: RoleServer) -> AsyncIterator[Bus]:
    """The backend sets JetStream up (its job under roles); the admin user observes."""
    backend = await connect(server.bus_config("backend"))
    await ensure_jetstream(backend)
    await backend.close()
    bus = await connect(server.bus_config("admin"))
    await open_jetstream(bus)
    try:
        yield bus
    finally:
        await bus.close()


@dataclass
class Raw:
    """A plain nats-py connection as one role, collecting the server's permission errors."""

    nc: nats.NATS
    errors: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, server: RoleServer, role: str) -> Raw:
        raw = cls(nc=nats.NATS())

        async def error_cb(err: Exception) -> None:
            raw.errors.append(str(err))

        await raw.nc.connect(servers=[server.url], user=role, password=server.passwords[role],
                             error_cb=error_cb, allow_reconnect=False, connect_timeout=3)
        return raw

    async def denied(self, subject: str, payload: bytes = b"", headers: dict | None = None
                     ) -> None:
        """Publish as `js.publish` does (with a reply inbox) and wait for the server's
        permissions violation naming `subject`."""
        wanted = f'permissions violation for publish to "{subject}"'.lower()
        before = sum(wanted in e.lower() for e in self.errors)
        await self.nc.publish(subject, payload, reply=self.nc.new_inbox(), headers=headers)
        await self.nc.flush()
        await wait_until(lambda: sum(wanted in e.lower() for e in self.errors) > before,
                         f"a permissions violation for {subject}", timeout=10)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


async def stream_state(bus: Bus) -> tuple[int, int]:
    info = await bus.js.stream_info(STREAM)
    return int(info.state.messages), int(info.state.last_seq)


async def nothing_on(bus: Bus, subject: str) -> bool:
    try:
        await bus.js.get_last_msg(STREAM, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return True
    return False


TRAIN = msgspec.json.encode({"job_id": "forged-1", "strategy": "tiny", "symbols": ["EURUSD"],
                             "timeframes": ["1h"]})
COMPLETED = msgspec.json.encode(CompletedEvent(
    job_id="victim-1", attempt=1, worker_id="mallory", time=time.time(),
    model=ModelRef(strategy="tiny", version="1h_v1", object_name="models/tiny/evil.tar.gz"),
))
STATE = b'{"job_id":"victim-1","status":"completed"}'

# (role, subject, payload, what it would have done) - every denial the tests check.
DENIALS: list[tuple[str, str, bytes, str]] = [
    # a trainer cannot submit or cancel jobs, write job state, or change the log
    ("trainer", "trainbus.cmd.train.any", TRAIN, "submit a job"),
    ("trainer", "trainbus.cmd.cancel.victim-1", b"", "cancel a job"),
    ("trainer", "$KV.trainbus_jobs.victim-1", STATE, "write job state"),
    ("trainer", "$JS.API.STREAM.DELETE.TRAINBUS", b"", "delete the log"),
    ("trainer", "$JS.API.STREAM.PURGE.TRAINBUS", b"", "purge the log"),
    ("trainer", "$JS.API.STREAM.UPDATE.TRAINBUS", b"{}", "change the log's limits"),
    ("trainer", "$JS.API.CONSUMER.DELETE.TRAINBUS.pool-any", b"", "delete a pool consumer"),
    ("trainer", "_INBOX.forged", b'{"stream":"TRAINBUS","seq":1}', "forge a reply"),
    # a client cannot publish events (no forged completed), write state, models or
    # heartbeats, take or ack the trainers' work, or change the log
    ("client", "trainbus.evt.victim-1.completed", COMPLETED, "forge a completed"),
    ("client", "trainbus.evt.victim-1.accepted", b"{}", "claim a job"),
    ("client", "trainbus.evt.victim-1.rejected", b"{}", "reject a job"),
    ("client", "$KV.trainbus_jobs.victim-1", STATE, "write job state"),
    ("client", "$KV.trainbus_workers.fake", b"{}", "fake a trainer heartbeat"),
    ("client", "$O.trainbus_models.M.ZXZpbA", b"{}", "write the model store"),
    ("client", "$JS.API.CONSUMER.MSG.NEXT.TRAINBUS.pool-any", b'{"batch":1}', "take a job"),
    ("client", "$JS.ACK.TRAINBUS.pool-any.1.1.1.0.0", b"+TERM", "drop a job"),
    ("client", "$JS.API.CONSUMER.DURABLE.CREATE.TRAINBUS.pool-any", b"{}", "reconfigure a pool"),
    ("client", "$JS.API.STREAM.DELETE.TRAINBUS", b"", "delete the log"),
    ("client", "$JS.API.STREAM.UPDATE.TRAINBUS", b"{}", "change the log's limits"),
    ("client", "$JS.API.STREAM.PURGE.KV_trainbus_jobs", b"", "wipe job state"),
    ("client", "_INBOX.forged", b'{"stream":"TRAINBUS","seq":1}', "forge a reply"),
    # an auditor writes nothing at all
    ("auditor", "trainbus.cmd.train.any", TRAIN, "submit a job"),
    ("auditor", "trainbus.cmd.cancel.victim-1", b"", "cancel a job"),
    ("auditor", "trainbus.evt.victim-1.completed", COMPLETED, "forge a completed"),
    ("auditor", "$KV.trainbus_jobs.victim-1", STATE, "write job state"),
    ("auditor", "$O.trainbus_models.C.x", b"x", "write the model store"),
    ("auditor", "$JS.API.STREAM.DELETE.TRAINBUS", b"", "delete the log"),
    ("auditor", "$JS.API.STREAM.UPDATE.TRAINBUS", b"{}", "change the log"),
    ("auditor", "$JS.API.STREAM.PURGE.TRAINBUS", b"", "purge the log"),
    ("auditor", "$JS.API.CONSUMER.DELETE.TRAINBUS.pool-any", b"", "delete a pool consumer"),
    ("auditor", "$JS.API.CONSUMER.MSG.NEXT.TRAINBUS.pool-any", b'{"batch":1}', "take a job"),
    # the backend owns the setup, but cannot forge a trainer's events or delete the log
    ("backend", "trainbus.evt.victim-1.completed", COMPLETED, "forge a completed"),
    ("backend", "trainbus.evt.victim-1.accepted", b"{}", "claim a job"),
    ("backend", "$JS.API.STREAM.DELETE.TRAINBUS", b"", "delete the log"),
    ("backend", "$JS.API.STREAM.PURGE.TRAINBUS", b"", "purge the log"),
    ("backend", "$KV.trainbus_workers.fake", b"{}", "fake a trainer heartbeat"),
    ("backend", "$O.trainbus_models.M.ZXZpbA", b"{}", "write the model store"),
]


async def test_every_role_is_refused_what_it_must_not_do_and_nothing_is_stored(
    server: RoleServer, admin: Bus
) -> None:
    # A job with a state and an event, so that forged writes would have something to spoil.
    client = await connect(server.bus_config("client"))
    await open_jetstream(client)
    await publish_command(client, TrainCommand(job_id="victim-1", strategy="tiny",
                                               symbols=("EURUSD",), timeframes=("1h",)))
    await client.close()
    before = await stream_state(admin)
    pool = await admin.js.consumer_info(STREAM, "pool-any")
    stream_config = (await admin.js.stream_info(STREAM)).config

    raws = {role: await Raw.open(server, role) for role in ("trainer", "client", "auditor",
                                                              "backend")}
    try:
        for role, subject, payload, _what in DENIALS:
            await raws[role].denied(subject, payload)
    finally:
        for raw in raws.values():
            await raw.close()

    # Check: the log holds exactly what it held, the stream and pool consumer are unchanged,
    # no forged state, heartbeat or object exists.
    assert await stream_state(admin) == before
    after = await admin.js.stream_info(STREAM)
    assert after.config.max_age == stream_config.max_age
    assert after.config.subjects == stream_config.subjects
    assert (await admin.js.consumer_info(STREAM, "pool-any")).config.ack_wait == \
        pool.config.ack_wait
    for kind in ("completed", "accepted", "rejected"):
        assert await nothing_on(admin, f"trainbus.evt.victim-1.{kind}")
    assert await nothing_on(admin, "trainbus.cmd.cancel.victim-1")
    assert admin.jobs is not None and admin.workers is not None and admin.models is not None
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await admin.jobs.get("victim-1")  # no projector ran: any value would be forged
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await admin.workers.get("fake")
    assert [o for o in (await _objects(admin))] == []
    # One violation per denial in the server's own log.
    assert len(server.violations()) >= len(DENIALS)


async def test_denied_writes_through_the_library_fail_and_store_nothing(
    server: RoleServer, admin: Bus
) -> None:
    """The same denials through the code paths a rogue component would use: `publish_event`
    (js.publish), a KV put, an object put, `delete_stream`, and a consumer create that names a
    pool consumer on the ephemeral-consumer subject a client may use."""
    before = await stream_state(admin)
    quick = {"publish_timeout": 0.5, "publish_retry_for": 0.5}  # a denial gets no answer
    client = await connect(server.bus_config("client", **quick))
    await open_jetstream(client)
    trainer = await connect(server.bus_config("trainer", **quick))
    auditor = await connect(server.bus_config("auditor", **quick))
    await open_jetstream(auditor)
    try:
        forged = CompletedEvent(job_id="victim-2", attempt=1, worker_id="mallory",
                                time=time.time(), model=ModelRef(strategy="tiny",
                                                                 version="1h_v1"))
        with pytest.raises(PublishError):  # PublishTimeout: no answer within the budget
            await publish_event(client, forged, n=0, retry_for=0.5)
        with pytest.raises(PublishError):
            await publish_command(trainer, TrainCommand(
                job_id="by-trainer", strategy="tiny", symbols=("EURUSD",), timeframes=("1h",)))
        assert client.jobs is not None
        with pytest.raises(nats.errors.TimeoutError):
            await client.jobs.put("victim-2", b'{"status":"completed"}')
        with pytest.raises(ObjectStoreError):
            await put_bytes(auditor, "models/tiny/evil.tar.gz", b"x" * 10, description="evil")
        with pytest.raises(nats.errors.TimeoutError):
            await put_object_bytes(client.js, "trainbus_models", "evil", b"x")
        for bus in (client, trainer, auditor):
            with pytest.raises(nats.errors.TimeoutError):
                await bus.js.delete_stream(STREAM)
        # The ephemeral-consumer subject a reader may use cannot create or change a durable.
        reply = await client.nc.request(
            f"$JS.API.CONSUMER.CREATE.{STREAM}",
            json.dumps({"stream_name": STREAM, "config": {
                "durable_name": "pool-any", "ack_policy": "none", "ack_wait": 1_000_000_000,
                "filter_subject": "trainbus.cmd.train.any", "deliver_subject": "_INBOX.steal",
            }}).encode(), timeout=2)
        assert "error" in json.loads(reply.data), reply.data
        with pytest.raises(nats.errors.TimeoutError):
            await client.js.add_consumer(STREAM, ConsumerConfig(
                name="pool-any", filter_subject="trainbus.cmd.train.any", ack_wait=1))
    finally:
        for bus in (client, trainer, auditor):
            await bus.close()
    assert await stream_state(admin) == before
    assert await nothing_on(admin, "trainbus.evt.victim-2.>")
    pool = await admin.js.consumer_info(STREAM, "pool-any")
    assert pool.config.ack_wait != 1 and pool.config.deliver_subject is None
    assert await _objects(admin) == []
    # Only the admin may delete the log (the stream's deny flags do not prevent it).
    assert await admin.js.delete_stream(STREAM)


async def _objects(bus: Bus) -> list[str]:
    assert bus.models is not None
    try:
        infos = await bus.models.list(ignore_deletes=True)
    except nats.js.errors.NotFoundError:
        return []
    return [str(i.name) for i in infos if not i.deleted]


async def test_anonymous_and_wrong_passwords_are_refused(server: RoleServer) -> None:
    config = server.bus_config("client")
    for anonymous in (dict(user=None, password=None), dict(user="client", password="wrong"),
                      dict(user="nobody", password="x")):
        with pytest.raises(BusUnavailable) as caught:
            await connect(config.__class__(urls=config.urls, connect_timeout=2.0,
                                           **anonymous))
        assert "wrong" not in str(caught.value)
    for role in ROLES:  # every role's real password works
        bus = await connect(server.bus_config(role))
        await bus.close()


async def test_each_role_does_its_own_work_with_no_violation(
    server: RoleServer, workspace: Workspace, tmp_path: Path
) -> None:
    """backend: setup + projector; trainer: a job end to end and a cancel; client: submit,
    cancel, read state, log and the model; auditor: the audit. Not one permissions violation
    in the server log: the allow lists are sufficient, not just survivable."""
    from libs.events.projector import Projector

    backend = await connect(server.bus_config("backend"))
    await ensure_jetstream(backend)
    projector = Projector(backend)
    await projector.start()
    stop = asyncio.Event()
    started: Started[WorkerRuntime] = Started()
    trainer_task = asyncio.create_task(container_serve(
        server.bus_config("trainer"), stop, data_dir=workspace.data_dir,
        strategies_dir=workspace.strategies_dir, models_dir=tmp_path / "models",
        ready=started, worker_id="trainer-role"))
    client = await connect(server.bus_config("client"))
    await open_jetstream(client)
    try:
        await (await started.wait(trainer_task, timeout=60)).wait_ready(60)
        done = await publish_command(client, TrainCommand(
            job_id="legit-1", strategy="tiny", symbols=("EURUSD", "GBPUSD"),
            timeframes=("1h",), seed=5))
        state = await wait_job_state(client, done.job_id, timeout=120)
        assert state.status == "completed", state
        assert state.model is not None
        archive = await fetch_model(client, state.model)
        assert load_model_archive(archive).metadata["strategy"] == "tiny"
        subjects = [m.subject for m in
                    await read_job_log(client, "legit-1", command_seq=state.command_seq)]
        assert subjects[0] == "trainbus.cmd.train.any"
        assert subjects[-1] == "trainbus.evt.legit-1.completed"

        # Cancel: a long job, cancelled by the client once the trainer runs it.
        await publish_command(client, TrainCommand(
            job_id="legit-2", strategy="long", symbols=("EURUSD",), timeframes=("1h",)))
        await wait_job_state(client, "legit-2", {"running"}, timeout=90)
        await publish_cancel(client, "legit-2")
        assert (await wait_job_state(client, "legit-2", timeout=120)).status == "cancelled"

        auditor = await connect(server.bus_config("auditor"))
        await open_jetstream(auditor)
        try:
            report = await audit(auditor)
        finally:
            await auditor.close()
        assert report.ok and report.jobs == 2, report.differences
    finally:
        stop.set()
        await asyncio.wait_for(trainer_task, 60)
        await projector.stop()
        await client.close()
        await backend.close()
    assert server.violations() == []

