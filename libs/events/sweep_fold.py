"""A sweep's state as a pure function of its events: `fold_sweep(state, message) -> state`.

Like the job fold (libs/events/fold.py): no I/O, no clock, never raises on log content; a
message at or below `last_seq` changes nothing (idempotent), and so does anything before the
sweep's `started` or after it ended (finished or cancelled), a second `started`, a `told` of a
trial never asked or already told, and an `asked` that repeats a trial number. A message
that changes nothing returns the very same object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from msgspec import Struct
from msgspec.structs import replace

from libs.events.sweep_schema import (
    AnySweepEvent,
    SweepCancelled,
    SweepFinished,
    SweepSpec,
    SweepStarted,
    TrialAsked,
    TrialStatus,
    TrialTold,
)

SweepStatus = Literal["running", "finished", "cancelled"]
SWEEP_ENDED: Final[frozenset[str]] = frozenset({"finished", "cancelled"})


class SweepMessage(Struct, frozen=True, kw_only=True, gc=False):
    """One stored sweep event as the fold sees it (`time`: the stream's timestamp)."""

    seq: int
    event: AnySweepEvent


class TrialState(Struct, frozen=True, kw_only=True, gc=False):
    n: int
    params: dict[str, object]
    job_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    status: TrialStatus = "running"
    value: float | None = None
    values: tuple[float | None, ...] = ()
    intermediate: dict[int, float] = {}
    reason: str | None = None
    asked_seq: int = 0
    told_seq: int | None = None
    asked_at: float = 0.0
    told_at: float | None = None


class SweepState(Struct, frozen=True, kw_only=True, gc=False):
    sweep_id: str
    spec: SweepSpec
    seed: int
    status: SweepStatus = "running"
    trials: tuple[TrialState, ...] = ()  # by n (trial n is trials[n])
    started_seq: int = 0
    last_seq: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    best: int | None = None
    cancel_reason: str | None = None
    by: str = "anonymous"

    @property
    def told(self) -> int:
        return sum(1 for t in self.trials if t.status != "running")

    @property
    def running(self) -> list[TrialState]:
        return [t for t in self.trials if t.status == "running"]


def fold_sweep(state: SweepState | None, message: SweepMessage) -> SweepState | None:
    """Apply one sweep event (None = no sweep so far)."""
    event = message.event
    if state is None:
        if isinstance(event, SweepStarted):
            return SweepState(sweep_id=event.sweep_id, spec=event.spec, seed=event.seed,
                              started_seq=message.seq, last_seq=message.seq,
                              started_at=event.time, by=event.by)
        return None
    if (message.seq <= state.last_seq or state.status in SWEEP_ENDED
            or event.sweep_id != state.sweep_id):
        return state
    if isinstance(event, TrialAsked):
        if event.n != len(state.trials) or len(event.job_ids) != len(event.seeds):
            return state  # trials are asked in order, each once
        trial = TrialState(n=event.n, params=dict(event.params), job_ids=event.job_ids,
                           seeds=event.seeds, asked_seq=message.seq, asked_at=event.time)
        return replace(state, trials=(*state.trials, trial), last_seq=message.seq)
    if isinstance(event, TrialTold):
        if event.n >= len(state.trials) or state.trials[event.n].status != "running":
            return state
        old = state.trials[event.n]
        told = replace(old, status=event.state, value=event.value, values=event.values,
                       intermediate=dict(event.intermediate), reason=event.reason,
                       told_seq=message.seq, told_at=event.time)
        trials = (*state.trials[:event.n], told, *state.trials[event.n + 1:])
        return replace(state, trials=trials, last_seq=message.seq)
    if isinstance(event, SweepCancelled):
        return replace(state, status="cancelled", cancel_reason=event.reason,
                       finished_at=event.time, last_seq=message.seq)
    if isinstance(event, SweepFinished):
        return replace(state, status="finished", best=event.best, finished_at=event.time,
                       last_seq=message.seq)
    return state  # a second `started`


def fold_sweeps(messages: Iterable[SweepMessage]) -> dict[str, SweepState]:
    """Every sweep of a log (in order) by id."""
    out: dict[str, SweepState] = {}
    for message in messages:
        sweep_id = message.event.sweep_id
        new = fold_sweep(out.get(sweep_id), message)
        if new is not None:
            out[sweep_id] = new
    return out


def better(direction: str, a: float, b: float) -> bool:
    return a > b if direction == "maximize" else a < b


def best_trial(state: SweepState) -> TrialState | None:
    """The complete trial with the best value (the first of equals)."""
    best: TrialState | None = None
    for trial in state.trials:
        if trial.status != "complete" or trial.value is None:
            continue
        if best is None or better(state.spec.direction, trial.value, best.value or 0.0):
            best = trial
    return best


def ranked(state: SweepState) -> list[TrialState]:
    """Complete trials best first, then running, pruned and failed ones by number."""
    order = {"running": 1, "pruned": 2, "failed": 3}
    sign = -1.0 if state.spec.direction == "maximize" else 1.0

    def key(trial: TrialState) -> tuple[int, float, int]:
        if trial.status == "complete" and trial.value is not None:
            return (0, sign * trial.value, trial.n)
        return (order.get(trial.status, 3), 0.0, trial.n)

    return sorted(state.trials, key=key)
