"""Poison bytes (JSON nested 1,000 levels deep, oversize bodies) on every decoder of untrusted
input: refused with a reason, never a RecursionError, a dropped command or a stalled replay.

Unit checks of the limits first, then through a real nats-server: a raw train command
published with nats-py becomes a rejected job, and a poison event as the last message of the
stream is skipped and reported while the audit completes."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from libs.events.audit import audit, format_timeline, timeline
from libs.events.bus import Bus, publish_command, publish_event
from libs.events.commands import read_cancel_command, validate_train_command
from libs.events.errors import CommandRejected
from libs.events.log import MalformedCommand, Unreadable, to_log_message
from libs.events.projector import Projector
from libs.events.schema import (
    MAX_EVENT_DEPTH,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    PayloadTooDeep,
    PayloadTooLarge,
    decode_event,
    decode_registry_event,
    decode_train_body,
    nested_deeper_than,
)
from libs.events.subjects import DEFAULT_NAMES
from tests.events.builders import make_event, train_command
from tests.harness.polling import wait_job_state

pytestmark = pytest.mark.anyio


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


DEEP = nested(1000)


# --- the limits themselves -----------------------------------------------------------------


def test_depth_is_measured_on_structure_not_on_brackets_inside_strings() -> None:
    assert not nested_deeper_than(nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH)
    assert nested_deeper_than(nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)
    # Mixed objects and arrays count one level each.
    mixed = b'{"a":' * 33 + b"[" * 32 + b"1" + b"]" * 32 + b"}" * 33
    assert nested_deeper_than(mixed, MAX_JSON_DEPTH)
    # Brackets in strings (an escaped quote included) are text: a flat inline YAML is fine.
    text = json.dumps({"strategy_yaml": "x: [" * 500 + '"\\"' + "]" * 500}).encode()
    assert not nested_deeper_than(text, MAX_JSON_DEPTH)
    # Unbalanced junk is left to the decoder, which names the real problem.
    assert not nested_deeper_than(b"[" * 100 + b"}" * 100, MAX_JSON_DEPTH)


def test_every_decoder_turns_deep_json_into_a_decode_error() -> None:
    with pytest.raises(RecursionError):  # the finding: msgspec alone raises this
        msgspec.json.decode(DEEP)
    for decode in (decode_train_body, decode_event, decode_registry_event):
        with pytest.raises(PayloadTooDeep):
            decode(DEEP)
    event = b'{"kind":"epoch","job_id":"j","time":1,"epoch":1,"total_epochs":2,"x":' + DEEP + b"}"
    with pytest.raises(msgspec.DecodeError, match=f"deeper than {MAX_EVENT_DEPTH} levels"):
        decode_event(event)
    with pytest.raises(PayloadTooLarge, match=f"the limit is {MAX_MESSAGE_BYTES}"):
        decode_event(b" " * (MAX_MESSAGE_BYTES + 1))


def test_a_deep_train_command_is_rejected_as_malformed_and_a_deep_cancel_still_cancels() -> None:
    subject = DEFAULT_NAMES.train_subject("any")
    with pytest.raises(CommandRejected) as caught:
        validate_train_command(b'{"job_id":"deep-1","symbols":' + DEEP + b"}", subject)
    assert caught.value.category == "malformed"
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in caught.value.reason
    cancel = read_cancel_command(DEEP)
    assert cancel.reason is not None and "nested deeper" in cancel.reason


def test_to_log_message_classifies_poison_instead_of_raising() -> None:
    train = to_log_message(DEFAULT_NAMES, 7, DEFAULT_NAMES.train_subject("any"), DEEP, None, 1.0)
    assert isinstance(train.body, MalformedCommand) and train.job_id == "job-7"
    event = to_log_message(DEFAULT_NAMES, 8, DEFAULT_NAMES.event_subject("job-7", "epoch"), DEEP,
                           None, 1.0)
    assert isinstance(event.body, Unreadable) and "nested deeper" in event.body.reason


# --- through a real nats-server ----------------------------------------------------------


async def test_a_raw_deep_train_command_becomes_a_rejected_job(bus: Bus) -> None:
    async with Projector(bus):
        ack = await bus.js.publish(bus.names.train_subject("any"), DEEP,
                                   headers={"Nats-Msg-Id": "train:poison-1"})
        state = await wait_job_state(bus, "poison-1", {"rejected"}, timeout=15)
    assert state.last_seq == ack.seq
    assert state.error is not None and state.error.category == "malformed"
    assert "nested deeper than" in state.error.reason


async def test_a_poison_event_last_in_the_stream_is_skipped_and_the_audit_completes(
    bus: Bus,
) -> None:
    await publish_command(bus, train_command("demo-1", requested_by="alice"))
    claim = await publish_event(bus, make_event("accepted", "demo-1"), n=0,
                                expected_last_subject_seq=0)
    poison = await bus.js.publish(bus.names.event_subject("demo-1", "epoch"), DEEP)
    async with Projector(bus) as projector:
        await projector.wait_for(poison.seq)
        # Bounded: before the fix this replay stalled and raised ReplayError after 10 s.
        report = await asyncio.wait_for(audit(bus), timeout=8)
    assert not report.differences, report.differences
    assert report.replayed_to == poison.seq and report.jobs == 1
    # Not dropped silently: the audit lists it as skipped, and as foreign to the job (no
    # claimant wrote it; the projection ignored it, as it should, so the audit is OK).
    [(seq, subject, why)] = report.skipped
    assert (seq, subject) == (poison.seq, bus.names.event_subject("demo-1", "epoch"))
    assert "nested deeper than" in why
    assert report.foreign == {"demo-1": [poison.seq]} and report.ok
    lines = format_timeline(await timeline(bus, "demo-1"))
    assert any("unreadable: undecodable epoch event: JSON nested deeper than" in line
               for line in lines), lines
    assert claim.seq < poison.seq
