"""services/signals.py in this process: real signals sent to ourselves, on the test's loop.

SIGUSR1/SIGUSR2 stand in for SIGINT/SIGTERM, each with a Python handler installed first: a
handler that failed to install or was not restored then costs a failed assertion, not the test
run."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from services.signals import drain_on_signals, on_signals

pytestmark = pytest.mark.anyio

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def _python_handler(_signum: int, _frame: FrameType | None) -> None:
    raise AssertionError("the Python-level handler ran while a loop handler was installed")


@pytest.fixture
def python_handlers() -> Iterator[None]:
    before = {sig: signal.signal(sig, _python_handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 10)


async def test_the_first_signal_drains_a_second_forces_then_the_handlers_are_restored(
    python_handlers: None,
) -> None:
    stop, force = asyncio.Event(), asyncio.Event()
    said: list[str] = []
    with drain_on_signals(stop, force, signals=SIGNALS,
                          on_stop=lambda sig: said.append(f"stop {sig.name}"),
                          on_force=lambda sig: said.append(f"force {sig.name}")):
        os.kill(os.getpid(), signal.SIGUSR2)
        await wait(stop)
        assert not force.is_set()  # one signal, one callback: it has run
        os.kill(os.getpid(), signal.SIGUSR1)
        await wait(force)
    assert said == ["stop SIGUSR2", "force SIGUSR1"]
    assert all(signal.getsignal(sig) is _python_handler for sig in SIGNALS)


async def test_without_force_a_later_signal_changes_nothing(python_handlers: None) -> None:
    stop = asyncio.Event()
    calls: list[str] = []
    marker = asyncio.Event()
    with drain_on_signals(stop, signals=(signal.SIGUSR1,),
                          on_stop=lambda sig: calls.append(sig.name)), \
            on_signals(lambda _sig: marker.set(), (signal.SIGUSR2,)):
        os.kill(os.getpid(), signal.SIGUSR1)
        await wait(stop)
        os.kill(os.getpid(), signal.SIGUSR1)
        # The loop runs signal callbacks in the order the signals came: once the marker, sent
        # last, has been handled, so has the second SIGUSR1.
        os.kill(os.getpid(), signal.SIGUSR2)
        await wait(marker)
    assert calls == ["SIGUSR1"]


async def test_an_inner_block_takes_a_signal_over_and_gives_it_back(
    python_handlers: None,
) -> None:
    stop, force = asyncio.Event(), asyncio.Event()
    with drain_on_signals(stop, force, signals=SIGNALS):
        asked = asyncio.Event()
        with on_signals(lambda _sig: asked.set(), (signal.SIGUSR1,)):
            os.kill(os.getpid(), signal.SIGUSR1)
            await wait(asked)
            assert not stop.is_set()  # the inner handler had it, not the outer one
        os.kill(os.getpid(), signal.SIGUSR1)  # the outer handler is back
        await wait(stop)
        assert not force.is_set()
    assert all(signal.getsignal(sig) is _python_handler for sig in SIGNALS)
