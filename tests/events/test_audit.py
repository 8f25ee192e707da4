"""Audit and timeline, through the library and through the `trainbus` CLI handlers."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from libs.events.audit import audit, format_timeline, replay, timeline
from libs.events.bus import Bus, publish_cancel, publish_command, publish_event
from libs.events.projector import Projector
from libs.events.schema import CancelCommand
from services.cli import audit as audit_cli
from services.cli import schema as schema_cli
from tests.events.builders import make_event, publish_all, scenario, train_command
from tests.harness.nats_server import NatsServer, free_port

pytestmark = pytest.mark.anyio


def cli(*argv: str) -> int:
    """Run one of our CLI commands the way `trainbus` dispatches it."""
    parser = argparse.ArgumentParser(prog="trainbus")
    sub = parser.add_subparsers()
    audit_cli.register(sub)
    schema_cli.register(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args))


async def run_job(bus: Bus) -> int:
    """demo-1: asked by alice, run by w1 for two epochs, cancelled by bob."""
    await publish_command(bus, train_command("demo-1", requested_by="alice"))
    claim = await publish_event(bus, make_event("accepted", "demo-1", worker_id="w1",
                                                host="gpu-box", device="cuda:0"),
                                n=0, expected_last_subject_seq=0)
    last = claim.seq
    steps: list[tuple[str, dict[str, Any]]] = [  # (kind, make_event's **overrides)
        ("phase", {"phase": "training"}),
        ("progress", {"percent": 10.0}), ("progress", {"percent": 20.0}),
        ("epoch", {"epoch": 1, "train_loss": 0.9, "val_loss": 1.0}),
        ("epoch", {"epoch": 2, "train_loss": 0.7, "val_loss": 0.8}),
    ]
    for n, (kind, extra) in enumerate(steps, start=1):
        last = (await publish_event(bus, make_event(kind, "demo-1", worker_id="w1", **extra),
                                    n=n, expected_last_subject_seq=last)).seq
    await publish_cancel(bus, "demo-1", CancelCommand(reason="enough", requested_by="bob"))
    done = await publish_event(bus, make_event("cancelled", "demo-1", worker_id="w1"), n=9,
                               expected_last_subject_seq=last)
    # A zombie's late event: stored (unfenced), ignored by the fold.
    stale = await publish_event(bus, make_event("completed", "demo-1", attempt=0), n=10)
    return max(done.seq, stale.seq)


async def test_audit_passes_on_a_faithful_projection_and_catches_a_tampered_entry(
    bus: Bus,
) -> None:
    await publish_all(bus.js, scenario(bus.names, 30))
    async with Projector(bus) as projector:
        last = await run_job(bus)
        await projector.wait_for(last)
    report = await audit(bus)
    assert report.ok and report.jobs == 31 and report.replayed_to == last
    assert report.foreign == {"demo-1": [last]}  # the zombie's late completion: reported

    # Tamper: someone "completes" the cancelled job in KV by hand.
    assert bus.jobs is not None
    entry = await bus.jobs.get("demo-1")
    forged = msgspec.json.decode(entry.value or b"")
    forged["status"] = "completed"
    await bus.jobs.put("demo-1", msgspec.json.encode(forged))
    await bus.jobs.put("job9999", b"{not a state")
    report = await audit(bus, catch_up_timeout=0.5)
    assert not report.ok
    kinds = {(d.job_id, d.kind, d.field) for d in report.differences}
    assert ("demo-1", "field", "status") in kinds
    assert ("job9999", "unreadable", None) in kinds

    # A KV entry the log never created, and a KV that lost a job.
    await bus.jobs.put("job9999", msgspec.json.encode((await replay(bus))["demo-1"]))
    await bus.jobs.delete("job0001")
    pairs = {(d.job_id, d.kind) for d in (await audit(bus, catch_up_timeout=0.5)).differences}
    assert {("job9999", "not in log"), ("job0001", "missing in KV")} <= pairs


async def test_timeline_tells_the_story(bus: Bus) -> None:
    await run_job(bus)
    entries = await timeline(bus, "demo-1")
    lines = format_timeline(entries)
    text = "\n".join(lines)
    assert "train requested by alice" in lines[0] and lines[0].endswith("-> queued")
    assert "accepted by w1 (host on gpu-box, device cuda:0" in text
    assert "(2 updates)" in text  # progress lines folded
    assert "epoch 2/3: train loss 0.7000" in text
    assert "cancel requested by bob: enough" in text and "-> cancelling" in text
    assert "cancelled: asked" in text and "-> cancelled" in text
    assert lines[-1].startswith(time.strftime("%Y")[:2]) and lines[-1].endswith("(ignored)")


async def test_cli_audit_and_timeline(bus: Bus, nats_server: NatsServer,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NATS_URL", nats_server.url)
    async with Projector(bus) as projector:
        await projector.wait_for(await run_job(bus))
        assert await asyncio.to_thread(cli, "audit") == 0
        out = capsys.readouterr().out
        assert "OK: 1 job(s)" in out
        assert "FOREIGN demo-1: 1 message(s) not written by the job's claimant, ignored" in out
        assert await asyncio.to_thread(cli, "audit", "--job", "demo-1", "--timeline") == 0
        out = capsys.readouterr().out
        assert out.startswith("job demo-1") and "cancel requested by bob" in out
        assert await asyncio.to_thread(cli, "audit", "--json") == 0
        assert json.loads(capsys.readouterr().out)["ok"] is True
    assert bus.jobs is not None
    await bus.jobs.put("demo-1", b"{}")
    assert await asyncio.to_thread(cli, "audit", "--job", "demo-1", "--wait", "0.2") == 1
    assert "DIFF demo-1: unreadable" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "audit", "--timeline") == 2


def test_cli_says_one_line_when_nats_is_down(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{port}")
    started = time.monotonic()
    assert cli("audit") == 1
    captured = capsys.readouterr()
    assert captured.err == (f"trainbus audit: cannot reach NATS at nats://127.0.0.1:{port}: "
                            "connection refused\n")
    assert "Traceback" not in captured.out + captured.err
    assert time.monotonic() - started < 5


def test_cli_schema_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("schema", "export", str(tmp_path / "schemas")) == 0
    files = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert "command.train.json" in files and "event.completed.json" in files
    assert "strategy.json" in files
    # 2 commands, 13 job events, 2 alias events, the job state, the strategy, and the
    # predictor's 2 requests and 2 replies.
    assert len(files) == 23
    assert "event.released.json" in files
    train = json.loads((tmp_path / "schemas" / "command.train.json").read_text())
    assert set(train["required"]) == {"symbols", "timeframes"}
