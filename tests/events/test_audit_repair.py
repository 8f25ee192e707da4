"""`trainbus audit --repair`: the projection rebuilt from the log, every change reported, and a
live projector's newer write never overwritten. Real nats-server, real projector."""

from __future__ import annotations

import argparse
import asyncio
import json

import msgspec
import pytest

from libs.events.audit import audit, repair, replay, write_if_unchanged
from libs.events.bus import Bus
from libs.events.projector import Checkpoint, Projector, load_projection, position_problems
from libs.events.subjects import CHECKPOINT_KEY
from services.cli import audit as audit_cli
from tests.events.builders import publish_all, scenario
from tests.harness.nats_server import NatsServer

pytestmark = pytest.mark.anyio
FORGED_SEQ = 999_999_999


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="trainbus")
    audit_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.handler(args))


async def projected(bus: Bus, n_jobs: int) -> int:
    last = await publish_all(bus.js, scenario(bus.names, n_jobs))
    async with Projector(bus) as projector:
        await projector.wait_for(last)
    return last


async def tamper(bus: Bus) -> dict[str, str]:
    """Every kind of damage, and the job each one hit."""
    assert bus.jobs is not None
    genuine = await replay(bus)
    edited, lost, garbled = sorted(genuine)[:3]
    forged = msgspec.structs.replace(genuine[edited], status="queued")  # all end terminal
    await bus.jobs.put(edited, msgspec.json.encode(forged))
    await bus.jobs.delete(lost)
    await bus.jobs.put(garbled, b"{not a state")
    await bus.jobs.put("ghost-job", msgspec.json.encode(
        msgspec.structs.replace(genuine[edited], job_id="ghost-job")))
    await bus.jobs.put(CHECKPOINT_KEY, msgspec.json.encode(
        Checkpoint(seq=FORGED_SEQ, stream=bus.names.stream, time=0.0)))
    return {"edited": edited, "lost": lost, "garbled": garbled}


async def test_repair_rewrites_what_differs_and_reports_each_change(bus: Bus) -> None:
    last = await projected(bus, 12)
    hit = await tamper(bus)
    assert not (await audit(bus, catch_up_timeout=0.2)).ok

    report = await repair(bus)
    changes = {c.key: c for c in report.changes}
    assert report.replayed_to == last and report.jobs == 12 and not report.skipped
    assert changes[hit["edited"]].action == "rewritten"
    assert [(d.kind, d.field, d.stored, d.rebuilt) for d in changes[hit["edited"]].differences
            ] == [("field", "status", "queued", (await replay(bus))[hit["edited"]].status)]
    assert changes[hit["lost"]].action == "created"
    assert changes[hit["garbled"]].action == "rewritten"
    assert changes["ghost-job"].action == "deleted"
    assert changes[CHECKPOINT_KEY].action == "checkpoint"
    assert f"sequence {FORGED_SEQ}" in changes[CHECKPOINT_KEY].detail
    assert set(changes) == {*hit.values(), "ghost-job", CHECKPOINT_KEY}

    stored = await load_projection(bus.js, bus.names.jobs_bucket)
    assert stored.states == await replay(bus) and not stored.unreadable
    assert stored.checkpoint == last
    assert position_problems(stored, stream=bus.names.stream, last_seq=last) == []
    assert (await audit(bus, catch_up_timeout=0.2)).ok
    again = await repair(bus)
    assert not again.changed and not again.skipped  # a repaired projection needs nothing


async def test_a_write_guarded_by_what_was_read_loses_to_a_newer_write(bus: Bus) -> None:
    """A live projector that rewrote an entry after the repair read it wins."""
    assert bus.jobs is not None
    await bus.jobs.put("raced", b"old")
    await bus.jobs.put("raced", b"newer, by the projector")
    assert await write_if_unchanged(bus, "raced", b"old", b"the repair's") is False
    assert (await bus.jobs.get("raced")).value == b"newer, by the projector"
    newer = b"newer, by the projector"
    assert await write_if_unchanged(bus, "raced", newer, b"the repair's") is True
    assert await write_if_unchanged(bus, "never-there", None, b"created") is True
    assert await write_if_unchanged(bus, "never-there", None, b"created twice") is False


async def test_cli_repair_reports_changes_then_nothing(
    bus: Bus, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NATS_URL", nats_server.url)
    await projected(bus, 4)
    hit = await tamper(bus)
    assert await asyncio.to_thread(cli, "audit", "--repair") == 0
    out = capsys.readouterr().out
    assert f"REWRITTEN {hit['edited']}: to the log's state at sequence" in out
    assert "  was: field: status: log says" in out
    assert f"CREATED {hit['lost']}" in out and "DELETED ghost-job: no job of that id" in out
    assert f"CHECKPOINT {CHECKPOINT_KEY}:" in out and "restart a running projector" in out
    assert "repaired 5 KV entry(ies): 4 job(s) replayed" in out

    assert await asyncio.to_thread(cli, "audit", "--repair", "--json") == 0
    assert json.loads(capsys.readouterr().out)["changes"] == []
    assert await asyncio.to_thread(cli, "audit") == 0
    assert await asyncio.to_thread(cli, "audit", "--repair", "--job", "x") == 2
