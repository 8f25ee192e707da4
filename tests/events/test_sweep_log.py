"""A sweep's events read back from a real server's log (libs/events/sweep_log.py): in order,
each sweep only its own, and stored bytes that are not a sweep event of their subject (junk, an
event under another sweep's subject or another kind's) skipped, not fatal."""

from __future__ import annotations

import pytest

from libs.events.bus import Bus, publish
from libs.events.schema import encode
from libs.events.sweep_log import publish_sweep_event, read_sweep, read_sweep_messages
from libs.events.sweep_schema import SweepFinished, TrialTold
from tests.events.test_sweep_fold import asked, started

pytestmark = pytest.mark.anyio


async def test_each_sweep_reads_its_own_events_and_skips_what_is_not_one(bus: Bus) -> None:
    names = bus.names
    first = started()
    seqs = [await publish_sweep_event(bus, first), await publish_sweep_event(bus, asked(0))]
    # Under sw-1's subjects: bytes that are no event, another sweep's event, a kind's event
    # on another kind's subject. None of them is sw-1's.
    await publish(bus, names.sweep_subject("sw-1", "told"), b"{not json", msg_id="junk")
    other = TrialTold(sweep_id="sw-2", time=3.0, n=0, state="complete", value=0.5, values=(0.5,))
    await publish(bus, names.sweep_subject("sw-1", "told"), encode(other), msg_id="theirs")
    await publish(bus, names.sweep_subject("sw-1", "finished"), encode(asked(1)),
                  msg_id="wrong-kind")
    # Another sweep's own event, stored between sw-1's.
    await publish_sweep_event(bus, other)
    seqs.append(await publish_sweep_event(bus, SweepFinished(sweep_id="sw-1", time=9.0)))

    mine = await read_sweep_messages(bus, "sw-1")
    assert [m.seq for m in mine] == seqs
    assert [type(m.event).__name__ for m in mine] == ["SweepStarted", "TrialAsked",
                                                      "SweepFinished"]
    assert (await read_sweep(bus, "sw-1")).trials[0].n == 0
    everyone = await read_sweep_messages(bus)
    assert [m.event.sweep_id for m in everyone] == ["sw-1", "sw-1", "sw-2", "sw-1"]
    told = await read_sweep_messages(bus, kinds=("told",))
    assert [m.event for m in told] == [other]
    assert await read_sweep_messages(bus, "sw-3") == []
