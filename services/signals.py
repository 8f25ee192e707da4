"""Process signals for every long-running command, written once: the first signal drains, a
second forces.

    stop, force = asyncio.Event(), asyncio.Event()
    with drain_on_signals(stop, force):       # SIGINT/SIGTERM: stop; again: force
        await serve(stop, force=force)

Handlers only set flags; the code awaiting `stop`/`force` decides what to do, in the loop. They
are installed with `loop.add_signal_handler`, so they run as loop callbacks, never between two
bytecodes of whatever was running.

Installs nest: leaving a block puts back what was there when it was entered, an enclosing
block's handler or else the handler Python had (asyncio.run's SIGINT handler, SIG_IGN under
nohup). So a command can take SIGINT over for a while (`follow` in services/cli/client.py asks
"cancel the job or stop watching?") and the enclosing drain handler comes back afterwards.
Off the main thread, or on a loop without signal support (Windows), nothing is installed and the
code runs unchanged; it just cannot be stopped by a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["DRAIN_SIGNALS", "drain_on_signals", "on_signals"]

DRAIN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

SignalCallback = Callable[[signal.Signals], None]


@dataclass(eq=False)  # identity: the same callback may be installed twice, nested
class _Entry:
    callback: SignalCallback


@dataclass
class _Slot:
    """One signal's installs on the running loop, innermost last, and the Python-level handler
    to put back when the last one leaves."""

    previous: Any
    entries: list[_Entry] = field(default_factory=list)


# Signal handlers are process-wide (one loop at a time can own them), so one table is enough.
_slots: dict[int, _Slot] = {}


@contextlib.contextmanager
def on_signals(callback: SignalCallback,
               signals: Iterable[signal.Signals] = DRAIN_SIGNALS) -> Iterator[None]:
    """Within the block, each of `signals` calls `callback(signal)` in the running loop; on the
    way out the handlers in place before are restored. `callback` should only set flags."""
    loop = asyncio.get_running_loop()
    installed: list[tuple[signal.Signals, _Entry]] = []
    try:
        for sig in signals:
            slot = _slots.get(sig)
            previous = signal.getsignal(sig) if slot is None else slot.previous
            try:
                loop.add_signal_handler(sig, callback, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                continue
            if slot is None:
                slot = _slots[sig] = _Slot(previous)
            entry = _Entry(callback)
            slot.entries.append(entry)
            installed.append((sig, entry))
        yield
    finally:
        for sig, entry in reversed(installed):
            _restore(loop, sig, entry)


def _restore(loop: asyncio.AbstractEventLoop, sig: signal.Signals, entry: _Entry) -> None:
    slot = _slots[sig]
    slot.entries.remove(entry)
    if slot.entries:
        loop.add_signal_handler(sig, slot.entries[-1].callback, sig)
        return
    del _slots[sig]
    loop.remove_signal_handler(sig)
    if slot.previous is not None:  # None: a handler not installed from Python; leave asyncio's
        signal.signal(sig, slot.previous)


def drain_on_signals(
    stop: asyncio.Event,
    force: asyncio.Event | None = None,
    *,
    on_stop: SignalCallback | None = None,
    on_force: SignalCallback | None = None,
    signals: Iterable[signal.Signals] = DRAIN_SIGNALS,
) -> contextlib.AbstractContextManager[None]:
    """First SIGINT/SIGTERM sets `stop` (drain), any later one sets `force` (abandon the drain;
    without `force` a later signal changes nothing). `stop` already set by someone else (a
    failed component, a shutdown in progress) counts as the first. `on_stop`/`on_force` say so
    (a log line, a message) once the flag is set; one that raises OSError/ValueError (a broken
    pipe, a closed stream) is ignored."""

    def handle(sig: signal.Signals) -> None:
        # The flag first, the message after and best-effort: a message that cannot be written
        # (stdout/stderr a broken pipe once `| tee` died with the Ctrl-C) must not leave the
        # process deaf to every later signal.
        if not stop.is_set():
            stop.set()
            _say(on_stop, sig)
        elif force is not None:
            force.set()
            _say(on_force, sig)

    return on_signals(handle, signals)


def _say(callback: SignalCallback | None, sig: signal.Signals) -> None:
    if callback is None:
        return
    # A broken pipe, a closed stream: the flag is already set, and that is what matters.
    with contextlib.suppress(OSError, ValueError):
        callback(sig)
