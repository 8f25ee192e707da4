"""Signed events (issue 16): a trainer signs what it publishes, the edge verifies, the fold only
counts a signed claim's attempt under its key, and with trust configured only models a trusted
key vouches for are listed and served.

Pure cases first (the signature, the fold), then a real nats-server: a real worker runtime with
the fast fake runner while an anonymous client forges the claimant's own events; then signed
jobs published through the real signing path (`publish_event` with `bus.signer`), projected,
listed, resolved, served by the predictor's model source, trusted and untrusted by the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from libs.events import registry
from libs.events.audit import audit
from libs.events.bus import Bus, publish_command, publish_event
from libs.events.catalog import ModelInfo
from libs.events.errors import BusConfigError, InvalidRequest, ModelUntrusted
from libs.events.fold import counts, fold, foreign_events
from libs.events.heartbeat import read_workers
from libs.events.log import LogMessage, to_log_message
from libs.events.projector import Projector
from libs.events.schema import AcceptedEvent, CompletedEvent, EventHeader, ModelRef, encode
from libs.events.signing import (
    SIGNATURE_HEADER,
    SIGNER_HEADER,
    WorkerKey,
    load_worker_key,
    verify,
    verify_headers,
)
from libs.events.subjects import Names
from libs.events.trust import (
    Trust,
    read_trust,
    read_trusted,
    trust_new_worker,
    trust_worker,
    untrust_worker,
)
from services.backend.problems import from_service_error
from services.cli import audit as audit_cli
from services.cli import jobs as jobs_cli
from services.cli import models as models_cli
from services.cli import trust as trust_cli
from services.predictor.models import ModelSource
from tests.events.builders import make_event, msg, train_command
from tests.harness.bus import log_messages, open_bus, trainer_bus_config
from tests.harness.nats_server import NatsServer
from tests.trainers.conftest import JobEvents, command
from tests.trainers.fakes import FakeRunner
from tests.trainers.test_runtime import fake_worker, log_states

# --- the signature --------------------------------------------------------------------------------


def test_a_signature_round_trips_and_a_flipped_byte_or_another_key_fails() -> None:
    key, other = WorkerKey.generate(), WorkerKey.generate()
    subject, data = "trainbus.evt.job-a.completed", b'{"type":"completed"}'
    headers = key.sign(subject, data)
    assert headers[SIGNER_HEADER] == key.public_key and key.public_key.startswith("U")
    assert verify_headers(subject, data, headers) == (key.public_key, False)
    # One flipped byte of the payload, of the subject (a `progress` replayed as `completed`),
    # of the signature: each fails, and is reported as a bad signature (not as unsigned).
    assert verify_headers(subject, data[:-1] + b"]", headers) == (None, True)
    assert verify_headers("trainbus.evt.job-b.completed", data, headers) == (None, True)
    sig = headers[SIGNATURE_HEADER]
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    assert verify_headers(subject, data, {**headers, SIGNATURE_HEADER: flipped}) == (None, True)
    # The signature of another key under this key's name fails; under its own name it is
    # that other key's.
    forged = {**other.sign(subject, data), SIGNER_HEADER: key.public_key}
    assert verify_headers(subject, data, forged) == (None, True)
    assert verify_headers(subject, data, other.sign(subject, data)) == (other.public_key, False)
    assert not verify(other.public_key, subject, data, headers[SIGNATURE_HEADER])
    # Unsigned is not invalid; junk headers never raise.
    assert verify_headers(subject, data, {"Nats-Msg-Id": "x"}) == (None, False)
    assert verify_headers(subject, data, {SIGNER_HEADER: "U" * 400,
                                          SIGNATURE_HEADER: "!!"}) == (None, True)
    assert "S" not in repr(key).replace(key.public_key, "")  # the seed never shows


def test_the_key_file_is_created_once_0600_and_reread(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINBUS_WORKER_KEY", raising=False)
    monkeypatch.setenv("TRAINBUS_STORE", str(tmp_path / "state"))
    first = load_worker_key("host")
    path = tmp_path / "state" / "keys" / "host-trainer.nk"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_worker_key("host").public_key == first.public_key  # the same key next start
    assert load_worker_key("container").public_key != first.public_key
    monkeypatch.setenv("TRAINBUS_WORKER_KEY", str(path))
    assert load_worker_key("container").public_key == first.public_key
    monkeypatch.setenv("TRAINBUS_WORKER_KEY", str(tmp_path / "missing.nk"))
    with pytest.raises(BusConfigError, match="TRAINBUS_WORKER_KEY"):
        load_worker_key("host")
    (tmp_path / "bad.nk").write_text("SUnotaseed")
    with pytest.raises(BusConfigError, match="not a valid nkey seed") as raised:
        WorkerKey((tmp_path / "bad.nk").read_bytes())
    assert "SUnotaseed" not in str(raised.value)


def test_to_log_message_verifies_the_stored_signature() -> None:
    names, key = Names("trainbus"), WorkerKey.generate()
    event = make_event("progress", attempt=1, worker_id="w1")
    subject, data = names.event_subject("job-a", "progress"), encode(event)
    signed = to_log_message(names, 5, subject, data, key.sign(subject, data), 0.0)
    assert (signed.signer, signed.bad_signature, signed.body) == (key.public_key, False, event)
    tampered = to_log_message(names, 5, subject, data.replace(b"10.0", b"99.0"),
                              key.sign(subject, data), 0.0)
    assert (tampered.signer, tampered.bad_signature) == (None, True)
    plain = to_log_message(names, 5, subject, data, {"Nats-Msg-Id": "m"}, 0.0)
    assert (plain.signer, plain.bad_signature, plain.msg_id) == (None, False, "m")


# --- the fold -------------------------------------------------------------------------------------

K, OTHER = "UKEYOFTHECLAIMANT", "UKEYOFSOMEONEELSE"  # the fold only compares keys


def signed(seq: int, body: Any, signer: str | None) -> LogMessage:
    return LogMessage(seq=seq, subject=f"test.{seq}", time=float(seq), job_id="job-a",
                      body=body, signer=signer)


def test_a_signed_claim_counts_only_its_own_key_for_the_claimants_id_and_attempt() -> None:
    claimed = [msg(1, train_command()),
               signed(2, make_event("accepted", attempt=1, worker_id="w1"), K)]
    completed = make_event("completed", attempt=1, worker_id="w1",
                           model=ModelRef(strategy="rsi_mlp", version="1h_v2"))
    for forger in (None, OTHER):  # unsigned, or signed by another key: foreign
        log = [*claimed, signed(3, make_event("progress", attempt=1, worker_id="w1"), forger),
               signed(4, completed, forger)]
        state = fold(fold(fold(fold(None, log[0]), log[1]), log[2]), log[3])
        assert state is not None and state.status == "running" and state.signer == K
        assert state.epoch is None
        assert foreign_events(log) == {"job-a": [3, 4]}
    # The claimant's key counts.
    log = [*claimed, signed(3, completed, K)]
    state = fold(fold(fold(None, log[0]), log[1]), log[2])
    assert state is not None and state.status == "completed" and state.model == completed.model
    assert foreign_events(log) == {}
    # The writer's test: its own key counts, none or another does not; a new claim (judged by
    # its attempt) and an operator's end count whoever signs them.
    running = fold(fold(None, claimed[0]), claimed[1])
    assert running is not None
    assert counts(running, completed, signer=K)
    assert not counts(running, completed) and not counts(running, completed, signer=OTHER)
    assert counts(running, make_event("accepted", attempt=2, worker_id="w2"))
    assert counts(running, make_event("operator_failed"))


def test_an_unsigned_claim_keeps_the_old_rule() -> None:
    log = [msg(1, train_command()), msg(2, make_event("accepted", attempt=1, worker_id="w1")),
           signed(3, make_event("progress", attempt=1, worker_id="w1"), OTHER),
           msg(4, make_event("completed", attempt=1, worker_id="w1"))]
    state = None
    for message in log:
        state = fold(state, message)
    assert state is not None and state.status == "completed" and state.signer is None
    assert foreign_events(log) == {}


# --- a real server: a forger with the claimant's own worker id and attempt ------------------------


@pytest.mark.anyio
async def test_a_forged_completion_with_the_claimants_id_and_attempt_is_refused(
    nats_server_module: NatsServer, unique_prefix: str, forger: Client
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        key, mallory = WorkerKey.generate(), WorkerKey.generate()
        bus.signer = key  # what services/trainers/process.py does for a trainer
        runner = FakeRunner(epochs=4, batches=10, batch_seconds=0.02)
        job = "impostor"
        async with JobEvents(bus, job) as events, fake_worker(bus, runner) as (runtime, _):
            beats = await read_workers(bus)
            assert [b.signer for b in beats] == [key.public_key]  # announced in the heartbeat
            await publish_command(bus, command(job))
            accepted = await events.wait_for("accepted")
            await events.wait_for("progress")
            own = runtime.settings.worker_id
            subject = bus.names.event_subject(job, "completed")
            forged_model = ModelRef(strategy="evil", version="1h_v666")
            payload = encode(CompletedEvent(job_id=job, attempt=accepted.attempt, worker_id=own,
                                            time=time.time(), model=forged_model))
            js = forger.jetstream()
            forged = [
                # Unsigned, the claimant's id and attempt: before signing, this was the claimant.
                (await js.publish(subject, payload)).seq,
                # Signed by another key under the claimant's key name: a bad signature.
                (await js.publish(subject, payload, headers={
                    **mallory.sign(subject, payload), SIGNER_HEADER: key.public_key})).seq,
                # Validly signed, by the wrong key.
                (await js.publish(subject, payload, headers=mallory.sign(subject, payload))).seq,
            ]
            done = await events.wait_until(
                lambda: next((s.event for s in events.items if s.seq not in forged
                              and s.kind in ("completed", "failed", "cancelled")), None),
                "the worker's own end of the job")
        assert isinstance(done, CompletedEvent) and done.model.strategy == "fake"
        assert len(runner.runs) == 1
        state = (await log_states(bus))[job]
        assert state.status == "completed" and state.signer == key.public_key
        assert state.model is not None and state.model.strategy == "fake"
        messages = await log_messages(bus)
        assert foreign_events(messages) == {job: forged}
        own_events = [m for m in messages if m.job_id == job and m.seq not in forged
                      and m.subject.startswith(f"{unique_prefix}.evt.")]
        assert own_events and all(m.signer == key.public_key for m in own_events)
        # The audit: every event of the worker verified, the forgeries foreign, the bad one
        # listed.
        async with Projector(bus) as projector:
            await projector.wait_for(messages[-1].seq)
            report = await audit(bus, catch_up_timeout=5)
        assert report.ok, report.differences
        assert report.signed == len(own_events) + 1  # + the validly signed forgery
        assert report.bad_signatures == [(forged[1], subject)]
        assert report.foreign == {job: forged}


# --- a real server: trust ------------------------------------------------------------------------

STRATEGY = "fake"


async def signed_job(bus: Bus, job_id: str, key: WorkerKey | None, version: str, *,
                     command: bool = True) -> int:
    """A job claimed and completed through the real signing path (`publish_event` signs with
    `bus.signer`); the last sequence. `command=False`: its train command is already stored."""
    bus.signer = key
    try:
        if command:
            await publish_command(bus, train_command(job_id))
        header: EventHeader = {"job_id": job_id, "attempt": 1, "worker_id": f"w-{job_id}",
                               "time": time.time()}
        claim = await publish_event(bus, AcceptedEvent(**header, worker_kind="container"),
                                    n=0, expected_last_subject_seq=0)
        model = ModelRef(strategy=STRATEGY, version=version,
                         object_name=f"models/{STRATEGY}/{job_id}/1.tar.gz", sha256="0" * 64)
        done = await publish_event(bus, CompletedEvent(**header, model=model), n=1,
                                   expected_last_subject_seq=claim.seq)
        return done.seq
    finally:
        bus.signer = None


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="trainbus")
    sub = parser.add_subparsers()
    jobs_cli.register(sub)
    trust_cli.register(sub)
    audit_cli.register(sub)
    models_cli.register(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args))


def cli_env(monkeypatch: pytest.MonkeyPatch, server: NatsServer, prefix: str,
            store: Path) -> None:
    """The CLI on the test server, never a local `trainbus up`'s credentials."""
    monkeypatch.setenv("NATS_URL", server.url)
    monkeypatch.setenv("TRAINBUS_SUBJECT_PREFIX", prefix)
    monkeypatch.setenv("TRAINBUS_STORE", str(store / "no-store"))


def names_of(models: list[ModelInfo]) -> list[str]:
    return sorted(m.job_id or "" for m in models)


@pytest.mark.anyio
async def test_with_trust_configured_only_a_trusted_keys_models_are_listed_and_served(
    nats_server_module: NatsServer, unique_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trusted_key, stranger = WorkerKey.generate(), WorkerKey.generate()
    models_dir = tmp_path / "models"
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus, \
            Projector(bus) as projector:
        # A job trained before anyone signed (a store from before signed events).
        await projector.wait_for(await signed_job(bus, "legacy", None, "1h_v1"))

        # Trust not configured: nothing changes.
        assert await read_trusted(bus) == {}
        assert names_of(await registry.list_models(bus, models_dir)) == ["legacy"]
        assert await registry.resolve(bus, "fake/latest", models_dir) == ("fake", "1h_v1")

        # Trusted through the CLI, as an operator does.
        cli_env(monkeypatch, nats_server_module, unique_prefix, tmp_path)
        assert await asyncio.to_thread(cli, "workers", "trust", trusted_key.public_key,
                                       "--name", "box-1") == 0
        assert f"trusted {trusted_key.public_key} as 'box-1'" in capsys.readouterr().out
        assert await asyncio.to_thread(cli, "workers", "trust", "not-a-key", "--name", "x") == 2
        assert "public_key" in capsys.readouterr().err
        assert list(await read_trusted(bus)) == [trusted_key.public_key]
        # Jobs after trust began: one under the trusted key, one under a stranger's, one
        # unsigned.
        await signed_job(bus, "good", trusted_key, "1h_v2")
        await signed_job(bus, "strange", stranger, "1h_v3")
        await projector.wait_for(await signed_job(bus, "unsigned", None, "1h_v4"))

        refused: list[tuple[ModelInfo, str]] = []
        listed = await registry.list_models(bus, models_dir, refused=refused)
        assert names_of(listed) == ["good", "legacy"]  # legacy: trained before trust began
        why = dict((m.job_id, reason) for m, reason in refused)
        assert set(why) == {"strange", "unsigned"}
        assert stranger.public_key in why["strange"] and "not a trusted worker" in why["strange"]
        assert "without a signature" in why["unsigned"]

        # Not served: the registry (the download route, promote), the predictor's fetch, and
        # the HTTP problem is a 403 naming why; the trusted one resolves.
        for ref in ("fake/strange", "fake/unsigned", "fake/1h_v3", "fake/1h_v4"):
            with pytest.raises(ModelUntrusted, match=r"job (strange|unsigned)"):
                await registry.resolve_ref(bus, ref, models_dir)
        assert (await registry.resolve_ref(bus, "fake/good", models_dir)).model.job_id == "good"
        # `latest` is the newest trusted one: a forged newer version does not hide it.
        assert await registry.resolve(bus, "fake/latest", models_dir) == ("fake", "1h_v2")
        assert await registry.resolve(bus, "fake@latest", models_dir) == ("fake", "1h_v2")
        # The trusted keys are read once per resolve: the lookup of `latest` among the trusted
        # models and the check of the one found see the same keys.
        reads: list[Bus] = []

        async def counted(read_from: Bus) -> Trust:
            reads.append(read_from)
            return await read_trust(read_from)

        with monkeypatch.context() as patched:
            patched.setattr(registry, "read_trust", counted)
            assert await registry.resolve(bus, "fake/latest", models_dir) == ("fake", "1h_v2")
        assert len(reads) == 1
        with pytest.raises(ModelUntrusted):
            await registry.set_alias(bus, STRATEGY, "champion", "strange", by="eve",
                                     expires_after=None, reason=None, models_dir=models_dir)

        async def provider() -> Bus:
            return bus

        with pytest.raises(ModelUntrusted, match=stranger.public_key):
            await ModelSource(models_dir, bus=provider).get("fake/strange")
        with pytest.raises(ModelUntrusted) as raised:
            await registry.resolve_ref(bus, "fake/strange", models_dir)
        problem = from_service_error(raised.value)
        assert problem.status_code == 403 and stranger.public_key in str(problem.detail)

        # The audit names the completed jobs no trusted key vouches for.
        report = await audit(bus, catch_up_timeout=5)
        assert report.ok and report.signed == 4 and report.trusted_keys == 1
        assert [job for job, _ in report.untrusted] == ["strange", "unsigned"]
        capsys.readouterr()
        assert await asyncio.to_thread(cli, "audit") == 0
        out = capsys.readouterr().out
        assert "SIGNED 4 event(s) verified, 4 unsigned, 0 invalid, 1 trusted key(s)" in out
        assert f"UNTRUSTED strange: job strange was claimed by key {stranger.public_key}, " \
               "which is not a trusted worker" in out
        assert await asyncio.to_thread(cli, "audit", "--json") == 0
        signatures = json.loads(capsys.readouterr().out)["signatures"]
        assert signatures["verified"] == 4 and signatures["invalid"] == []
        assert [u["job_id"] for u in signatures["untrusted_completed"]] == [
            "strange", "unsigned"]
        # `trainbus models`: the trusted one listed, the others named on stderr.
        assert await asyncio.to_thread(cli, "models", "--json", "--models-dir",
                                       str(models_dir)) == 0
        listing = capsys.readouterr()
        assert sorted(m["job_id"] for m in json.loads(listing.out)) == ["good", "legacy"]
        assert "not listed: fake/1h_v3: job strange was claimed by key" in listing.err
        assert "not listed: fake/1h_v4" in listing.err

        # `trainbus workers` shows each key and whether it is trusted (none live here), and
        # untrusting the last key keeps enforcing: nothing signed since is trusted then.
        assert await asyncio.to_thread(cli, "workers", "--json") == 0
        assert json.loads(capsys.readouterr().out) == []
        assert await untrust_worker(bus, trusted_key.public_key)
        assert not await untrust_worker(bus, trusted_key.public_key)
        assert names_of(await registry.list_models(bus, models_dir)) == ["legacy"]
        # What `trainbus up` does at each start: a key the operator untrusted stays untrusted;
        # a key the bucket never saw is trusted.
        assert not await trust_new_worker(bus, trusted_key.public_key, "up", by="trainbus up")
        assert await read_trusted(bus) == {}
        assert await trust_new_worker(bus, stranger.public_key, "up", by="trainbus up")
        assert not await trust_new_worker(bus, stranger.public_key, "up", by="trainbus up")
        assert names_of(await registry.list_models(bus, models_dir)) == ["legacy", "strange"]


@pytest.mark.anyio
async def test_a_job_queued_before_trust_began_but_trained_after_is_judged_by_its_claim(
    nats_server_module: NatsServer, unique_prefix: str, tmp_path: Path
) -> None:
    """Trust exempts what was trained before it began, not what was merely submitted: a job
    queued then and claimed later by an untrusted key is refused, one trained then is not."""
    models_dir = tmp_path / "models"
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus, \
            Projector(bus) as projector:
        await signed_job(bus, "trained-early", None, "1h_v1")
        await publish_command(bus, train_command("queued-early"))
        await trust_worker(bus, WorkerKey.generate().public_key, "box")
        await projector.wait_for(await signed_job(bus, "queued-early", WorkerKey.generate(),
                                                  "1h_v2", command=False))
        refused: list[tuple[ModelInfo, str]] = []
        listed = await registry.list_models(bus, models_dir, refused=refused)
        assert names_of(listed) == ["trained-early"]
        assert [m.job_id for m, _ in refused] == ["queued-early"]


@pytest.mark.anyio
async def test_untrusting_the_last_key_of_a_bucket_without_enforce_keeps_enforcing(
    nats_server_module: NatsServer, unique_prefix: str
) -> None:
    """A bucket written before `_enforce` existed (a key and nothing else): removing its last
    key must not switch trust off."""
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        key = WorkerKey.generate().public_key
        bucket = await bus.js.key_value(bus.names.trusted_bucket)
        await bucket.put(key, b'{"name": "old", "trusted_at": 1.0}')
        assert (await read_trust(bus)).enforced
        assert await untrust_worker(bus, key)
        trust = await read_trust(bus)
        assert trust.enforced and trust.keys == {}


@pytest.mark.anyio
async def test_workers_lists_the_key_and_its_trust(
    nats_server_module: NatsServer, unique_prefix: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with open_bus(trainer_bus_config(nats_server_module, unique_prefix)) as bus:
        key = WorkerKey.generate()
        bus.signer = key
        async with fake_worker(bus, FakeRunner(epochs=1, batches=1)):
            cli_env(monkeypatch, nats_server_module, unique_prefix, tmp_path)
            assert await asyncio.to_thread(cli, "workers", "--json") == 0
            [worker] = json.loads(capsys.readouterr().out)
            assert (worker["signer"], worker["trusted"]) == (key.public_key, False)
            await trust_worker(bus, key.public_key, "box-2")
            assert await asyncio.to_thread(cli, "workers", "--plain") == 0
            out = capsys.readouterr().out
            assert key.public_key in out and "yes (box-2)" in out
        # One character changed (never to itself): its checksum no longer fits.
        typo = key.public_key[:-1] + ("B" if key.public_key.endswith("A") else "A")
        with pytest.raises(InvalidRequest, match="public_key"):
            await trust_worker(bus, typo, "typo")
